import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import OCICore
import OCIStore

/// The request context: Hummingbird's core storage and the peer's address for the access log.
public struct RegistryRequestContext: RequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?
    /// The connection's event loop: a blob's body waits for it between chunks (see ``BlobFileReader``).
    public let eventLoop: (any EventLoop)?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        eventLoop = source.channel.eventLoop
    }
}

/// Another application on the registry's port (the web console under `/ui/`): asked first
/// whether it takes a path; the Distribution API keeps every other one.
public protocol SideResponder: Sendable {
    func takes(_ request: Request) -> Bool
    /// The response, and the user it was for (for the access log). `remote` is the client's
    /// address (`X-Forwarded-For` from a trusted proxy).
    func respond(to request: Request, context: RegistryRequestContext, remote: String) async throws -> (
        Response, String?
    )
}

/// The pull side of the OCI Distribution API over a ``RegistryContent``
/// (`../shared/specs/oci-distribution/spec.md`): `/v2/`, manifests and blobs (GET, HEAD, ranges),
/// `_catalog`, `tags/list`, referrers, and `/healthz`. Writes are refused until the write path lands.
public struct RegistryResponder: HTTPResponder {
    public typealias Context = RegistryRequestContext

    let content: RegistryContent
    let accessLog: AccessLog?
    /// Refuse every write (push, delete) with 405 UNSUPPORTED.
    let readOnly: Bool
    let uploads: UploadTracker
    let limits: UploadLimits
    /// Peers whose `X-Forwarded-For` is believed (TLS-terminating proxies in front of `--plain-http`).
    let trustedProxies: Set<String>
    /// Access control; nil serves everyone everything (in-process tests only).
    let authenticator: Authenticator?
    /// `https` or `http`: the scheme of the token realm clients are sent to.
    let realmScheme: String
    /// The web console, when served.
    let side: (any SideResponder)?
    /// A pull-through cache asked for what the store lacks, when configured.
    let pullThrough: (any PullThrough)?
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let apiVersion = HTTPField.Name("Docker-Distribution-API-Version")!
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let contentDigest = HTTPField.Name("Docker-Content-Digest")!
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let filtersApplied = HTTPField.Name("OCI-Filters-Applied")!
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let link = HTTPField.Name("Link")!

    public init(
        content: RegistryContent, accessLog: AccessLog?, readOnly: Bool = false, authenticator: Authenticator? = nil,
        realmScheme: String = "https", limits: UploadLimits = UploadLimits(), trustedProxies: Set<String> = [],
        side: (any SideResponder)? = nil, pullThrough: (any PullThrough)? = nil
    ) {
        self.side = side
        self.pullThrough = pullThrough
        self.limits = limits
        self.trustedProxies = trustedProxies
        self.content = content
        self.accessLog = accessLog
        self.readOnly = readOnly
        self.uploads = UploadTracker()
        self.authenticator = authenticator
        self.realmScheme = realmScheme
    }

