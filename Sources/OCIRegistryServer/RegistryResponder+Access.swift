import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OCICore

/// Who made a request, as far as permissions go.
enum Caller: Sendable {
    /// No access control configured (in-process tests).
    case open
    /// Basic credentials, or nobody (the anonymous grant).
    case identity(Identity, basic: Bool)
    /// A token this appliance issued: its subject and the scopes it grants.
    case token(subject: String, access: [Authenticator.Access])

    var name: String? {
        switch self {
        case .open: nil
        case .identity(let identity, _): identity.name
        case .token(let subject, _): subject.isEmpty ? nil : subject
        }
    }

    /// Inside a push: a token that grants push on the name as given. Such requests are never
    /// read through to a mirror or the pull-through cache (a blob HEAD answered from elsewhere would
    /// tell the client to skip an upload the repository it pushes to does not have).
    func isPushing(to repository: RepositoryName) -> Bool {
        guard case .token(_, let access) = self else { return false }
        return access.contains {
            $0.name == repository.value && ($0.actions.contains("push") || $0.actions.contains("*"))
        }
    }

    func allows(_ action: Action, on repository: String) -> Bool {
        switch self {
        case .open: true
        case .identity(let identity, _): identity.actions(on: repository).contains(action)
        case .token(_, let access):
            access.contains {
                $0.type == "repository" && $0.name == repository
                    && ($0.actions.contains(action.rawValue) || $0.actions.contains("*"))
            }
        }
    }
}

/// A 401 with the Bearer challenge that sends clients to the token endpoint (or a 403 when the
/// caller proved who they are and is simply not allowed).
struct Challenge: Error {
    var realm: String
    var scope: String?
    var denied: Bool
    var detail: String
    /// The authenticated caller who was refused (for the access log), if any.
    var user: String? = nil

    func response(for request: Request) -> Response {
        if denied {
            return RegistryResponder.errorResponse(
                DistributionError(
                    status: 403, code: .denied, message: "requested access to the resource is denied", detail: detail),
                for: request)
        }
        var response = RegistryResponder.errorResponse(
            DistributionError(status: 401, code: .unauthorized, message: "authentication required", detail: detail),
            for: request)
        var challenge = "Bearer realm=\"\(realm)\",service=\"\(Authenticator.service)\""
        if let scope { challenge += ",scope=\"\(scope)\"" }
        response.headers[.wwwAuthenticate] = challenge
        return response
    }
}

extension RegistryResponder {
    /// What a route needs: an action on a repository, or (nil) just a known caller.
    static func requirement(_ route: DistributionRoute, _ method: HTTPRequest.Method) -> (String, Action)? {
        guard let repository = route.repository?.value else { return nil }
        switch method {
        case .get, .head: return (repository, .pull)
        case .delete:
            if case .blobUpload = route { return (repository, .push) }
            return (repository, .delete)
        default: return (repository, .push)
        }
    }

    /// Identifies the caller, resolves the route through the mirror mapping (only for a caller who
    /// may read something: an unknown caller's challenge names the repository as requested, so no
    /// answer tells a stranger which repositories exist), and checks the route's requirement;
    /// throws a ``Challenge`` when not allowed.
    func authorize(_ requested: DistributionRoute, _ request: Request, remote: String) async throws -> (
        Caller, DistributionRoute
    ) {
        guard let authenticator else { return (.open, try await mirrorAware(requested, request)) }
        if requested == .health || requested == .notFound { return (.open, requested) }
        let realm = "\(realmScheme)://\(request.head.authority ?? "localhost")/token"
        func scope(_ route: DistributionRoute) -> String? { Self.requiredScope(route, request) }
        let caller = try await identify(request, remote: remote, realm: realm, scope: scope(requested))
        let known: Bool =
            switch caller {
            case .open: true
            case .identity(let identity, _): identity.grant != nil
            case .token(let subject, _): !subject.isEmpty || authenticator.anonymous.grant != nil
            }
        guard known else {
            throw Challenge(
                realm: realm, scope: scope(requested), denied: false,
                detail: requested.repository.map { "credentials required for \($0)" } ?? "credentials required")
        }
        // Inside a push (a token asked for push on the name as given) names are taken as given: a
        // blob HEAD read through to docker.io/… would tell the client to skip an upload the
        // repository it pushes to does not have.
        let pushing = requested.repository.map { caller.isPushing(to: $0) } ?? false
        let route = pushing ? requested : try await mirrorAware(requested, request)
        return (try check(route, request, caller: caller, realm: realm, scope: scope(route)), route)
    }

    /// The scope a client must ask a token for: the route's repository and action, and a mount's source.
    static func requiredScope(_ route: DistributionRoute, _ request: Request) -> String? {
        let requirement = Self.requirement(route, request.method)
        // A cross-repository mount also reads its source: the first challenge asks for both, as the
        // distribution registry does, so a client gets one token for the whole mount.
        var mountSource: String?
        if case .blobUpload(_, nil) = route, request.method == .post, request.uri.queryParameters.get("mount") != nil,
            let from = request.uri.queryParameters.get("from"), (try? RepositoryName(String(from))) != nil
        {
            mountSource = String(from)
        }
        return requirement.map { repository, action in
            "repository:\(repository):" + (action == .pull ? "pull" : (action == .push ? "pull,push" : "delete"))
                + (mountSource.map { " repository:\($0):pull" } ?? "")
        }
    }

