import AsyncHTTPClient
import Foundation
import HelmCharts
import NIOPosix
import OCIBundle
import OCICore
import OCIRegistryClient
import OCIStore

extension BlobWriter: BlobSink {}

/// Pulls images from registries into one bundle, or one set of volumes, written in place.
///
/// Phase 1 resolves every reference to its manifests (fetching each once, kept in the cache).
/// Phase 2 downloads configs and small blobs into the cache (the bundle manifest needs what configs
/// say). Phase 3 plans the tar (``BundlePlan``), copies what the cache holds into place and
/// downloads every other blob straight into its place, each verified while it streams, then seals
/// and publishes it. The partial file's journal is the resume point: an interrupted export keeps
/// every blob it had completed.
public struct Exporter: Sendable {
    public struct Options: Sendable {
        public var requests: [ImageRequest]
        public var output: String
        public var platforms: [Platform]
        public var parallel: Int
        /// The blob cache shared across exports; nil: none (manifests and small blobs are kept in
        /// a temporary directory for the run, every other blob is written only into the bundle).
        public var cacheDirectory: String?
        public var creationTime: Int64
        public var signingKey: SigningKey?
        /// The platform of a multi-platform image that `docker load`/`podman load` take.
        public var loadPlatform: Platform
        /// For a delta bundle: what the site holds (not carried).
        public var against: DeltaBase?
        /// Write the bundle as volumes of at most this many bytes (`NAME.vol001.tar`, ...).
        public var volumeSize: Int64?
        /// Carry each image's signatures, attestations and SBOMs (cosign's tags, the OCI
        /// referrers tag); `--no-referrers` turns it off.
        public var referrers = true
        /// Only these referrers: kinds of ``ReferrerTag`` by name, or artifact types the referrers
        /// API reports. Nil: all.
        public var referrerTypes: Set<String>?
        /// Refuse images without a cosign signature verified by one of these keys.
        public var signatureKeys: [ImageSignatureKey] = []
        /// Helm charts from classic chart repositories, carried as OCI chart artifacts.
        public var charts: [ChartRequest] = []
        /// Find the images the charts name: list them, or list and export them.
        public var chartImages: ChartImagesMode?
        public init(
            requests: [ImageRequest], output: String, platforms: [Platform], parallel: Int, cacheDirectory: String?,
            creationTime: Int64, signingKey: SigningKey? = nil,
            loadPlatform: Platform = Platform(os: "linux", architecture: "amd64"), against: DeltaBase? = nil,
            volumeSize: Int64? = nil, referrers: Bool = true, referrerTypes: Set<String>? = nil,
            signatureKeys: [ImageSignatureKey] = []
        ) {
            self.signatureKeys = signatureKeys
            self.referrers = referrers
            self.referrerTypes = referrerTypes
            self.against = against
            self.volumeSize = volumeSize
            self.signingKey = signingKey
            self.loadPlatform = loadPlatform
            self.requests = requests
            self.output = output
            self.platforms = platforms
            self.parallel = parallel
            self.cacheDirectory = cacheDirectory
            self.creationTime = creationTime
        }
    }

    public struct Summary: Codable, Sendable {
        public struct Image: Codable, Sendable {
            public var reference: String
            public var digest: String
            public var platforms: [String]
            public var size: Int64
        }
        public var bundle: String
        public var bundleSize: Int64
        /// sha256 of the whole tar, also written to `BUNDLE.sha256`.
        public var bundleDigest: String
        /// Key ID of the signing key, when signed.
        public var signedBy: String?
        public var images: [Image]
        public var blobs: Int
        public var blobBytes: Int64
        public var downloadedBlobs: Int
        public var downloadedBytes: Int64
        public var cachedBlobs: Int
        /// Blobs an interrupted run of the same export had already written (`PATH.partial`).
        public var resumedBlobs: Int?
        /// Bytes of the blobs such a run was part way through: kept, and only the rest downloaded
        /// (not in `downloadedBytes`).
        public var resumedBytes: Int64?
        public var partial: Bool
        public var seconds: Double
        /// A delta: what it was made against, and the blobs (and bytes) it relies on and so does not carry.
        public var base: String?
        public var externalBlobs: Int?
        public var savedBytes: Int64?
        /// A volume set: each volume's file, size and sha256 (then `bundleDigest` is the set's id,
        /// the sha256 of its bundle manifest, and `bundleSize` the volumes' total).
        public var volumes: [Volume]?
        /// The charts carried, with the images found in them (`--chart-images`).
        public var charts: [ChartSummary]?