    public func respond(to request: Request, context: Context) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        var caller = Caller.open
        do {
            let remote = Self.client(
                peer: context.remoteAddress?.ipAddress, forwardedFor: request.headers[Self.forwardedFor],
                trusted: trustedProxies)
            if let side, side.takes(request) {
                let (answer, user) = try await side.respond(to: request, context: context, remote: remote)
                if let user { caller = .identity(Identity(name: user, grant: nil), basic: false) }
                response = answer
                log(request, response: response, caller: caller, context: context, started: started)
                return response
            }
            let requested = DistributionRoute(path: request.uri.path)
            if requested == .token {
                response = try await token(request, remote: remote)
            } else {
                let (known, route) = try await authorize(requested, request, remote: remote)
                caller = known
                response = try await self.route(route, request, caller: caller, eventLoop: context.eventLoop)
            }
        } catch let challenge as Challenge {
            // A refused request is logged with who was refused.
            if let user = challenge.user { caller = .identity(Identity(name: user, grant: nil), basic: false) }
            response = challenge.response(for: request)
        } catch let error as DistributionError {
            response = Self.errorResponse(error, for: request)
        } catch {
            context.logger.error("\(request.method) \(request.uri): \(error)")
            // The cause goes to the server's log only: it may name paths under the data directory.
            response = Self.errorResponse(
                DistributionError(status: 500, code: .unknown, message: "internal error", detail: nil), for: request)
        }
        response.headers[Self.apiVersion] = "registry/2.0"
        log(request, response: response, caller: caller, context: context, started: started)
        return response
    }

    private func log(
        _ request: Request, response: Response, caller: Caller, context: Context, started: ContinuousClock.Instant
    ) {
        guard let accessLog else { return }
        let elapsed = ContinuousClock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        accessLog.record(
            remote: Self.client(
                peer: context.remoteAddress?.ipAddress, forwardedFor: request.headers[Self.forwardedFor],
                trusted: trustedProxies),
            user: caller.name, method: request.method.rawValue,
            target: request.uri.description, status: response.status.code,
            bytes: request.method == .head ? 0 : response.body.contentLength, seconds: seconds,
            userAgent: request.headers[.userAgent])
    }

    func route(_ route: DistributionRoute, _ request: Request, caller: Caller, eventLoop: (any EventLoop)? = nil)
        async throws -> Response
    {
        let method = request.method
        if method != .get && method != .head, readOnly, route.repository != nil {
            throw DistributionError.unsupported("\(method.rawValue): the appliance is read-only")
        }
        // The route parsed the name once; handlers get the type.
        let name = route.repository
        switch (route, method, name) {
        case (.notFound, _, _):
            throw DistributionError(status: 404, code: .unsupported, message: "not found", detail: request.uri.path)
        case (.invalidName(let name), _, _):
            throw DistributionError.nameInvalid(name)
        case (.base, .get, _), (.base, .head, _):
            return Self.json(Array("{}".utf8), for: request)
        case (.health, .get, _), (.health, .head, _):
            let repositories = try await content.read { try $0.repositoryCount() }
            return Self.json(Array(#"{"status":"ok","repositories":\#(repositories)}"#.utf8), for: request)
        case (.catalog, .get, _):
            return try await catalog(request, caller: caller)
        case (.tags, .get, let name?):
            return try await tags(name, request)
        case (.manifest(_, let reference), .get, let name?), (.manifest(_, let reference), .head, let name?):
            return try await manifest(name, Self.manifestReference(reference), request, caller: caller)
        case (.manifest(_, let reference), .put, let name?):
            return try await putManifest(name, reference, request)
        case (.manifest(_, let reference), .delete, let name?):
            return try await deleteManifest(name, Self.manifestReference(reference))
        case (.blob(_, let digest), .get, let name?), (.blob(_, let digest), .head, let name?):
            return try await blob(name, Self.digest(digest), request, caller: caller, eventLoop: eventLoop)
        case (.blob(_, let digest), .delete, let name?):
            return try await deleteBlob(name, Self.digest(digest))
        case (.blobUpload(_, nil), .post, let name?):
            return try await startUpload(name, request, caller: caller)
        case (.blobUpload(_, let session?), _, let name?):
            return try await continueUpload(name, session, request)
        case (.referrers(_, let digest), .get, let name?):
            return try await referrers(name, Self.digest(digest), request)
        default:
            throw DistributionError.unsupported("\(method.rawValue) \(request.uri.path)")
        }
    }

    static func digest(_ text: String) throws(DistributionError) -> Digest {
        do {
            return try Digest(text)
        } catch {
            throw DistributionError.digestInvalid(text)
        }
    }

    static func manifestReference(_ text: String) throws(DistributionError) -> ManifestReference {
        do {
            return try ManifestReference(text)
        } catch {
            if text.contains(":") { throw DistributionError.digestInvalid(text) }
            throw DistributionError.manifestUnknown(text)
        }
    }

    /// Reads through a mirror configuration: a repository that does not exist as named but does
    /// under its source registry's name (`library/nginx` or `?ns=docker.io` → `docker.io/library/nginx`)
    /// is served from there; failing that, a name the pull-through cache covers is served (and its
    /// access checked) as the cache names it. Writes always go to the name given.
    func mirrorAware(_ route: DistributionRoute, _ request: Request) async throws -> DistributionRoute {
        guard request.method == .get || request.method == .head, let name = route.repository else { return route }
        let namespace = request.uri.queryParameters.get("ns").map { String($0) }
        let mirroredName = DistributionRoute.mirroredName(name.value, namespace: namespace).flatMap {
            try? RepositoryName($0)
        }
        let cached = pullThrough?.cacheName(name, namespace: namespace)
        guard mirroredName != nil || (cached != nil && cached != name) else { return route }
        let served = try await content.read { storage -> RepositoryName? in
            if namespace == nil, try storage.contains(repository: name) { return nil }
            if let mirroredName, try storage.contains(repository: mirroredName) { return mirroredName }
            if let cached, try !storage.contains(repository: name) { return cached }
            return nil
        }
        return served.map { route.renamed($0) } ?? route
    }

    // MARK: Listing

    func catalog(_ request: Request, caller: Caller) async throws -> Response {
        let n = try Page.parseCount(request.uri.queryParameters.get("n"))
        let last = request.uri.queryParameters.get("last").map { String($0) }
        // Up to n + 1 names the caller may see, so the page knows whether another follows.
        let visible = try await content.read { storage in
            var names: [String] = []
            var cursor = last.flatMap { try? RepositoryName($0) }
            let batch = 1000
            while true {
                let found = try storage.repositories(after: cursor, limit: batch)
                names += found.map(\.value).filter { caller.allows(.pull, on: $0) }
                if let n, names.count > n { break }
                guard found.count == batch, let next = found.last else { break }
                cursor = next
            }
            return names
        }
        let page = Page(sorted: visible, n: n, last: nil)
        var response = Self.json(Self.encode(["repositories": page.entries] as [String: [String]]), for: request)
        if let next = page.nextLast, let n {
            response.headers[Self.link] = "</v2/_catalog?last=\(Self.queryEscaped(next))&n=\(n)>; rel=\"next\""
        }
        return response
    }

    func tags(_ name: RepositoryName, _ request: Request) async throws -> Response {
        let n = try Page.parseCount(request.uri.queryParameters.get("n"))
        let last = request.uri.queryParameters.get("last").map { String($0) }
        let tags = try await content.read { storage -> [String]? in
            guard try storage.contains(repository: name) else { return nil }
            return try storage.tags(in: name, after: last, limit: n.map { $0 + 1 }).map(\.value)
        }
        guard let tags else { throw DistributionError.nameUnknown(name.value) }
        let page = Page(sorted: tags, n: n, last: nil)
        struct TagList: Encodable {
            var name: String
            var tags: [String]
        }
        var response = Self.json(Self.encode(TagList(name: name.value, tags: page.entries)), for: request)
        if let next = page.nextLast, let n {
            response.headers[Self.link] =
                "</v2/\(name)/tags/list?last=\(Self.queryEscaped(next))&n=\(n)>; rel=\"next\""
        }
        return response
    }

    // MARK: Manifests

    func manifest(
        _ name: RepositoryName, _ reference: ManifestReference, _ request: Request, caller: Caller = .open
    ) async throws -> Response {
        let resolved = try await content.read { storage -> Digest?? in
            guard let digest = try storage.resolve(reference, in: name) else {
                return try storage.contains(repository: name) ? .some(nil) : nil
            }
            return digest
        }
        let manifest: StoredManifest
        if let found = resolved, let digest = found {
            manifest = try await load(digest)
        } else if resolved == nil, let pullThrough, !caller.isPushing(to: name),
            let pulled = try await pullThrough.manifest(
                reference, in: name, namespace: request.uri.queryParameters.get("ns").map { String($0) })
        {
            do {
                manifest = try StoredManifest(digest: pulled.digest, bytes: pulled.bytes)
            } catch {
                throw DistributionError(
                    status: 502, code: .manifestInvalid, message: "upstream manifest unreadable",
                    detail: pulled.digest.description)
            }
        } else if resolved == nil {
            throw DistributionError.nameUnknown(name.value)
        } else {
            throw DistributionError.manifestUnknown(reference.description)
        }
        let digest = manifest.digest
        var headers = manifest.headers
        if Self.matches(request.headers[.ifNoneMatch], digest) {
            headers[.contentLength] = nil
            return Response(status: .notModified, headers: headers)
        }
        if request.method == .head { return Response(status: .ok, headers: headers) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: manifest.body))
    }

    // MARK: Blobs

    func blob(
        _ name: RepositoryName, _ digest: Digest, _ request: Request, caller: Caller = .open,
        eventLoop: (any EventLoop)? = nil
    )
        async throws -> Response
    {
        let path = content.blobPath(digest)
        let served = try await content.read { storage -> (known: Bool, size: Int64?) in
            guard try storage.contains(repository: name) else { return (false, nil) }
            guard try storage.servesBlob(digest, in: name) else { return (true, nil) }
            return (true, FileSystem.size(of: path))
        }
        let size: Int64
        var pulled: PulledBlob?
        if let stored = served.size {
            size = stored
        } else if !served.known, let pullThrough, !caller.isPushing(to: name),
            let found = try await pullThrough.blob(
                digest, in: name, namespace: request.uri.queryParameters.get("ns").map { String($0) },
                head: request.method == .head)
        {
            size = found.size
            pulled = found
        } else if !served.known {
            throw DistributionError.nameUnknown(name.value)
        } else {
            throw DistributionError.blobUnknown(digest.description)
        }
        var headers: HTTPFields = [
            .contentType: "application/octet-stream",
            Self.contentDigest: digest.description,
            .eTag: "\"\(digest)\"",
            .acceptRanges: "bytes",
            .cacheControl: "max-age=31536000",
        ]
        if Self.matches(request.headers[.ifNoneMatch], digest) {
            return Response(status: .notModified, headers: headers)
        }
        let status: HTTPResponse.Status
        let range: ClosedRange<Int64>?
        switch ByteRange(header: request.headers[.range], size: size) {
        case .whole:
            status = .ok
            range = size > 0 ? 0...(size - 1) : nil
        case .partial(let requested):
            status = .partialContent
            range = requested
            headers[.contentRange] = "bytes \(requested.lowerBound)-\(requested.upperBound)/\(size)"
        case .unsatisfiable:
            headers[.contentRange] = "bytes */\(size)"
            let error = DistributionError(
                status: 416, code: .blobUnknown, message: "requested range not satisfiable",
                detail: digest.description)
            var response = Self.errorResponse(error, for: request)
            response.headers.append(contentsOf: headers.filter { $0.name == .contentRange })
            return response
        }
        let length = range.map { $0.upperBound - $0.lowerBound + 1 } ?? 0
        headers[.contentLength] = String(length)
        guard request.method != .head, let range else { return Response(status: status, headers: headers) }
        let pulledBlob = pulled
        let body = ResponseBody(contentLength: Int(length)) { writer in
            let send: (ByteBuffer) async throws -> Void = { buffer in
                try await writer.write(buffer)
                try await BlobFileReader.drained(eventLoop)
            }
            if let pulled = pulledBlob {
                try await pulled.read(range, send)
            } else {
                try await BlobFileReader.read(path, range, send)
            }
            try await writer.finish(nil)
        }
        return Response(status: status, headers: headers, body: body)
    }

    // MARK: Referrers

    func referrers(_ name: RepositoryName, _ digest: Digest, _ request: Request) async throws -> Response {
        // Never 404 (spec, "Listing Referrers"): an unknown repository has no referrers.
        let filter = request.uri.queryParameters.get("artifactType").map { String($0) }
        let found = try await content.read { try $0.referrers(of: digest, in: name, artifactType: filter) }
        var descriptors: [Descriptor] = []
        for candidate in found { descriptors.append(try await load(candidate).descriptor) }
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: descriptors)
        var response = Self.json(Self.encode(index), for: request)
        response.headers[.contentType] = MediaType.ociIndex
        if filter != nil { response.headers[Self.filtersApplied] = "artifactType" }
        return response
    }

    // MARK: Helpers

    func load(_ digest: Digest) async throws -> StoredManifest {
        do {
            return try await content.manifest(digest)
        } catch {
            // Never a server path on the wire: the detail names the digest only.
            throw DistributionError(
                status: 404, code: .manifestUnknown, message: "manifest missing from store",
                detail: digest.description)
        }
    }

    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let forwardedFor = HTTPField.Name("X-Forwarded-For")!

    /// The client's address: the peer, or — when the peer is a trusted proxy — the last address in
    /// `X-Forwarded-For` that is not a trusted proxy itself (what a client writes there is not believed).
    static func client(peer: String?, forwardedFor: String?, trusted: Set<String>) -> String {
        guard let peer else { return "-" }
        guard trusted.contains(peer), let forwardedFor else { return peer }
        let hops = forwardedFor.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
        return hops.last { !trusted.contains($0) && !$0.isEmpty } ?? peer
    }

    static func matches(_ ifNoneMatch: String?, _ digest: Digest) -> Bool {
        guard let ifNoneMatch else { return false }
        return ifNoneMatch.split(separator: ",").contains {
            let tag = $0.trimmingCharacters(in: .whitespaces)
            return tag == "*" || tag == "\"\(digest)\"" || tag == "W/\"\(digest)\""
        }
    }

    static func json(_ bytes: [UInt8], for request: Request) -> Response {
        var headers: HTTPFields = [.contentType: "application/json", .contentLength: String(bytes.count)]
        if request.method == .head { return Response(status: .ok, headers: headers) }
        headers[.contentLength] = nil
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }

    static func encode<Value: Encodable>(_ value: Value) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8))
    }

    static func errorResponse(_ error: DistributionError, for request: Request) -> Response {
        let body = error.body
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8", .contentLength: String(body.count)]
        let status = HTTPResponse.Status(code: error.status)
        if error.status == 429 { headers[.retryAfter] = String(Authenticator.failureWindow) }
        if request.method == .head { return Response(status: status, headers: headers) }
        headers[.contentLength] = nil
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    static func queryEscaped(_ value: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}

/// Reads blob files in fixed chunks on the files pool: memory per transfer stays at one chunk
/// however large the blob. The one loop that serves bytes from disk (the store's blobs, the
/// pull-through cache's files and the downloads it follows as they grow).
public enum BlobFileReader {
    public static let chunk = 512 * 1024

    /// Calls `body` with `range` of the file at `path`, in order.
    public static func read(_ path: String, _ range: ClosedRange<Int64>, _ body: (ByteBuffer) async throws -> Void)
        async throws
    {
        // Its own pool: commits waiting for the database's write lock never hold up a download.
        let pool = BlockingPools.files
        let fd = try await pool.runIfActive {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw StoreError.io("open \(path)", errno: errno) }
            return fd
        }
        defer { close(fd) }
        var offset = range.lowerBound
        while offset <= range.upperBound {
            let count = Int(min(Int64(chunk), range.upperBound - offset + 1))
            let at = offset
            let buffer = try await pool.runIfActive { try pread(fd, count: count, at: at) }
            offset += Int64(buffer.readableBytes)
            try await body(buffer)
        }
    }

    /// Waits until the connection's event loop ran what was queued on it, the chunk just written
    /// included. A response body's writer returns as soon as a chunk is queued for the event loop,
    /// and while the loop is busy (TLS for many fast clients) chunks queue up unbounded: 8 clients
    /// of one 256 MiB blob held 1 GiB. Waiting here keeps one chunk per download in flight.
    public static func drained(_ eventLoop: (any EventLoop)?) async throws {
        guard let eventLoop else { return }
        try await eventLoop.submit {}.get()
    }

    /// Up to `count` bytes at `offset` (fewer only where the file ends; none is an error).
    public static func pread(_ fd: Int32, count: Int, at offset: Int64) throws -> ByteBuffer {
        var buffer = ByteBufferAllocator().buffer(capacity: count)
        let read = try buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            while true {
                let n = Glibc.pread(fd, base, count, off_t(offset))
                if n < 0 && errno == EINTR { continue }
                guard n >= 0 else { throw StoreError.io("read blob file", errno: errno) }
                return n
            }
        }
        guard read > 0 else { throw StoreError.io("read blob file: short read", errno: EIO) }
        return buffer
    }
}
