import AsyncHTTPClient
import Foundation
import NIOCore
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
    public func manifestDigest(_ location: RegistryLocation, reference: String) async throws -> Digest? {
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

    /// Copies a blob between repositories of any registries without storing it: the source's
    /// response body streams into the destination's upload, checked against `descriptor` (size and
    /// digest) as it passes, in batches of about 256 KiB. The batch that completes the blob is sent
    /// only once the digest matched, so content that does not match is never finished at the
    /// destination. Retried as ``fetchBlob(_:repository:registry:into:progress:)`` is: connection
    /// errors, 5xx and 429 with backoff, corrupt content once. `progress` gets byte counts (negative
    /// when an attempt is discarded).
    public func copyBlob(
        _ descriptor: Descriptor, from source: RegistryLocation, to target: RegistryLocation,
        progress: @escaping @Sendable (Int64) -> Void = { _ in }
    ) async throws {
        try await retryingBlob(registry: source.registry, repository: source.repository) {
            let path = "/v2/\(source.repository)/blobs/\(descriptor.digest)"
            let response = try await send(
                .GET, registry: source.registry, path: path, scope: "repository:\(source.repository):pull")
            let passage = BlobPassage(progress: progress)
            let bytes = VerifiedBytes(
                base: response.body, descriptor: descriptor, passage: passage, registry: source.registry, url: path)
            do {
                try await uploadBlob(
                    descriptor.digest, size: descriptor.size, repository: target.repository.value,
                    registry: target.registry, body: .stream(bytes, length: .known(descriptor.size)))
            } catch {
                progress(-passage.count)
                // What went wrong on the source's side (a broken stream, bytes that do not match)
                // is the cause; the upload only saw its request body fail.
                throw passage.failure ?? error
            }
        }
    }
}

/// What one copy attempt has passed on, and why it stopped if it did (shared by the body sequence,
/// which runs where the HTTP client iterates it, and the caller).
final class BlobPassage: Sendable {
    private let state = Mutex<(count: Int64, failure: (any Error)?)>((0, nil))
    let progress: @Sendable (Int64) -> Void

    init(progress: @escaping @Sendable (Int64) -> Void) { self.progress = progress }

    var count: Int64 { state.withLock { $0.count } }
    var failure: (any Error)? { state.withLock { $0.failure } }

    func passed(_ bytes: Int) {
        state.withLock { $0.count += Int64(bytes) }
        progress(Int64(bytes))
    }

    func fail(_ error: any Error) { state.withLock { $0.failure = $0.failure ?? error } }
}

/// A blob response's body as an upload's body: gathered into batches, verified as it passes, the
/// last batch held until the digest matched.
struct VerifiedBytes: AsyncSequence, Sendable {
    typealias Element = ByteBuffer
    static let batchSize = 256 << 10

    let base: HTTPClientResponse.Body
    let descriptor: Descriptor
    let passage: BlobPassage
    let registry: String
    let url: String

    func makeAsyncIterator() -> Iterator {
        Iterator(
            base: base.makeAsyncIterator(), verifier: BlobVerifier(descriptor), passage: passage, registry: registry,
            url: url)
    }

    struct Iterator: AsyncIteratorProtocol {
        var base: HTTPClientResponse.Body.AsyncIterator
        var verifier: BlobVerifier
        let passage: BlobPassage
        let registry: String
        let url: String
        var done = false

        mutating func next() async throws -> ByteBuffer? {
            guard !done else { return nil }
            do {
                var batch: ByteBuffer?
                while true {
                    let chunk: ByteBuffer?
                    do {
                        chunk = try await base.next()
                    } catch {
                        throw RegistryError.connection(
                            registry: registry, url: url, underlying: RegistryClient.describe(error))
                    }
                    guard let chunk else {
                        done = true
                        try verifier.finish()  // a short body
                        return batch
                    }
                    try chunk.withUnsafeReadableBytes { try verifier.update($0) }
                    passage.passed(chunk.readableBytes)
                    if batch == nil {
                        batch = chunk
                    } else {
                        batch?.writeImmutableBuffer(chunk)
                    }
                    if verifier.count == verifier.expectedSize {
                        try verifier.finish()  // before the last bytes go
                        done = true
                        return batch
                    }
                    if let batch, batch.readableBytes >= VerifiedBytes.batchSize { return batch }
                }
            } catch {
                passage.fail(error)
                throw error
            }
        }
    }
}
