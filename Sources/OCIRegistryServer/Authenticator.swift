import Crypto
import Foundation
import Logging
import OCICore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Who is asking: a user with a grant, or anonymous with what the policy allows anonymous users.
public struct Identity: Sendable, Equatable {
    public var name: String?
    public var grant: Grant?

    public init(name: String?, grant: Grant?) {
        self.name = name
        self.grant = grant
    }

    public static let nobody = Identity(name: nil, grant: nil)

    public func actions(on repository: String) -> Set<Action> { grant?.actions(on: repository) ?? [] }
    public var isAdmin: Bool { grant?.role == .admin }
}

/// Access settings (from `auth:` in appliance.yml and serve's flags).
public struct AccessPolicy: Sendable {
    /// What anyone may do without credentials: nothing (nil, the default) or pull.
    public var anonymous: Grant?
    /// An htpasswd file whose users get `htpasswdGrant`.
    public var htpasswdPath: String?
    public var htpasswdGrant: Grant
    public var tokenLifetime: Int
    /// Directory accounts (`auth.ldap`), asked for names that are no local user.
    public var ldap: LDAPDirectory?

    public init(
        anonymous: Grant? = nil, htpasswdPath: String? = nil, htpasswdGrant: Grant = Grant(role: .pull),
        tokenLifetime: Int = 300
    ) {
        self.anonymous = anonymous
        self.htpasswdPath = htpasswdPath
        self.htpasswdGrant = htpasswdGrant
        self.tokenLifetime = tokenLifetime
    }
}

/// Authentication and the Docker token flow (`../shared/specs/docker/token*`): credentials from
/// the user database or an htpasswd file, short-lived HS256 tokens carrying the granted scopes, a
/// cache of checked passwords (bcrypt is slow on purpose), and a limit on failed logins.
public final class Authenticator: Sendable {
    public static let service = "ferry-appliance"
    let users: UserDatabase
    let policy: AccessPolicy
    let secret: SymmetricKey
    let logger: Logger

    private let failures = Mutex(FailedLogins())
    /// Credentials checked lately, each with the version of the user files it was checked against.
    private let checked = Mutex<[SHA256.Digest: (identity: Identity, until: Int, files: [Int])]>([:])
    /// bcrypt checks running, by credential and user files: requests with the same credentials at
    /// once (a cluster's nodes pulling with one secret) wait for one check instead of each running
    /// bcrypt, tens of milliseconds of CPU apiece.
    private let checking = Mutex(SharedWork<CheckKey, Identity?>())
    /// How many times a password was checked with bcrypt (for tests).
    let passwordChecks = Atomic<Int>(0)
    private struct CheckKey: Hashable, Sendable {
        let credential: SHA256.Digest
        let files: [Int]
    }
    /// Directory users signed in lately, for sessions that re-read a user's identity (the console).
    private let directoryUsers = Mutex<[String: (identity: Identity, until: Int)]>([:])
    static let directoryIdentityLifetime = 12 * 3600
    private let loaded = Mutex<(fingerprint: [Int], users: [String: UserDatabase.User], htpasswd: HtpasswdFile)>(
        ([], [:], HtpasswdFile(text: "")))
    static let failureLimit = 5
    static let failureWindow = 60

    public init(dataDirectory: String, policy: AccessPolicy, logger: Logger) throws {
        users = UserDatabase(dataDirectory: dataDirectory)
        self.policy = policy
        self.logger = logger
        secret = try Self.tokenSecret(path: "\(dataDirectory)/tls/token.secret")
    }

    /// The key tokens are signed with: made once, kept 0600 beside the CA.
    static func tokenSecret(path: String) throws -> SymmetricKey {
        if let data = FileManager.default.contents(atPath: path), data.count == 32 { return SymmetricKey(data: data) }
        try FileManager.default.createDirectory(
            atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true,
            attributes: [.posixPermissions: 0o700])
        let key = SymmetricKey(size: .bits256)
        let bytes = key.withUnsafeBytes { Array($0) }
        try ApplianceCertificates.writeFile(path, bytes: bytes, mode: 0o600)
        return key
    }

    // MARK: Credentials

