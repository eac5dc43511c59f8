import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OCICore

/// Where a blob's bytes go while they stream; verification happens in the client before
/// ``RegistryClient/fetchBlob(_:repository:registry:into:progress:)`` returns.
public protocol BlobSink: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// A whole batch, which the sink may keep (a sink that sends it on need not copy it).
    func write(buffer: ByteBuffer) throws
    /// Drops what was written, before the blob is fetched again.
    func reset() throws
}

extension BlobSink {
    public func write(buffer: ByteBuffer) throws {
        try buffer.withUnsafeReadableBytes { try write($0) }
    }
}

extension RegistryClient {
    /// Fetches a manifest or index by tag or digest, keeping its bytes exactly as served.
    /// When `reference` is a digest, the bytes must hash to it.
    public func fetchManifest(registry: String, repository: RepositoryName, reference: ManifestReference) async throws
        -> ManifestDocument
    {
        let what = "\(registry)/\(repository)\(reference.digest == nil ? ":" : "@")\(reference)"
        return try await configuration.retry.run { _ in
            let response: HTTPClientResponse
            do {
                response = try await send(
                    .GET, registry: registry, path: "/v2/\(repository)/manifests/\(reference)",
                    scope: "repository:\(repository):pull",
                    headers: ["Accept": MediaType.acceptedManifestTypes.joined(separator: ", ")])
            } catch RegistryError.notFound(let registry, _, let detail) {
                throw RegistryError.notFound(registry: registry, what: "manifest \(what)", detail: detail)
            }
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: ManifestDocument.maximumSize)
            } catch let error as NIOTooManyBytesError {
                _ = error
                throw RegistryError.invalidManifest(what: what, underlying: .tooLarge(ManifestDocument.maximumSize + 1))
            } catch {
                throw RegistryError.connection(registry: registry, url: what, underlying: Self.describe(error))
            }
            let pinned = reference.digest
            let document: ManifestDocument
            do {
                document = try ManifestDocument(
                    bytes: Array(body.readableBytesView),
                    declaredMediaType: response.headers.first(name: "Content-Type"),
                    algorithm: pinned?.algorithm ?? .sha256)
            } catch let error as ManifestError {
                throw RegistryError.invalidManifest(what: what, underlying: error)
            }
            if let pinned, pinned != document.digest {
                throw RegistryError.manifestDigestMismatch(what: what, expected: pinned, found: document.digest)
            }
            return document
        }
    }

    /// The manifests whose `subject` is `subject`, from the OCI 1.1 referrers API
    /// (`GET /v2/NAME/referrers/DIGEST`), or nil when the registry does not offer it (a 404, or an
    /// answer that is not an index: the distribution registry 2.x has no such route).
    public func fetchReferrers(registry: String, repository: RepositoryName, subject: Digest) async throws
        -> [Descriptor]?
    {
        try await configuration.retry.run { _ -> [Descriptor]? in
            let response: HTTPClientResponse
            do {
                response = try await send(
                    .GET, registry: registry, path: "/v2/\(repository)/referrers/\(subject)",
                    scope: "repository:\(repository):pull", headers: ["Accept": MediaType.ociIndex])
            } catch RegistryError.notFound {
                return nil
            }
            let body: ByteBuffer
            do {
                body = try await response.body.collect(upTo: ManifestDocument.maximumSize)
            } catch {
                throw RegistryError.connection(
                    registry: registry, url: "/v2/\(repository)/referrers/\(subject)", underlying: Self.describe(error))
            }
            guard let index = try? JSONDecoder().decode(ImageIndex.self, from: Data(body.readableBytesView)) else {
                return nil
            }
            return index.manifests
        }
    }

    /// Streams the blob `descriptor` names into `sink`, checking size and digest as it streams.
    /// Connection errors, 5xx and 429 are retried with backoff; a transfer cut off part way
    /// continues where it stopped (a `Range` request; the sink keeps what it has); content that does
    /// not match its digest is fetched once more from the start, then fails with
    /// ``RegistryError/corruptBlob(registry:repository:underlying:)``. `progress` receives byte
    /// counts as they are written (negative when a retry discards bytes).
    ///
    /// `resuming`: the bytes `sink` holds already (an interrupted run's), hashed; the transfer asks
    /// for the rest. Should the whole not match, the sink is reset and the blob fetched whole.
    public func fetchBlob(
        _ descriptor: Descriptor, repository: RepositoryName, registry: String, into sink: some BlobSink,
        resuming start: BlobVerifier? = nil, progress: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws {
        var verifier = start ?? BlobVerifier(descriptor)
        // A mismatch of bytes read back (a power cut can lose what a journal names) is not the
        // registry's: it does not use up the one fetch again that corrupt content gets.
        try await retryingBlob(registry: registry, repository: repository, fetches: start == nil ? 2 : 3) {
            if verifier.count == 0 {
                do {
                    try sink.reset()
                } catch {
                    throw RegistryError.sink("\(descriptor.digest): \(error)")
                }
            }
            try await streamBlob(
                descriptor, repository: repository, registry: registry, into: sink, pool: NIOThreadPool.singleton,
                verifier: &verifier, keepPartial: true, progress: progress)
        }
    }

    /// The last check of a transfer, size and digest: bytes that fail it are taken back from
    /// `progress`, and `verifier` starts over.
    static func finish(_ verifier: inout BlobVerifier, progress: @Sendable (Int64) -> Void) throws {
        do {
            try verifier.finish()
        } catch {
            progress(-verifier.count)
            verifier = BlobVerifier(digest: verifier.expectedDigest, size: verifier.expectedSize)
            throw error
        }
    }

    /// The one retry rule for a blob's transfer: `attempt` is retried like every request
    /// (connection errors, 5xx, 429); content that does not match its digest is fetched again, up
    /// to `fetches` in all, then fails with ``RegistryError/corruptBlob(registry:repository:underlying:)``.
    func retryingBlob(
        registry: String, repository: RepositoryName, fetches: Int = 2, _ attempt: () async throws -> Void
    ) async throws {
        var corruptAttempts = 0
        while true {
            do {
                try await configuration.retry.run { _ in try await attempt() }
                return
            } catch let error as BlobVerificationError {
                corruptAttempts += 1
                if corruptAttempts >= fetches {
                    throw RegistryError.corruptBlob(registry: registry, repository: repository.value, underlying: error)
                }
            }
        }
    }

    /// One attempt: GET the blob with authentication and redirects, streaming a 2xx body through a
    /// ``BlobStreamDelegate``. `verifier` holds what earlier attempts delivered (asked for from
    /// there on with a `Range` request) and, after this one, what it adds. With `keepPartial`, the
    /// bytes of an attempt the connection cut off are kept for the next; otherwise, and for content
    /// that failed verification, they are taken back from `progress` and `verifier` starts over.
    func streamBlob(
        _ descriptor: Descriptor, repository: RepositoryName, registry: String, into sink: some BlobSink,
        pool: NIOThreadPool, verifier: inout BlobVerifier, keepPartial: Bool,
        progress: @escaping @Sendable (Int64) -> Void
    ) async throws {
        if verifier.count == descriptor.size {
            // Every byte arrived before the transfer was cut off: nothing is left to ask for.
            try Self.finish(&verifier, progress: progress)
            return
        }
        let endpoint = try await endpoint(for: registry)
        let scope = "repository:\(repository):pull"
        let path = "/v2/\(repository)/blobs/\(descriptor.digest)"
        var authorization = try await self.authorization(registry: registry, scope: scope, challenge: nil)
        var url = endpoint.baseURL + path
        var triedFreshAuth = false
        var redirects = 0
        while true {
            var headers = HTTPHeaders([("User-Agent", configuration.userAgent)])
            if let authorization { headers.add(name: "Authorization", value: authorization) }
            if verifier.count > 0 { headers.add(name: "Range", value: "bytes=\(verifier.count)-") }
            let request = try HTTPClient.Request(
                url: url, method: .GET, headers: headers,
                tlsConfiguration: try tlsConfiguration(for: url, endpoint: endpoint))
            let delegate = BlobStreamDelegate(verifier: verifier, sink: sink, pool: pool, progress: progress)
            let outcome: BlobStreamDelegate.Outcome
            do {
                let task = http.execute(request: request, delegate: delegate)
                // A cancelled export (another blob failed) stops this transfer at once.
                outcome = try await withTaskCancellationHandler {
                    try await task.futureResult.get().get()
                } onCancel: {
                    task.cancel()
                }
            } catch let requestError {
                // No batch may still write into the sink when it is reset; a batch that failed
                // explains the attempt better than the connection that dropped after it.
                let error = await delegate.drain() ?? requestError
                let cutOff = !(error is BlobVerificationError || error is SinkFailure || error is UnexpectedRange)
                if keepPartial && cutOff && !Task.isCancelled {
                    verifier = delegate.verifier
                } else {
                    progress(-delegate.count)
                    verifier = BlobVerifier(descriptor)
                }
                if error is BlobVerificationError { throw error }
                if let failure = error as? SinkFailure {
                    throw RegistryError.sink("\(descriptor.digest): \(failure.underlying)")
                }
                if Task.isCancelled { throw CancellationError() }
                throw Self.connectionError(
                    error, registry: registry, url: url, connectTimeout: configuration.connectTimeout)
            }
            switch outcome {
            case .streamed:
                verifier = delegate.verifier
                try Self.finish(&verifier, progress: progress)
                return
            case .other(let head, let body):
                let status = Int(head.status.code)
                if status == 416 && verifier.count > 0 {
                    // The range asked for is not there to give: the next attempt starts over.
                    progress(-verifier.count)
                    verifier = BlobVerifier(descriptor)
                    throw RegistryError.connection(
                        registry: registry, url: url,
                        underlying: "the rest of a cut-off transfer was refused (HTTP 416)")
                }
                if let next = Self.redirectTarget(status: head.status.code, headers: head.headers, from: url) {
                    redirects += 1
                    guard redirects <= 10 else { throw RegistryError.tooManyRedirects(url: endpoint.baseURL + path) }
                    try refuseDowngrade(from: url, to: next, registry: registry)
                    if Self.origin(of: next) != Self.origin(of: url) { authorization = nil }
                    url = next
                    continue
                }
                if status == 401 && !triedFreshAuth && Self.origin(of: url) == Self.origin(of: endpoint.baseURL) {
                    authorization = try await reauthorize(registry: registry, scope: scope, headers: head.headers)
                    triedFreshAuth = true
                    continue
                }
                throw statusError(
                    status: status, headers: head.headers, body: body, registry: registry, scope: scope,
                    what: "blob \(descriptor.digest) in \(repository)", url: url)
            }
        }
    }
}
