import Foundation
import OCICore
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a bundle: one uncompressed tar holding a standard OCI image layout
/// (`../shared/specs/oci-image/image-layout.md`) plus the bundle manifest.
///
/// Entry order is fixed so one reader pass can verify everything: `oci-layout`,
/// `ferry-bundle.json`, `index.json`, `blobs/`, `blobs/ALG/`, then the blobs in the bundle
/// manifest's order. Every entry has owner 0:0 and the bundle's creation time, so the same inputs
/// give a byte-identical tar. The tar is written to `PATH.partial`, fsynced and renamed: a bundle
/// under its final name is always complete.
public struct BundleWriter {
    /// One image as it goes into `index.json`.
    public struct Entry: Sendable {
        public var reference: Reference
        public var descriptor: Descriptor
        public init(reference: Reference, descriptor: Descriptor) {
            self.reference = reference
            self.descriptor = descriptor
        }
    }

    /// Returns the path of a local file holding the verified bytes of a blob.
    public typealias BlobLocator = (Digest) -> String

    public init() {}

    /// The `index.json` of a bundle: one descriptor per requested reference, named for skopeo
    /// (`org.opencontainers.image.ref.name`) and containerd (`io.containerd.image.name`).
    public static func makeIndex(_ entries: [Entry]) throws -> [UInt8] {
        let manifests = entries.map { entry -> Descriptor in
            var descriptor = Descriptor(
                mediaType: entry.descriptor.mediaType, digest: entry.descriptor.digest, size: entry.descriptor.size)
            let name = Self.imageName(entry.reference)
            descriptor.annotations = [AnnotationKey.refName: name, AnnotationKey.containerdImageName: name]
            return descriptor
        }
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: manifests)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(index))
    }

    /// The docker-archive index beside `index.json`.
    public static let dockerManifestName = "manifest.json"

    /// One image as `docker load` and `podman load` see it: a name and an image manifest (for a
    /// multi-platform image, the one platform chosen to load).
    public struct LoadEntry: Sendable {
        public var reference: Reference
        public var manifest: ImageManifest
        public init(reference: Reference, manifest: ImageManifest) {
            self.reference = reference
            self.manifest = manifest
        }
    }

    /// The docker-archive `manifest.json` (the form `docker save` writes since Docker 25: beside an
    /// OCI layout, paths into `blobs/`): config, `name:tag` and layers of each image. An image
    /// named by digest only gets no tag (it loads untagged).
    public static func makeDockerManifest(_ entries: [LoadEntry]) throws -> [UInt8] {
        struct Item: Encodable {
            var Config: String
            var RepoTags: [String]
            var Layers: [String]
        }
        let items = entries.map { entry in
            Item(
                Config: entry.manifest.config.digest.layoutPath,
                RepoTags: entry.reference.tag.map { ["\(entry.reference.name):\($0)"] } ?? [],
                Layers: entry.manifest.layers.map(\.digest.layoutPath))
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(items))
    }

    /// The name an image is stored under: the full reference; a reference with tag and digest
    /// keeps the tag as its name (the digest is what the descriptor pins).
    public static func imageName(_ reference: Reference) -> String {
        if let tag = reference.tag { return "\(reference.name):\(tag)" }
        return reference.description
    }

    /// Writes the bundle to `path` atomically, and `PATH.sha256` beside it (the format
    /// `sha256sum -c` reads). A `signature` is stored right after the bundle manifest. Each blob is
    /// hashed again as it is copied, so the bundle holds exactly the bytes its manifest names —
    /// except those in `verifiedThisRun`, which the caller has just verified while writing them.
    /// Returns the sha256 of the whole tar.
    @discardableResult
    public func write(
        to path: String, manifest: BundleManifest, index: [UInt8], modificationTime: Int64,
        signature: BundleSignature? = nil, dockerManifest: [UInt8]? = nil, blobs: BlobLocator,
        verifiedThisRun: Set<Digest> = [], progress: (Int64) -> Void = { _ in }
    ) throws -> Digest {
        let file = try PartialBundleFile(for: path)
        let tar = try file.makeTarWriter(modificationTime: modificationTime)
        try Self.writeHead(
            tar, manifest: manifest, index: index, signature: signature, dockerManifest: dockerManifest)
        for blob in manifest.blobs {
            let source = blobs(blob.digest)
            let sourceFD = open(source, O_RDONLY | O_CLOEXEC)
            guard sourceFD >= 0 else { throw BundleError.io("open blob \(source)", errno: errno) }
            defer { close(sourceFD) }
            if verifiedThisRun.contains(blob.digest) {
                try tar.addFile(blob.digest.layoutPath, size: blob.size, from: sourceFD) { progress(Int64($0.count)) }
                continue
            }
            var verifier = BlobVerifier(digest: blob.digest, size: blob.size)
            do {
                try tar.addFile(blob.digest.layoutPath, size: blob.size, from: sourceFD) { chunk in
                    try verifier.update(chunk)
                    progress(Int64(chunk.count))
                }
                try verifier.finish()
            } catch let error as BlobVerificationError {
                throw BundleError.corruptSource(path: source, error)
            }
        }
        try tar.finish()
        return try file.publish()
    }

    /// The entries before the blobs, in their fixed order: `oci-layout`, the bundle manifest, its
    /// signature, (for one volume of a set) `ferry-volume.json`, `index.json`, docker's
    /// `manifest.json`, `blobs/` and `blobs/ALG/`. The one definition of the head of a bundle or a
    /// volume, for the streaming writers and the planned ones.
    static func writeHead(
        _ tar: TarWriter, manifest: BundleManifest, index: [UInt8], signature: BundleSignature?,
        dockerManifest: [UInt8]?, volume: VolumeHeader? = nil
    ) throws {
        let layoutHeader = try JSONEncoder().encode(ImageLayoutHeader())
        try tar.addFile("oci-layout", bytes: Array(layoutHeader))
        try tar.addFile(BundleManifest.fileName, bytes: try manifest.encoded())
        if let signature { try tar.addFile(BundleSignature.fileName, bytes: try signature.encoded()) }
        if let volume { try tar.addFile(VolumeHeader.fileName, bytes: try volume.encoded()) }
        try tar.addFile("index.json", bytes: index)
        if let dockerManifest { try tar.addFile(Self.dockerManifestName, bytes: dockerManifest) }
        try tar.addDirectory("blobs")
        for algorithm in Set(manifest.blobs.map(\.digest.algorithm)).sorted(by: { $0.rawValue < $1.rawValue }) {
            try tar.addDirectory("blobs/\(algorithm.rawValue)")
        }
    }

    static func syncDirectory(of path: String) {
        let directory = (path as NSString).deletingLastPathComponent
        let dirFD = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirFD >= 0 {
            fsync(dirFD)
            close(dirFD)
        }
    }
}

