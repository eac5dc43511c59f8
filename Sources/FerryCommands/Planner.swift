import Foundation
import OCIBundle
import OCICore
import OCIStore

extension Exporter {
    /// What an export would carry, from tags and manifests alone (no layer is downloaded).
    public struct Plan: Codable, Sendable {
        public struct Image: Codable, Sendable {
            public var reference: String
            public var digest: String
            /// Platforms of a multi-platform image (a single image's platform is in its config,
            /// which a plan does not download).
            public var platforms: [String]
            public var manifests: Int
            public var blobs: Int
            /// Everything the image needs: its manifests, configs and layers.
            public var bytes: Int64
        }
        public var images: [Image]
        /// Distinct manifests and indexes (always carried).
        public var manifests: Int
        public var manifestBytes: Int64
        /// Distinct configs and layers.
        public var blobs: Int
        public var blobBytes: Int64
        /// Configs and layers used by more than one image, and the bytes carrying each once saves.
        public var sharedBlobs: Int
        public var sharedSavedBytes: Int64
        /// With `--against`: what the base is, and the configs and layers it holds (not carried).
        public var base: String?
        public var heldBlobs: Int?
        public var heldBytes: Int64?
        /// The bytes of blobs the bundle will carry (manifests included; tar headers not).
        public var carryBytes: Int64
        /// With `--volume-size`: the size, and how many volumes the export will write (the same
        /// planner as the export's, with the bundle manifest's size estimated).
        public var volumeSize: Int64?
        public var volumes: Int?
    }

    public func plan(_ options: Options) async throws -> Plan {
        let resolver = self.resolver(options)
        var options = options
        options.requests = try await resolver.expandTags(options.requests, charts: options.charts)
        let store = try BlobStore(
            root: options.cacheDirectory ?? ExportCommand.defaultCacheDirectory(), durable: false)
        let resolved = try await resolver.resolveAll(
            options.requests, filter: PlatformFilter(options.platforms), store: store)
        var documents: [Digest: Int64] = [:]
        var blobs: [Digest: Descriptor] = [:]
        var users: [Digest: Int] = [:]
        var images: [Plan.Image] = []
        var perImageBytes: Int64 = 0
        for image in resolved {
            let ownBlobs = Dictionary(image.blobs.map { ($0.digest, $0) }, uniquingKeysWith: { a, _ in a })
            let ownDocuments = Dictionary(
                image.documents.map { ($0.digest, Int64($0.bytes.count)) }, uniquingKeysWith: { a, _ in a })
            documents.merge(ownDocuments) { a, _ in a }
            for (digest, blob) in ownBlobs {
                blobs[digest] = blob
                users[digest, default: 0] += 1
            }
            let bytes = ownBlobs.values.reduce(Int64(0)) { $0 + $1.size } + ownDocuments.values.reduce(0, +)
            perImageBytes += ownBlobs.values.reduce(Int64(0)) { $0 + $1.size }
            var platforms: [String] = []
            if case .index(let index) = image.top.content {
                platforms = index.manifests.compactMap { $0.platform?.description }
            }
            images.append(
                .init(
                    reference: image.request.carried.description, digest: image.top.digest.description,
                    platforms: platforms, manifests: ownDocuments.count, blobs: ownBlobs.count, bytes: bytes))
        }
        let blobBytes = blobs.values.reduce(Int64(0)) { $0 + $1.size }
        let manifestBytes = documents.values.reduce(0, +)
        let held = options.against.map { base in blobs.values.filter(base.holds) }
        let heldBytes = held?.reduce(Int64(0)) { $0 + $1.size }
        var volumes: Int?
        if let volumeSize = options.volumeSize {
            let heldDigests = Set((held ?? []).map(\.digest))
            let listed =
                documents.sorted { $0.key.description < $1.key.description }.map {
                    BundleManifest.Blob(digest: $0.key, size: $0.value, mediaType: MediaType.ociManifest)
                }
                + blobs.values.filter { !heldDigests.contains($0.digest) }.map {
                    BundleManifest.Blob(digest: $0.digest, size: $0.size, mediaType: $0.mediaType)
                }
            // About 200 bytes a blob and 600 an image in the bundle manifest, 400 an image in index.json.
            let manifestSize = Int64(listed.count) * 200 + Int64(images.count) * 600 + 8192
            let header = VolumePlanner.headerBytes(
                manifestSize: manifestSize, signatureSize: 1024, indexSize: Int64(images.count) * 400 + 64,
                dockerManifestSize: Int64(images.count) * 400 + 64)
            volumes = try VolumePlanner.plan(blobs: listed, headerBytes: header, volumeSize: volumeSize).count
        }
        return Plan(
            images: images, manifests: documents.count, manifestBytes: manifestBytes, blobs: blobs.count,
            blobBytes: blobBytes, sharedBlobs: users.values.filter { $0 > 1 }.count,
            sharedSavedBytes: perImageBytes - blobBytes, base: options.against?.base.description,
            heldBlobs: held?.count, heldBytes: heldBytes,
            carryBytes: manifestBytes + blobBytes - (heldBytes ?? 0), volumeSize: options.volumeSize, volumes: volumes)
    }
}
