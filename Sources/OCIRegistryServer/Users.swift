import CCrypt
import Foundation
import OCIStore

#if canImport(Glibc)
    import Glibc
#endif

/// What a user may do, each role including the one before: pull; push (and pull); delete (and
/// push, pull); admin (everything, every repository, the catalog).
public enum Role: String, Codable, Sendable, CaseIterable, Comparable {
    case pull, push, delete, admin

    public var actions: Set<Action> {
        switch self {
        case .pull: [.pull]
        case .push: [.pull, .push]
        case .delete, .admin: [.pull, .push, .delete]
        }
    }

    public static func < (a: Role, b: Role) -> Bool {
        (allCases.firstIndex(of: a) ?? 0) < (allCases.firstIndex(of: b) ?? 0)
    }
}

public enum Action: String, Codable, Sendable, CaseIterable {
    case pull, push, delete
}

/// A user's grant: a role, over every repository or only those under some prefixes.
public struct Grant: Codable, Sendable, Equatable {
    public var role: Role
    /// Repository name prefixes (`apps` covers `apps` and `apps/…`); nil or empty: every repository.
    public var repositories: [String]?

    public init(role: Role, repositories: [String]? = nil) {
        self.role = role
        self.repositories = repositories
    }

    /// The actions this grant allows on `repository`.
    public func actions(on repository: String) -> Set<Action> {
        guard covers(repository) else { return [] }
        return role.actions
    }

    public func covers(_ repository: String) -> Bool {
        guard role != .admin, let prefixes = repositories, !prefixes.isEmpty else { return true }
        return prefixes.contains { prefix in
            let bare = prefix.hasSuffix("/") ? String(prefix.dropLast()) : prefix
            return repository == bare || repository.hasPrefix(bare + "/")
        }
    }
}

/// bcrypt password hashes through libxcrypt (`$2b$`, and `$2y$` as `htpasswd -B` writes).
public enum PasswordHash {
    /// A new bcrypt hash of `password` (cost 10, random salt).
    public static func make(_ password: String) throws -> String {
        var setting = [CChar](repeating: 0, count: Int(CRYPT_GENSALT_OUTPUT_SIZE))
        guard crypt_gensalt_rn("$2b$", 10, nil, 0, &setting, Int32(setting.count)) != nil else {
            throw AccessError.hashing("crypt_gensalt: \(String(cString: strerror(errno)))")
        }
        let settingText = String(decoding: setting.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let hash = crypt(password, setting: settingText), !hash.hasPrefix("*") else {
            throw AccessError.hashing("crypt failed")
        }
        return hash
    }

    /// Whether `password` matches `hash` (compared in constant time).
    public static func verify(_ password: String, against hash: String) -> Bool {
        guard hash.hasPrefix("$2"), let computed = crypt(password, setting: hash) else { return false }
        let a = Array(computed.utf8)
        let b = Array(hash.utf8)
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for i in 0..<a.count { difference |= a[i] ^ b[i] }
        return difference == 0
    }

    static func crypt(_ password: String, setting: String) -> String? {
        let data = UnsafeMutablePointer<crypt_data>.allocate(capacity: 1)
        defer { data.deallocate() }
        memset(data, 0, MemoryLayout<crypt_data>.size)
        guard let result = crypt_rn(password, setting, data, Int32(MemoryLayout<crypt_data>.size)) else { return nil }
        return String(cString: result)
    }
}

/// The appliance's own users, in `DATA/users.json` (mode 0600, replaced atomically).
public struct UserDatabase: Sendable {
    public struct User: Codable, Sendable, Equatable {
        public var name: String
        public var passwordHash: String
        public var grant: Grant
    }

    public let path: String

    public init(dataDirectory: String) { path = "\(dataDirectory)/users.json" }

