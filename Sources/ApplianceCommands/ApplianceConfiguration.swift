import Foundation
import OCICore
import Yams

/// `appliance.yml`: settings an operator keeps in a file (`--config`, `$FERRY_CONFIG`, or
/// `/etc/ferry/appliance.yml` when it exists). Command-line flags win over the file; the file wins
/// over built-in defaults. Every key is optional.
///
/// ```yaml
/// dataDir: /var/lib/ferry
/// listen: 0.0.0.0:5000
/// tls:
///   cert: /etc/ferry/tls/server.crt   # operator's chain (PEM, leaf first); omit for the generated CA
///   key: /etc/ferry/tls/server.key
///   san: [registry.plant.example]     # extra names for the generated certificate
/// accessLog: "-"                      # a file, "-" for standard error, or "off"
/// readOnly: false                     # true: refuse pushes and deletes
/// auth:
///   anonymous: none                   # none (default): credentials for everything; pull: anyone may pull
///   htpasswd: /etc/ferry/htpasswd     # bcrypt entries (htpasswd -B), beside `ferry-appliance user`
///   htpasswdRole: pull                # pull, push, delete or admin, for every htpasswd user
///   htpasswdRepositories: [apps]      # repository prefixes they may use (default: all)
///   tokenLifetime: 300                # seconds
///   ldap:                             # directory accounts too (local users first)
///     url: ldaps://ldap.plant.example  # or ldap://
///     caFile: /etc/ferry/ldap-ca.pem
///     bindDN: cn=ferry,ou=services,dc=plant,dc=example
///     bindPasswordFile: /etc/ferry/ldap-bind.password
///     baseDN: ou=people,dc=plant,dc=example
///     uidAttribute: uid               # default uid
///     filter: (objectClass=inetOrgPerson)
///     groupBaseDN: ou=groups,dc=plant,dc=example
///     groups:
///       - {group: ferry-admins, role: admin}          # a cn or a whole DN
///       - {group: ci, role: push, repositories: [apps]}
///     defaultRole: pull               # for users no group maps (default: refused)
/// http:
///   trustedProxies: [10.0.0.5]        # proxies whose X-Forwarded-For is believed (with --plain-http)
///   headerTimeout: 30                 # s from accept to a complete request head (TLS handshake included)
///   idleTimeout: 60                   # s a kept-alive connection may wait for its next request
///   maxConnections: 4096              # connections open at once
/// storage:
///   maxUploadBytes: 68719476736       # the largest blob one push may upload (64 GiB)
///   maxUploadsPerUser: 64             # upload sessions one user may hold open
///   minFreeBytes: 1073741824          # pushes stop while less than this is free (1 GiB)
/// proxy:                              # a pull-through cache for what the store lacks
///   maxBytes: 107374182400            # the cache's size; least recently used entries go (default: no limit)
///   ttl: 600                          # s a tag is served before it is checked upstream again
///   upstreams:
///     - url: https://registry-1.docker.io   # served as docker.io/NAME (and NAME: the default)
///       default: true
///       username: mirror-bot
///       passwordFile: /etc/ferry/hub.password
///     - url: https://quay.io                # served as quay.io/NAME
///       caFile: /etc/ferry/quay-ca.pem      # extra CA to trust for this upstream
/// import:
///   requireSignature: true
///   trustedKeys: [/etc/ferry/keys]    # public keys (PEM), files or directories
///   requireImageSignatures: [/etc/ferry/cosign.pub]   # every image needs a cosign signature by one
/// ```
public struct ApplianceConfiguration: Codable, Equatable, Sendable {
    public struct TLS: Codable, Equatable, Sendable {
        public var cert: String?
        public var key: String?
        public var san: [String]?
    }
    public struct Auth: Codable, Equatable, Sendable {
        /// `none` (the default) or `pull`.
        public var anonymous: String?
        public var htpasswd: String?
        public var htpasswdRole: String?
        public var htpasswdRepositories: [String]?
        public var tokenLifetime: Int?
        /// Sign-in with directory accounts (Harbor's `ldap_auth`); local users keep working.
        public var ldap: LDAP?
    }
    public struct LDAP: Codable, Equatable, Sendable {
        public struct GroupRole: Codable, Equatable, Sendable {
            /// A group's DN or cn.
            public var group: String
            public var role: String
            public var repositories: [String]?
        }
        /// `ldap://HOST[:PORT]` or `ldaps://HOST[:PORT]`.
        public var url: String
        public var caFile: String?
        public var bindDN: String?
        public var bindPasswordFile: String?
        public var baseDN: String
        public var uidAttribute: String?
        public var filter: String?
        /// `sub` (default) or `one`.
        public var scope: String?
        public var groupBaseDN: String?
        public var groupFilter: String?
        public var groupMemberAttribute: String?
        public var groups: [GroupRole]?
        /// The role of a directory user no group maps (default: none, refused).
        public var defaultRole: String?
        public var defaultRepositories: [String]?
        /// Seconds to wait for the directory.
        public var timeout: Int?
    }
    public struct HTTP: Codable, Equatable, Sendable {
        /// Addresses of proxies whose `X-Forwarded-For` names the client (failed-login limits, logs).
        public var trustedProxies: [String]?
        /// Seconds from accepting a connection to a complete request head (TLS handshake included).
        public var headerTimeout: Int?
        /// Seconds a kept-alive connection may wait for its next request.
        public var idleTimeout: Int?
        /// Connections open at once.
        public var maxConnections: Int?
    }
    /// Limits on what pushes may write.
    public struct Storage: Codable, Equatable, Sendable {
        public var maxUploadBytes: Int64?
        public var maxUploadsPerUser: Int?
        public var minFreeBytes: Int64?
    }
    public struct Import: Codable, Equatable, Sendable {
        public var requireSignature: Bool?
        public var trustedKeys: [String]?
        /// cosign public keys (PEM files): an image of a bundle without a signature by one of them
        /// is refused, and nothing of that bundle becomes visible.
        public var requireImageSignatures: [String]?
    }

