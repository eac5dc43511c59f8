import Foundation
import OCICore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// A set of volumes written in place: one ``PlacedBundle`` per volume (`NAME.volNNN.tar.partial`,
/// each with its journal, so a killed export resumes every volume). The result is byte-identical
/// to the set ``VolumeSetWriter`` streams for the same final manifest.
///
/// A blob too large for one volume is cut into parts, each stored under its own digest, and every
/// volume's head lists those digests: they are known only once the blob's bytes are. So the set is
/// planned with a stand-in name per part (the same length, so every offset holds), each blob is
/// written straight into its parts as it downloads (each part hashed on the way), and
/// ``publish(verified:progress:)`` fills in the part digests, signs the final manifest, rewrites
/// every head and part header in place, then seals the set and publishes it whole or not at all.
public final class PlacedVolumeSet: Sendable {
    public let volumes: [PlacedBundle]
    private let output: String
    private let planned: BundleManifest
    private let index: [UInt8]
    private let dockerManifest: [UInt8]?
    private let modificationTime: Int64
    private let sign: @Sendable (BundleManifest) throws -> BundleSignature?
    private let places: [Digest: [Place]]
    /// Per part of the plan (its index in the manifest's parts): where it is written.
    private let partPlaces: [Place]
    private let partedBlobs: Set<Digest>
    private let sizes: [Digest: Int64]
    /// Part digests learnt as parts were written, by part index.
    private let learnt = Mutex<[Int: Digest]>([:])
    private let outcome = Mutex<(manifest: BundleManifest, signature: BundleSignature?)?>(nil)

    /// Where a blob's bytes go: a slot of a volume.
    public struct Place: Sendable, Hashable {
        public let volume: Int
        public let slot: Int
    }

    /// Opens every volume of the set `planned` describes (from
    /// ``BundleManifest/planningVolumes(volumeSize:signed:indexSize:dockerManifestSize:)``: its part
    /// digests not known yet), resuming those an interrupted run left; `sign` signs a manifest
    /// (`nil` for an unsigned set). A volume that would come out larger than the set's volume size
    /// is refused before anything is written.
    public init(
        output: String, planned: BundleManifest, index: [UInt8], dockerManifest: [UInt8]?, modificationTime: Int64,
        sign: @escaping @Sendable (BundleManifest) throws -> BundleSignature?
    ) throws {
        guard var set = planned.volumes else { throw BundleError.io("not a volume set", errno: EINVAL) }
        // A stand-in name per part, unique and as long as a digest.
        for i in set.parts.indices {
            let part = set.parts[i]
            set.parts[i].digest = Digest.of(
                Array("ferry part \(part.blob) \(part.offset)".utf8), algorithm: part.blob.algorithm)
        }
        var provisional = planned
        provisional.volumes = set
        let signature = try sign(provisional)
        let plans = try (1...set.count).map {
            try BundlePlan(
                volume: $0, of: provisional, index: index, modificationTime: modificationTime, signature: signature,
                dockerManifest: dockerManifest)
        }
        let paths = (1...set.count).map { VolumeSet.volumePath(for: output, number: $0, count: set.count) }
        for (plan, path) in zip(plans, paths) where plan.size > set.volumeSize {
            throw BundleError.io(
                "volume \(path) would come out at \(plan.size) bytes, over --volume-size \(set.volumeSize)",
                errno: EFBIG)
        }
        // Each volume holds its file and its journal open.
        try VolumeSetWriter.ensureOpenFiles(2 * set.count + 64)
        var places: [Digest: [Place]] = [:]
        var byName: [Digest: Place] = [:]
        for (v, plan) in plans.enumerated() {
            for (i, slot) in plan.slots.enumerated() {
                places[slot.blob, default: []].append(Place(volume: v, slot: i))
                if slot.digest != slot.blob { byName[slot.digest] = Place(volume: v, slot: i) }
            }
        }
        partPlaces = try set.parts.map { part in
            guard let place = byName[part.digest] else {
                throw BundleError.io("part of \(part.blob) at \(part.offset) has no place", errno: EINVAL)
            }
            return place
        }
        self.output = output
        self.planned = provisional
        self.index = index
        self.dockerManifest = dockerManifest
        self.modificationTime = modificationTime
        self.sign = sign
        self.places = places
        partedBlobs = Set(set.parts.map(\.blob))
        var sizes: [Digest: Int64] = [:]
        for blob in planned.blobs { sizes[blob.digest] = blob.size }
        self.sizes = sizes
        let hasParts = !set.parts.isEmpty
        volumes = try zip(paths, plans).map { try PlacedBundle(path: $0, plan: $1, provisional: hasParts) }
    }

    /// Every slot that holds bytes of `blob` (several for a manifest or a blob in parts).
    public func places(of blob: Digest) -> [Place] { places[blob] ?? [] }

    /// Whether `blob` is carried in parts.
    public func isParted(_ blob: Digest) -> Bool { partedBlobs.contains(blob) }

    public func size(of blob: Digest) -> Int64? { sizes[blob] }

    /// A sink for the whole of a blob carried in parts: each byte goes to its part's slot, each
    /// part hashed on the way; ``PartsSink/complete()`` once the blob verified.
    public func partsSink(for blob: Digest) -> PartsSink {
        let parts = planned.volumes?.parts ?? []
        var sinks: [Int: SlotSink] = [:]
        for (i, part) in parts.enumerated() where part.blob == blob {
            sinks[i] = volumes[partPlaces[i].volume].sink(for: partPlaces[i].slot)
        }
        return PartsSink(blob: blob, parts: parts, sinks: sinks, set: self)
    }

