import Foundation
import OCIBundle
import OCICore
import OCIStore

#if canImport(Glibc)
    import Glibc
#endif

/// Imports bundles into the appliance's registry store: verifies while it stores (one pass), then
/// makes every image of the bundle visible at once. A bundle that fails changes nothing clients
/// see; its stored blobs stay unreferenced until garbage collection.
public struct Importer: Sendable {
    public struct ImportedImage: Codable, Sendable {
        public var reference: String
        public var repository: String
        public var tag: String?
        public var digest: String
    }

    public struct Result: Codable, Sendable {
        public var bundle: String
        public var manifestDigest: String
        public var signer: String?
        public var images: [ImportedImage]
        public var blobsWritten: Int
        public var blobsAlreadyPresent: Int
        /// The same bundle was imported before and its tags still point where it put them.
        public var unchanged: Bool
        /// With `skipKnown`: the bundle was known, so only its header was read (nothing else verified).
        public var skippedUnread: Bool
        public var time: String
        public var seconds: Double
        /// For a volume of a set: which one, and which are still to come (none: the set was
        /// imported with this volume).
        public var volume: VolumeProgress?
    }

    public struct VolumeProgress: Codable, Sendable {
        public var set: String
        public var number: Int
        public var count: Int
        public var stillNeeded: [Int]
    }

    let store: any RegistryStorage
    let reader: BundleReader
    /// Re-hash the stored blobs a delta relies on (else their sizes are checked).
    let paranoid: Bool
    /// Serve every image under this prefix (`--name-prefix`).
    let namePrefix: RepositoryName?
    /// cosign keys every image of a bundle needs a signature by (`import.requireImageSignatures`).
    let imageKeys: [ImageSignatureKey]

    public init(
        store: any RegistryStorage, reader: BundleReader, paranoid: Bool = false, namePrefix: RepositoryName? = nil,
        imageKeys: [ImageSignatureKey] = []
    ) {
        self.imageKeys = imageKeys
        self.store = store
        self.reader = reader
        self.paranoid = paranoid
        self.namePrefix = namePrefix
    }

    /// Imports the bundle at `path`, or standard input for `-`. Blocking; run it off the event loop.
    ///
    /// A bundle imported before is verified again like any other (a copy may have been altered since);
    /// with `skipKnown`, one whose header names a recorded import with unchanged tags is not read
    /// past its header (whose signature is still checked against the trusted keys).
    public func importBundle(_ path: String, skipKnown: Bool = false, repository: String? = nil) throws -> Result {
        let started = Date()
        if skipKnown, path != "-", LayoutArchive.isFerryBundle(path: path),
            let header = try read(path, headerOnly: true, sink: nil), header.ok,
            let digest = header.manifestDigest, let manifest = header.manifest, store.hasImportRecord(digest.encoded),
            try isCurrent(manifest)
        {
            return Result(
                bundle: path, manifestDigest: digest.description, signer: header.signature?.keyID,
                images: try manifest.images.map { try imported($0) }, blobsWritten: 0,
                blobsAlreadyPresent: manifest.blobs.count,
                unchanged: true, skippedUnread: true,
                time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
                seconds: Date().timeIntervalSince(started))
        }
        return try importVerified(name: path, started: started) { sink in
            do {
                return try reader.verifyAny(path: path, sink: sink, repository: repository)
            } catch let error as LayoutArchiveError {
                throw ImportError.archive(error)
            } catch {
                throw ImportError.unreadable(path, reason: "\(error)")
            }
        }
    }

    /// Imports a Ferry bundle (or one volume) read once from `fileDescriptor` as it arrives (an
    /// upload through the web console): the same verification and the same commit as a file.
    /// `name` is what the record and the errors call it. `confirm` is asked once the bundle read
    /// verified, before anything becomes visible: the upload it came in may still turn out broken
    /// (it may block until the request knows). Blocking; run it off the event loop.
    public func importStream(fileDescriptor: Int32, name: String, confirm: () -> Bool) throws -> Result {
        try importVerified(name: name, started: Date(), confirm: confirm) { sink in
            reader.verify(fileDescriptor: fileDescriptor, name: name, sink: sink)
        }
    }