public enum BundleError: Error, CustomStringConvertible {
    case io(String, errno: Int32)
    case corruptSource(path: String, BlobVerificationError)
    case invalid([VerificationProblem])
    case changedWhileSigning(String)
    /// Another process holds the partial file (`PATH.partial`).
    case busy(String)
    /// A blob placed in the bundle (copied from the cache, or written by an earlier, interrupted
    /// run) did not match its digest when the bundle was sealed.
    case placedBlobCorrupt(path: String, slot: Int, blob: Digest, BlobVerificationError)

    public var description: String {
        switch self {
        case .busy(let path): "another export is writing \(path); wait for it or stop it"
        case .placedBlobCorrupt(_, _, _, let error):
            "a blob written into the partial bundle earlier no longer matches (\(error)); run the export again to fetch it"
        case .io(let what, let code): "\(what): \(String(cString: strerror(code)))"
        case .corruptSource(let path, let error):
            "cached blob \(path) was corrupt (\(error)) and is removed from the cache; export again"
        case .changedWhileSigning(let path): "\(path) changed while it was being signed; nothing was written"
        case .invalid(let problems):
            (["bundle does not verify:"] + problems.map(\.description)).joined(separator: "\n")
        }
    }
}

/// A bundle being written: a unique `PATH.XXXXXX.partial` created exclusively (two writers never
/// share one, and a planted symlink is never followed), hashed as it is written, then either
/// published (fsync, checksum file, rename) or removed when dropped.
final class PartialBundleFile {
    let path: String
    let partialPath: String
    private(set) var fd: Int32
    private var hasher = DigestHasher(.sha256)
    private var published = false
    /// Left in place when dropped unpublished (unless discarded): a resumable file is the resume point.
    private let keep: Bool
    /// Removed already (``discard()``): the name may be another writer's by now.
    private var discarded = false

    init(for path: String) throws {
        self.path = path
        keep = false
        (fd, partialPath) = try Self.createPartial(for: path)
    }

