import OCICore

/// What an export writes in place: one bundle (``PlacedBundle``) or a set of volumes
/// (``PlacedVolumeSet``). The caller fills the files' slots (``PlacedBundle/sink(for:)``, or
/// ``PlacedVolumeSet/partsSink(for:)`` for a blob carried in parts), seals them as the bytes
/// arrive, and publishes the whole or discards it.
public protocol PlacedOutput: Sendable {
    /// The files written: the bundle, or every volume.
    var files: [PlacedBundle] { get }
    /// Reads and hashes what is written of every file so far (``PlacedBundle/sealAhead()``).
    func sealAhead()
    /// Removes every partial file and journal (content that failed verification: nothing to resume).
    func discard()
    /// Seals every file and gives each its final name, all or none. `verified`: blobs checked whole
    /// this run. Returns each file's path and the sha256 of its tar.
    func publish(verified: Set<Digest>, progress: @Sendable (Int64) -> Void) throws -> [(path: String, digest: Digest)]
}

extension PlacedBundle: PlacedOutput {
    public var files: [PlacedBundle] { [self] }

    /// Every slot of a bundle is whole, so there is nothing `verified` changes.
    public func publish(verified: Set<Digest>, progress: @Sendable (Int64) -> Void) throws -> [(
        path: String, digest: Digest
    )] {
        [(path, try publish(progress: progress))]
    }
}

extension PlacedVolumeSet: PlacedOutput {
    public var files: [PlacedBundle] { volumes }

    public func sealAhead() {
        for volume in volumes { volume.sealAhead() }
    }
}
