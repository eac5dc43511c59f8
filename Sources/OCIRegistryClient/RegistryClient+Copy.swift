import AsyncHTTPClient
import Foundation
import NIOCore
import NIOPosix
import OCICore
import Synchronization

/// A repository in a registry: where a blob or manifest is, or goes.
public struct RegistryLocation: Sendable, Hashable, CustomStringConvertible {
    /// HOST[:PORT], as in a reference (`docker.io` for Docker Hub).
    public var registry: String
    public var repository: RepositoryName

    public init(registry: String, repository: RepositoryName) {
        self.registry = registry
        self.repository = repository
    }

    public var description: String { "\(registry)/\(repository)" }
}

extension RegistryClient {
    /// The digest of the manifest that `reference` (a tag or a digest) names in `location`, or nil
    /// when it names none: a HEAD, or a GET from a registry that sends no `Docker-Content-Digest`.
    public func manifestDigest(_ location: RegistryLocation, reference: ManifestReference) async throws -> Digest? {
        do {
            let header = try await configuration.retry.run { _ -> String? in
                let response = try await send(
                    .HEAD, registry: location.registry, path: "/v2/\(location.repository)/manifests/\(reference)",
                    scope: "repository:\(location.repository):pull",
                    headers: ["Accept": MediaType.acceptedManifestTypes.joined(separator: ", ")])
                return response.headers.first(name: "Docker-Content-Digest")
            }
            if let header, let digest = try? Digest(header) { return digest }
            return try await fetchManifest(
                registry: location.registry, repository: location.repository, reference: reference
            ).digest
        } catch RegistryError.notFound {
            return nil
        }
    }

    /// The size of a blob in `location` (a HEAD), or nil when the repository does not hold it.
    public func blobSize(_ digest: Digest, in location: RegistryLocation) async throws -> Int64? {
        do {
            return try await configuration.retry.run { _ -> Int64? in
                let response = try await send(
                    .HEAD, registry: location.registry, path: "/v2/\(location.repository)/blobs/\(digest)",
                    scope: "repository:\(location.repository):pull")
                guard let length = response.headers.first(name: "Content-Length").flatMap({ Int64($0) }), length >= 0
                else {
                    throw RegistryError.status(
                        registry: location.registry, url: "/v2/\(location.repository)/blobs/\(digest)",
                        status: Int(response.status.code), detail: "no Content-Length in the answer to HEAD",
                        retryAfter: nil)
                }
                return length
            }
        } catch RegistryError.notFound {
            return nil
        }
    }

    /// Copies a blob between repositories of any registries without storing it: the source's
    /// response streams (in the batches of ``fetchBlob(_:repository:registry:into:progress:)``,
    /// hashed on `pool`) into the destination's upload, at most a few MiB ahead of it. The batch
    /// that completes the blob is sent only once size and digest matched, so content that does not
    /// match is never finished at the destination. Retried as `fetchBlob` is: connection errors,
    /// 5xx and 429 with backoff, corrupt content once. `pool`'s threads wait while the destination
    /// is slower than the source: give one of the caller's own, not `NIOThreadPool.singleton`.
    public func copyBlob(
        _ descriptor: Descriptor, from source: RegistryLocation, to target: RegistryLocation, pool: NIOThreadPool,
        progress: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws {
        try await retryingBlob(registry: source.registry, repository: source.repository) {
            let feed = UploadFeed(size: descriptor.size)
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    do {
                        try await self.uploadBlob(descriptor.digest, size: descriptor.size, to: target, body: feed.body)
                        feed.complete(.success(()))
                    } catch {
                        feed.complete(.failure(error))  // a writer waiting for room goes on, and stops
                        throw error
                    }
                }
                var streamed: (any Error)?
                do {
                    // Each attempt is a new upload: it streams the blob from its start.
                    var verifier = BlobVerifier(descriptor)
                    try await streamBlob(
                        descriptor, repository: source.repository, registry: source.registry, into: feed, pool: pool,
                        verifier: &verifier, keepPartial: false, progress: progress)
                    try feed.finish()
                } catch {
                    streamed = error
                    feed.fail(error)
                }
                do {
                    try await group.next()
                } catch {
                    // The destination's answer explains a feed that stopped taking bytes (also when
                    // every byte was in and only the held last batch found the upload gone).
                    let feedStopped = (streamed as? UploadFeedError).map { $0 == .uploadStopped } ?? false
                    if streamed == nil || feed.stoppedByUpload || feedStopped { throw error }
                }
                if let streamed { throw streamed }
            }
        }
    }
}