    /// Reads the bundle through `read` into the store's sink, then checks and commits it.
    private func importVerified(
        name path: String, started: Date, confirm: () -> Bool = { true },
        read: (any BundleBlobSink) throws -> VerificationReport
    ) throws -> Result {
        let sink = StoreSink(storage: store) { [self] manifest, volume in
            try refuseRepeated(volume, manifest: manifest)
        }
        let capture = SignatureCapture(passingTo: sink)
        let report = try read(imageKeys.isEmpty ? sink : capture)
        if let refusal = sink.refusal { throw refusal }
        if let failure = report.problems.first(where: { $0.kind == .sink }) {
            throw ImportError.store(bundle: path, failure.message)
        }
        guard report.ok, let manifest = report.manifest, let manifestDigest = report.manifestDigest else {
            throw ImportError.invalid(bundle: path, report.problems)
        }
        guard confirm() else { throw ImportError.uploadIncomplete(path) }
        if let volume = report.volume {
            // A set's signatures are checked when it is complete (its payloads may be in any volume).
            return try store.withVolumeSetLock(manifestDigest.encoded) {
                try importVolume(
                    volume, report: report, manifest: manifest, path: path, sink: sink, started: started,
                    kept: capture.kept)
            }
        }
        try checkImageSignatures(report, manifest: manifest, path: path, kept: capture.kept)
        return try commit(report, manifest: manifest, path: path, sink: sink, started: started)
    }

    /// Makes a verified bundle (or a complete volume set, its last volume's report in hand)
    /// visible: checks every blob it relies on but did not carry, then one transaction.
    private func commit(
        _ report: VerificationReport, manifest: BundleManifest, path: String, sink: StoreSink, started: Date,
        volume: VolumeProgress? = nil
    ) throws -> Result {
        guard let manifestDigest = report.manifestDigest else {
            throw ImportError.unreadable(path, reason: "no bundle manifest")
        }
        // A delta relies on blobs it does not carry: all must be here before anything is visible.
        let external = report.imageContents.values.reduce(into: Set<Digest>()) { $0.formUnion($1.external) }
        if !external.isEmpty {
            let missing = missingBlobs(external, sizes: manifest.external ?? [])
            if !missing.isEmpty {
                throw ImportError.baseMissing(
                    bundle: path, base: manifest.base?.description ?? "an unnamed base", missing: missing)
            }
        }
        // The other volumes of a set stored theirs on earlier runs (gc keeps them for the set).
        let elsewhere = report.imageContents.values.reduce(into: Set<Digest>()) { $0.formUnion($1.elsewhere) }
        if !elsewhere.isEmpty {
            let missing = missingBlobs(elsewhere, sizes: manifest.blobs)
            if !missing.isEmpty { throw ImportError.volumeContentGone(volume: path, missing: missing, needAgain: []) }
        }
        let images = try manifest.images.map { try imported($0) }
        let unchanged = try store.hasImportRecord(manifestDigest.encoded) && isCurrent(manifest)
        var plan = ImportPlan(images: [])
        if let platforms = manifest.partial?.platforms {
            plan.platforms = PlatformFilter(platforms.compactMap { try? Platform(parsing: $0) })
        }
        for (image, imported) in zip(manifest.images, images) {
            guard let contents = report.imageContents[image.reference] else { continue }
            plan.images.append(
                ImportPlan.Image(
                    repository: try Self.repositoryName(imported), tag: try imported.tag.map { try Tag($0) },
                    top: image.digest, manifests: contents.manifests, blobs: contents.blobs))
        }
        do {
            try store.importImages(plan)
        } catch RegistryRuleError.contentMissing(let digest) {
            throw ImportError.storeChanged(path, digest)
        } catch let error as RegistryRuleError {
            throw ImportError.store(bundle: path, error.description)
        }
        let result = Result(
            bundle: path, manifestDigest: manifestDigest.description, signer: report.signature?.keyID, images: images,
            blobsWritten: sink.written, blobsAlreadyPresent: sink.present, unchanged: unchanged, skippedUnread: false,
            time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
            seconds: Date().timeIntervalSince(started), volume: volume)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try store.recordImport(Array(try encoder.encode(result)), id: manifestDigest.encoded)
        return result
    }

    /// With `import.requireImageSignatures`: every image needs a cosign signature by one of the
    /// keys. The documents come from the bundle as read (`kept`), else from the store (a volume
    /// set's earlier volumes).
    func checkImageSignatures(
        _ report: VerificationReport, manifest: BundleManifest, path: String, kept: [Digest: [UInt8]]
    ) throws {
        guard !imageKeys.isEmpty else { return }
        let blobs = store.blobs
        func bytes(_ digest: Digest) -> [UInt8]? {
            kept[digest] ?? (try? blobs.read(digest, limit: ManifestDocument.maximumSize))
        }
        var members: [CosignSignature.Member] = []
        for image in manifest.images {
            guard let reference = try? Reference(image.reference) else {
                throw ImportError.unsignedImages(bundle: path, ["\(image.reference): not a reference"])
            }
            members.append(
                .init(
                    reference: reference, digest: image.digest,
                    manifests: report.imageContents[image.reference]?.manifests ?? [image.digest]))
        }
        let refused = CosignSignature.refused(members, keys: imageKeys, manifest: bytes, payload: { bytes($0.digest) })
        if !refused.isEmpty { throw ImportError.unsignedImages(bundle: path, refused) }
    }

