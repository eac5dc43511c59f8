import Foundation
import HTTPTypes
import NIOCore
import NIOPosix
import OCICore
import OCIStore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A stored manifest as the server needs it: exact bytes, media type, and what the referrers API reports.
public struct StoredManifest: Sendable {
    public let digest: Digest
    public let bytes: [UInt8]
    public let mediaType: String
    public let subject: Digest?
    /// `artifactType`, or for an image manifest without one its config's media type (spec, "Listing Referrers").
    public let artifactType: String?
    public let annotations: [String: String]?
    /// What a GET or HEAD answers with, made once per cached manifest rather than per request.
    let headers: HTTPFields
    let body: ByteBuffer

    init(digest: Digest, bytes: [UInt8]) throws(ManifestError) {
        let document = try ManifestDocument(bytes: bytes, algorithm: digest.algorithm)
        self.digest = digest
        self.bytes = bytes
        self.mediaType = document.mediaType
        switch document.content {
        case .manifest(let manifest):
            subject = manifest.subject?.digest
            artifactType = manifest.artifactType ?? manifest.config.mediaType
            annotations = manifest.annotations
        case .index(let index):
            subject = index.subject?.digest
            artifactType = index.artifactType
            annotations = index.annotations
        }
        headers = [
            .contentType: document.mediaType,
            RegistryResponder.contentDigest: digest.description,
            .eTag: "\"\(digest)\"",
            .contentLength: String(bytes.count),
        ]
        body = ByteBuffer(bytes: bytes)
    }

    public var descriptor: Descriptor {
        var descriptor = Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
        descriptor.artifactType = artifactType
        descriptor.annotations = annotations
        return descriptor
    }
}

/// Thread pools for the server's blocking work, kept apart so one kind never starves another:
/// blob streaming and upload writes (file I/O), manifest file reads, commits (which may wait for
/// the database's write lock while gc or an import in another process holds it), and bcrypt.
public enum BlockingPools {
    public static let files = started(threads: 4)
    public static let reads = started(threads: 4)
    public static let commits = started(threads: 4)
    /// bcrypt: tens of milliseconds of CPU per check.
    public static let crypto = started(threads: 2)

    static func started(threads: Int) -> NIOThreadPool {
        let pool = NIOThreadPool(numberOfThreads: threads)
        pool.start()
        return pool
    }
}

/// What the server reads from the store: metadata through the ``RegistryStorage`` (on the reads
/// pool), and manifests, which are immutable and so cached by digest.
public final class RegistryContent: Sendable {
    public let storage: any RegistryStorage

    private let manifests = Mutex<(entries: [Digest: StoredManifest], bytes: Int)>(([:], 0))
    private static let manifestCacheLimit = 64 << 20

    public init(storage: any RegistryStorage) { self.storage = storage }

    /// Runs a metadata read. Reads run on the calling task, never on an event loop (handlers run on
    /// Swift's executor): in WAL mode a reader never waits for a writer or a lock, and these are
    /// indexed point queries and pages from the page cache, microseconds each, where a hop to a
    /// thread pool costs more than the query (measured: 8.2k against 2x that manifest GETs/s).
    /// Whatever can wait runs on a pool: commits, file reads, bcrypt.
    public func read<Value: Sendable>(_ body: (any RegistryStorage) throws -> Value) async throws -> Value {
        try body(storage)
    }

    /// Runs a change on the commits pool.
    public func commit<Value: Sendable>(_ body: @escaping @Sendable (any RegistryStorage) throws -> Value) async throws
        -> Value
    {
        let storage = self.storage
        return try await BlockingPools.commits.runIfActive { try body(storage) }
    }

    /// A manifest's stored bytes and what they say (read on the reads pool on a cache miss).
    public func manifest(_ digest: Digest) async throws -> StoredManifest {
        if let hit = manifests.withLock({ $0.entries[digest] }) { return hit }
        let blobs = storage.blobs
        let manifest = try await BlockingPools.reads.runIfActive {
            try StoredManifest(digest: digest, bytes: blobs.read(digest, limit: ManifestDocument.maximumSize))
        }
        manifests.withLock { cache in
            // Each entry holds its bytes twice: as an array and as the response body.
            let cost = 2 * manifest.bytes.count
            if cache.bytes + cost > Self.manifestCacheLimit { cache = ([:], 0) }
            cache.entries[digest] = manifest
            cache.bytes += cost
        }
        return manifest
    }

    public func blobPath(_ digest: Digest) -> String { storage.blobs.path(of: digest) }
}