        public struct Volume: Codable, Sendable {
            public var path: String
            public var size: Int64
            public var sha256: String
        }
    }

    let client: RegistryClient
    let progress: ProgressReporter

    public init(client: RegistryClient, progress: ProgressReporter) {
        self.client = client
        self.progress = progress
    }

    /// A blob to fetch, with the first image that needs it (for error messages).
    struct BlobSource: Sendable {
        var descriptor: Descriptor
        var registry: String
        var repository: RepositoryName
        var image: String
    }

    /// What `docker load` and `podman load` take of `image`: its image manifest, or for an index
    /// the manifest of `platform` when the bundle carries it. Artifacts and images with
    /// non-distributable layers (which the bundle does not carry) are left out.
    static func loadEntry(_ image: ResolvedImage, platform: Platform) -> BundleWriter.LoadEntry? {
        var document = image.top
        if case .index(let index) = document.content {
            guard let child = index.manifests.first(where: { $0.platform?.matches(platform) == true }),
                let chosen = image.documents.first(where: { $0.digest == child.digest })
            else { return nil }
            document = chosen
        }
        guard case .manifest(let manifest) = document.content,
            [MediaType.ociConfig, MediaType.dockerConfig].contains(manifest.config.mediaType),
            !manifest.layers.contains(where: { MediaType.isNondistributable($0.mediaType) })
        else { return nil }
        return .init(reference: image.request.carried, manifest: manifest)
    }

    /// How this export resolves its images.
    func resolver(_ options: Options) -> ImageResolver {
        ImageResolver(
            client: client, progress: progress, parallel: options.parallel, referrerTypes: options.referrerTypes)
    }

    public func run(_ options: Options) async throws -> Summary {
        var options = options
        options.requests = try await resolver(options).expandTags(options.requests, charts: options.charts)
        let started = Date()
        // The cache skips fsync: every blob is hashed again as the bundle writer copies it, and a
        // cached blob found corrupt there is removed so the next run fetches it again.
        // Without a cache, manifests and small blobs wait beside the partial bundle for the run
        // (and for a resumed run), and go when it succeeds or its content failed verification.
        let scratch = options.cacheDirectory == nil ? options.output + ".partial.blobs" : nil
        let store = try BlobStore(root: options.cacheDirectory ?? scratch ?? "", durable: false)
        store.removeStaleIngests(olderThan: 24 * 3600)
        do {
            return try await export(options, store: store, started: started, scratch: scratch)
        } catch let error as ExportError where error.isVerificationFailure {
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            throw error
        } catch {
            // Any other failure keeps what a resumed run reuses, but not a scratch store that
            // holds nothing (a run that failed before it fetched anything).
            if let scratch, store.isEmpty { try? FileManager.default.removeItem(atPath: scratch) }
            throw error
        }
    }

