import OCICore

/// What an export writes in place: one bundle (``PlacedBundle``) or a set of volumes
/// (``PlacedVolumeSet``). The caller fills the files' slots (a blob downloaded through
/// ``downloadSink(for:)``, one from a file copied with ``PlacedBundle/copy(from:into:)``), seals
/// them as the bytes arrive, and publishes the whole or discards it.
public protocol PlacedOutput: Sendable {
    /// The files written: the bundle, or every volume.
    var files: [PlacedBundle] { get }
    /// The size of `blob` whole (also of one carried in parts); nil if the output does not carry it.
    func size(of blob: Digest) -> Int64?
    /// Where one download of `blob` goes: its slot, or the slots of its parts. Nil for a blob whole
    /// in several places (a manifest in every volume): that one is copied into each from a file.
    func downloadSink(for blob: Digest) -> (any PlacedSink)?
    /// Reads and hashes what is written of every file so far (``PlacedBundle/sealAhead()``).
    func sealAhead()
    /// Removes every partial file and journal (content that failed verification: nothing to resume).
    func discard()
    /// Seals every file and gives each its final name, all or none. `verified`: blobs checked whole
    /// this run. Returns each file's path and the sha256 of its tar.
    func publish(verified: Set<Digest>, progress: @Sendable (Int64) -> Void) throws -> [(path: String, digest: Digest)]
}

/// Writes one whole blob into its place in a ``PlacedOutput``: one writer at a time, started
/// again with ``reset()``, recorded with ``complete()`` once the blob verified.
public protocol PlacedSink: AnyObject, Sendable {
    func write(_ bytes: UnsafeRawBufferPointer) throws
    /// Drops what was written, before the blob is written again.
    func reset()
    /// Records the blob as written and verified (in the journal: a resumed run keeps it).
    func complete() throws
    /// Takes up what an interrupted run wrote of the blob: those bytes, read back and given to
    /// `body` in order, are kept, and writing goes on after them. Returns how many (0: none).
    func resume(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int64
}

extension SlotSink: PlacedSink {}

extension PartsSink: PlacedSink {
    /// A blob in parts starts from its beginning (each part's hash runs from its own start).
    public func resume(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int64 { 0 }
}

extension PlacedBundle: PlacedOutput {
    public var files: [PlacedBundle] { [self] }

    public func size(of blob: Digest) -> Int64? { wholeSlots[blob].map { plan.slots[$0].size } }

    public func downloadSink(for blob: Digest) -> (any PlacedSink)? { wholeSlots[blob].map { sink(for: $0) } }

    /// Every slot of a bundle is whole, so there is nothing `verified` changes.
    public func publish(verified: Set<Digest>, progress: @Sendable (Int64) -> Void) throws -> [(
        path: String, digest: Digest
    )] {
        [(path, try publish(progress: progress))]
    }
}

extension PlacedVolumeSet: PlacedOutput {
    public var files: [PlacedBundle] { volumes }

    public func downloadSink(for blob: Digest) -> (any PlacedSink)? {
        if isParted(blob) { return partsSink(for: blob) }
        let places = places(of: blob)
        guard places.count == 1, let place = places.first else { return nil }
        return volumes[place.volume].sink(for: place.slot)
    }

    public func sealAhead() {
        for volume in volumes { volume.sealAhead() }
    }
}
