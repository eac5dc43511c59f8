import Foundation
import OCICore
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// Routes a bundle's blobs, given once in the bundle manifest's order, to the parts they are cut
/// into: the one place that knows which byte of a parted blob belongs to which part.
struct PartRouter {
    /// Per blob digest: the indexes of its parts in ``VolumeSet/parts``, by offset.
    private var partsOf: [Digest: [Int]] = [:]
    private(set) var current: [Int] = []
    private var offset: Int64 = 0

    init(_ parts: [VolumeSet.Part]) {
        for (i, part) in parts.enumerated() { partsOf[part.blob, default: []].append(i) }
        for key in partsOf.keys { partsOf[key]?.sort { parts[$0].offset < parts[$1].offset } }
    }

    func isParted(_ digest: Digest) -> Bool { partsOf[digest] != nil }

    mutating func begin(_ digest: Digest) {
        current = partsOf[digest] ?? []
        offset = 0
    }

    /// Splits `bytes` (the next bytes of the current blob) by part: `body(part, slice, starts)`,
    /// `starts` true for a part's first bytes, `ends` for its last.
    mutating func route(
        _ bytes: UnsafeRawBufferPointer, parts: [VolumeSet.Part],
        _ body: (_ part: Int, _ slice: UnsafeRawBufferPointer, _ starts: Bool, _ ends: Bool) throws -> Void
    ) rethrows {
        var consumed = 0
        while consumed < bytes.count {
            guard
                let i = current.first(where: {
                    parts[$0].offset <= offset && offset < parts[$0].offset + parts[$0].size
                })
            else { return }
            let part = parts[i]
            let take = Int(min(Int64(bytes.count - consumed), part.offset + part.size - offset))
            let slice = UnsafeRawBufferPointer(rebasing: bytes[consumed..<consumed + take])
            let starts = offset == part.offset
            offset += Int64(take)
            consumed += take
            try body(i, slice, starts, offset == part.offset + part.size)
        }
    }
}

/// Fills in the digests of a volume plan's parts from the bytes of their blobs, as a sink of a
/// bundle reader (for `ferry split`).
public final class PartHasher: BundleBlobSink {
    public private(set) var manifest: BundleManifest
    private var router: PartRouter
    private var hashers: [Int: DigestHasher] = [:]

    public init(_ manifest: BundleManifest) {
        self.manifest = manifest
        router = PartRouter(manifest.volumes?.parts ?? [])
    }

    public func begin(_ blob: BundleManifest.Blob) throws { router.begin(blob.digest) }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard let parts = manifest.volumes?.parts else { return }
        router.route(bytes, parts: parts) { part, slice, starts, ends in
            if starts { hashers[part] = DigestHasher(parts[part].digest.algorithm) }
            hashers[part]?.update(slice)
            if ends, let hasher = hashers.removeValue(forKey: part) {
                manifest.volumes?.parts[part].digest = hasher.finalize()
            }
        }
    }

    public func commit() throws {}
    public func abort() {}
}

/// Writes a bundle as a set of volumes, all at once: each blob, given once in the bundle
/// manifest's order, goes to every volume (manifests), to its volume, or cut into its parts.
/// Every volume is written to a unique `.partial` file and published (fsync, `.sha256`, rename)
/// only when all are complete; on failure none is left.
public final class VolumeSetWriter: BundleBlobSink {
    public let manifest: BundleManifest
    public let paths: [String]
    private let output: String
    private var files: [PartialBundleFile] = []
    private var tars: [TarWriter] = []
    private let volumes: VolumeSet
    private var router: PartRouter
    private var positions: [Digest: Int] = [:]
    /// Volumes (0-based) receiving the current blob whole.
    private var targets: [Int] = []
    private var parted = false
    /// Per volume: entry names (digests) already written (identical parts are stored once).
    private var written: [Set<Digest>]
    /// Per part: the volume it is being written to, or nil when skipped as a duplicate.
    private var writing: [Int: Int] = [:]
    private var failed = false

    /// Opens every volume and writes its header entries. `manifest` is final (its part digests
    /// filled in); `signature`, when given, is over exactly `manifest.encoded()`.
    public init(
        output: String, manifest: BundleManifest, signature: BundleSignature?, index: [UInt8],
        dockerManifest: [UInt8]?, modificationTime: Int64
    ) throws {
        guard let volumes = manifest.volumes else { throw BundleError.io("not a volume set", errno: EINVAL) }
        try Self.ensureOpenFiles(volumes.count + 64)
        self.output = output
        self.manifest = manifest
        self.volumes = volumes
        router = PartRouter(volumes.parts)
        written = Array(repeating: [], count: volumes.count)
        paths = (1...volumes.count).map { VolumeSet.volumePath(for: output, number: $0, count: volumes.count) }
        for (i, blob) in manifest.blobs.enumerated() { positions[blob.digest] = i }
        let set = Digest.of(try manifest.encoded())
        for (i, path) in paths.enumerated() {
            let file = try PartialBundleFile(for: path)
            let tar = try file.makeTarWriter(modificationTime: modificationTime)
            try BundleWriter.writeHead(
                tar, manifest: manifest, index: index, signature: signature, dockerManifest: dockerManifest,
                volume: VolumeHeader(set: set, number: i + 1, count: volumes.count))
            files.append(file)
            tars.append(tar)
        }
    }