    /// Checks `Authorization: Basic …`; nil for a wrong user or password (logged, counted).
    /// Throws when this user and address failed too often lately. A credential checked in the
    /// last five minutes answers at once; otherwise bcrypt (and re-reading the user files) runs on
    /// the crypto pool, never on the caller's thread.
    public func authenticate(basic header: String, remote: String) async throws(DistributionError) -> Identity? {
        guard let (name, password) = Self.decodeBasic(header) else { return nil }
        let key = "\(name)@\(remote)"
        let now = Int(time(nil))
        if let blocked = failures.withLock({ $0.blockedUntil(key) }), blocked > now {
            throw DistributionError(
                status: 429, code: .tooManyRequests, message: "too many failed logins; try again later",
                detail: "retry after \(blocked - now) s")
        }
        let cacheKey = SHA256.hash(data: Data("\(name):\(password)".utf8))
        // A user deleted or changed in users.json (or the htpasswd file) loses a cached check at once.
        let files = userFilesFingerprint()
        if let hit = checked.withLock({ $0[cacheKey] }), hit.until > now, hit.files == files { return hit.identity }
        let check = CheckKey(credential: cacheKey, files: files)
        let (task, started) = checking.withLock {
            $0.join(check) {
                try await BlockingPools.crypto.runIfActive { self.verify(name: name, password: password) }
            }
        }
        // Ended once the outcome is cached (below): a request after it finds the cache.
        defer { if started { checking.withLock { $0.ended(check, task) } } }
        let verified = try? await sharedOutcome(of: task) { self.checking.withLock { $0.cancelled(check, task) } }
        var found = verified ?? nil
        if found == nil, let ldap = policy.ldap, !isLocalUser(name) {
            switch await signIn(ldap, name: name, password: password, now: now) {
            case .some(let identity): found = identity
            case .none: return nil  // the directory could not answer: logged, not counted as a failure
            }
        }
        guard let identity = found else {
            let outcome = failures.withLock { $0.record(key, remote: remote, now: now) }
            switch outcome.log {
            case .line:
                logger.warning(
                    "failed login for user \(AccessLog.escaped(name)) from \(remote)\(outcome.blocked ? "; further attempts refused for \(Self.failureWindow) s" : "")"
                )
            case .quietFrom:
                logger.warning("more failed logins from \(remote): not logged for the rest of the minute")
            case .none: break
            }
            return nil
        }
        failures.withLock { $0.forget(key) }
        checked.withLock { cache in
            if cache.count > 10_000 { cache = [:] }
            cache[cacheKey] = (identity, now + 300, files)
        }
        return identity
    }

    /// Asks the directory: the identity, nil inside for a wrong name or password (or no role), or
    /// nil when the directory could not be asked (logged with its reason).
    func signIn(_ ldap: LDAPDirectory, name: String, password: String, now: Int) async -> Identity?? {
        do {
            switch try await ldap.signIn(name: name, password: password) {
            case .signedIn(let grant, _):
                let identity = Identity(name: name, grant: grant)
                directoryUsers.withLock { users in
                    if users.count > 10_000 { users = [:] }
                    users[name] = (identity, now + Self.directoryIdentityLifetime)
                }
                return .some(identity)
            case .wrongCredentials:
                return .some(nil)  // (someone else's wrong guess must not end the user's sessions)
            case .noRole(let dn, let groups):
                directoryUsers.withLock { _ = $0.removeValue(forKey: name) }  // a console session ends too
                logger.warning(
                    "directory user \(AccessLog.escaped(name)) (\(AccessLog.escaped(dn))) has no role: no group of auth.ldap.groups among \(groups.isEmpty ? "none" : groups.map(AccessLog.escaped).joined(separator: "; "))"
                )
                return .some(nil)
            }
        } catch {
            logger.warning("directory sign-in of \(AccessLog.escaped(name)) not checked: \(error)")
            return nil
        }
    }

    /// Whether `name` is a user of users.json or the htpasswd file (the directory is not asked).
    func isLocalUser(_ name: String) -> Bool {
        let (users, htpasswd) = currentUsers()
        return users[name] != nil || htpasswd.entries[name] != nil
    }

    /// A directory user's identity from a sign-in in the last hours.
    func directoryIdentity(_ name: String) -> Identity? {
        guard policy.ldap != nil, let entry = directoryUsers.withLock({ $0[name] }), entry.until > Int(time(nil))
        else { return nil }
        return entry.identity
    }

    /// The user's identity when the password is right (bcrypt: blocking, tens of milliseconds).
    func verify(name: String, password: String) -> Identity? {
        passwordChecks.add(1, ordering: .relaxed)
        let (users, htpasswd) = currentUsers()
        if let user = users[name] {
            return PasswordHash.verify(password, against: user.passwordHash)
                ? Identity(name: name, grant: user.grant) : nil
        }
        if let hash = htpasswd.entries[name] {
            return PasswordHash.verify(password, against: hash)
                ? Identity(name: name, grant: policy.htpasswdGrant) : nil
        }
        // An unknown name costs what a known one costs, so timing does not tell which names exist.
        _ = PasswordHash.verify(password, against: Self.decoyHash)
        return nil
    }

    /// A bcrypt hash (cost 10) of a random password, made once.
    static let decoyHash: String = (try? PasswordHash.make(UUID().uuidString)) ?? ""

    /// The anonymous identity the policy allows.
    public var anonymous: Identity { Identity(name: nil, grant: policy.anonymous) }

