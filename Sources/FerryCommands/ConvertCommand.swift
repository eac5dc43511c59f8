import ArgumentParser
import Foundation
import NIOPosix
import OCIBundle
import OCICore
import OCIStore

/// `ferry convert`: another tool's archive as a Ferry bundle (one-pass verifiable, signed).
public struct ConvertCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "convert",
        abstract: "Turn another tool's image archive into a Ferry bundle, with the same digests.",
        discussion: """
            Reads an OCI image layout tar (skopeo oci-archive, ctr export, docker save from Docker \
            25, a Hauler haul, a Zarf package's images) or a docker-archive (podman save, older \
            docker save), verifying every blob and the image graph, and writes the bundle `ferry \
            export` would have: every image under the name the archive gives it, manifests and \
            blobs byte for byte (a docker-archive's manifests are the OCI manifests of its \
            uncompressed layers), signed with --sign-key. The blobs pass through the cache.

            Examples:
              ferry convert nginx.oci.tar --name mirror/nginx -o nginx.bundle.tar --sign-key ferry.key
              ferry convert haul.tar.zst -o site.bundle.tar
            """)

    @Argument(help: "The archive (a file).")
    var archive: String

    @Option(name: .shortAndLong, help: "Where to write the bundle.")
    var output: String

    @Option(help: "For an archive whose index.json names images by tag only: their repository.")
    var name: String?

    @Option(name: .customLong("sign-key"), help: "Sign the bundle with this Ed25519 private key.")
    var signKey: String?

    @Option(help: "Cache the blobs pass through (default: as `ferry export`).")
    var cache: String?

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    public init() {}

    public func validate() throws {
        if let problem = SystemError.notAFileToWrite(output) { throw ValidationError("--output \(problem)") }
    }

    struct Summary: Codable {
        var archive: String
        var bundle: String
        var bundleDigest: String
        var signedBy: String?
        var images: [BundleManifest.Image]
        var blobs: Int
        var seconds: Double
    }

    public func run() async throws {
        try await reportingErrors {
            let started = Date()
            guard archive != "-" else { throw ValidationError("ferry convert reads a file, not standard input") }
            let signingKey = try signKey.map { try SigningKey(pemFile: $0) }
            let store = try BlobStore(root: cache ?? ExportCommand.defaultCacheDirectory(), durable: false)
            let (archive, output, repository) = (self.archive, self.output, name)
            let modificationTime = ExportCommand.creationTime()
            let summary = try await NIOThreadPool.singleton.runIfActive {
                let sink = CacheSink(store: store)
                let report = try BundleReader(requireSignature: false).verifyAny(
                    path: archive, sink: sink, repository: repository)
                guard report.ok, let described = report.manifest else {
                    throw BundleError.invalid(report.problems)
                }
                let bundle = try Self.bundle(of: report, described: described, created: modificationTime)
                let signature = try signingKey.map {
                    try BundleSignature.sign(manifest: try bundle.0.encoded(), with: $0)
                }
                let digest = try BundleWriter().write(
                    to: output, manifest: bundle.0, index: bundle.1, modificationTime: modificationTime,
                    signature: signature, blobs: { store.path(of: $0) }, verifiedThisRun: sink.stored)
                return Summary(
                    archive: archive, bundle: output, bundleDigest: digest.description, signedBy: signature?.keyID,
                    images: bundle.0.images, blobs: bundle.0.blobs.count,
                    seconds: Date().timeIntervalSince(started))
            }
            if json {
                FileHandle.standardOutput.write(try jsonEncoder().encode(summary) + Data("\n".utf8))
                return
            }
            print(
                "Wrote \(summary.bundle) from \(summary.archive): \(summary.images.count) image(s), "
                    + "\(summary.blobs) blob(s)" + (summary.signedBy.map { ", signed by \($0)" } ?? ""))
            for image in summary.images { print("  \(image.reference)@\(image.digest)") }
            print("sha256 \(summary.bundleDigest) (also in \(summary.bundle).sha256)")
        }
    }

    /// The bundle manifest and index.json of what the archive's images reach, in the order an
    /// export writes them (manifests first, then configs and layers, each in the archive's order).
    static func bundle(of report: VerificationReport, described: BundleManifest, created: Int64) throws
        -> (BundleManifest, [UInt8])
    {
        var reached: Set<Digest> = []
        var entries: [BundleWriter.Entry] = []
        var images: [BundleManifest.Image] = []
        let sizes = Dictionary(described.blobs.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a })
        for image in described.images {
            guard let contents = report.imageContents[image.reference] else { continue }
            let reference = try Reference(image.reference)
            let own = contents.manifests.union(contents.blobs)
            reached.formUnion(own)
            entries.append(.init(reference: reference, descriptor: contents.top))
            images.append(
                .init(
                    reference: BundleWriter.imageName(reference), digest: image.digest, mediaType: image.mediaType,
                    platforms: image.platforms, size: own.reduce(Int64(0)) { $0 + (sizes[$1] ?? 0) }))
        }
        let listed = described.blobs.filter { reached.contains($0.digest) }
        let blobs =
            listed.filter { MediaType.isManifestOrIndex($0.mediaType) }
            + listed.filter { !MediaType.isManifestOrIndex($0.mediaType) }
        let index = try BundleWriter.makeIndex(entries)
        let manifest = BundleManifest(
            tool: .init(name: "ferry", version: FerryVersion.string), created: BundleManifest.timestamp(created),
            partial: described.partial, index: .init(digest: Digest.of(index), size: Int64(index.count)),
            images: images, blobs: blobs)
        return (manifest, index)
    }
}

/// Keeps each verified blob in the export cache (the bundle writer reads them from there).
final class CacheSink: BundleBlobSink {
    let store: BlobStore
    private var writer: BlobWriter?
    /// Blobs written (and so verified) this run.
    private(set) var stored: Set<Digest> = []

    init(store: BlobStore) { self.store = store }

    func begin(_ blob: BundleManifest.Blob) throws {
        writer =
            store.contains(blob.digest, size: blob.size)
            ? nil : try store.makeWriter(for: blob.digest, size: blob.size, verifiedByCaller: true)
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws { try writer?.write(bytes) }

    func commit() throws {
        guard let writer else { return }
        try writer.commit()
        stored.insert(writer.digest)
        self.writer = nil
    }

    func abort() {
        writer?.cancel()
        writer = nil
    }
}
