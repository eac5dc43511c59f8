import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import OCICore

/// A client of the OCI Distribution API (`../shared/specs/oci-distribution/spec.md`) for any
/// number of registries: anonymous, basic and bearer-token auth, TLS trust per host, retries with
/// backoff, redirects that never leak credentials to another origin, and verified blob streams.
///
/// The `HTTPClient` is owned by the caller, who shuts it down.
public final class RegistryClient: Sendable {
    public struct Configuration: Sendable {
        public var credentials: CredentialStore
        public var trust: TrustPolicy
        public var retry: RetryPolicy
        public var userAgent: String
        /// The connect timeout the HTTP client was made with (named in errors).
        public var connectTimeout: Int

        public init(
            credentials: CredentialStore = CredentialStore(), trust: TrustPolicy = TrustPolicy(),
            retry: RetryPolicy = RetryPolicy(), userAgent: String = "ferry", connectTimeout: Int = 10
        ) {
            self.credentials = credentials
            self.trust = trust
            self.retry = retry
            self.userAgent = userAgent
            self.connectTimeout = connectTimeout
        }
    }

    let http: HTTPClient
    let configuration: Configuration
    let tokens = TokenCache()
    let endpoints = EndpointCache()
    let trust: TrustConfigurations

    public init(http: HTTPClient, configuration: Configuration) {
        self.http = http
        self.configuration = configuration
        trust = TrustConfigurations(configuration.trust)
    }