    private func export(_ options: Options, store: BlobStore, started: Date, scratch: String?) async throws
        -> Summary
    {
        // Every image must have a name the appliance can serve it under, before anything is fetched.
        for request in options.requests { _ = try request.carried.servedRepositoryName() }

        // Charts first: with --chart-images add, the images they name join the requests.
        var expanded = options
        var charts: [FetchedChart] = []
        if !options.charts.isEmpty {
            charts = try await fetchCharts(options.charts, options: options, store: store)
            if options.chartImages == .add {
                var known = Set(options.requests.map(\.reference))
                for chart in charts {
                    for found in chart.images?.found ?? [] where known.insert(found.reference).inserted {
                        expanded.requests.append(
                            ImageRequest(
                                reference: found.reference, origin: "chart \(chart.summary.chart): \(found.origin)"))
                    }
                }
                for request in expanded.requests { _ = try request.carried.servedRepositoryName() }
                try ImageRequest.checkNames(expanded.requests, charts: options.charts)
            }
        }
        let summary = try await export(expanded, charts: charts, store: store, started: started)
        if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
        return summary
    }

    private func export(_ options: Options, charts: [FetchedChart], store: BlobStore, started: Date) async throws
        -> Summary
    {
        let filter = PlatformFilter(options.platforms)

        // Phase 1: resolve (bounded parallelism, order kept), then what refers to each image.
        let resolver = self.resolver(options)
        var resolved =
            options.requests.isEmpty
            ? [] : try await resolver.resolveAll(options.requests, filter: filter, store: store)
        if options.referrers { resolved += try await resolver.referrers(of: resolved, store: store) }
        resolved += charts.map(\.image)

        // Phase 2: download each distinct blob once.
        var sources: [Digest: BlobSource] = [:]
        var blobOrder: [Descriptor] = []
        for image in resolved {
            for blob in image.blobs where sources[blob.digest] == nil {
                sources[blob.digest] = BlobSource(
                    descriptor: blob, registry: image.request.reference.registry,
                    repository: image.request.reference.repository, image: image.request.reference.description)
                blobOrder.append(blob)
            }
        }
        // A delta carries every manifest, and only the configs and layers the site lacks.
        let everyBlob = blobOrder
        var external: [Descriptor] = []
        if let base = options.against {
            external = blobOrder.filter(base.holds)
            blobOrder = blobOrder.filter { !base.holds($0) }
            let saved = external.reduce(Int64(0)) { $0 + $1.size }
            progress.phase(
                "Delta: \(external.count) blob(s), \(ProgressReporter.bytes(saved)) held at the site, not carried")
        }
        // The bundle (or each volume) is written in place: configs and small blobs come through
        // the cache first (the bundle manifest needs the platforms configs name, signature checks
        // the payloads), every other blob goes straight from the registry to its place.
        let configs = Set(
            resolved.compactMap { image -> Digest? in
                guard case .manifest(let manifest) = image.top.content else { return nil }
                return manifest.config.digest
            })
        let throughStore = blobOrder.filter { $0.size <= Self.placedThreshold || configs.contains($0.digest) }
        let throughStoreDigests = Set(throughStore.map(\.digest))
        let missing = throughStore.filter { !store.contains($0.digest, size: $0.size) }
        let straight = blobOrder.filter {
            !throughStoreDigests.contains($0.digest) && !store.contains($0.digest, size: $0.size)
        }
        let pending = missing + straight
        let missingDigests = Set(pending.map(\.digest.description))
        progress.startDownload(
            blobs: pending.count, bytes: pending.reduce(Int64(0)) { $0 + $1.size },
            cached: blobOrder.count - pending.count, images: resolved.count,
            pendingPerImage: resolved.map { Set($0.blobs.map(\.digest.description)).intersection(missingDigests) })
        try await downloadAll(missing, sources: sources, store: store, width: options.parallel)

        // With keys given, every requested image must carry a cosign signature they verify.
        if !options.signatureKeys.isEmpty {
            try Self.checkSignatures(of: resolved, keys: options.signatureKeys, store: store)
        }

        // Platforms of single-manifest images come from their config.
        let images = resolved.map { image -> ResolvedImage in
            guard image.platforms.isEmpty, case .manifest(let manifest) = image.top.content,
                let bytes = try? store.read(manifest.config.digest, limit: ManifestDocument.maximumSize),
                let config = try? JSONDecoder().decode(ConfigPlatform.self, from: Data(bytes)),
                let os = config.os, let architecture = config.architecture
            else { return image }
            var image = image
            image.platforms = [Platform(os: os, architecture: architecture, variant: config.variant).description]
            return image
        }

        // Phase 3: the bundle.
        var documentOrder: [Digest: Descriptor] = [:]
        var documents: [Descriptor] = []
        for image in images {
            for document in image.documents where documentOrder[document.digest] == nil {
                documentOrder[document.digest] = document.descriptor
                documents.append(document.descriptor)
            }
        }
        let allBlobs = documents + blobOrder
        let entries = images.map { BundleWriter.Entry(reference: $0.request.carried, descriptor: $0.top.descriptor) }
        let index = try BundleWriter.makeIndex(entries)
        let loadEntries = images.compactMap { Self.loadEntry($0, platform: options.loadPlatform) }
        let dockerManifest = loadEntries.isEmpty ? nil : try BundleWriter.makeDockerManifest(loadEntries)
        // What each image needs, counted once per image (linear in the images' own blobs).
        var sizeOf: [Digest: Int64] = [:]
        for blob in documents + everyBlob { sizeOf[blob.digest] = blob.size }
        let manifest = BundleManifest(
            tool: .init(name: "ferry", version: FerryVersion.string),
            created: BundleManifest.timestamp(options.creationTime),
            partial: options.platforms.isEmpty ? nil : .init(platforms: options.platforms.map(\.description)),
            index: .init(digest: Digest.of(index), size: Int64(index.count)),
            images: images.map { image in
                let digests = Set(image.documents.map(\.digest) + image.blobs.map(\.digest))
                let size = digests.reduce(Int64(0)) { $0 + (sizeOf[$1] ?? 0) }
                return .init(
                    reference: BundleWriter.imageName(image.request.carried), digest: image.top.digest,
                    mediaType: image.top.mediaType, platforms: image.platforms, size: size)
            },
            blobs: allBlobs.map { .init(digest: $0.digest, size: $0.size, mediaType: $0.mediaType) },
            dockerManifest: dockerManifest.map { .init(digest: Digest.of($0), size: Int64($0.count)) },
            base: options.against?.base,
            external: options.against.map { _ in
                external.map { .init(digest: $0.digest, size: $0.size, mediaType: $0.mediaType) }
            })
        let totalBytes = allBlobs.reduce(Int64(0)) { $0 + $1.size }
        var verified = Set(missing.map(\.digest))
        let chartArchives = charts.compactMap(\.downloaded)
        let target: any PlacedOutput
        var volumeSet: PlacedVolumeSet?
        var id: Digest
        var signer: String?
        var downloadedFirst = missing
        if let volumeSize = options.volumeSize {
            let planned = try manifest.planningVolumes(
                volumeSize: volumeSize, signed: options.signingKey != nil, indexSize: Int64(index.count),
                dockerManifestSize: dockerManifest.map { Int64($0.count) })
            // A blob in every volume (a manifest) comes through the cache: it is copied into each.
            let everyVolume = Set(planned.blobs.filter { $0.volume == nil }.map(\.digest))
            let more = blobOrder.filter {
                everyVolume.contains($0.digest) && !store.contains($0.digest, size: $0.size)
            }
            try await downloadAll(more, sources: sources, store: store, width: options.parallel)
            downloadedFirst += more
            verified.formUnion(more.map(\.digest))
            let key = options.signingKey
            let set = try await NIOThreadPool.singleton.runIfActive {
                try PlacedVolumeSet(
                    output: options.output, planned: planned, index: index, dockerManifest: dockerManifest,
                    modificationTime: options.creationTime
                ) { manifest in try key.map { try BundleSignature.sign(manifest: try manifest.encoded(), with: $0) } }
            }
            target = set
            volumeSet = set
            // Known once the part digests are filled in, when the set is published.
            id = Digest.of([UInt8]())
            signer = nil
        } else {
            let signature = try options.signingKey.map {
                try BundleSignature.sign(manifest: try manifest.encoded(), with: $0)
            }
            let plan = try BundlePlan(
                manifest: manifest, index: index, modificationTime: options.creationTime, signature: signature,
                dockerManifest: dockerManifest)
            target = try await NIOThreadPool.singleton.runIfActive {
                try PlacedBundle(path: options.output, plan: plan)
            }
            id = plan.id
            signer = signature?.keyID
        }
        let placement = try await writePlaced(
            target, options: options, store: store, sources: sources, verifiedInStore: verified)
        if let final = volumeSet?.final {
            id = Digest.of(try final.manifest.encoded())
            signer = final.signature?.keyID
        }
        let volumes = placement.published.map {
            Summary.Volume(path: $0.path, size: FileSystem.size(of: $0.path) ?? 0, sha256: $0.digest.description)
        }
        let resumedOrFetched = placement.fetched.union(placement.resumed)
        let downloadedBytes = downloadedFirst.reduce(Int64(0)) { $0 + $1.size }
        let fetchedBytes = blobOrder.filter { placement.fetched.contains($0.digest) }.reduce(Int64(0)) {
            $0 + $1.size
        }
        return Summary(
            bundle: options.output,
            bundleSize: volumes.reduce(Int64(0)) { $0 + $1.size },
            // A bundle is named by the sha256 of its tar, a volume set by that of its manifest.
            bundleDigest: (options.volumeSize == nil ? placement.published.first?.digest ?? id : id).description,
            signedBy: signer,
            images: manifest.images.map {
                .init(reference: $0.reference, digest: $0.digest.description, platforms: $0.platforms, size: $0.size)
            },
            blobs: allBlobs.count, blobBytes: totalBytes,
            downloadedBlobs: downloadedFirst.count + placement.fetched.count + chartArchives.count,
            downloadedBytes: downloadedBytes + fetchedBytes - placement.resumedBytes + chartArchives.reduce(0, +),
            cachedBlobs: blobOrder.filter { !resumedOrFetched.contains($0.digest) }.count - downloadedFirst.count
                - chartArchives.count,
            resumedBlobs: placement.resumed.isEmpty ? nil : placement.resumed.count,
            resumedBytes: placement.resumedBytes > 0 ? placement.resumedBytes : nil,
            partial: !options.platforms.isEmpty,
            seconds: Date().timeIntervalSince(started), base: options.against?.base.description,
            externalBlobs: options.against.map { _ in external.count },
            savedBytes: options.against.map { _ in external.reduce(Int64(0)) { $0 + $1.size } },
            volumes: options.volumeSize == nil ? nil : volumes, charts: charts.isEmpty ? nil : charts.map(\.summary))
    }

