import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// A set of volumes written in place: one ``PlacedBundle`` per volume (`NAME.volNNN.tar.partial`,
/// each with its journal, so a killed export resumes every volume), planned by
/// ``BundlePlan/init(volume:of:index:modificationTime:signature:dockerManifest:)`` from the final
/// manifest, so the set is byte-identical to the one ``VolumeSetWriter`` streams. Published whole
/// or not at all.
public final class PlacedVolumeSet: Sendable {
    public let volumes: [PlacedBundle]
    private let output: String
    private let places: [Digest: [Place]]

    /// Where a blob's bytes go: a slot of a volume.
    public struct Place: Sendable, Hashable {
        public let volume: Int
        public let slot: Int
    }

    /// Opens every volume of the set `manifest` describes (its part digests filled in; `signature`
    /// over exactly `manifest.encoded()`), resuming those an interrupted run left. A volume that
    /// would come out larger than the set's volume size is refused before anything is written.
    public init(
        output: String, manifest: BundleManifest, signature: BundleSignature?, index: [UInt8],
        dockerManifest: [UInt8]?, modificationTime: Int64
    ) throws {
        guard let set = manifest.volumes else { throw BundleError.io("not a volume set", errno: EINVAL) }
        let plans = try (1...set.count).map {
            try BundlePlan(
                volume: $0, of: manifest, index: index, modificationTime: modificationTime, signature: signature,
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
        for (v, plan) in plans.enumerated() {
            for (i, slot) in plan.slots.enumerated() {
                places[slot.blob, default: []].append(Place(volume: v, slot: i))
            }
        }
        self.output = output
        self.places = places
        volumes = try zip(paths, plans).map { try PlacedBundle(path: $0, plan: $1) }
    }

    /// Every slot that holds bytes of `blob` (several for a manifest or a blob in parts).
    public func places(of blob: Digest) -> [Place] { places[blob] ?? [] }

    /// ``PlacedBundle/sealAhead()`` of every volume.
    public func sealAhead() {
        for volume in volumes { volume.sealAhead() }
    }

    /// Seals every volume, then renames them all (``VolumeSet/publish(_:of:seal:rename:withdraw:)``).
    /// Returns each volume's path and the sha256 of its tar.
    public func publish(progress: @Sendable (Int64) -> Void = { _ in }) throws -> [(path: String, digest: Digest)] {
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