    /// A fingerprint of `name`'s password hash as the user files say now: a session made before a
    /// password change no longer matches it. Nil when the user is gone.
    public func credentialStamp(name: String) -> String? {
        let (users, htpasswd) = currentUsers()
        guard let hash = users[name]?.passwordHash ?? htpasswd.entries[name] else {
            return directoryIdentity(name).map { _ in "directory" }
        }
        return SHA256.hash(data: Data(hash.utf8)).map { String(format: "%02x", $0) }.joined()
    }

    /// `name`'s identity as the user files say now (a session re-reads it on every request, so a
    /// removed user or a changed role takes effect at once); nil when the user is gone.
    public func currentIdentity(name: String) -> Identity? {
        let (users, htpasswd) = currentUsers()
        if let user = users[name] { return Identity(name: name, grant: user.grant) }
        if htpasswd.entries[name] != nil { return Identity(name: name, grant: policy.htpasswdGrant) }
        return directoryIdentity(name)
    }

    /// The name and password of `Basic BASE64(name:password)` (the scheme in any case, blanks
    /// around the credentials). Read as bytes: it runs on every request, and Foundation's
    /// lowercasing and trimming cost more than the rest of a cached check.
    static func decodeBasic(_ header: String) -> (String, String)? {
        let bytes = header.utf8
        let scheme = "basic ".utf8
        guard bytes.count > scheme.count,
            zip(bytes, scheme).allSatisfy({ given, expected in
                given == expected || (expected != UInt8(ascii: " ") && given | 0x20 == expected)
            })
        else { return nil }
        let isBlank = { (byte: UInt8) in byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        var encoded = bytes.dropFirst(scheme.count)
        while let first = encoded.first, isBlank(first) { encoded = encoded.dropFirst() }
        while let last = encoded.last, isBlank(last) { encoded = encoded.dropLast() }
        guard let data = Data(base64Encoded: String(Substring(encoded))),
            let colon = data.firstIndex(of: UInt8(ascii: ":")),
            let name = String(data: data[..<colon], encoding: .utf8),
            let password = String(data: data[(colon + 1)...], encoding: .utf8)
        else { return nil }
        return (name, password)
    }

    /// The versions of users.json and the htpasswd file (two stat calls).
    func userFilesFingerprint() -> [Int] {
        Self.fingerprint(of: users.path) + (policy.htpasswdPath.map { Self.fingerprint(of: $0) } ?? [])
    }

    func currentUsers() -> ([String: UserDatabase.User], HtpasswdFile) {
        let fingerprint = userFilesFingerprint()
        if let cached = loaded.withLock({ $0.fingerprint == fingerprint ? ($0.users, $0.htpasswd) : nil }) {
            return cached
        }
        var table: [String: UserDatabase.User] = [:]
        do {
            table = try users.load()
        } catch {
            logger.error("\(error)")
        }
        var htpasswd = HtpasswdFile(text: "")
        if let path = policy.htpasswdPath {
            if let text = try? String(contentsOfFile: path, encoding: .utf8) {
                htpasswd = HtpasswdFile(text: text)
                if !htpasswd.ignored.isEmpty {
                    logger.warning(
                        "\(path): entries that are not bcrypt are ignored: \(htpasswd.ignored.joined(separator: ", "))")
                }
            } else {
                logger.error("\(path): cannot read the htpasswd file")
            }
        }
        loaded.withLock { $0 = (fingerprint, table, htpasswd) }
        return (table, htpasswd)
    }

    // MARK: Tokens

    /// One `repository:NAME:ACTIONS` scope of a token request, and what was granted of it.
    public struct Access: Codable, Sendable, Equatable {
        public var type: String
        public var name: String
        public var actions: [String]
    }

    /// Parses `repository:NAME:pull,push` (NAME may hold a port-less host; the actions follow the last colon).
    static func parseScope(_ scope: String) -> Access? {
        guard let last = scope.lastIndex(of: ":"), let first = scope.firstIndex(of: ":"), first < last else {
            return nil
        }
        let type = String(scope[..<first])
        let name = String(scope[scope.index(after: first)..<last])
        let actions = scope[scope.index(after: last)...].split(separator: ",").map(String.init)
        return Access(type: type, name: name, actions: actions)
    }

    /// Issues a token for `identity` holding the requested scopes it is allowed (possibly none).
    public func issueToken(for identity: Identity, scopes: [String], now: Int = Int(time(nil))) -> [String: Any] {
        var granted: [Access] = []
        for scope in scopes.flatMap({ $0.split(separator: " ").map(String.init) }) {
            guard var access = Self.parseScope(scope) else { continue }
            if access.type == "repository" {
                // A name that is no repository name is never granted anything.
                guard (try? RepositoryName(access.name)) != nil else { continue }
                let allowed = identity.actions(on: access.name)
                // "*" (skopeo asks for it to delete) means every action: granted to whoever may delete.
                access.actions = access.actions.filter { action in
                    action == "*" ? allowed.contains(.delete) : Action(rawValue: action).map(allowed.contains) ?? false
                }
            } else if access.type == "registry" && access.name == "catalog" {
                access.actions = identity.isAdmin ? access.actions : []
            } else {
                continue
            }
            if !access.actions.isEmpty { granted.append(access) }
        }
        let claims = Claims(
            iss: Self.service, sub: identity.name ?? "", aud: Self.service, exp: now + policy.tokenLifetime,
            nbf: now - 5, iat: now, jti: UUID().uuidString, access: granted)
        let token = sign(claims)
        return [
            "token": token, "access_token": token, "expires_in": policy.tokenLifetime,
            "issued_at": ISO8601DateFormatter().string(from: Date(timeIntervalSince1970: TimeInterval(now))),
        ]
    }

    struct Claims: Codable {
        var iss: String
        var sub: String
        var aud: String
        var exp: Int
        var nbf: Int
        var iat: Int
        var jti: String
        var access: [Access]
    }

    func sign(_ claims: Claims) -> String {
        let header = Self.base64URL(Data(#"{"alg":"HS256","typ":"JWT"}"#.utf8))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let payload = Self.base64URL((try? encoder.encode(claims)) ?? Data())
        let input = "\(header).\(payload)"
        let mac = HMAC<SHA256>.authenticationCode(for: Data(input.utf8), using: secret)
        return "\(input).\(Self.base64URL(Data(mac)))"
    }

    /// The identity and granted scopes of a token this appliance signed and that has not expired.
    public func verify(token: String, now: Int = Int(time(nil))) -> (subject: String, access: [Access])? {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let signature = Self.decodeBase64URL(String(parts[2])),
            HMAC<SHA256>.isValidAuthenticationCode(
                signature, authenticating: Data("\(parts[0]).\(parts[1])".utf8), using: secret),
            let payload = Self.decodeBase64URL(String(parts[1])),
            let claims = try? JSONDecoder().decode(Claims.self, from: payload),
            claims.aud == Self.service, claims.exp > now, claims.nbf <= now
        else { return nil }
        return (claims.sub, claims.access)
    }

    static func base64URL(_ data: Data) -> String {
        data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func decodeBase64URL(_ text: String) -> Data? {
        var base64 = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        return Data(base64Encoded: base64)
    }
}

extension Authenticator {
    /// Identifies a file's current version (device, inode, size, modification time), so it is re-read only after a change.
    static func fingerprint(of path: String) -> [Int] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [0] }
        return [
            Int(info.st_dev), Int(info.st_ino), Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec),
        ]
    }
}

/// Failed logins per user and address (five in a minute block that pair for a minute), bounded in
/// size however many names are tried, and the log lines they cause, bounded per address.
struct FailedLogins {
    struct Entry {
        var count = 0
        var since = 0
        var blockedUntil = 0
    }
    enum Log: Equatable {
        case line
        /// This address's last line for the minute: say the rest go unlogged.
        case quietFrom
        case none
    }

