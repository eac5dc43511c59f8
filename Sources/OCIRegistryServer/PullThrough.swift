import NIOCore
import OCICore

/// Where the server looks for a manifest or blob its store lacks: a pull-through cache in front of
/// upstream registries. Asked only for pulls (GET, HEAD) the store could not answer; what it
/// returns is served under the server's own access rules, as stored content is.
///
/// Errors it throws reach the client: throw ``DistributionError`` (never a server path).
public protocol PullThrough: Sendable {
    /// The name the cache keeps `repository` under (the one access is checked on), or nil when no
    /// upstream covers it.
    func cacheName(_ repository: RepositoryName, namespace: String?) -> RepositoryName?
    /// The manifest `reference` names in `repository` (as the client named it, with containerd's
    /// `ns` query when given), or nil when no upstream covers the name.
    func manifest(_ reference: ManifestReference, in repository: RepositoryName, namespace: String?) async throws
        -> PulledManifest?
    /// A blob of `repository`, or nil when no upstream covers the name. `head`: only its size is
    /// needed (nothing is fetched or cached for a HEAD).
    func blob(_ digest: Digest, in repository: RepositoryName, namespace: String?, head: Bool) async throws
        -> PulledBlob?
}

/// A manifest from a pull-through cache, its bytes verified against `digest`.
public struct PulledManifest: Sendable {
    public var digest: Digest
    public var bytes: [UInt8]

    public init(digest: Digest, bytes: [UInt8]) {
        self.digest = digest
        self.bytes = bytes
    }
}

/// A blob from a pull-through cache: its size, and how to stream a range of it.
public struct PulledBlob: Sendable {
    public typealias Reader = @Sendable (ClosedRange<Int64>, (ByteBuffer) async throws -> Void) async throws -> Void
    public var size: Int64
    /// Calls `body` with the range's bytes in order; throws when the content turns out not to
    /// match its digest (the response is then cut short, so no client takes it as complete).
    public var read: Reader

    public init(size: Int64, read: @escaping Reader) {
        self.size = size
        self.read = read
    }
}
