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
        public var time: String
        public var seconds: Double
    }

    let store: RegistryStore
    let reader: BundleReader

    public init(store: RegistryStore, reader: BundleReader) {
        self.store = store
        self.reader = reader
    }

    /// Imports the bundle at `path`, or standard input for `-`. Blocking; run it off the event loop.
    public func importBundle(_ path: String) throws -> Result {
        let started = Date()
        // Fast path: a bundle imported before whose tags are unchanged needs no second read.
        if path != "-", let header = try read(path, headerOnly: true, sink: nil), let digest = header.manifestDigest,
            let manifest = header.manifest, store.hasRecord(digest.encoded), try isCurrent(manifest)
        {
            return Result(
                bundle: path, manifestDigest: digest.description, signer: header.signature?.keyID,
                images: try manifest.images.map(Self.imported), blobsWritten: 0,
                blobsAlreadyPresent: manifest.blobs.count,
                unchanged: true, time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
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
        let images = try manifest.images.map(Self.imported)
        let blobs = store.blobs
        try store.commit { state in
            // Under the state lock: every blob is still in the store (garbage collection removes
            // only blobs older than its grace period, but a blob found present early in a long
            // import may be that old).
            for blob in manifest.blobs where !blobs.contains(blob.digest, size: blob.size) {
                throw ImportError.storeChanged(path, blob.digest)
            }
            for (image, imported) in zip(manifest.images, images) {
                guard let contents = report.imageContents[image.reference] else { continue }
                var repository = state.repositories[imported.repository] ?? RepositoryState()
                repository.manifests.formUnion(contents.manifests)
                repository.blobs.formUnion(contents.blobs)
                if let tag = imported.tag { repository.tags[tag] = image.digest }
                state.repositories[imported.repository] = repository
            }
        }
        let result = Result(
            bundle: path, manifestDigest: manifestDigest.description, signer: report.signature?.keyID, images: images,
            blobsWritten: sink.written, blobsAlreadyPresent: sink.present, unchanged: false,
            time: BundleManifest.timestamp(Int64(Date().timeIntervalSince1970)),
            seconds: Date().timeIntervalSince(started))
        try store.record(result, as: manifestDigest.encoded)
        return result
    }

    static func imported(_ image: BundleManifest.Image) throws -> ImportedImage {
        let reference: Reference
        do {
            reference = try Reference(image.reference)
        } catch {
            throw ImportError.badReference(image.reference, error)
        }
        return ImportedImage(
            reference: image.reference, repository: reference.servedRepository, tag: reference.tag?.value,
            digest: image.digest.description)
    }

    func isCurrent(_ manifest: BundleManifest) throws -> Bool {
        let state = try store.state()
        for image in manifest.images {
            let imported = try Self.imported(image)
            guard let repository = state.repositories[imported.repository],
                repository.manifests.contains(image.digest)
            else { return false }
            if let tag = imported.tag, repository.tags[tag] != image.digest { return false }
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

    public var description: String {
        switch self {
        case .unreadable(let path): "cannot read bundle \(path)"
        case .invalid(let bundle, let problems):
            (["\(bundle): not imported, nothing changed:"] + problems.map { "  \($0)" }).joined(separator: "\n")
        case .badReference(let reference, let error): "image \(reference): \(error)"
        case .store(let bundle, let why): "\(bundle): not imported, nothing changed: the store failed: \(why)"
        case .storeChanged(let bundle, let digest):
            "\(bundle): blob \(digest) left the store during the import (garbage collection?); nothing changed, import it again"
        }
    }
}