    public struct Proxy: Codable, Equatable, Sendable {
        public struct Upstream: Codable, Equatable, Sendable {
            public var url: String
            public var `default`: Bool?
            public var username: String?
            public var passwordFile: String?
            public var caFile: String?
            public var ttl: Int?
        }
        public var maxBytes: Int64?
        public var ttl: Int?
        public var upstreams: [Upstream]?
    }

    public var dataDir: String?
    public var listen: String?
    public var tls: TLS?
    public var accessLog: String?
    /// Refuse pushes and deletes over HTTP (imports still work).
    public var readOnly: Bool?
    /// Serve the web console under `/ui/` (default true).
    public var console: Bool?
    public var auth: Auth?
    public var storage: Storage?
    public var http: HTTP?
    public var `import`: Import?
    public var proxy: Proxy?

    public static let defaultPath = "/etc/ferry/appliance.yml"
    public static let defaultDataDirectory = "/var/lib/ferry"
    public static let defaultListen = "0.0.0.0:5000"

    public init() {}

    public init(yaml: String, path: String) throws(ConfigurationError) {
        let node: Node?
        do { node = try Yams.compose(yaml: yaml) } catch {
            throw .invalid(path: path, "not valid YAML: \(Self.describe(error))")
        }
        // An empty file, or one whose every line is a comment (a template with all of it
        // commented out), sets nothing.
        guard let node, node.null == nil else {
            self.init()
            return
        }
        guard node.mapping != nil else {
            throw .invalid(
                path: path, "expected settings (key: value lines), found \(node.sequence != nil ? "a list" : "a value")"
            )
        }
        do {
            self = try YAMLDecoder().decode(ApplianceConfiguration.self, from: yaml)
        } catch let error as DecodingError {
            switch error {
            case .dataCorrupted(let context) where context.underlyingError is YamlError:
                throw .invalid(path: path, "not valid YAML: \(Self.describe(context.underlyingError))")
            case .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context),
                .dataCorrupted(let context):
                throw .invalid(path: path, Self.describe(context))
            @unknown default:
                throw .invalid(path: path, "\(error)")
            }
        } catch {
            throw .invalid(path: path, "\(error)")
        }
        // A key the file has and no setting reads is a mistake (a typo such as `readonly:` would
        // otherwise be ignored without a word).
        if let unknown = Self.unknownKey(in: node, of: self) {
            throw .invalid(path: path, unknown)
        }
    }

    /// libyaml's problem in one line, with where it is and what it was in
    /// ("line 2, column 1: did not find expected ',' or ']' (while parsing a flow sequence at line 1)").
    static func describe(_ error: (any Error)?) -> String {
        switch error as? YamlError {
        case .scanner(let context, let problem, let mark, _), .parser(let context, let problem, let mark, _),
            .composer(let context, let problem, let mark, _):
            let within = context.map { " (\($0.text) at line \($0.mark.line))" } ?? ""
            return "line \(mark.line), column \(mark.column): \(problem)\(within)"
        default:
            return error.map { "\($0)".split(separator: "\n").first.map(String.init) ?? "" } ?? ""
        }
    }

    /// The first key of `node` (a mapping) that no property of `value` has, with its line and the
    /// closest known name; the same for nested mappings and lists, property by property. A merge
    /// key (`<<: *defaults`) is checked as the mapping it merges.
    static func unknownKey(in node: Node, of value: Any, at prefix: String = "") -> String? {
        var mirror = Mirror(reflecting: value)
        if mirror.displayStyle == .optional {
            guard let wrapped = mirror.children.first?.value else { return nil }
            mirror = Mirror(reflecting: wrapped)
        }
        switch node {
        case .mapping(let mapping):
            let properties = Dictionary(
                mirror.children.compactMap { child in child.label.map { ($0, child.value) } },
                uniquingKeysWith: { first, _ in first })
            for (key, child) in mapping {
                guard let name = key.string else { continue }
                if name == "<<" {
                    // The mapping merged in, or each of a list of them, against the same settings.
                    for merged in child.sequence.map(Array.init) ?? [child] {
                        if let found = unknownKey(in: merged, of: value, at: prefix) { return found }
                    }
                    continue
                }
                guard let property = properties[name] else {
                    let line = key.mark.map { "line \($0.line): " } ?? ""
                    let closest = properties.keys.min {
                        (editDistance($0, name), $0) < (editDistance($1, name), $1)
                    }
                    let hint =
                        closest.map { editDistance($0, name) <= 3 ? " (did you mean \(prefix)\($0)?)" : "" } ?? ""
                    return "\(line)unknown setting \(prefix)\(name)\(hint)"
                }
                if let found = unknownKey(in: child, of: property, at: "\(prefix)\(name).") { return found }
            }
        case .sequence(let sequence):
            let elements = mirror.children.map(\.value)
            for (index, child) in sequence.enumerated() where index < elements.count {
                if let found = unknownKey(in: child, of: elements[index], at: prefix) { return found }
            }
        default:
            break
        }
        return nil
    }

    /// Levenshtein distance, case-insensitive (for "did you mean").
    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a.lowercased()), b = Array(b.lowercased())
        guard !a.isEmpty else { return b.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }

    static func describe(_ context: DecodingError.Context) -> String {
        let field = context.codingPath.map(\.stringValue).joined(separator: ".")
        return field.isEmpty ? context.debugDescription : "\(field): \(context.debugDescription)"
    }

    /// Loads the configuration: an explicit path must exist; the default path is optional.
    public static func load(explicitPath: String?) throws(ConfigurationError) -> (ApplianceConfiguration, String?) {
        let environment = ProcessInfo.processInfo.environment["FERRY_CONFIG"].flatMap { $0.isEmpty ? nil : $0 }
        let path = explicitPath ?? environment
        guard let path else {
            guard FileManager.default.fileExists(atPath: defaultPath) else { return (ApplianceConfiguration(), nil) }
            return (try read(defaultPath), defaultPath)
        }
        return (try read(path), path)
    }

    static func read(_ path: String) throws(ConfigurationError) -> ApplianceConfiguration {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw .unreadable(path, SystemError.whyUnreadable(path) ?? "not UTF-8 text")
        }
        return try ApplianceConfiguration(yaml: text, path: path)
    }
}