    /// Of `digests`, those the store lacks (by size; re-hashed with `paranoid`), in order.
    private func missingBlobs(_ digests: Set<Digest>, sizes listed: [BundleManifest.Blob]) -> [Digest] {
        var sizes: [Digest: Int64] = [:]
        for blob in listed where digests.contains(blob.digest) { sizes[blob.digest] = blob.size }
        let blobs = store.blobs
        return digests.filter { digest in
            guard blobs.contains(digest, size: sizes[digest] ?? -1) else { return true }
            guard paranoid else { return false }
            return (try? BlobStore.hash(file: blobs.path(of: digest), algorithm: digest.algorithm)) != digest
        }.sorted()
    }

    /// A volume already stored for its set, or of a set imported and still current, is refused
    /// (before its content is read when the sink asks, and again under the set's lock).
    func refuseRepeated(_ volume: VolumeHeader, manifest: BundleManifest) throws {
        if store.hasImportRecord(volume.set.encoded), try isCurrent(manifest) {
            throw ImportError.setAlreadyImported(set: volume.set, number: volume.number, count: volume.count)
        }
        if let pending = try store.pendingVolumeSets().first(where: { $0.id == volume.set.encoded }),
            pending.arrived.contains(volume.number)
        {
            throw ImportError.duplicateVolume(set: volume.set, number: volume.number, needed: pending.needed)
        }
    }

    /// Records a verified volume (its content is stored); when it is the set's last, joins the
    /// blobs carried in parts and makes the set's images visible. The last volume is recorded
    /// only by the set's import: if that fails (a delta's base missing, a full disk), the same
    /// volume can be imported again. Runs under the set's lock.
    private func importVolume(
        _ volume: VolumeHeader, report: VerificationReport, manifest: BundleManifest, path: String,
        sink: StoreSink, started: Date, kept: [Digest: [UInt8]]
    ) throws -> Result {
        try refuseRepeated(volume, manifest: manifest)
        var pending =
            try store.pendingVolumeSets().first { $0.id == volume.set.encoded }
            ?? PendingVolumeSet(
                id: volume.set.encoded, count: volume.count, images: manifest.images.map(\.reference),
                firstVolume: path, started: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)))
        // What this volume stored must still be there: gc may have run while a large volume was read.
        let mine = manifest.blobs.filter { $0.volume == volume.number }
        let gone = mine.filter { !store.blobs.contains($0.digest, size: $0.size) }.map(\.digest)
        if !gone.isEmpty { throw ImportError.storedContentGone(volume: path, missing: gone) }
        pending.arrived.append(volume.number)
        let progress = VolumeProgress(
            set: volume.set.description, number: volume.number, count: volume.count, stillNeeded: pending.needed)
        guard pending.needed.isEmpty else {
            try store.recordVolume(
                volume.number, of: pending, holding: mine.map(\.digest),
                shared: manifest.blobs.filter { $0.volume == nil }.map(\.digest))
            return Result(
                bundle: path, manifestDigest: volume.set.description, signer: report.signature?.keyID,
                images: try manifest.images.map { try imported($0) }, blobsWritten: sink.written,
                blobsAlreadyPresent: sink.present, unchanged: false, skippedUnread: false,
                time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
                seconds: Date().timeIntervalSince(started), volume: progress)
        }
        try checkImageSignatures(report, manifest: manifest, path: path, kept: kept)
        do {
            try joinParts(manifest, set: volume.set.encoded, path: path)
            let result = try commit(
                report, manifest: manifest, path: path, sink: sink, started: started, volume: progress)
            try store.finishVolumeSet(volume.set.encoded)
            return result
        } catch ImportError.volumeContentGone(_, let missing, _) {
            // Content earlier volumes stored is gone: those volumes are needed again.
            let again = try store.forgetVolumes(holding: Set(missing), of: volume.set.encoded)
            throw ImportError.volumeContentGone(volume: path, missing: missing, needAgain: again)
        }
    }

    /// Moves each blob carried in parts from the file its parts were written into (each verified
    /// against its part digest on arrival) into the store, hashing it whole first: the store holds
    /// only bytes that match their digest.
    private func joinParts(_ manifest: BundleManifest, set: String, path: String) throws {
        let blobs = store.blobs
        for blob in manifest.blobs where blob.volume == 0 && !blobs.contains(blob.digest, size: blob.size) {
            let file = try store.volumePartFile(set: set, blob: blob.digest)
            guard FileSystem.size(of: file) == blob.size,
                (try? BlobStore.hash(file: file, algorithm: blob.digest.algorithm)) == blob.digest
            else {
                unlink(file)
                let carriers = (manifest.volumes?.parts ?? []).filter { $0.blob == blob.digest }.map(\.volume)
                throw ImportError.partsDoNotJoin(volume: path, blob: blob.digest, volumes: carriers)
            }
            do {
                try blobs.adopt(file, as: blob.digest, size: blob.size)
            } catch {
                throw ImportError.store(bundle: path, "storing the joined \(blob.digest): \(error)")
            }
        }
    }

    /// Where an image is served: its served repository name, under `namePrefix` when given.
    func imported(_ image: BundleManifest.Image) throws -> ImportedImage {
        let reference: Reference
        var served: RepositoryName
        do {
            reference = try Reference(image.reference)
            served = try reference.servedRepositoryName()
            if let namePrefix { served = try RepositoryName("\(namePrefix.value)/\(served.value)") }
        } catch {
            throw ImportError.badReference(image.reference, error)
        }
        return ImportedImage(
            reference: image.reference, repository: served.value, tag: reference.tag?.value,
            digest: image.digest.description)
    }

    static func repositoryName(_ image: ImportedImage) throws -> RepositoryName {
        do {
            return try RepositoryName(image.repository)
        } catch {
            throw ImportError.badReference(image.reference, error)
        }
    }

    func isCurrent(_ manifest: BundleManifest) throws -> Bool {
        for image in manifest.images {
            let imported = try self.imported(image)
            let repository = try Self.repositoryName(imported)
            guard try store.resolve(.digest(image.digest), in: repository) != nil else { return false }
            if let tag = imported.tag {
                guard let tag = try? Tag(tag), try store.resolve(.tag(tag), in: repository) == image.digest else {
                    return false
                }
            }
        }
        return true
    }

    private func read(_ path: String, headerOnly: Bool, sink: (any BundleBlobSink)?) throws -> VerificationReport? {
        do {
            return try reader.verify(path: path, sink: sink, stopAfterHeader: headerOnly)
        } catch {
            throw ImportError.unreadable(path, reason: "\(error)")
        }
    }
}

