import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import OCICore

/// Where a blob's bytes go while they stream; verification happens in the client before
/// ``RegistryClient/fetchBlob(_:repository:registry:into:progress:)`` returns.
public protocol BlobSink: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Drops what was written, before the blob is fetched again.
    func reset() throws
}

extension RegistryClient {
    /// Fetches a manifest or index by tag or digest, keeping its bytes exactly as served.
    /// When `reference` is a digest, the bytes must hash to it.
    public func fetchManifest(registry: String, repository: RepositoryName, reference: String) async throws
        -> ManifestDocument
    {
        let what = "\(registry)/\(repository)\(reference.contains(":") ? "@" : ":")\(reference)"
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
            let pinned = try? Digest(reference)
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

    /// Streams the blob `descriptor` names into `sink`, checking size and digest as it streams.
    /// Connection errors, 5xx and 429 are retried with backoff; content that does not match its
    /// digest is fetched once more, then fails with ``RegistryError/corruptBlob(registry:repository:underlying:)``.
    /// `progress` receives byte counts as they arrive (negative when a retry discards bytes).
    public func fetchBlob(
        _ descriptor: Descriptor, repository: RepositoryName, registry: String, into sink: some BlobSink,
        progress: @Sendable (Int64) -> Void = { _ in }
    ) async throws {
        var corruptAttempts = 0
        while true {
            do {
                try await configuration.retry.run { _ in
                    try sink.reset()
                    var verifier = BlobVerifier(descriptor)
                    defer { if verifier.count > 0 { progress(-verifier.count) } }
                    let response: HTTPClientResponse
                    do {
                        response = try await send(
                            .GET, registry: registry, path: "/v2/\(repository)/blobs/\(descriptor.digest)",
                            scope: "repository:\(repository):pull")
                    } catch RegistryError.notFound(let registry, _, let detail) {
                        throw RegistryError.notFound(
                            registry: registry, what: "blob \(descriptor.digest) in \(repository)", detail: detail)
                    }
                    do {
                        for try await buffer in response.body {
                            try buffer.withUnsafeReadableBytes { bytes in
                                try verifier.update(bytes)
                                try sink.write(bytes)
                            }
                            progress(Int64(buffer.readableBytes))
                        }
                    } catch let error as BlobVerificationError {
                        throw error
                    } catch let error as RegistryError {
                        throw error
                    } catch let error where !(error is CancellationError) {
                        // The connection broke mid-stream: retryable.
                        if verifier.count == descriptor.size {
                            throw error
                        }
                        throw RegistryError.connection(
                            registry: registry, url: "blob \(descriptor.digest)", underlying: Self.describe(error))
                    }
                    try verifier.finish()
                    verifier = BlobVerifier(descriptor)  // success: keep the progress
                }
                return
            } catch let error as BlobVerificationError {
                corruptAttempts += 1
                if corruptAttempts >= 2 {
                    throw RegistryError.corruptBlob(registry: registry, repository: repository.value, underlying: error)
                }
            }
        }
    }
}
