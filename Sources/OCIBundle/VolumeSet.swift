import Foundation
import OCICore

/// How a bundle is cut into volumes of at most `volumeSize` bytes, each one a tar that verifies
/// and imports alone. Recorded in the bundle manifest, so the signature covers it.
///
/// Every volume carries the bundle manifest, its signature, `index.json` and every image manifest
/// and index (so each volume knows the whole graph), plus its share of configs and layers: a blob
/// whole when it fits a volume (``BundleManifest/Blob/volume``), otherwise in parts, each part with
/// its own digest and stored under it (`blobs/sha256/PART`).
public struct VolumeSet: Codable, Sendable, Hashable {
    public var volumeSize: Int64
    public var count: Int
    /// Parts of the blobs too large for one volume, in blob order then offset order.
    public var parts: [Part]

    public struct Part: Codable, Sendable, Hashable {
        /// The blob this is a part of.
        public var blob: Digest
        public var offset: Int64
        public var size: Int64
        /// Digest of the part's bytes: the name it has in its volume.
        public var digest: Digest
        public var volume: Int
        public init(blob: Digest, offset: Int64, size: Int64, digest: Digest, volume: Int) {
            self.blob = blob
            self.offset = offset
            self.size = size
            self.digest = digest
            self.volume = volume
        }
    }

    public init(volumeSize: Int64, count: Int, parts: [Part]) {
        self.volumeSize = volumeSize
        self.count = count
        self.parts = parts
    }

    /// Publishes a set of volumes whole or not at all: every volume is sealed (fsynced, checksum
    /// written) before any takes its name; if a rename fails, the volumes already renamed are
    /// taken back. Then the volumes of an earlier, larger set under the same name go. Returns each
    /// volume's digest.
    static func publish<Volume>(
        _ volumes: [Volume], of output: String, seal: (Volume) throws -> Digest, rename: (Volume) throws -> Void,
        withdraw: (Volume) -> Void
    ) throws -> [Digest] {
        let digests = try volumes.map(seal)
        for (i, volume) in volumes.enumerated() {
            do {
                try rename(volume)
            } catch {
                for published in volumes[..<i] { withdraw(published) }
                throw error
            }
        }
        removeStaleVolumes(of: output, after: volumes.count)
        return digests
    }

    /// Removes the volumes (and checksums) of an earlier, larger set under the same name, which
    /// would look like part of the set of `count` just published, and what an interrupted export
    /// of such a set left (`.partial` files and their journals; one another writer holds locked is
    /// left alone).
    static func removeStaleVolumes(of output: String, after count: Int) {
        var stale = count + 1
        while true {
            let path = volumePath(for: output, number: stale, count: stale)
            let partial = path + ".partial"
            let published = access(path, F_OK) == 0
            let interrupted = access(partial, F_OK) == 0
            guard published || interrupted else { break }
            if published {
                unlink(path)
                unlink(path + ".sha256")
            }
            if interrupted { removeUnlessHeld(partial) }
            stale += 1
        }
    }

    /// Removes a resumable `.partial` file, its journal and checksum, unless a writer holds its lock
    /// (writers hold it from opening the file until it has its final name) or the name now belongs
    /// to another file than the one locked.
    private static func removeUnlessHeld(_ partial: String) {
        let fd = open(partial, O_RDWR | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { return }
        defer { close(fd) }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0, PartialBundleFile.isNamed(fd, partial) else { return }
        for path in [partial, partial + ".journal", partial + ".sha256"] { unlink(path) }
    }

    /// `NAME.tar` → `NAME.vol003.tar` (three digits, more when the set is larger).
    public static func volumePath(for output: String, number: Int, count: Int) -> String {
        let base = output.hasSuffix(".tar") ? String(output.dropLast(4)) : output
        let width = max(3, String(count).count)
        let digits = String(number)
        return "\(base).vol\(String(repeating: "0", count: max(0, width - digits.count)) + digits).tar"
    }
}

/// `ferry-volume.json`: which volume of which set a tar is. It is bound to the signed bundle
/// manifest: `set` must be that manifest's digest, `count` its volume count, and the volume's
/// entries exactly those the manifest assigns to `number`.
public struct VolumeHeader: Codable, Sendable, Hashable {
    public static let fileName = "ferry-volume.json"
    public static let mediaType = "application/vnd.ferry.volume.v1+json"
    public var mediaType: String
    /// sha256 of the set's `ferry-bundle.json`: the set's id.
    public var set: Digest
    public var number: Int
    public var count: Int