    public func begin(_ blob: BundleManifest.Blob) throws {
        guard let position = positions[blob.digest] else {
            throw BundleError.io("blob \(blob.digest) is not in the volume plan", errno: EINVAL)
        }
        let volume = manifest.blobs[position].volume
        parted = volume == 0
        router.begin(blob.digest)
        writing = [:]
        if parted {
            targets = []
        } else {
            // One entry per name and volume: a part with the same bytes may have been written already.
            targets = (volume.map { [$0 - 1] } ?? Array(tars.indices)).filter {
                written[$0].insert(blob.digest).inserted
            }
            for v in targets { try tars[v].beginFile(blob.digest.layoutPath, size: blob.size) }
        }
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard parted else {
            for v in targets { try tars[v].writeData(bytes) }
            return
        }
        let parts = volumes.parts
        try router.route(bytes, parts: parts) { part, slice, starts, _ in
            if starts {
                let v = parts[part].volume - 1
                if written[v].insert(parts[part].digest).inserted {
                    try tars[v].beginFile(parts[part].digest.layoutPath, size: parts[part].size)
                    writing[part] = v
                }
            }
            if let v = writing[part] { try tars[v].writeData(slice) }
        }
    }

    public func commit() throws {}
    public func abort() { failed = true }

    /// Ends and publishes every volume; returns each volume's path and the sha256 of its tar.
    public func finish() throws -> [(path: String, digest: Digest)] {
        guard !failed else { throw BundleError.io("a blob failed verification; no volume was written", errno: EIO) }
        for tar in tars { try tar.finish() }
        for file in files {
            let size = try file.size()
            guard size <= volumes.volumeSize else {
                throw BundleError.io(
                    "volume \(file.path) came out at \(size) bytes, over --volume-size \(volumes.volumeSize)",
                    errno: EFBIG)
            }
        }
        let digests = try VolumeSet.publish(
            files, of: output, seal: { try $0.seal() }, rename: { try $0.rename() }, withdraw: { $0.withdraw() })
        return Array(zip(paths, digests))
    }

    /// A set written whole by ``split(_:volumeSize:output:index:dockerManifest:signingKey:modificationTime:hashParts:feed:)``.
    public struct Split: Sendable {
        /// The signature over the set's manifest (its part digests filled in).
        public var signature: BundleSignature?
        /// Each volume as published, with the sha256 of its tar.
        public var volumes: [(path: String, digest: Digest)]
        /// The set's name: the sha256 of its manifest.
        public var id: Digest
    }

    /// Cuts `plain` into volumes of `volumeSize`, fills in the part digests (`hashParts` gives the
    /// parted blobs' bytes to the hasher), signs the result with `signingKey` and writes every
    /// volume in one pass, `feed` giving the blobs in the manifest's order. ``PlacedVolumeSet``
    /// writes the very same bytes in place.
    public static func split(
        _ plain: BundleManifest, volumeSize: Int64, output: String, index: [UInt8], dockerManifest: [UInt8]?,
        signingKey: SigningKey?, modificationTime: Int64, hashParts: (PartHasher) throws -> Void,
        feed: (VolumeSetWriter) throws -> Void
    ) throws -> Split {
        var manifest = try plain.planningVolumes(
            volumeSize: volumeSize, signed: signingKey != nil, indexSize: Int64(index.count),
            dockerManifestSize: dockerManifest.map { Int64($0.count) })
        if manifest.volumes?.parts.isEmpty == false {
            let hasher = PartHasher(manifest)
            try hashParts(hasher)
            manifest = hasher.manifest
        }
        let signature = try signingKey.map { try BundleSignature.sign(manifest: try manifest.encoded(), with: $0) }
        let writer = try VolumeSetWriter(
            output: output, manifest: manifest, signature: signature, index: index, dockerManifest: dockerManifest,
            modificationTime: modificationTime)
        try feed(writer)
        let volumes = try writer.finish()
        return Split(signature: signature, volumes: volumes, id: Digest.of(try manifest.encoded()))
    }

    /// Raises the open-file limit to hold every volume open at once, or says why it cannot.
    static func ensureOpenFiles(_ needed: Int) throws {
        var limit = rlimit()
        guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
        guard limit.rlim_cur < rlim_t(needed) else { return }
        guard limit.rlim_max >= rlim_t(needed) else {
            throw BundleError.io(
                "\(needed - 64) volumes need \(needed) open files, over this system's limit of \(limit.rlim_max); "
                    + "give a larger --volume-size", errno: EMFILE)
        }
        limit.rlim_cur = rlim_t(needed)
        setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
    }

}