    /// Records a blob written through `sink` (and verified whole): its parts' slots complete, their
    /// digests learnt.
    fileprivate func complete(_ sink: PartsSink) throws {
        let digests = sink.digests()
        learnt.withLock { learnt in for (part, digest) in digests { learnt[part] = digest } }
        for (part, _) in digests {
            let place = partPlaces[part]
            try volumes[place.volume].complete(place.slot)
        }
    }

    /// The final manifest and its signature, once published.
    public var final: (manifest: BundleManifest, signature: BundleSignature?)? { outcome.withLock { $0 } }

    /// Fills in the part digests (reading back the parts not written through a ``PartsSink`` this
    /// run, each such blob checked whole unless in `verified`), signs the final manifest, rewrites
    /// every head and part header, then seals every volume and renames them all
    /// (``VolumeSet/publish(_:of:seal:rename:withdraw:)``). Returns each volume's path and the
    /// sha256 of its tar.
    public func publish(verified: Set<Digest>, progress: @Sendable (Int64) -> Void = { _ in }) throws -> [(
        path: String, digest: Digest
    )] {
        var manifest = planned
        if let parts = planned.volumes?.parts, !parts.isEmpty {
            var digests = learnt.withLock { $0 }
            let unknown = Set(parts.indices.filter { digests[$0] == nil }.map { parts[$0].blob })
            for blob in unknown.sorted(by: { $0.description < $1.description }) {
                let mine = parts.indices.filter { parts[$0].blob == blob }.sorted {
                    parts[$0].offset < parts[$1].offset
                }
                let size = mine.reduce(Int64(0)) { $0 + parts[$1].size }
                // Checked whole unless this run verified it and wrote every part of it (a part an
                // earlier run wrote is checked, whatever this run knows of the blob).
                let resumedPart = mine.contains { volumes[partPlaces[$0].volume].resumed.contains(partPlaces[$0].slot) }
                var whole =
                    verified.contains(blob) && !resumedPart ? nil : BlobVerifier(digest: blob, size: size)
                for part in mine {
                    var hasher = DigestHasher(blob.algorithm)
                    let place = partPlaces[part]
                    try volumes[place.volume].readSlot(place.slot) { bytes in
                        hasher.update(bytes)
                        try whole?.update(bytes)
                    }
                    digests[part] = hasher.finalize()
                }
                do {
                    try whole?.finish()
                } catch {
                    // Written by an earlier run and damaged since: the next run writes it again.
                    for part in mine { try? volumes[partPlaces[part].volume].forget(partPlaces[part].slot) }
                    let first = partPlaces[mine[0]]
                    throw BundleError.placedBlobCorrupt(
                        path: volumes[first.volume].path, slot: first.slot, blob: blob, error)
                }
            }
            for i in parts.indices { manifest.volumes?.parts[i].digest = digests[i] ?? parts[i].digest }
            let signature = try sign(manifest)
            for (v, volume) in volumes.enumerated() {
                let final = try BundlePlan(
                    volume: v + 1, of: manifest, index: index, modificationTime: modificationTime,
                    signature: signature, dockerManifest: dockerManifest)
                do {
                    guard final.slots.count == volume.plan.slots.count else {
                        // Two parts, or a part and a blob, with the same bytes in one volume are
                        // stored once: the layout planned before their digests were known no
                        // longer holds.
                        throw BundleError.io(
                            "volume \(v + 1) would hold two entries with the same bytes; export with another --volume-size",
                            errno: EINVAL)
                    }
                    try volume.finalize(final)
                } catch {
                    discard()  // the same plan would fail the same way: nothing to resume
                    throw error
                }
            }
            outcome.withLock { $0 = (manifest, signature) }
        } else {
            let signature = try sign(manifest)
            outcome.withLock { $0 = (manifest, signature) }
        }
        let digests = try VolumeSet.publish(
            volumes, of: output, seal: { try $0.seal(progress: progress) }, rename: { try $0.rename() },
            withdraw: { $0.withdraw() })
        return zip(volumes, digests).map { ($0.path, $1) }
    }

    /// Removes every partial volume and journal (content that failed verification).
    public func discard() {
        for volume in volumes { volume.discard() }
    }
}

/// Writes one blob's bytes into the slots of its parts (routed by ``PartRouter``), hashing each
/// part; used by one writer at a time.
public final class PartsSink: @unchecked Sendable {
    public let blob: Digest
    private let parts: [VolumeSet.Part]
    private let sinks: [Int: SlotSink]
    private var router: PartRouter
    private var hashers: [Int: DigestHasher] = [:]
    private let set: PlacedVolumeSet

    init(blob: Digest, parts: [VolumeSet.Part], sinks: [Int: SlotSink], set: PlacedVolumeSet) {
        self.blob = blob
        self.parts = parts
        self.sinks = sinks
        self.set = set
        router = PartRouter(parts)
        router.begin(blob)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        try router.route(bytes, parts: parts) { part, slice, starts, _ in
            if starts { hashers[part] = DigestHasher(blob.algorithm) }
            try sinks[part]?.write(slice)
            hashers[part]?.update(slice)
        }
    }

    public func reset() {
        for sink in sinks.values { sink.reset() }
        router.begin(blob)
        hashers = [:]
    }

    public func complete() throws { try set.complete(self) }

    /// Each part's digest, by its index in the manifest's parts.
    func digests() -> [(Int, Digest)] {
        hashers.map { ($0.key, $0.value.finalize()) }
    }
}