    /// Downloads `blobs` into the store, `width` at once.
    func downloadAll(_ blobs: [Descriptor], sources: [Digest: BlobSource], store: BlobStore, width: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            var iterator = blobs.makeIterator()
            func addNext() {
                guard let descriptor = iterator.next(), let source = sources[descriptor.digest] else { return }
                group.addTask { try await download(source, store: store) }
            }
            for _ in 0..<max(1, width) { addNext() }
            while try await group.next() != nil { addNext() }
        }
    }

    struct ConfigPlatform: Decodable {
        var os: String?
        var architecture: String?
        var variant: String?
    }

    /// Checks that each image (other than the referrers of one) has a signature among `images`
    /// that one of `keys` verifies; the documents and payloads are read from the cache.
    static func checkSignatures(of images: [ResolvedImage], keys: [ImageSignatureKey], store: BlobStore) throws {
        let members = images.map {
            CosignSignature.Member(
                reference: $0.request.carried, digest: $0.top.digest, manifests: Set($0.documents.map(\.digest)))
        }
        let refused = CosignSignature.refused(
            members, keys: keys,
            manifest: { try? store.read($0, limit: ManifestDocument.maximumSize) },
            payload: { try? store.read($0.digest, limit: 1 << 20) })
        if !refused.isEmpty { throw ExportError.signatures(refused) }
    }

    /// Blobs at most this large (and every image's config) come through the cache before the
    /// bundle is planned; larger ones are downloaded straight into their place.
    static let placedThreshold: Int64 = 256 << 10

    struct Placement {
        /// Each file published (the bundle, or every volume) with the sha256 of its tar.
        var published: [(path: String, digest: Digest)]
        /// Blobs downloaded into their place this run, and those an interrupted run had written.
        var fetched: Set<Digest>
        var resumed: Set<Digest>
        /// Bytes of blobs an interrupted run was part way through, kept and not downloaded again.
        var resumedBytes: Int64
    }

    /// Writes a bundle or a volume set in place (``PlacedBundle``, ``PlacedVolumeSet``): copies
    /// what the cache (or an interrupted run) has into place, downloads the rest straight into
    /// place, verified as it streams, then seals each file with one read that hashes the tar and
    /// checks every entry not verified on the way in. Content that fails verification removes the
    /// partial files; any other failure keeps them, and the next run of the same export resumes.
    /// A blob that lands whole in more than one place (a manifest in every volume) must be in
    /// `store` already; a blob in parts is downloaded into its parts.
    func writePlaced(
        _ target: any PlacedOutput, options: Options, store: BlobStore, sources: [Digest: BlobSource],
        verifiedInStore: Set<Digest>
    ) async throws -> Placement {
        struct Place: Sendable {
            let bundle: Int
            let slot: Int
        }
        let bundles = target.files
        var copies: [Place] = []
        var downloads: [(blob: Digest, sink: any PlacedSink)] = []
        /// Slots filled from the cache, by file: a seal that finds one bad blames the cache's copy.
        struct FileSlot: Hashable {
            let path: String
            let slot: Int
        }
        var copied: Set<FileSlot> = []
        var fetched: Set<Digest> = []
        for (b, bundle) in bundles.enumerated() {
            var unverified: Set<Int> = []
            for (i, slot) in bundle.plan.slots.enumerated() where !bundle.isComplete(i) {
                if let size = target.size(of: slot.blob), store.contains(slot.blob, size: size) {
                    copies.append(Place(bundle: b, slot: i))
                    copied.insert(FileSlot(path: bundle.path, slot: i))
                    // Checked when sealing, unless fetched into the cache this run (a blob in
                    // parts is checked whole when the set is published).
                    if !verifiedInStore.contains(slot.blob) && slot.digest == slot.blob { unverified.insert(i) }
                } else if sources[slot.blob] != nil, fetched.insert(slot.blob).inserted {
                    guard let sink = target.downloadSink(for: slot.blob) else {
                        throw BundleError.io("blob \(slot.blob) has no place to be downloaded to", errno: EINVAL)
                    }
                    downloads.append((slot.blob, sink))
                } else if !fetched.contains(slot.blob) {
                    throw BundleError.io(
                        "blob \(slot.blob) is neither in the cache nor to be downloaded", errno: EINVAL)
                }
            }
            // Slots an interrupted run wrote are always checked.
            bundle.verifyWhenSealing(unverified)
        }
        let cache = options.cacheDirectory != nil ? store : nil
        var resumedBytes: Int64 = 0
        // Bulk work on a thread of its own, beside the downloads (whose checks, and copies into the
        // cache, run on the shared pool): copies from the cache and sealing the written part of
        // each file as blobs arrive (so little is left to read at the end).
        let bulk = NIOThreadPool(numberOfThreads: 1)
        bulk.start()
        defer { bulk.shutdownGracefully { _ in } }
        let copyList = copies
        do {
            try await withThrowingTaskGroup(of: Void.self) { sealing in
                // Sealing follows the downloads as they write, a few times a second, until the
                // work below is done (or failed: leaving the group cancels it).
                sealing.addTask {
                    while (try? await Task.sleep(for: .milliseconds(20))) != nil {
                        _ = try? await bulk.runIfActive { target.sealAhead() }
                    }
                }
                // Each download gives the bytes it took up from an interrupted run; the copies nil.
                try await withThrowingTaskGroup(of: Int64?.self) { group in
                    group.addTask {
                        try await bulk.runIfActive {
                            for place in copyList {
                                let bundle = bundles[place.bundle]
                                try bundle.copy(
                                    from: store.path(of: bundle.plan.slots[place.slot].blob), into: place.slot)
                                try bundle.complete(place.slot)
                            }
                            target.sealAhead()
                        }
                        return nil
                    }
                    var iterator = downloads.makeIterator()
                    func addNext() {
                        guard let (blob, place) = iterator.next(), let source = sources[blob] else { return }
                        group.addTask {
                            let sink = CachingSink(place, cache: cache, source.descriptor)
                            // As the cache's own downloads do: a copy not kept goes now, not
                            // when the HTTP client lets go of the sink (perhaps after exit).
                            defer { sink.drop() }
                            // What an interrupted run wrote of it is read back and hashed, then
                            // the rest asked for.
                            _ = try await NIOThreadPool.singleton.runIfActive { sink.resume() }
                            try await fetch(source, into: sink, resuming: sink.resumed) {
                                try place.complete()
                                await sink.keep()
                            }
                            return sink.kept
                        }
                    }
                    for _ in 0..<max(1, options.parallel) { addNext() }
                    while let done = try await group.next() {
                        if let kept = done {
                            resumedBytes += kept
                            addNext()
                        }
                    }
                }
                sealing.cancelAll()
            }
        } catch let error as ExportError where error.isVerificationFailure {
            target.discard()
            throw error
        }
        progress.finishDownload()

        progress.startWriting(bytes: bundles.reduce(0) { $0 + $1.plan.size }, path: options.output)
        let reporter = progress
        let published: [(path: String, digest: Digest)]
        do {
            let verified = verifiedInStore.union(fetched)
            published = try await bulk.runIfActive {
                try target.publish(verified: verified) { reporter.wrote($0) }
            }
        } catch BundleError.placedBlobCorrupt(let path, let slot, let blob, let error)
            where copied.contains(FileSlot(path: path, slot: slot))
        {
            let path = store.path(of: blob)
            unlink(path)  // the next run fetches it again
            throw BundleError.corruptSource(path: path, error)
        }
        progress.finishWriting()
        var resumed: Set<Digest> = []
        for bundle in bundles { resumed.formUnion(bundle.resumed.map { bundle.plan.slots[$0].blob }) }
        return Placement(
            published: published, fetched: fetched, resumed: resumed, resumedBytes: resumedBytes)
    }

    /// Downloads one blob into the store (the cache, or the scratch store of a `--no-cache` run).
    func download(_ source: BlobSource, store: BlobStore) async throws {
        // The fetch verifies the bytes before it returns: the writer checks the size only.
        let writer = try store.makeWriter(
            for: source.descriptor.digest, size: source.descriptor.size, verifiedByCaller: true)
        defer { writer.cancel() }
        try await fetch(source, into: writer) {
            try await NIOThreadPool.singleton.runIfActive { try writer.commit() }
        }
    }

    /// The one way a blob is downloaded: verified as it streams into `sink`, a registry's failure
    /// named by image and digest, `keep` run once the bytes matched, then reported done.
    private func fetch(
        _ source: BlobSource, into sink: some BlobSink, resuming start: BlobVerifier? = nil,
        keep: () async throws -> Void
    ) async throws {
        let progress = self.progress
        if let start { progress.downloaded(start.count) }
        do {
            try await client.fetchBlob(
                source.descriptor, repository: source.repository, registry: source.registry, into: sink,
                resuming: start, progress: { progress.downloaded($0) })
        } catch let error as RegistryError {
            throw ExportError.blob(image: source.image, digest: source.descriptor.digest, error)
        }
        try await keep()
        progress.blobDone(source.descriptor.digest.description, size: source.descriptor.size)
    }
}

