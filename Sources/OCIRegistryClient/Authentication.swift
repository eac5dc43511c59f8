import Foundation
import OCICore

/// A credential for one registry.
public enum Credential: Sendable, Hashable {
    case basic(username: String, password: String)
    /// An OAuth2 refresh token (docker's `identitytoken`), exchanged at the token endpoint.
    case identityToken(String)
    /// A bearer token given as is (docker's `registrytoken`).
    case registryToken(String)

    var basicHeader: String? {
        guard case .basic(let username, let password) = self else { return nil }
        return "Basic " + Data("\(username):\(password)".utf8).base64EncodedString()
    }
}

/// One challenge of a `WWW-Authenticate` header (RFC 7235), as registries send it:
/// `Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`.
public struct AuthenticationChallenge: Sendable, Hashable {
    public var scheme: String
    public var parameters: [String: String]

    public var realm: String? { parameters["realm"] }
    public var service: String? { parameters["service"] }
    public var scope: String? { parameters["scope"] }
    public var isBearer: Bool { scheme.lowercased() == "bearer" }
    public var isBasic: Bool { scheme.lowercased() == "basic" }

    /// Parses every challenge in a header value. Quoted strings may contain commas and escaped quotes.
    public static func parse(_ header: String) -> [AuthenticationChallenge] {
        var challenges: [AuthenticationChallenge] = []
        var chars = Substring(header)
        func skipSpaces() { while let c = chars.first, c == " " || c == "\t" || c == "," { chars.removeFirst() } }
        func token() -> String {
            var out = ""
            while let c = chars.first, c != " ", c != "=", c != ",", c != "\t" {
                out.append(c)
                chars.removeFirst()
            }
            return out
        }
        while true {
            skipSpaces()
            let scheme = token()
            if scheme.isEmpty { break }
            var challenge = AuthenticationChallenge(scheme: scheme, parameters: [:])
            // parameters: name=value pairs until the next bare token (next scheme)
            while true {
                skipSpaces()
                let save = chars
                let name = token()
                if name.isEmpty { break }
                while let c = chars.first, c == " " { chars.removeFirst() }
                guard chars.first == "=" else {
                    chars = save  // a new scheme begins
                    break
                }
                chars.removeFirst()
                while let c = chars.first, c == " " { chars.removeFirst() }
                var value = ""
                if chars.first == "\"" {
                    chars.removeFirst()
                    while let c = chars.first {
                        chars.removeFirst()
                        if c == "\\", let next = chars.first {
                            value.append(next)
                            chars.removeFirst()
                        } else if c == "\"" {
                            break
                        } else {
                            value.append(c)
                        }
                    }
                } else {
                    value = token()
                }
                challenge.parameters[name.lowercased()] = value
            }
            challenges.append(challenge)
        }
        return challenges
    }
}

/// Bearer tokens per registry and scope, shared by all requests of a client. Concurrent requests
/// for the same scope share one token request.
actor TokenCache {
    struct Key: Hashable {
        var registry: String
        var scope: String
    }
    struct Token {
        var value: String
        var expires: Date
    }
    private var tokens: [Key: Token] = [:]
    private var pending = SharedWork<Key, Token>()
    private var challenges: [String: AuthenticationChallenge] = [:]

    func challenge(for registry: String) -> AuthenticationChallenge? { challenges[registry] }
    func setChallenge(_ challenge: AuthenticationChallenge, for registry: String) { challenges[registry] = challenge }

    func cachedToken(registry: String, scope: String) -> String? {
        let key = Key(registry: registry, scope: scope)
        guard let token = tokens[key], token.expires > Date() else { return nil }
        return token.value
    }

    func invalidate(registry: String, scope: String) {
        tokens[Key(registry: registry, scope: scope)] = nil
    }

    func token(
        registry: String, scope: String, fetch: @escaping @Sendable () async throws -> (String, TimeInterval)
    ) async throws -> String {
        let key = Key(registry: registry, scope: scope)
        if let token = tokens[key], token.expires > Date() { return token.value }
        let (task, started) = pending.join(key) {
            let (value, lifetime) = try await fetch()
            // Renew a little early so a token does not expire mid-request.
            return Token(value: value, expires: Date().addingTimeInterval(max(lifetime - 10, 5)))
        }
        defer { if started { pending.ended(key, task) } }
        let token = try await sharedOutcome(of: task) { await self.waiterCancelled(key, task) }
        if started { tokens[key] = token }
        return token.value
    }

    private func waiterCancelled(_ key: Key, _ task: Task<Token, any Error>) {
        pending.cancelled(key, task)
    }
}

/// The token endpoint's answer (`../shared/specs/docker/auth-token.md`, `auth-oauth.md`).
struct TokenResponse: Decodable {
    var token: String?
    var accessToken: String?
    var expiresIn: Int?

    enum CodingKeys: String, CodingKey {
        case token
        case accessToken = "access_token"
        case expiresIn = "expires_in"
    }
}