    /// An `HTTPClient` set up the way this client needs it: no automatic redirects (they are
    /// followed here, dropping credentials across origins), bounded connect and read timeouts.
    public static func makeHTTPClient(connectTimeout: Int = 10) -> HTTPClient {
        var configuration = HTTPClient.Configuration(
            redirectConfiguration: .disallow,
            // AsyncHTTPClient retries a failed connection attempt until the connect timeout runs
            // out (a busy server that closes new connections, a restart), so this bounds each
            // attempt of ours. A port where nothing listens is found out before, by `probe`.
            timeout: .init(connect: .seconds(Int64(connectTimeout)), read: .seconds(120)))
        configuration.connectionPool = .init(idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 16)
        // HTTP/1.1 only: over HTTP/2 (which Go registries offer by ALPN) a blob's bytes move in
        // small flow-controlled frames, and a 1 GiB copy between two distribution registries took
        // 1.4x the time and twice the CPU of one over HTTP/1.1 connections (Benchmarks/sync.sh).
        configuration.httpVersion = .http1Only
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// The host that serves the API for a registry name (`docker.io` is `registry-1.docker.io`).
    public static func apiHost(for registry: String) -> String {
        registry == "docker.io" ? "registry-1.docker.io" : registry
    }

    // MARK: Requests

    struct Response {
        var head: HTTPClientResponse
        var registry: String
    }

    /// Sends a request to `registry` with authentication, following redirects; throws for any
    /// status but 2xx. `scope` is the token scope the request needs (`repository:NAME:pull`).
    /// A `body` is sent once: a request with one should follow one that already authenticated
    /// for the same scope (a 401 then fails instead of being retried with fresh credentials).
    func send(
        _ method: HTTPMethod, registry: String, path: String, scope: String?, headers: HTTPHeaders = [:],
        body: HTTPClientRequest.Body? = nil
    ) async throws -> HTTPClientResponse {
        let endpoint = try await endpoint(for: registry)
        var authorization = try await authorization(registry: registry, scope: scope, challenge: nil)
        var triedFreshAuth = false
        while true {
            let (response, finalURL) = try await execute(
                method, url: endpoint.baseURL + path, registry: registry, endpoint: endpoint,
                headers: headers, authorization: authorization, body: body)
            let status = Int(response.status.code)
            // Only the registry itself may ask for credentials: a 401 from the origin a redirect led
            // to (a CDN, or worse) never gets them.
            var sendsBody = false
            if case .some = body { sendsBody = true }
            if status == 401 && !triedFreshAuth && !sendsBody
                && Self.origin(of: finalURL) == Self.origin(of: endpoint.baseURL)
            {
                _ = try? await response.body.collect(upTo: 64 * 1024)
                authorization = try await reauthorize(registry: registry, scope: scope, headers: response.headers)
                triedFreshAuth = true
                continue
            }
            if (200..<300).contains(status) { return response }
            let body = (try? await response.body.collect(upTo: 64 * 1024)).map { Array($0.readableBytesView) } ?? []
            throw statusError(
                status: status, headers: response.headers, body: body, registry: registry, scope: scope,
                what: path, url: endpoint.baseURL + path)
        }
    }

    /// After a 401: learns the challenge, drops the cached token and gets a fresh authorization.
    func reauthorize(registry: String, scope: String?, headers: HTTPHeaders) async throws -> String {
        let challenges = headers["WWW-Authenticate"].flatMap(AuthenticationChallenge.parse)
        guard let challenge = challenges.first(where: \.isBearer) ?? challenges.first(where: \.isBasic) else {
            throw RegistryError.unauthorized(registry: registry, scope: scope, detail: "no usable challenge")
        }
        await tokens.setChallenge(challenge, for: registry)
        if let scope { await tokens.invalidate(registry: registry, scope: scope) }
        guard let authorization = try await authorization(registry: registry, scope: scope, challenge: challenge) else {
            throw RegistryError.unauthorized(registry: registry, scope: scope, detail: "no credentials")
        }
        return authorization
    }

    /// The error for a final non-2xx answer, with the OCI error envelope's summary.
    func statusError(
        status: Int, headers: HTTPHeaders, body: [UInt8], registry: String, scope: String?, what: String, url: String
    ) -> RegistryError {
        let detail = ErrorEnvelope.summary(of: body)
        switch status {
        case 401, 403:
            return .unauthorized(registry: registry, scope: scope, detail: detail)
        case 404:
            return .notFound(registry: registry, what: what, detail: detail)
        default:
            return .status(
                registry: registry, url: url, status: status, detail: detail,
                retryAfter: headers.first(name: "Retry-After").flatMap(RetryPolicy.parseRetryAfter))
        }
    }

    /// Where a redirect answer points, resolved against the URL that answered; nil if it is none.
    static func redirectTarget(status: UInt, headers: HTTPHeaders, from url: String) -> String? {
        guard [301, 302, 303, 307, 308].contains(status), let location = headers.first(name: "Location") else {
            return nil
        }
        return URL(string: location, relativeTo: URL(string: url))?.absoluteURL.absoluteString
    }

    /// The TLS configuration for a request to `url`: the endpoint's for its own origin, else the
    /// trust policy's for that host (a CDN uses the system store plus any configured CAs).
    func tlsConfiguration(for url: String, endpoint: Endpoint) throws -> TLSConfiguration? {
        guard url.hasPrefix("https://") else { return nil }
        if Self.origin(of: url) == Self.origin(of: endpoint.baseURL) { return endpoint.tls }
        return try trust.configuration(for: Self.hostPort(of: url))
    }

    /// A redirect from HTTPS to plain HTTP is followed only to a host given as insecure: whatever
    /// comes over it could be anything.
    func refuseDowngrade(from url: String, to next: String, registry: String) throws {
        guard url.hasPrefix("https://"), next.hasPrefix("http://"),
            !configuration.trust.isInsecure(Self.hostPort(of: next))
        else { return }
        throw RegistryError.unreachable(
            registry: registry, url: url, reason: "redirected to plain HTTP (\(next)); refused")
    }

    /// One request, following redirects by hand: a redirect to another origin drops the
    /// Authorization header (Docker Hub sends blobs to a CDN with signed URLs).
    func execute(
        _ method: HTTPMethod, url: String, registry: String, endpoint: Endpoint, headers: HTTPHeaders,
        authorization: String?, body: HTTPClientRequest.Body? = nil
    ) async throws -> (HTTPClientResponse, String) {
        var currentURL = url
        var sendAuthorization = authorization
        for _ in 0..<10 {
            var request = HTTPClientRequest(url: currentURL)
            request.method = method
            request.headers = headers
            request.headers.replaceOrAdd(name: "User-Agent", value: configuration.userAgent)
            if let sendAuthorization { request.headers.replaceOrAdd(name: "Authorization", value: sendAuthorization) }
            request.tlsConfiguration = try tlsConfiguration(for: currentURL, endpoint: endpoint)
            request.body = body
            let response: HTTPClientResponse
            do {
                // The deadline covers connecting and the response head; a body then streams for
                // as long as data keeps arriving (the read timeout catches a stall). A request
                // with a body (a blob upload) gets its head only after its last byte, so its
                // deadline is far: the read timeout still catches a stall.
                response = try await http.execute(request, timeout: body == nil ? .seconds(120) : .hours(24))
            } catch {
                throw Self.connectionError(
                    error, registry: registry, url: currentURL, connectTimeout: configuration.connectTimeout)
            }
            guard
                let next = Self.redirectTarget(
                    status: response.status.code, headers: response.headers, from: currentURL)
            else { return (response, currentURL) }
            _ = try? await response.body.collect(upTo: 64 * 1024)
            try refuseDowngrade(from: currentURL, to: next, registry: registry)
            if Self.origin(of: next) != Self.origin(of: currentURL) { sendAuthorization = nil }
            currentURL = next
        }
        throw RegistryError.tooManyRedirects(url: url)
    }

    // MARK: Authentication

    func authorization(registry: String, scope: String?, challenge: AuthenticationChallenge?) async throws
        -> String?
    {
        let repository = scope.flatMap { Self.repository(inScope: $0) } ?? ""
        let credential = configuration.credentials.credential(registry: registry, repository: repository)
        var known = challenge
        if known == nil { known = await tokens.challenge(for: registry) }
        guard let challenge = known else { return nil }
        if challenge.isBasic { return credential?.basicHeader }
        guard challenge.isBearer, let realm = challenge.realm else { return nil }
        if case .registryToken(let token) = credential { return "Bearer \(token)" }
        let tokenScope = scope ?? challenge.scope ?? ""
        let token = try await tokens.token(registry: registry, scope: tokenScope) { [self] in
            try await fetchToken(realm: realm, service: challenge.service, scope: tokenScope, credential: credential)
        }
        return "Bearer \(token)"
    }

    /// The Docker token flow (`../shared/specs/docker/auth-token.md`); an identity token is
    /// exchanged with the OAuth2 refresh-token grant (`auth-oauth.md`).
    private func fetchToken(realm: String, service: String?, scope: String, credential: Credential?) async throws -> (
        String, TimeInterval
    ) {
        guard var components = URLComponents(string: realm), components.scheme == "https" || components.scheme == "http"
        else { throw RegistryError.tokenRequest(realm: realm, detail: "realm is not an http(s) URL") }
        var request: HTTPClientRequest
        if case .identityToken(let refreshToken) = credential {
            request = HTTPClientRequest(url: realm)
            request.method = .POST
            var form = URLComponents()
            form.queryItems =
                [
                    URLQueryItem(name: "grant_type", value: "refresh_token"),
                    URLQueryItem(name: "refresh_token", value: refreshToken),
                    URLQueryItem(name: "client_id", value: configuration.userAgent),
                    URLQueryItem(name: "scope", value: scope),
                ] + (service.map { [URLQueryItem(name: "service", value: $0)] } ?? [])
            request.headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
            request.body = .bytes(ByteBuffer(string: form.percentEncodedQuery ?? ""))
        } else {
            var items = components.queryItems ?? []
            if let service { items.append(URLQueryItem(name: "service", value: service)) }
            if !scope.isEmpty { items.append(URLQueryItem(name: "scope", value: scope)) }
            components.queryItems = items
            request = HTTPClientRequest(url: components.string ?? realm)
            if let basic = credential?.basicHeader { request.headers.add(name: "Authorization", value: basic) }
        }
        request.headers.add(name: "User-Agent", value: configuration.userAgent)
        if realm.hasPrefix("https://") {
            request.tlsConfiguration = try trust.configuration(for: Self.hostPort(of: realm))
        }
        let response: HTTPClientResponse
        let body: ByteBuffer
        do {
            response = try await http.execute(request, timeout: .seconds(60))
            body = try await response.body.collect(upTo: 1024 * 1024)
        } catch {
            throw RegistryError.tokenRequest(realm: realm, detail: Self.describe(error))
        }
        guard response.status == .ok else {
            throw RegistryError.tokenRequest(
                realm: realm,
                detail: "HTTP \(response.status.code)"
                    + (credential == nil ? " (anonymous; log in or pass --creds)" : " (credentials refused)"))
        }
        guard let decoded = try? JSONDecoder().decode(TokenResponse.self, from: Data(body.readableBytesView)),
            let token = decoded.token ?? decoded.accessToken, !token.isEmpty
        else { throw RegistryError.tokenRequest(realm: realm, detail: "response has no token") }
        return (token, TimeInterval(decoded.expiresIn ?? 60))
    }

    static func repository(inScope scope: String) -> String? {
        let parts = scope.split(separator: ":")
        guard parts.count >= 3, parts[0] == "repository" else { return nil }
        return parts[1..<(parts.count - 1)].joined(separator: ":")
    }

    // MARK: Endpoints

    struct Endpoint: Sendable {
        var baseURL: String
        var tls: TLSConfiguration?
    }

    /// Finds how to reach `registry` (once, then cached): HTTPS with its trust configuration, or,
    /// for an insecure registry, HTTPS without verification falling back to plain HTTP. The `/v2/`
    /// ping also learns the registry's authentication challenge.
    func endpoint(for registry: String) async throws -> Endpoint {
        try await endpoints.endpoint(for: registry) { try await self.discoverEndpoint(for: registry) }
    }

    private func discoverEndpoint(for registry: String) async throws -> Endpoint {
        let host = Self.apiHost(for: registry)
        // A name that does not resolve fails at once: no connection attempts, no retries.
        if let failure = try await NIOThreadPool.singleton.runIfActive({ Self.resolutionFailure(host) }) {
            throw RegistryError.unreachable(
                registry: registry, url: "https://\(host)/v2/", reason: "cannot resolve \(failure)")
        }
        let tls = try trust.configuration(for: host)
        var candidates = [Endpoint(baseURL: "https://\(host)", tls: tls)]
        if configuration.trust.isInsecure(registry) { candidates.append(Endpoint(baseURL: "http://\(host)", tls: nil)) }
        var lastError: (any Error)?
        for (position, candidate) in candidates.enumerated() {
            // With a fallback to try (insecure registries), HTTPS gets one quick attempt: a plain
            // HTTP server may never answer a TLS handshake.
            let hasFallback = position < candidates.count - 1
            let retry = hasFallback ? RetryPolicy(maxAttempts: 1) : configuration.retry
            let timeout: TimeAmount = hasFallback ? .seconds(3) : .seconds(30)
            do {
                try await retry.run { _ in
                    var request = HTTPClientRequest(url: candidate.baseURL + "/v2/")
                    request.tlsConfiguration = candidate.tls
                    request.headers.add(name: "User-Agent", value: configuration.userAgent)
                    let response: HTTPClientResponse
                    do {
                        response = try await pingOrRefusal(request, timeout: timeout, registry: registry)
                    } catch let error as RegistryError {
                        throw error
                    } catch {
                        throw Self.connectionError(
                            error, registry: registry, url: candidate.baseURL + "/v2/",
                            connectTimeout: configuration.connectTimeout)
                    }
                    _ = try? await response.body.collect(upTo: 64 * 1024)
                    if response.status.code >= 500 {
                        throw RegistryError.status(
                            registry: registry, url: candidate.baseURL + "/v2/", status: Int(response.status.code),
                            detail: "", retryAfter: nil)
                    }
                    if response.status == .unauthorized {
                        let challenges = response.headers["WWW-Authenticate"].flatMap(AuthenticationChallenge.parse)
                        if let challenge = challenges.first(where: \.isBearer) ?? challenges.first(where: \.isBasic) {
                            await tokens.setChallenge(challenge, for: registry)
                        }
                    }
                }
                return candidate
            } catch {
                lastError = error
                // Only an insecure registry falls back; a TLS failure elsewhere is final.
                if candidates.count == 1 { throw error }
            }
        }
        throw lastError ?? RegistryError.connection(registry: registry, url: host, underlying: "unreachable")
    }

    // MARK: Helpers

    static func origin(of url: String) -> String {
        guard let u = URL(string: url) else { return url }
        return "\(u.scheme ?? "")://\(u.host ?? ""):\(u.port ?? (u.scheme == "https" ? 443 : 80))"
    }

    static func hostPort(of url: String) -> String {
        guard let u = URL(string: url), let host = u.host else { return url }
        return u.port.map { "\(host):\($0)" } ?? host
    }

    /// A failed request: a TLS failure is final (trying again will not change the certificate);
    /// anything else is a connection error worth retrying.
    static func connectionError(_ error: any Error, registry: String, url: String, connectTimeout: Int = 10)
        -> RegistryError
    {
        if error is NIOSSLError || error is BoringSSLError {
            return .tls(registry: registry, url: url, underlying: describe(error))
        }
        // The HTTP client already retried the connection for the whole connect timeout.
        if let error = error as? HTTPClientError, error == .connectTimeout {
            return .unreachable(
                registry: registry, url: url,
                reason: "no connection within \(connectTimeout) s (--connect-timeout; no route, or a firewall?)")
        }
        return .connection(registry: registry, url: url, underlying: describe(error))
    }

    /// The discovery ping, and, when it has not answered within a second, a `probe` beside it: a
    /// port where nothing listens is then said so in a round trip (a retryable connection error,
    /// for `RetryPolicy`'s few seconds of backoff), where AsyncHTTPClient tries a refused
    /// connection again for its whole connect timeout, on each attempt (a wrong port took 43 s to
    /// report). A registry that answers is never probed (a probe's bare connection shows as a TLS
    /// handshake error in a registry's log).
    private func pingOrRefusal(_ request: HTTPClientRequest, timeout: TimeAmount, registry: String) async throws
        -> HTTPClientResponse
    {
        let http = self.http
        let connectTimeout = configuration.connectTimeout
        return try await withThrowingTaskGroup(of: HTTPClientResponse?.self) { group in
            group.addTask { try await http.execute(request, timeout: timeout) }
            group.addTask {
                try await Task.sleep(for: .seconds(1))
                try await Self.probe(request.url, registry: registry, timeout: connectTimeout)
                return nil
            }
            while let next = try await group.next() {
                guard let response = next else { continue }
                group.cancelAll()
                return response
            }
            throw CancellationError()
        }
    }

    /// One TCP connection to the host of `url`, closed at once: throws a retryable connection
    /// error when it is refused. Any other outcome is left to the request it goes beside.
    static func probe(_ url: String, registry: String, timeout: Int) async throws {
        guard let components = URLComponents(string: url), var host = components.host else { return }
        if host.hasPrefix("[") { host = String(host.dropFirst().dropLast()) }
        let port = components.port ?? (components.scheme == "http" ? 80 : 443)
        let refused: Bool
        do {
            let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(.seconds(Int64(timeout)))
                .connect(host: host, port: port).get()
            try? await channel.close()
            return
        } catch let error as IOError {
            refused = error.errnoCode == ECONNREFUSED
        } catch let error as NIOConnectionError {
            refused =
                !error.connectionErrors.isEmpty
                && error.connectionErrors.allSatisfy { ($0.error as? IOError)?.errnoCode == ECONNREFUSED }
        } catch {
            return
        }
        if refused {
            throw RegistryError.connection(registry: registry, url: url, underlying: "connection refused")
        }
    }

    /// Why `host` does not resolve (host name part only), or nil when it does or is an address.
    static func resolutionFailure(_ hostPort: String) -> String? {
        var host = Substring(hostPort)
        if host.hasPrefix("[") { return nil }  // an IPv6 address
        if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(String(host), nil, &hints, &result)
        if let result { freeaddrinfo(result) }
        guard status != 0 else { return nil }
        return "\(host): \(String(cString: gai_strerror(status)))"
    }

    /// BoringSSL's reasons in words ("certificate verify failed"), without its error codes and
    /// the source file paths of the build.
    static func tlsReason(_ error: BoringSSLError) -> String {
        let stack: NIOBoringSSLErrorStack
        switch error {
        case .sslError(let errors), .unknownError(let errors): stack = errors
        default: return "TLS: \(error)"
        }
        // Each reads "Error: CODE error:HEX:LIBRARY:FUNCTION:REASON at FILE:LINE".
        var reasons: [String] = []
        for entry in stack {
            let text = entry.description
            guard let start = text.range(of: "error:") else {
                // NIO's own ("Error:  EOF during handshake"): its words as they are.
                let own = text.replacingOccurrences(of: "Error:", with: "").trimmingCharacters(in: .whitespaces)
                if !own.isEmpty && !reasons.contains(own) { reasons.append(own) }
                continue
            }
            var message = text[start.lowerBound...]
            if let at = message.range(of: " at ") { message = message[..<at.lowerBound] }
            guard let reason = message.split(separator: ":").last, !reason.isEmpty else { continue }
            let words = reason.replacingOccurrences(of: "_", with: " ").lowercased()
            if !reasons.contains(words) { reasons.append(words) }
        }
        return reasons.isEmpty ? "TLS handshake failed" : reasons.joined(separator: "; ")
    }

    static func describe(_ error: any Error) -> String {
        if let error = error as? RegistryError { return error.description }
        if case .handshakeFailed(let error) = error as? NIOSSLError { return tlsReason(error) }
        if let error = error as? NIOSSLError { return "TLS: \(error)" }
        if let error = error as? BoringSSLError { return tlsReason(error) }
        // A socket's error, as the system names it ("connection refused"), without NIO's wrapping.
        if let error = error as? IOError { return SystemError.words(error.errnoCode) }
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return describe(first.error)
        }
        return String(describing: error)
    }
}

/// How each registry is reached, found once. Concurrent first requests to a registry share one
/// discovery: one `/v2/` ping, so one TLS context is made and cached before other connections ask
/// for it (when five images of a registry were resolved at once, each made its own, one after
/// another on AsyncHTTPClient's queue, each reading the system trust store).
actor EndpointCache {
    private var endpoints: [String: RegistryClient.Endpoint] = [:]
    private var discovering = SharedWork<String, RegistryClient.Endpoint>()

    func endpoint(
        for registry: String, discover: @escaping @Sendable () async throws -> RegistryClient.Endpoint
    ) async throws -> RegistryClient.Endpoint {
        if let known = endpoints[registry] { return known }
        let (task, started) = discovering.join(registry, discover)
        defer { if started { discovering.ended(registry, task) } }
        let endpoint = try await sharedOutcome(of: task) { await self.waiterCancelled(registry, task) }
        if started { endpoints[registry] = endpoint }
        return endpoint
    }

    private func waiterCancelled(_ registry: String, _ task: Task<RegistryClient.Endpoint, any Error>) {
        discovering.cancelled(registry, task)
    }
}
