import Foundation
import OCICore

/// Finds the credential for a registry (and repository) the way docker, podman and skopeo do.
///
/// Sources, first match wins: explicit `--creds`; containers' `auth.json` (`$REGISTRY_AUTH_FILE`,
/// else `$XDG_RUNTIME_DIR/containers/auth.json`); docker's `config.json` (`$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`). `auth.json` keys may name a repository (`host/ns/repo`); the most
/// specific key wins. Credential helpers (`credsStore`, `credHelpers`) are not run.
public struct CredentialStore: Sendable {
    public struct Entry: Sendable, Hashable {
        /// `host` or `host/path`, normalised (no scheme, Docker Hub as `docker.io`).
        public var key: String
        public var credential: Credential
        public var source: String
    }

    /// Explicit credentials: registry host → credential; the `nil` key applies to every registry.
    public var explicit: [String: Credential] = [:]
    public var explicitForAll: Credential?
    public var entries: [Entry] = []

    public init() {}

    /// Credentials given for `host` itself (`--creds HOST=…`, an auth file's `HOST` key): never
    /// the ones given without a host.
    public func hostCredential(_ host: String) -> Credential? {
        let key = Self.normalizeKey(host)
        return explicit[key] ?? entries.first(where: { $0.key == key })?.credential
    }

    /// Credentials for a host or a `host/path` prefix, from a file of another tool's format.
    public mutating func addEntry(key: String, credential: Credential, source: String) {
        entries.append(Entry(key: Self.normalizeKey(key), credential: credential, source: source))
    }

    public func credential(registry: String, repository: String) -> Credential? {
        let registry = Self.normalizeKey(registry)
        if let c = explicit[registry] { return c }
        if let c = explicitForAll { return c }
        var path = "\(registry)/\(repository)"
        while true {
            if let entry = entries.first(where: { $0.key == path }) { return entry.credential }
            guard let slash = path.lastIndex(of: "/") else { return nil }
            path = String(path[..<slash])
        }
    }

    /// Loads auth files from the standard places named by `environment`.
    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment) throws(CredentialError)
        -> CredentialStore
    {
        var store = CredentialStore()
        var files: [String] = []
        if let file = environment["REGISTRY_AUTH_FILE"], !file.isEmpty {
            files.append(file)
        } else if let runtime = environment["XDG_RUNTIME_DIR"], !runtime.isEmpty {
            files.append("\(runtime)/containers/auth.json")
        }
        if let dir = environment["DOCKER_CONFIG"], !dir.isEmpty {
            files.append("\(dir)/config.json")
        } else if let home = environment["HOME"], !home.isEmpty {
            files.append("\(home)/.docker/config.json")
        }
        for file in files where FileManager.default.fileExists(atPath: file) {
            store.entries += try parseAuthFile(path: file)
        }
        return store
    }

    /// Parses a docker `config.json` or containers `auth.json` (`{"auths": {KEY: {...}}}`).
    public static func parseAuthFile(path: String) throws(CredentialError) -> [Entry] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(path, SystemError.unreadable(path))
        }
        return try parseAuthFile(data: data, source: path)
    }

    public static func parseAuthFile(data: Data, source: String) throws(CredentialError) -> [Entry] {
        struct AuthFile: Decodable {
            struct Auth: Decodable {
                var auth: String?
                var username: String?
                var password: String?
                var identitytoken: String?
                var registrytoken: String?
            }
            var auths: [String: Auth]?
        }
        let file: AuthFile
        do {
            file = try JSONDecoder().decode(AuthFile.self, from: data)
        } catch {
            throw .malformed(source, String(describing: error))
        }
        var entries: [Entry] = []
        for (rawKey, auth) in (file.auths ?? [:]).sorted(by: { $0.key < $1.key }) {
            let key = normalizeKey(rawKey)
            if let token = auth.identitytoken, !token.isEmpty {
                entries.append(Entry(key: key, credential: .identityToken(token), source: source))
            } else if let token = auth.registrytoken, !token.isEmpty {
                entries.append(Entry(key: key, credential: .registryToken(token), source: source))
            } else if let encoded = auth.auth, !encoded.isEmpty {
                guard let decoded = Data(base64Encoded: encoded).flatMap({ String(data: $0, encoding: .utf8) }),
                    let colon = decoded.firstIndex(of: ":")
                else { throw .malformed(source, "'auth' for \(rawKey) is not base64 of USER:PASSWORD") }
                entries.append(
                    Entry(
                        key: key,
                        credential: .basic(
                            username: String(decoded[..<colon]),
                            password: String(decoded[decoded.index(after: colon)...])),
                        source: source))
            } else if let username = auth.username, let password = auth.password {
                entries.append(
                    Entry(key: key, credential: .basic(username: username, password: password), source: source))
            }
        }
        return entries
    }

    /// `https://index.docker.io/v1/` → `docker.io`; `http://host:5000` → `host:5000`; `host/ns/repo` kept.
    public static func normalizeKey(_ raw: String) -> String {
        var key = raw
        var hadScheme = false
        for scheme in ["https://", "http://"] where key.hasPrefix(scheme) {
            key = String(key.dropFirst(scheme.count))
            hadScheme = true
        }
        if hadScheme, let slash = key.firstIndex(of: "/") { key = String(key[..<slash]) }  // docker: host only
        while key.hasSuffix("/") { key.removeLast() }
        let host = key.split(separator: "/", maxSplits: 1).first.map(String.init) ?? key
        let rest = key.dropFirst(host.count)
        switch host {
        case "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com": return "docker.io" + rest
        default: return key
        }
    }

    /// Parses `--creds [HOST=]USER:PASSWORD`.
    public mutating func addExplicit(_ argument: String) throws(CredentialError) {
        var registry: String?
        var userPass = Substring(argument)
        // HOST=USER:PASSWORD when what precedes the first '=' is a registry host (a password may
        // contain '=' too, but a USER:PASS prefix is never a valid host: its "port" is not numeric).
        if let eq = argument.firstIndex(of: "="), Reference.isValidRegistry(String(argument[..<eq])) {
            registry = Self.normalizeKey(String(argument[..<eq]))
            userPass = argument[argument.index(after: eq)...]
        }
        guard let colon = userPass.firstIndex(of: ":"), colon != userPass.startIndex else {
            throw .malformed("--creds", "expected [HOST=]USER:PASSWORD")
        }
        let credential = Credential.basic(
            username: String(userPass[..<colon]), password: String(userPass[userPass.index(after: colon)...]))
        if let registry { explicit[registry] = credential } else { explicitForAll = credential }
    }
}

public enum CredentialError: Error, Equatable, CustomStringConvertible {
    case unreadable(String, String)
    case malformed(String, String)

    public var description: String {
        switch self {
        case .unreadable(let path, let why): "cannot read credentials file \(path): \(why)"
        case .malformed(let source, let why): "\(source): \(why)"
        }
    }
}