    public init(set: Digest, number: Int, count: Int) {
        self.mediaType = Self.mediaType
        self.set = set
        self.number = number
        self.count = count
    }

    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(self)) + [0x0a]
    }
}

public enum VolumePlanError: Error, CustomStringConvertible {
    case tooSmall(volumeSize: Int64, fixed: Int64)

    public var description: String {
        switch self {
        case .tooSmall(let size, let fixed):
            "--volume-size \(size) bytes is too small: every volume carries the bundle manifest, index and "
                + "image manifests (\(fixed) bytes); give at least \(fixed + VolumePlanner.minimumPayload) bytes"
        }
    }
}

/// Assigns a bundle's blobs to volumes: whole blobs where they fit (largest first, each into the
/// first volume with room), blobs larger than a volume's free space cut into parts that fill whole
/// volumes. Pure; the part digests are filled in by whoever reads the bytes.
public enum VolumePlanner {
    /// The least a volume must have for configs and layers beyond what every volume carries.
    public static let minimumPayload: Int64 = 64 * 1024

    /// Tar bytes of one entry of `size` bytes: a header (and room for a pax header), the data
    /// rounded up to 512.
    public static func entryBytes(_ size: Int64) -> Int64 { 1536 + (size + 511) / 512 * 512 }

    public struct Plan: Sendable, Equatable {
        /// Per blob of the input: its volume (from 1), 0 when in parts, nil when in every volume.
        public var placement: [Int?]
        /// Parts with a placeholder digest (the blob's).
        public var parts: [VolumeSet.Part]
        public var count: Int
        /// Bytes every volume carries before its share (headers, documents).
        public var fixedBytes: Int64
    }

    /// Plans `blobs` (the bundle manifest's list) into volumes of `volumeSize` bytes, where every
    /// volume also carries `headerBytes` of small files (their tar entries included) and every
    /// manifest and index in the list.
    public static func plan(blobs: [BundleManifest.Blob], headerBytes: Int64, volumeSize: Int64) throws(VolumePlanError)
        -> Plan
    {
        var fixed = headerBytes + 1024  // the two zero blocks that end a tar
        var placement: [Int?] = Array(repeating: nil, count: blobs.count)
        var items: [(blob: Int, offset: Int64, size: Int64)] = []
        for (i, blob) in blobs.enumerated() {
            if MediaType.isManifestOrIndex(blob.mediaType) {
                fixed += entryBytes(blob.size)
            } else {
                items.append((i, 0, blob.size))
            }
        }
        let capacity = volumeSize - fixed
        guard capacity >= minimumPayload else { throw .tooSmall(volumeSize: volumeSize, fixed: fixed) }
        // Cut what does not fit an empty volume into parts that fill one each; the rest of such a
        // blob becomes an item like any other.
        let partSize = (capacity - 1536) / 512 * 512
        var whole: [(blob: Int, offset: Int64, size: Int64, part: Bool)] = []
        for item in items {
            if entryBytes(item.size) <= capacity {
                whole.append((item.blob, 0, item.size, false))
                continue
            }
            var offset: Int64 = 0
            while offset < item.size {
                let size = min(partSize, item.size - offset)
                whole.append((item.blob, offset, size, true))
                offset += size
            }
        }
        // First fit, largest first; ties keep the bundle's order (deterministic).
        let order = whole.indices.sorted { a, b in
            whole[a].size != whole[b].size ? whole[a].size > whole[b].size : a < b
        }
        var free: [Int64] = []
        var volumeOf = [Int](repeating: 0, count: whole.count)
        for i in order {
            let cost = entryBytes(whole[i].size)
            if let v = free.firstIndex(where: { $0 >= cost }) {
                free[v] -= cost
                volumeOf[i] = v + 1
            } else {
                free.append(capacity - cost)
                volumeOf[i] = free.count
            }
        }
        var parts: [VolumeSet.Part] = []
        for (i, item) in whole.enumerated() {
            if item.part {
                placement[item.blob] = 0
                parts.append(
                    VolumeSet.Part(
                        blob: blobs[item.blob].digest, offset: item.offset, size: item.size,
                        digest: blobs[item.blob].digest, volume: volumeOf[i]))
            } else {
                placement[item.blob] = volumeOf[i]
            }
        }
        return Plan(placement: placement, parts: parts, count: max(1, free.count), fixedBytes: fixed)
    }

