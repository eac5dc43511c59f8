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

    public init(store: any RegistryStorage, reader: BundleReader, paranoid: Bool = false) {
        self.store = store
        self.reader = reader
        self.paranoid = paranoid
    }

    /// Imports the bundle at `path`, or standard input for `-`. Blocking; run it off the event loop.
    ///
    /// A bundle imported before is verified again like any other (a copy may have been altered since);
    /// with `skipKnown`, one whose header names a recorded import with unchanged tags is not read
    /// past its header (whose signature is still checked against the trusted keys).
    public func importBundle(_ path: String, skipKnown: Bool = false) throws -> Result {
        let started = Date()
        if skipKnown, path != "-", let header = try read(path, headerOnly: true, sink: nil), header.ok,
            let digest = header.manifestDigest, let manifest = header.manifest, store.hasImportRecord(digest.encoded),
            try isCurrent(manifest)
        {
            return Result(
                bundle: path, manifestDigest: digest.description, signer: header.signature?.keyID,
                images: try manifest.images.map(Self.imported), blobsWritten: 0,
                blobsAlreadyPresent: manifest.blobs.count,
                unchanged: true, skippedUnread: true,
                time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
                seconds: Date().timeIntervalSince(started))
        }
        let sink = StoreSink(store: store.blobs) { [store] manifest, volume, set in
            try Self.refuseRepeated(volume, of: set, manifest: manifest, store: store)
        }
        guard let report = try read(path, headerOnly: false, sink: sink) else { throw ImportError.unreadable(path) }
        if let refusal = sink.refusal { throw refusal }
        if let failure = report.problems.first(where: { $0.kind == .sink }) {
            throw ImportError.store(bundle: path, failure.message)
        }
        guard report.ok, let manifest = report.manifest, let manifestDigest = report.manifestDigest else {
            throw ImportError.invalid(bundle: path, report.problems)
        }
        if let volume = report.volume {
            return try store.withVolumeSetLock(manifestDigest.encoded) {
                try importVolume(volume, report: report, manifest: manifest, path: path, sink: sink, started: started)
            }
        }
        return try commit(report, manifest: manifest, path: path, sink: sink, started: started)
    }

    /// Makes a verified bundle (or a complete volume set, its last volume's report in hand)
    /// visible: checks every blob it relies on but did not carry, then one transaction.
    private func commit(
        _ report: VerificationReport, manifest: BundleManifest, path: String, sink: StoreSink, started: Date,
        volume: VolumeProgress? = nil
    ) throws -> Result {
        guard let manifestDigest = report.manifestDigest else { throw ImportError.unreadable(path) }
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
            if !missing.isEmpty { throw ImportError.volumeContentGone(volume: path, missing: missing) }
        }
        let images = try manifest.images.map(Self.imported)
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

    /// A volume already stored for its set, or of a set already imported, is refused (before its
    /// content is read when the sink asks, and again under the set's lock).
    static func refuseRepeated(
        _ volume: VolumeHeader, of set: Digest, manifest: BundleManifest, store: any RegistryStorage
    ) throws {
        if store.hasImportRecord(set.encoded) {
            throw ImportError.setAlreadyImported(set: set, number: volume.number, count: volume.count)
        }
        if let pending = try store.pendingVolumeSets().first(where: { $0.id == set.encoded }),
            pending.arrived.contains(volume.number)
        {
            throw ImportError.duplicateVolume(set: set, number: volume.number, needed: pending.needed)
        }
    }

    /// Records a verified volume (its content is stored); when it is the set's last, assembles
    /// the blobs carried in parts and makes the set's images visible. Runs under the set's lock.
    private func importVolume(
        _ volume: VolumeHeader, report: VerificationReport, manifest: BundleManifest, path: String,
        sink: StoreSink, started: Date
    ) throws -> Result {
        try Self.refuseRepeated(volume, of: volume.set, manifest: manifest, store: store)
        var pending =
            try store.pendingVolumeSets().first { $0.id == volume.set.encoded }
            ?? PendingVolumeSet(
                id: volume.set.encoded, count: volume.count, images: manifest.images.map(\.reference),
                firstVolume: path, started: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)))
        let parts = manifest.volumes?.parts ?? []
        var holds = manifest.blobs.filter { $0.volume == nil || $0.volume == volume.number }.map(\.digest)
        holds += parts.filter { $0.volume == volume.number }.map(\.digest)
        try store.recordVolume(volume.number, of: pending, holding: holds)
        pending.arrived.append(volume.number)
        let progress = VolumeProgress(
            set: volume.set.description, number: volume.number, count: volume.count, stillNeeded: pending.needed)
        guard pending.needed.isEmpty else {
            return Result(
                bundle: path, manifestDigest: volume.set.description, signer: report.signature?.keyID,
                images: try manifest.images.map(Self.imported), blobsWritten: sink.written,
                blobsAlreadyPresent: sink.present, unchanged: false, skippedUnread: false,
                time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
                seconds: Date().timeIntervalSince(started), volume: progress)
        }
        try assembleParts(manifest, path: path)
        let result = try commit(report, manifest: manifest, path: path, sink: sink, started: started, volume: progress)
        try store.finishVolumeSet(volume.set.encoded)
        return result
    }

    /// Joins each blob carried in parts from its stored parts, hashing it whole (the store holds
    /// only bytes that match their digest). The parts stay until garbage collection.
    private func assembleParts(_ manifest: BundleManifest, path: String) throws {
        guard let parts = manifest.volumes?.parts, !parts.isEmpty else { return }
        let blobs = store.blobs
        for blob in manifest.blobs where blob.volume == 0 && !blobs.contains(blob.digest, size: blob.size) {
            let mine = parts.filter { $0.blob == blob.digest }.sorted { $0.offset < $1.offset }
            let absent = mine.filter { !blobs.contains($0.digest, size: $0.size) }.map(\.digest)
            if !absent.isEmpty { throw ImportError.volumeContentGone(volume: path, missing: absent) }
            do {
                let writer = try blobs.makeWriter(for: blob.digest, size: blob.size)
                defer { writer.cancel() }
                for part in mine {
                    try FileChunks.read(blobs.path(of: part.digest), size: part.size) { try writer.write($0) }
                }
                try writer.commit()
            } catch {
                throw ImportError.store(bundle: path, "joining the parts of \(blob.digest): \(error)")
            }
        }
    }

    static func imported(_ image: BundleManifest.Image) throws -> ImportedImage {
        let reference: Reference
        let served: RepositoryName
        do {
            reference = try Reference(image.reference)
            served = try reference.servedRepositoryName()
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
            let imported = try Self.imported(image)
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
            throw ImportError.unreadable(path)
        }
    }
}

