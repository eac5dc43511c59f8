import Foundation
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
    }

    public var descriptor: Descriptor {
        var descriptor = Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
        descriptor.artifactType = artifactType
        descriptor.annotations = annotations
        return descriptor
    }
}

/// What the server reads from the store: the visible state, reloaded whenever `state.json` is
/// replaced (an import, or later a push, shows up on the next request without a restart), and
/// manifests, which are immutable and so cached by digest.
public final class RegistryContent: Sendable {
    public let store: RegistryStore

    private struct Snapshot {
        var fingerprint: [Int] = []
        var state = RegistryState()
        var sortedRepositories: [String] = []
    }

    private let snapshot = Mutex(Snapshot())
    private let manifests = Mutex<(entries: [Digest: StoredManifest], bytes: Int)>(([:], 0))
    private static let manifestCacheLimit = 64 << 20

    public init(store: RegistryStore) { self.store = store }

    /// The current state (re-read when `state.json` changed since the last call), and the sorted repository names.
    public func current() throws(StoreError) -> (state: RegistryState, repositories: [String]) {
        let fingerprint = Self.fingerprint(of: store.statePath)
        let cached = snapshot.withLock { snapshot -> (RegistryState, [String])? in
            snapshot.fingerprint == fingerprint ? (snapshot.state, snapshot.sortedRepositories) : nil
        }
        if let cached { return cached }
        let state = try store.state()
        let sorted = state.repositories.filter { !$0.value.manifests.isEmpty }.keys.sorted()
        snapshot.withLock { $0 = Snapshot(fingerprint: fingerprint, state: state, sortedRepositories: sorted) }
        return (state, sorted)
    }

    /// A manifest's stored bytes and what they say. Blocking on a cache miss: call it off the event loop.
    public func manifest(_ digest: Digest) throws -> StoredManifest {
        if let hit = manifests.withLock({ $0.entries[digest] }) { return hit }
        let bytes = try store.blobs.read(digest, limit: ManifestDocument.maximumSize)
        let manifest = try StoredManifest(digest: digest, bytes: bytes)
        manifests.withLock { cache in
            if cache.bytes + bytes.count > Self.manifestCacheLimit { cache = ([:], 0) }
            cache.entries[digest] = manifest
            cache.bytes += bytes.count
        }
        return manifest
    }

    /// Whether a manifest is cached (so it can be served without leaving the event loop).
    public func cachedManifest(_ digest: Digest) -> StoredManifest? { manifests.withLock { $0.entries[digest] } }

    public func blobPath(_ digest: Digest) -> String { store.blobs.path(of: digest) }

    static func fingerprint(of path: String) -> [Int] {
        var info = stat()
        guard stat(path, &info) == 0 else { return [0] }
        return [
            Int(info.st_dev), Int(info.st_ino), Int(info.st_size), Int(info.st_mtim.tv_sec), Int(info.st_mtim.tv_nsec),
        ]
    }
}