    public func load() throws -> [String: User] {
        guard FileManager.default.fileExists(atPath: path) else { return [:] }
        do {
            let users = try JSONDecoder().decode([User].self, from: Data(contentsOf: URL(fileURLWithPath: path)))
            return Dictionary(users.map { ($0.name, $0) }, uniquingKeysWith: { $1 })
        } catch {
            throw AccessError.unreadable(path, "\(error)")
        }
    }

    /// Adds or replaces a user.
    public func add(name: String, password: String, grant: Grant) throws {
        guard Self.isValidName(name) else { throw AccessError.badUserName(name) }
        guard password.count >= 8 else { throw AccessError.weakPassword }
        let hash = try PasswordHash.make(password)
        try locked {
            var users = try load()
            users[name] = User(name: name, passwordHash: hash, grant: grant)
            try save(users)
        }
    }

    /// Runs a load-change-save of the user file under an exclusive lock (`users.json.lock`), so
    /// two changes at once (the console, `ferry-appliance user`) never lose one another.
    func locked<T>(_ body: () throws -> T) throws -> T {
        do {
            // A new data directory is made the way serve and import make it (0750).
            try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o750)
        } catch {
            throw AccessError.unwritable(path, error.description)
        }
        let fd = open(path + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw AccessError.unwritable(path + ".lock", String(cString: strerror(errno))) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw AccessError.unwritable(path + ".lock", String(cString: strerror(errno))) }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    /// Changes a user's role and repository prefixes, keeping the password; false when there is none.
    @discardableResult
    public func update(name: String, grant: Grant) throws -> Bool {
        try locked {
            var users = try load()
            guard users[name] != nil else { return false }
            users[name]?.grant = grant
            try save(users)
            return true
        }
    }

    /// Removes a user; false when there was none.
    @discardableResult
    public func remove(name: String) throws -> Bool {
        try locked {
            var users = try load()
            guard users.removeValue(forKey: name) != nil else { return false }
            try save(users)
            return true
        }
    }

    func save(_ users: [String: User]) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data = try encoder.encode(users.values.sorted { $0.name < $1.name })
        do {
            // A new data directory is made the way serve and import make it (0750).
            try FileSystem.makeDirectories((path as NSString).deletingLastPathComponent, mode: 0o750)
            try FileSystem.replace(path, with: Array(data), mode: 0o600)
        } catch {
            throw AccessError.unwritable(path, error.description)
        }
    }

    /// Letters, digits, `.`, `_`, `-`, `@`; 1–64 characters.
    static func isValidName(_ name: String) -> Bool {
        (1...64).contains(name.utf8.count)
            && name.unicodeScalars.allSatisfy {
                CharacterSet.alphanumerics.contains($0) || "._-@".unicodeScalars.contains($0)
            }
            && name.unicodeScalars.allSatisfy(\.isASCII)
    }
}

/// An htpasswd file (`name:hash` lines); bcrypt entries are honoured, others ignored (logged once).
public struct HtpasswdFile: Sendable {
    public var entries: [String: String] = [:]
    public var ignored: [String] = []

    public init(text: String) {
        for line in text.split(whereSeparator: \.isNewline) {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            guard !trimmed.isEmpty, !trimmed.hasPrefix("#"), let colon = trimmed.firstIndex(of: ":") else { continue }
            let name = String(trimmed[..<colon])
            let hash = String(trimmed[trimmed.index(after: colon)...])
            if hash.hasPrefix("$2") { entries[name] = hash } else { ignored.append(name) }
        }
    }
}

public enum AccessError: Error, CustomStringConvertible {
    case hashing(String)
    case unreadable(String, String)
    case unwritable(String, String)
    case badUserName(String)
    case weakPassword

    public var description: String {
        switch self {
        case .hashing(let why): "cannot hash the password: \(why)"
        case .unreadable(let path, let why): "\(path): \(why)"
        case .unwritable(let path, let why): "cannot write \(path): \(why)"
        case .badUserName(let name): "user name \"\(name)\": use 1-64 letters, digits, '.', '_', '-' or '@'"
        case .weakPassword: "the password must have at least 8 characters"
        }
    }
}