/// Stores each verified blob durably; blobs already present are only verified.
final class StoreSink: BundleBlobSink {
    let store: BlobStore
    var writer: BlobWriter?
    var written = 0
    var present = 0
    /// Asked before the first blob of a volume: may refuse it (a repeat) without reading on.
    let screen: (BundleManifest, VolumeHeader, Digest) throws -> Void
    private(set) var refusal: ImportError?

    init(store: BlobStore, screen: @escaping (BundleManifest, VolumeHeader, Digest) throws -> Void) {
        self.store = store
        self.screen = screen
    }

    func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws {
        guard let volume else { return }
        do {
            try screen(manifest, volume, volume.set)
        } catch let error as ImportError {
            refusal = error
            throw error
        }
    }

    func begin(_ blob: BundleManifest.Blob) throws {
        if store.contains(blob.digest, size: blob.size) {
            present += 1
            // Fresh again, so garbage collection's grace period covers the commit that follows.
            utimensat(AT_FDCWD, store.path(of: blob.digest), nil, 0)
            writer = nil
        } else {
            // The bundle reader hashes every byte and commits only blobs that matched.
            writer = try store.makeWriter(for: blob.digest, size: blob.size, verifiedByCaller: true)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws { try writer?.write(bytes) }

    func commit() throws {
        guard let writer else { return }
        try writer.commit()
        written += 1
        self.writer = nil
    }

    func abort() {
        writer?.cancel()
        writer = nil
    }
}

public enum ImportError: Error, CustomStringConvertible {
    case unreadable(String)
    case invalid(bundle: String, [VerificationProblem])
    case badReference(String, ReferenceError)
    case storeChanged(String, Digest)
    case store(bundle: String, String)
    /// A delta whose base this appliance does not hold (all of it).
    case baseMissing(bundle: String, base: String, missing: [Digest])
    case duplicateVolume(set: Digest, number: Int, needed: [Int])
    case setAlreadyImported(set: Digest, number: Int, count: Int)
    /// Blobs an earlier volume of the set stored are no longer in the store.
    case volumeContentGone(volume: String, missing: [Digest])

    public var description: String {
        switch self {
        case .unreadable(let path): "cannot read bundle \(path)"
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
        case .volumeContentGone(let volume, let missing):
            "\(volume): not imported, nothing changed: \(missing.count) blob(s) stored by earlier volumes "
                + "of the set are gone from the store: "
                + missing.prefix(5).map(\.description).joined(separator: ", ") + (missing.count > 5 ? ", …" : "")
                + " (import the set's volumes again)"
        case .storeChanged(let bundle, let digest):
            "\(bundle): blob \(digest) left the store during the import (garbage collection?); nothing changed, import it again"
        }
    }
}