    /// The resumable form: `PATH.partial`, created or reopened (never through a symlink), held
    /// with an exclusive lock so two writers never share it.
    init(resumableFor path: String) throws {
        self.path = path
        partialPath = path + ".partial"
        // Never removed by this object unless discarded: not even when the lock below is refused
        // (the file is another writer's).
        keep = true
        fd = -1
        // The name is checked again once locked: a cleanup that held the lock may have removed the
        // file this open found (`VolumeSet.removeStaleVolumes`), and a removed file is never written.
        for _ in 0..<3 {
            fd = open(partialPath, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw BundleError.io("open \(partialPath)", errno: errno) }
            guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
                let code = errno
                close(fd)
                fd = -1
                if code == EWOULDBLOCK { throw BundleError.busy(partialPath) }
                throw BundleError.io("lock \(partialPath)", errno: code)
            }
            if Self.isNamed(fd, partialPath) { return }
            close(fd)
            fd = -1
        }
        throw BundleError.busy(partialPath)
    }

    /// Whether `path` still names the file open as `fd` (not removed or replaced since).
    static func isNamed(_ fd: Int32, _ path: String) -> Bool {
        var opened = stat()
        var named = stat()
        return fstat(fd, &opened) == 0 && stat(path, &named) == 0 && opened.st_ino == named.st_ino
            && opened.st_dev == named.st_dev
    }

    deinit {
        if fd >= 0 { close(fd) }
        if !published && !keep && !discarded {
            unlink(partialPath)
            unlink(checksumPartial)
        }
    }

    /// A tar writer into this file whose every byte is hashed for the checksum file.
    func makeTarWriter(modificationTime: Int64) throws -> TarWriter {
        try TarWriter(fileDescriptor: fd, modificationTime: modificationTime) { [self] in hasher.update($0) }
    }

    /// Bytes written so far.
    func size() throws -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw BundleError.io("stat \(partialPath)", errno: errno) }
        return Int64(info.st_size)
    }

    /// fsyncs the finished tar and makes it the bundle; returns its sha256.
    func publish() throws -> Digest {
        let digest = try seal()
        try rename()
        return digest
    }

    /// The first half of publishing: fsyncs the tar and writes its checksum beside it, still under
    /// the partial names (a set of volumes is sealed whole before any is renamed). The file stays
    /// open, and a resumable one locked, until this object goes: no cleanup takes it for stale
    /// between sealing and renaming.
    func seal(digest given: Digest? = nil) throws -> Digest {
        guard fsync(fd) == 0 else { throw BundleError.io("fsync \(partialPath)", errno: errno) }
        let digest = given ?? hasher.finalize()
        let name = (path as NSString).lastPathComponent
        do {
            try Data("\(digest.encoded)  \(name)\n".utf8).write(to: URL(fileURLWithPath: checksumPartial))
        } catch {
            throw BundleError.io("write \(checksumPartial)", errno: EIO)
        }
        return digest
    }

    /// The second half: the sealed tar and its checksum take their final names. A bundle under its
    /// final name never sits beside a wrong checksum, and a failure leaves nothing under it.
    func rename() throws {
        unlink(path + ".sha256")
        guard Glibc.rename(partialPath, path) == 0 else {
            throw BundleError.io("rename to \(path)", errno: errno)
        }
        guard Glibc.rename(checksumPartial, path + ".sha256") == 0 else {
            let code = errno
            unlink(path)
            throw BundleError.io("rename to \(path).sha256", errno: code)
        }
        published = true
        BundleWriter.syncDirectory(of: path)
    }

    /// Removes the unpublished file at once (its content failed verification: nothing to resume).
    /// Not left to `deinit`: a thread still finishing work on the file (a seal ahead, a download
    /// being torn down) may hold this object when the process exits.
    func discard() {
        guard !published, !discarded else { return }
        discarded = true
        unlink(partialPath)
        unlink(checksumPartial)
    }

    /// Takes a published bundle back (when the rest of its volume set failed to publish).
    func withdraw() {
        unlink(path)
        unlink(path + ".sha256")
    }

    private var checksumPartial: String { partialPath + ".sha256" }

    /// A new, unique `PATH.XXXXXX.partial` in the bundle's directory, created exclusively (two
    /// writers never share one, and a planted symlink is never followed).
    private static func createPartial(for path: String) throws -> (Int32, String) {
        var random = SystemRandomNumberGenerator()
        for _ in 0..<16 {
            let candidate = "\(path).\(String(random.next() % 2_176_782_336, radix: 36)).partial"
            let fd = open(candidate, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o644)
            if fd >= 0 { return (fd, candidate) }
            if errno != EEXIST { throw BundleError.io("create \(candidate)", errno: errno) }
        }
        throw BundleError.io("create \(path).*.partial", errno: EEXIST)
    }

}