    /// Who is calling: a valid token, Basic credentials, or anonymous.
    func identify(_ request: Request, remote: String, realm: String, scope requiredScope: String?) async throws
        -> Caller
    {
        guard let authenticator else { return .open }
        let caller: Caller
        if let header = request.headers[.authorization] {
            if header.lowercased().hasPrefix("bearer ") {
                guard let verified = authenticator.verify(token: String(header.dropFirst(7))) else {
                    throw Challenge(
                        realm: realm, scope: requiredScope, denied: false, detail: "invalid or expired token")
                }
                caller = .token(subject: verified.subject, access: verified.access)
            } else {
                guard let identity = try await authenticator.authenticate(basic: header, remote: remote) else {
                    throw Challenge(realm: realm, scope: nil, denied: false, detail: "wrong user name or password")
                }
                caller = .identity(identity, basic: true)
            }
        } else {
            caller = .identity(authenticator.anonymous, basic: false)
        }
        return caller
    }

    /// Whether `caller` may do what `route` needs.
    func check(
        _ route: DistributionRoute, _ request: Request, caller: Caller, realm: String, scope requiredScope: String?
    )
        throws -> Caller
    {
        guard let authenticator else { return caller }
        let requirement = Self.requirement(route, request.method)
        if let (repository, action) = requirement {
            guard caller.allows(action, on: repository) else {
                if case .identity(_, true) = caller {
                    throw Challenge(
                        realm: realm, scope: nil, denied: true, detail: "\(action.rawValue) on \(repository)",
                        user: caller.name)
                }
                throw Challenge(
                    realm: realm, scope: requiredScope, denied: false, detail: "\(action.rawValue) on \(repository)",
                    user: caller.name)
            }
            // A caller who may not read a mount's source gets a plain upload session (startUpload
            // checks), never a challenge it cannot satisfy.
            return caller
        }
        // /v2/ and _catalog: any authenticated caller, or anonymous when anonymous may pull.
        if case .identity(let identity, false) = caller, identity.grant == nil {
            throw Challenge(realm: realm, scope: nil, denied: false, detail: "credentials required")
        }
        if route == .catalog, case .token(let subject, _) = caller {
            // A token names its user; the catalog lists what that user may pull.
            let users = authenticator.currentUsers().0
            let grant = users[subject]?.grant ?? (subject.isEmpty ? authenticator.anonymous.grant : nil)
            return .identity(Identity(name: subject, grant: grant), basic: false)
        }
        return caller
    }

    /// `GET /token?service=…&scope=…` (Basic credentials or none) and `POST /token` (OAuth2
    /// password grant, which containerd tries first): a token with the allowed part of each scope.
    func token(_ request: Request, remote: String) async throws -> Response {
        guard let authenticator else { throw DistributionError.unsupported("no access control configured") }
        // Several scopes in one parameter are joined by spaces, which Go clients encode as `+`
        // (application/x-www-form-urlencoded); no scope holds a literal `+`.
        var scopes = request.uri.queryParameters.getAll("scope").map { $0.replacingOccurrences(of: "+", with: " ") }
        var identity = authenticator.anonymous
        var credentials = request.headers[.authorization]
        if request.method == .post {
            let body = try await request.body.collect(upTo: 64 << 10)
            let form = Self.parseForm(String(buffer: body))
            guard form["grant_type"] == "password", let user = form["username"], let password = form["password"] else {
                throw DistributionError(
                    status: 400, code: .unsupported, message: "only the password grant is supported", detail: nil)
            }
            credentials = "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
            scopes += (form["scope"] ?? "").split(separator: " ").map(String.init)
        } else if request.method != .get {
            throw DistributionError.unsupported("\(request.method.rawValue) /token")
        }
        // Empty Basic credentials (some clients always send them) mean anonymous.
        if let given = credentials, let (user, password) = Authenticator.decodeBasic(given), user.isEmpty,
            password.isEmpty
        {
            credentials = nil
        }
        // With anonymous: none there is nothing a stranger's token could carry: no token at all.
        if credentials == nil && authenticator.anonymous.grant == nil {
            var response = Self.errorResponse(
                DistributionError(status: 401, code: .unauthorized, message: "credentials required"), for: request)
            response.headers[.wwwAuthenticate] = "Basic realm=\"\(Authenticator.service)\""
            return response
        }
        if let credentials {
            guard let known = try await authenticator.authenticate(basic: credentials, remote: remote) else {
                var response = Self.errorResponse(
                    DistributionError(status: 401, code: .unauthorized, message: "wrong user name or password"),
                    for: request)
                response.headers[.wwwAuthenticate] = "Basic realm=\"\(Authenticator.service)\""
                return response
            }
            identity = known
        }
        let answer = authenticator.issueToken(for: identity, scopes: scopes)
        let bytes = Array((try? JSONSerialization.data(withJSONObject: answer, options: [.sortedKeys])) ?? Data())
        var response = Self.json(bytes, for: request)
        response.headers[.cacheControl] = "no-store"
        return response
    }

    static func parseForm(_ text: String) -> [String: String] {
        var form: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            if parts.count == 2 { form[parts[0]] = parts[1] }
        }
        return form
    }
}