    var entries: [String: Entry] = [:]
    var lines: [String: (count: Int, since: Int)] = [:]
    var limit = 10_000
    static let linesPerAddressPerMinute = 10

    func blockedUntil(_ key: String) -> Int? { entries[key]?.blockedUntil }

    mutating func forget(_ key: String) { entries[key] = nil }

    mutating func record(_ key: String, remote: String, now: Int) -> (blocked: Bool, log: Log) {
        let window = Authenticator.failureWindow
        if entries.count >= limit {
            // Expired entries go first; if every entry is live, the oldest half.
            entries = entries.filter { now - $0.value.since <= window || $0.value.blockedUntil > now }
            if entries.count >= limit {
                let cutoff = entries.values.map(\.since).sorted()[entries.count / 2]
                entries = entries.filter { $0.value.since > cutoff || $0.value.blockedUntil > now }
            }
        }
        var entry = entries[key] ?? Entry()
        if now - entry.since > window { entry = Entry(count: 0, since: now) }
        entry.count += 1
        if entry.count >= Authenticator.failureLimit { entry.blockedUntil = now + window }
        entries[key] = entry
        if lines.count >= limit { lines = lines.filter { now - $0.value.since <= window } }
        var logged = lines[remote] ?? (0, now)
        if now - logged.since > window { logged = (0, now) }
        logged.count += 1
        lines[remote] = logged
        let log: Log =
            logged.count < Self.linesPerAddressPerMinute
            ? .line : (logged.count == Self.linesPerAddressPerMinute ? .quietFrom : .none)
        return (entry.blockedUntil > now, log)
    }
}