/// Stores each verified blob durably; blobs already present are only verified. For a volume of a
/// set, a part is written at its offset into its blob's part file (joined and hashed whole when
/// the set is complete).
final class StoreSink: BundleBlobSink {
    let storage: any RegistryStorage
    var store: BlobStore { storage.blobs }
    var writer: BlobWriter?
    var written = 0
    var present = 0
    /// Asked before the first blob of a volume: may refuse it (a repeat) without reading on.
    let screen: (BundleManifest, VolumeHeader) throws -> Void
    private(set) var refusal: ImportError?
    /// This volume's parts, by digest: where each goes (identical parts share a digest).
    private var partTargets: [Digest: [VolumeSet.Part]] = [:]
    private var set = ""
    /// The part files being written for the current entry, each from its part's offset.
    private var partFiles: [RangeWriter] = []

    init(storage: any RegistryStorage, screen: @escaping (BundleManifest, VolumeHeader) throws -> Void) {
        self.storage = storage
        self.screen = screen
    }

    deinit { closeParts() }

    func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws {
        guard let volume else { return }
        do {
            try screen(manifest, volume)
        } catch let error as ImportError {
            refusal = error
            throw error
        }
        set = volume.set.encoded
        for part in manifest.volumes?.parts ?? [] where part.volume == volume.number {
            partTargets[part.digest, default: []].append(part)
        }
    }