public enum ConfigurationError: Error, Equatable, CustomStringConvertible {
    case unreadable(String, String)
    case invalid(path: String, String)
    case requireSignatureWithoutKeys(String?)
    case badListen(String)
    case badValue(path: String?, key: String, String)
    /// A command-line option's value, as `badValue` is a file's.
    case badOption(String, String)

    public var description: String {
        switch self {
        case .unreadable(let path, let why): "\(path): cannot read the configuration file: \(why)"
        case .invalid(let path, let why): "\(path): \(why)"
        case .requireSignatureWithoutKeys(let path):
            "\(path ?? "configuration"): import.requireSignature is set but no trusted key is configured "
                + "(import.trustedKeys or --trust-key)"
        case .badListen(let value): "listen address \(value): expected HOST:PORT, :PORT or [IPV6]:PORT"
        case .badValue(let path, let key, let why): "\(path ?? "configuration"): \(key): \(why)"
        case .badOption(let option, let why): "\(option): \(why)"
        }
    }
}

/// `HOST:PORT`, `:PORT` (all addresses) or `[IPV6]:PORT`.
public struct ListenAddress: Equatable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(_ text: String) throws(ConfigurationError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { throw .badListen(text) }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "0.0.0.0" }
        guard !host.contains(":") || text.hasPrefix("[") else { throw .badListen(text) }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