public enum ExportError: Error, CustomStringConvertible {
    case registry(image: String, RegistryError)
    case blob(image: String, digest: Digest, RegistryError)
    case noMatchingPlatform(image: String, requested: [String], available: [String])
    case tooDeep(image: String)
    /// Images whose cosign signature is missing or does not verify with the keys given.
    case signatures([String])
    /// Whole repositories of which the filters kept no tag (and nothing else was asked for).
    case noTagsKept([String])

    public var description: String {
        switch self {
        case .signatures(let refused):
            (["nothing written: \(refused.count) image(s) without a valid signature by the given keys:"]
                + refused.map { "  \($0)" }).joined(separator: "\n")
        case .registry(let image, let error): "\(image): \(error)"
        case .blob(let image, let digest, let error): "\(image): blob \(digest): \(error)"
        case .noMatchingPlatform(let image, let requested, let available):
            "\(image): no manifest for platform \(requested.joined(separator: ",")) (available: \(available.isEmpty ? "none" : available.joined(separator: ", ")))"
        case .tooDeep(let image): "\(image): indexes nested too deeply"
        case .noTagsKept(let repositories):
            "nothing to export: the tag filters keep no tag of \(repositories.joined(separator: ", "))"
        }
    }

    /// Content that failed verification (as opposed to a registry that could not be reached).
    public var isVerificationFailure: Bool {
        switch self {
        case .registry(_, let error), .blob(_, _, let error): error.isVerificationFailure
        case .signatures: true
        default: false
        }
    }
}