    func begin(_ blob: BundleManifest.Blob) throws {
        closeParts()
        for part in partTargets[blob.digest] ?? [] {
            partFiles.append(
                try RangeWriter(path: try storage.volumePartFile(set: set, blob: part.blob), offset: part.offset))
        }
        writer = nil
        // The reader gives a part as a blob without a media type: not a blob of the store.
        if !partFiles.isEmpty && blob.mediaType == nil { return }
        if store.contains(blob.digest, size: blob.size) {
            present += 1
            // Fresh again, so garbage collection's grace period covers the commit that follows.
            utimensat(AT_FDCWD, store.path(of: blob.digest), nil, 0)
        } else {
            // The bundle reader hashes every byte and commits only blobs that matched.
            writer = try store.makeWriter(for: blob.digest, size: blob.size, verifiedByCaller: true)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try writer?.write(bytes)
        for file in partFiles { try file.write(bytes) }
    }

    func commit() throws {
        for file in partFiles { try file.commit() }
        if !partFiles.isEmpty && writer == nil { written += 1 }
        closeParts()
        guard let writer else { return }
        try writer.commit()
        written += 1
        self.writer = nil
    }

    func abort() {
        closeParts()
        writer?.cancel()
        writer = nil
    }

    private func closeParts() {
        for file in partFiles { file.cancel() }
        partFiles = []
    }
}

public enum ImportError: Error, CustomStringConvertible {
    /// A bundle file that cannot be read; the reason is the reader's (it may name the file too).
    case unreadable(String, reason: String)
    case invalid(bundle: String, [VerificationProblem])
    case badReference(String, ReferenceError)
    case storeChanged(String, Digest)
    /// The upload a bundle came in failed after the bundle itself was read.
    case uploadIncomplete(String)
    /// Images without a cosign signature by the keys `import.requireImageSignatures` names.
    case unsignedImages(bundle: String, [String])
    /// Another tool's archive that cannot be read as an OCI layout, or whose images need a name.
    case archive(LayoutArchiveError)
    case store(bundle: String, String)
    /// A delta whose base this appliance does not hold (all of it).
    case baseMissing(bundle: String, base: String, missing: [Digest])
    case duplicateVolume(set: Digest, number: Int, needed: [Int])
    case setAlreadyImported(set: Digest, number: Int, count: Int)
    /// Blobs earlier volumes of the set stored are no longer in the store (those volumes are
    /// needed again).
    case volumeContentGone(volume: String, missing: [Digest], needAgain: [Int])
    /// Blobs this volume stored were removed while it was read (gc); it was not recorded.
    case storedContentGone(volume: String, missing: [Digest])
    /// A blob carried in parts does not hash to its digest when joined (the plan was wrong).
    case partsDoNotJoin(volume: String, blob: Digest, volumes: [Int])

    public var description: String {
        switch self {
        case .unreadable(let path, let reason):
            reason.contains(path) ? "cannot read bundle: \(reason)" : "cannot read bundle \(path): \(reason)"
        case .uploadIncomplete(let name): "\(name): not imported, nothing changed: the upload did not complete"
        case .invalid(let bundle, let problems):
            (["\(bundle): not imported, nothing changed:"] + problems.map { "  \($0)" }).joined(separator: "\n")
        case .badReference(let reference, let error): "image \(reference): \(error)"
        case .store(let bundle, let why): "\(bundle): not imported, nothing changed: the store failed: \(why)"
        case .baseMissing(let bundle, let base, let missing):
            "\(bundle): not imported, nothing changed: a delta against \(base), and this appliance lacks "
                + "\(missing.count) blob(s) it relies on: "
                + missing.prefix(5).map(\.description).joined(separator: ", ")
                + (missing.count > 5 ? ", …" : "") + " (import its base first, or export a full bundle)"
        case .duplicateVolume(let set, let number, let needed):
            "volume \(number) of set \(set.encoded.prefix(12)) was already imported; nothing changed "
                + "(still needed: \(needed.map(String.init).joined(separator: ", ")))"
        case .setAlreadyImported(let set, let number, let count):
            "volume \(number) of \(count): set \(set.encoded.prefix(12)) was imported already (all its volumes); "
                + "nothing changed"
        case .volumeContentGone(let volume, let missing, let again):
            "\(volume): not imported, nothing changed: \(missing.count) blob(s) stored by earlier volumes "
                + "of the set are gone from the store: "
                + missing.prefix(5).map(\.description).joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                + (again.isEmpty
                    ? "" : " (import volume(s) \(again.map(String.init).joined(separator: ", ")) again, then this one)")
        case .storedContentGone(let volume, let missing):
            "\(volume): not recorded, nothing changed: \(missing.count) blob(s) it stored were removed while it "
                + "was read (gc?): " + missing.prefix(5).map(\.description).joined(separator: ", ")
                + " (import it again)"
        case .partsDoNotJoin(let volume, let blob, let volumes):
            "\(volume): not imported, nothing changed: the parts of \(blob) (volumes "
                + volumes.map(String.init).joined(separator: ", ") + ") do not join into it; the set is broken"
        case .archive(let error): error.description
        case .unsignedImages(let bundle, let refused):
            ([
                "\(bundle): not imported, nothing changed: \(refused.count) image(s) without a valid signature "
                    + "by import.requireImageSignatures:"
            ] + refused.map { "  \($0)" }).joined(separator: "\n")
        case .storeChanged(let bundle, let digest):
            "\(bundle): blob \(digest) left the store during the import (garbage collection?); nothing changed, import it again"
        }
    }
}