    /// The tar bytes of every small file every volume carries, from their sizes.
    public static func headerBytes(
        manifestSize: Int64, signatureSize: Int64?, indexSize: Int64, dockerManifestSize: Int64?
    ) -> Int64 {
        let volumeHeader: Int64 = 512
        var total = entryBytes(2 + 30) + entryBytes(manifestSize) + entryBytes(volumeHeader) + entryBytes(indexSize)
        if let signatureSize { total += entryBytes(signatureSize) }
        if let dockerManifestSize { total += entryBytes(dockerManifestSize) }
        return total + 2 * 1536  // blobs/, blobs/sha256/
    }
}

extension BundleManifest {
    /// This manifest cut into volumes of `volumeSize` bytes: each blob's `volume` set and the parts
    /// listed, their digests still those of their blobs (``VolumeSet/Part/digest`` is filled in
    /// from the bytes by the writer). The size of the manifest as it will be is estimated from
    /// this one, with room for the volume fields and part entries.
    public func planningVolumes(volumeSize: Int64, signed: Bool, indexSize: Int64, dockerManifestSize: Int64?)
        throws -> BundleManifest
    {
        var manifest = self
        manifest.volumes = nil
        for i in manifest.blobs.indices { manifest.blobs[i].volume = nil }
        let plain = Int64(try manifest.encoded().count)
        // Each blob gains `"volume" : N,` (at most ~24 bytes with indentation); each part ~600.
        var estimate = plain + Int64(blobs.count) * 24 + 4096
        var plan: VolumePlanner.Plan
        while true {
            let header = VolumePlanner.headerBytes(
                manifestSize: estimate, signatureSize: signed ? 1024 : nil, indexSize: indexSize,
                dockerManifestSize: dockerManifestSize)
            plan = try VolumePlanner.plan(blobs: manifest.blobs, headerBytes: header, volumeSize: volumeSize)
            // A part entry is about 310 bytes with sha256 digests, 440 with sha512.
            let needed = plain + Int64(blobs.count) * 24 + Int64(plan.parts.count) * 600 + 4096
            if needed <= estimate { break }
            estimate = needed
        }
        for (i, volume) in plan.placement.enumerated() { manifest.blobs[i].volume = volume }
        manifest.volumes = VolumeSet(volumeSize: volumeSize, count: plan.count, parts: plan.parts)
        return manifest
    }
}

extension VolumeSet {
    /// Checks the plan against the blob list: every blob's volume in range, every parted blob cut
    /// into parts that cover it exactly, every part in a volume. Returns what is wrong, if anything.
    public func problem(with blobs: [BundleManifest.Blob]) -> String? {
        guard count >= 1, volumeSize > 0 else { return "volume count \(count) or size \(volumeSize) is not positive" }
        var partsOf: [Digest: [Part]] = [:]
        for part in parts {
            guard (1...count).contains(part.volume) else {
                return "part of \(part.blob) is in volume \(part.volume) of \(count)"
            }
            partsOf[part.blob, default: []].append(part)
        }
        for blob in blobs {
            guard let volume = blob.volume else { continue }
            guard (0...count).contains(volume) else { return "blob \(blob.digest) is in volume \(volume) of \(count)" }
            guard volume == 0 else { continue }
            var offset: Int64 = 0
            for part in (partsOf.removeValue(forKey: blob.digest) ?? []).sorted(by: { $0.offset < $1.offset }) {
                guard part.offset == offset, part.size > 0 else { return "the parts of blob \(blob.digest) overlap" }
                offset += part.size
            }
            guard offset == blob.size else { return "the parts of blob \(blob.digest) do not cover it" }
        }
        if let stray = partsOf.keys.first { return "parts of \(stray), which is not a blob carried in parts" }
        return nil
    }
}