/// A download written to its place and, with a cache, into the cache at the same time (one more
/// write of each byte, beside the download instead of after it). The cache is a convenience: a
/// copy that cannot be kept is dropped, never a reason to fail the export.
final class CachingSink: BlobSink, @unchecked Sendable {
    private let place: any PlacedSink
    private let descriptor: Descriptor
    private var cache: BlobWriter?
    /// What ``resume()`` took up, hashed, and how many bytes: 0 once the download started over.
    private(set) var resumed: BlobVerifier?
    private(set) var kept: Int64 = 0

    init(_ place: any PlacedSink, cache: BlobStore?, _ descriptor: Descriptor) {
        self.place = place
        self.descriptor = descriptor
        // The download verifies the bytes before the copy is kept: the writer checks the size only,
        // and writes in the download's own call (a thread and buffers per download would cost
        // more memory than they save time).
        if let cache, !cache.contains(descriptor.digest, size: descriptor.size) {
            self.cache = try? cache.makeWriter(
                for: descriptor.digest, size: descriptor.size, verifiedByCaller: true, writeBehind: false)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try place.write(bytes)
        do {
            try cache?.write(bytes)
        } catch {
            drop()
        }
    }

    func reset() throws {
        kept = 0
        place.reset()
        do {
            try cache?.reset()
        } catch {
            drop()
        }
    }

    /// Takes up what an interrupted run wrote of the blob in its place (``PlacedSink/resume(_:)``):
    /// hashed into ``resumed``, and copied into the cache's copy. Returns how many bytes; one that
    /// cannot be read back starts over from the beginning.
    func resume() -> Int64 {
        var verifier = BlobVerifier(descriptor)
        do {
            let count = try place.resume { bytes in
                try verifier.update(bytes)
                do {
                    try cache?.write(bytes)
                } catch {
                    drop()
                }
            }
            if count > 0 { (resumed, kept) = (verifier, count) }
            return count
        } catch {
            try? reset()
            return 0
        }
    }

    /// After the blob verified: the cache's copy becomes visible.
    func keep() async {
        guard let cache else { return }
        self.cache = nil
        _ = try? await NIOThreadPool.singleton.runIfActive { try cache.commit() }
    }

    /// Removes the cache's copy, unless ``keep()`` made it visible. Called once the download is
    /// over (no batch writes into the sink after the fetch returns).
    func drop() {
        cache?.cancel()
        cache = nil
    }
}
