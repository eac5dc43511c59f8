import OCICore

/// Positions in a bundle manifest's blob list, by digest: an open-addressing hash table of 32-bit positions
/// (8 bytes a digest at most), where a `[Digest: Int]` costs about 100. The digests themselves
/// stay in the list.
struct ListingIndex {
    private let blobs: [BundleManifest.Blob]
    /// Position + 1; 0 is an empty slot.
    private var slots: [UInt32]
    private let mask: Int

    init(_ blobs: [BundleManifest.Blob]) {
        self.blobs = blobs
        var size = 16
        while size < blobs.count * 2 { size <<= 1 }
        slots = [UInt32](repeating: 0, count: size)
        mask = size - 1
    }

    /// Records `position` (an index into the list given at init). Returns the earlier position
    /// when the same digest is there already (and keeps that one).
    mutating func insert(_ position: Int) -> Int? {
        let digest = blobs[position].digest
        var slot = digest.hashValue & mask
        while slots[slot] != 0 {
            let other = Int(slots[slot]) - 1
            if blobs[other].digest == digest { return other }
            slot = (slot + 1) & mask
        }
        slots[slot] = UInt32(position + 1)
        return nil
    }

    func position(of digest: Digest) -> Int? {
        var slot = digest.hashValue & mask
        while slots[slot] != 0 {
            let other = Int(slots[slot]) - 1
            if blobs[other].digest == digest { return other }
            slot = (slot + 1) & mask
        }
        return nil
    }
}
