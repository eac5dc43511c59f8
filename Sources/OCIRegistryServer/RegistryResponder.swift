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

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }
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
    /// Access control; nil serves everyone everything (in-process tests only).
    let authenticator: Authenticator?
    /// `https` or `http`: the scheme of the token realm clients are sent to.
    let realmScheme: String
    static let apiVersion = HTTPField.Name("Docker-Distribution-API-Version")!
    static let contentDigest = HTTPField.Name("Docker-Content-Digest")!
    static let filtersApplied = HTTPField.Name("OCI-Filters-Applied")!
    static let link = HTTPField.Name("Link")!
    static let blobChunk = 512 * 1024

    public init(
        content: RegistryContent, accessLog: AccessLog?, readOnly: Bool = false, authenticator: Authenticator? = nil,
        realmScheme: String = "https"
    ) {
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
            let route = try mirrorAware(DistributionRoute(path: request.uri.path), request)
            let remote = context.remoteAddress?.ipAddress ?? "-"
            if route == .token {
                response = try await token(request, remote: remote)
            } else {
                caller = try authorize(route, request, remote: remote)
                response = try await self.route(route, request, caller: caller)
            }
        } catch let challenge as Challenge {
            response = challenge.response(for: request)
        } catch let error as DistributionError {
            response = Self.errorResponse(error, for: request)
        } catch {
            context.logger.error("\(request.method) \(request.uri): \(error)")
            response = Self.errorResponse(
                DistributionError(status: 500, code: .unknown, message: "internal error", detail: "\(error)"),
                for: request)
        }
        response.headers[Self.apiVersion] = "registry/2.0"
        if let accessLog {
            let elapsed = ContinuousClock.now - started
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            accessLog.record(
                remote: context.remoteAddress?.ipAddress ?? "-", user: caller.name, method: request.method.rawValue,
                target: request.uri.description, status: response.status.code,
                bytes: request.method == .head ? 0 : response.body.contentLength, seconds: seconds,
                userAgent: request.headers[.userAgent])
        }
        return response
    }

    func route(_ route: DistributionRoute, _ request: Request, caller: Caller) async throws -> Response {
        let method = request.method
        if method != .get && method != .head, readOnly, route.repository != nil {
            throw DistributionError.unsupported("\(method.rawValue): the appliance is read-only")
        }
        switch (route, method) {
        case (.notFound, _):
            throw DistributionError(status: 404, code: .unsupported, message: "not found", detail: request.uri.path)
        case (.invalidName(let name), _):
            throw DistributionError.nameInvalid(name)
        case (.base, .get), (.base, .head):
            return Self.json(Array("{}".utf8), for: request)
        case (.health, .get), (.health, .head):
            let repositories = try content.current().repositories.count
            return Self.json(Array(#"{"status":"ok","repositories":\#(repositories)}"#.utf8), for: request)
        case (.catalog, .get):
            return try catalog(request, caller: caller)
        case (.tags(let name), .get):
            return try tags(name, request)
        case (.manifest(let name, let reference), .get), (.manifest(let name, let reference), .head):
            return try await manifest(name, reference, request)
        case (.manifest(let name, let reference), .put):
            return try await putManifest(name, reference, request)
        case (.manifest(let name, let reference), .delete):
            return try await deleteManifest(name, reference)
        case (.blob(let name, let digest), .get), (.blob(let name, let digest), .head):
            return try await blob(name, digest, request)
        case (.blob(let name, let digest), .delete):
            return try await deleteBlob(name, digest)
        case (.blobUpload(let name, nil), .post):
            return try await startUpload(name, request, caller: caller)
        case (.blobUpload(let name, let session?), _):
            return try await continueUpload(name, session, request)
        case (.referrers(let name, let digest), .get):
            return try await referrers(name, digest, request)
        default:
            throw DistributionError.unsupported("\(method.rawValue) \(request.uri.path)")
        }
    }

    /// Reads through a mirror configuration: a repository that does not exist as named but does
    /// under its source registry's name (`library/nginx` or `?ns=docker.io` → `docker.io/library/nginx`)
    /// is served from there. Writes always go to the name given.
    func mirrorAware(_ route: DistributionRoute, _ request: Request) throws -> DistributionRoute {
        guard request.method == .get || request.method == .head, let name = route.repository,
            let mirrored = DistributionRoute.mirroredName(name, namespace: request.uri.queryParameters.get("ns"))
        else { return route }
        let repositories = try content.current().state.repositories
        if repositories[name] != nil && request.uri.queryParameters.get("ns") == nil { return route }
        return repositories[mirrored] != nil ? route.renamed(mirrored) : route
    }

    // MARK: Listing

    func catalog(_ request: Request, caller: Caller) throws -> Response {
        let repositories = try content.current().repositories.filter { caller.allows(.pull, on: $0) }
        let n = try Page.parseCount(request.uri.queryParameters.get("n"))
        let page = Page(sorted: repositories, n: n, last: request.uri.queryParameters.get("last"))
        var response = Self.json(Self.encode(["repositories": page.entries]), for: request)
        if let next = page.nextLast, let n {
            response.headers[Self.link] = "</v2/_catalog?last=\(Self.queryEscaped(next))&n=\(n)>; rel=\"next\""
        }
        return response
    }

    func tags(_ name: String, _ request: Request) throws -> Response {
        let repository = try self.repository(name)
        let n = try Page.parseCount(request.uri.queryParameters.get("n"))
        let page = Page(sorted: repository.tags.keys.sorted(), n: n, last: request.uri.queryParameters.get("last"))
        struct TagList: Encodable {
            var name: String
            var tags: [String]
        }
        var response = Self.json(Self.encode(TagList(name: name, tags: page.entries)), for: request)
        if let next = page.nextLast, let n {
            response.headers[Self.link] = "</v2/\(name)/tags/list?last=\(Self.queryEscaped(next))&n=\(n)>; rel=\"next\""
        }
        return response
    }

    // MARK: Manifests

    func manifest(_ name: String, _ reference: String, _ request: Request) async throws -> Response {
        let repository = try self.repository(name)
        let digest: Digest
        if reference.contains(":") {
            guard let parsed = try? Digest(reference) else { throw DistributionError.digestInvalid(reference) }
            guard repository.manifests.contains(parsed) else { throw DistributionError.manifestUnknown(reference) }
            digest = parsed
        } else {
            guard let tagged = repository.tags[reference] else { throw DistributionError.manifestUnknown(reference) }
            digest = tagged
        }
        let manifest = try await load(digest)
        var headers: HTTPFields = [
            .contentType: manifest.mediaType,
            Self.contentDigest: digest.description,
            .eTag: "\"\(digest)\"",
            .contentLength: String(manifest.bytes.count),
        ]
        if Self.matches(request.headers[.ifNoneMatch], digest) {
            headers[.contentLength] = nil
            return Response(status: .notModified, headers: headers)
        }
        if request.method == .head { return Response(status: .ok, headers: headers) }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: manifest.bytes)))
    }

    // MARK: Blobs

    func blob(_ name: String, _ digestString: String, _ request: Request) async throws -> Response {
        guard let digest = try? Digest(digestString) else { throw DistributionError.digestInvalid(digestString) }
        let repository = try self.repository(name)
        guard repository.blobs.contains(digest) || repository.manifests.contains(digest),
            let size = FileSystem.size(of: content.blobPath(digest))
        else { throw DistributionError.blobUnknown(digestString) }
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
                status: 416, code: .blobUnknown, message: "requested range not satisfiable", detail: digestString)
            var response = Self.errorResponse(error, for: request)
            response.headers.append(contentsOf: headers.filter { $0.name == .contentRange })
            return response
        }
        let length = range.map { $0.upperBound - $0.lowerBound + 1 } ?? 0
        headers[.contentLength] = String(length)
        guard request.method != .head, let range else { return Response(status: status, headers: headers) }
        let path = content.blobPath(digest)
        let body = ResponseBody(contentLength: Int(length)) { writer in
            try await Self.stream(path: path, range: range, to: &writer)
        }
        return Response(status: status, headers: headers, body: body)
    }

    /// Streams `range` of a file in fixed chunks read on the thread pool: memory per transfer
    /// stays at one chunk however large the blob.
    static func stream(path: String, range: ClosedRange<Int64>, to writer: inout any ResponseBodyWriter) async throws {
        let io = NonBlockingFileIO(threadPool: .singleton)
        let allocator = ByteBufferAllocator()
        try await io.withFileHandle(path: path, mode: .read) { file in
            var offset = range.lowerBound
            while offset <= range.upperBound {
                let count = Int(min(Int64(blobChunk), range.upperBound - offset + 1))
                let buffer = try await io.read(
                    fileHandle: file, fromOffset: offset, byteCount: count, allocator: allocator)
                guard buffer.readableBytes > 0 else { throw DistributionError.blobUnknown("\(path): short read") }
                offset += Int64(buffer.readableBytes)
                try await writer.write(buffer)
            }
        }
        try await writer.finish(nil)
    }

    // MARK: Referrers

    func referrers(_ name: String, _ digestString: String, _ request: Request) async throws -> Response {
        guard let digest = try? Digest(digestString) else { throw DistributionError.digestInvalid(digestString) }
        // Never 404 (spec, "Listing Referrers"): an unknown repository has no referrers.
        let repository = try content.current().state.repositories[name] ?? RepositoryState()
        let filter = request.uri.queryParameters.get("artifactType")
        var descriptors: [Descriptor] = []
        for candidate in repository.manifests.sorted() {
            let manifest = try await load(candidate)
            guard manifest.subject == digest else { continue }
            if let filter, manifest.artifactType != filter { continue }
            descriptors.append(manifest.descriptor)
        }
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: descriptors)
        var response = Self.json(Self.encode(index), for: request)
        response.headers[.contentType] = MediaType.ociIndex
        if filter != nil { response.headers[Self.filtersApplied] = "artifactType" }
        return response
    }

    // MARK: Helpers

    /// A repository that holds something (a manifest, or a pushed blob).
    func repository(_ name: String) throws -> RepositoryState {
        guard let repository = try content.current().state.repositories[name],
            !repository.manifests.isEmpty || !repository.blobs.isEmpty
        else {
            throw DistributionError.nameUnknown(name)
        }
        return repository
    }

    func load(_ digest: Digest) async throws -> StoredManifest {
        if let cached = content.cachedManifest(digest) { return cached }
        let content = self.content
        do {
            return try await NIOThreadPool.singleton.runIfActive { try content.manifest(digest) }
        } catch let error as StoreError {
            throw DistributionError(
                status: 404, code: .manifestUnknown, message: "manifest missing from store", detail: "\(error)")
        }
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
