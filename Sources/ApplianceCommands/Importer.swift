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
        let sink = StoreSink(store: store.blobs)
        guard let report = try read(path, headerOnly: false, sink: sink) else { throw ImportError.unreadable(path) }
        if let failure = report.problems.first(where: { $0.kind == .sink }) {
            throw ImportError.store(bundle: path, failure.message)
        }
        guard report.ok, let manifest = report.manifest, let manifestDigest = report.manifestDigest else {
            throw ImportError.invalid(bundle: path, report.problems)
        }
        // A delta relies on blobs it does not carry: all must be here before anything is visible.
        if let external = manifest.external, !external.isEmpty {
            let sizes = Dictionary(external.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a })
            let reached = report.imageContents.values.reduce(into: Set<Digest>()) { $0.formUnion($1.external) }
            let blobs = store.blobs
            let missing = reached.filter { digest in
                guard blobs.contains(digest, size: sizes[digest] ?? -1) else { return true }
                guard paranoid else { return false }
                return (try? BlobStore.hash(file: blobs.path(of: digest), algorithm: digest.algorithm)) != digest
            }.sorted()
            if !missing.isEmpty {
                throw ImportError.baseMissing(
                    bundle: path, base: manifest.base?.description ?? "an unnamed base", missing: missing)
            }
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
            seconds: Date().timeIntervalSince(started))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try store.recordImport(Array(try encoder.encode(result)), id: manifestDigest.encoded)
        return result
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

    init(store: BlobStore) { self.store = store }

    func begin(_ blob: BundleManifest.Blob) throws {
        if store.contains(blob.digest, size: blob.size) {
            present += 1
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
        case .storeChanged(let bundle, let digest):
            "\(bundle): blob \(digest) left the store during the import (garbage collection?); nothing changed, import it again"
        }
    }
}