/// A blob's bytes from a thread that verifies them to an upload's request body: at most `depth`
/// batches queued, the writer waiting for room (so its thread may block: never an event loop); the
/// batch that completes the blob held back until ``finish()``, called once it verified. Used by
/// ``RegistryClient/copyBlob(_:from:to:pool:progress:)`` and by `ferry push`, which reads a bundle.
public final class UploadFeed: BlobSink, @unchecked Sendable {
    private let continuation: AsyncThrowingStream<ByteBuffer, any Error>.Continuation
    /// The upload's request body (exactly the blob's size).
    public let body: HTTPClientRequest.Body
    private let credits: DispatchSemaphore
    private let size: Int64
    private let lock = NSLock()
    private var written: Int64 = 0
    private var held: ByteBuffer?
    private var uploadEnded = false
    /// The bytes' side ended the body (finished or failed it).
    private var producerEnded = false
    private let ended = DispatchSemaphore(value: 0)
    private var outcome: Result<Void, any Error>?

    public init(size: Int64, depth: Int = 8) {
        let (stream, continuation) = AsyncThrowingStream<ByteBuffer, any Error>.makeStream()
        let credits = DispatchSemaphore(value: depth)
        self.continuation = continuation
        self.credits = credits
        self.size = size
        body = .stream(
            stream.map { buffer -> ByteBuffer in
                credits.signal()
                return buffer
            }, length: .known(size))
        continuation.onTermination = { [weak self] _ in self?.uploadStopped() }
    }

    /// The upload stopped reading (finished, failed or cancelled): a waiting writer must not wait on.
    private func uploadStopped() {
        lock.withLock { uploadEnded = true }
        for _ in 0..<64 { credits.signal() }
    }

    /// Whether the upload had stopped when the bytes' side failed (recorded by ``fail(_:)``).
    private var uploadEndedFirst = false

    /// Whether the upload stopped before the bytes did (its error is the one to report).
    var stoppedByUpload: Bool {
        lock.withLock { uploadEnded && (producerEnded ? uploadEndedFirst : written < size) }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws { try send(ByteBuffer(bytes: bytes)) }

    /// The batch itself goes on to the upload: no copy.
    public func write(buffer: ByteBuffer) throws { try send(buffer) }

    /// Queues `buffer`, waiting while `depth` batches wait already.
    public func send(_ buffer: ByteBuffer) throws {
        let last = lock.withLock {
            written += Int64(buffer.readableBytes)
            return written >= size
        }
        if last {
            lock.withLock { held = buffer }
            return
        }
        credits.wait()
        if lock.withLock({ uploadEnded }) { throw UploadFeedError.uploadStopped }
        continuation.yield(buffer)
    }

    /// A feed cannot take back what it sent: a second attempt is a new feed.
    public func reset() throws {
        if lock.withLock({ written > 0 }) { throw UploadFeedError.cannotRewind }
    }

    /// After the blob verified: the held batch, then the end of the body.
    public func finish() throws {
        lock.withLock { producerEnded = true }
        if let held = lock.withLock({ held }) {
            if lock.withLock({ uploadEnded }) { throw UploadFeedError.uploadStopped }
            continuation.yield(held)
        }
        continuation.finish()
    }

    /// Ends the body with `error`: the upload is abandoned, never finished.
    public func fail(_ error: any Error) {
        lock.withLock {
            if !producerEnded { uploadEndedFirst = uploadEnded }
            producerEnded = true
        }
        continuation.finish(throwing: error)
    }

    /// For a caller on a thread of its own: how the upload ended, recorded by whoever ran it.
    public func complete(_ result: Result<Void, any Error>) {
        lock.withLock { outcome = result }
        uploadStopped()
        ended.signal()
    }

    /// Blocks until ``complete(_:)`` (never on an event loop), and gives its result.
    public func waitForUpload() -> Result<Void, any Error> {
        ended.wait()
        ended.signal()
        return lock.withLock { outcome } ?? .failure(UploadFeedError.uploadStopped)
    }
}

public enum UploadFeedError: Error, CustomStringConvertible {
    case uploadStopped
    case cannotRewind

    public var description: String {
        switch self {
        case .uploadStopped: "the destination stopped taking the upload"
        case .cannotRewind: "an upload cannot be rewound"
        }
    }
}
