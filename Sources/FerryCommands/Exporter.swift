import AsyncHTTPClient
import Foundation
import HelmCharts
import NIOPosix
import OCIBundle
import OCICore
import OCIRegistryClient
import OCIStore

extension BlobWriter: BlobSink {}
extension SlotSink: BlobSink {}
extension PartsSink: BlobSink {}

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

    struct ResolvedImage: Sendable {
        var request: ImageRequest
        var top: ManifestDocument
        /// Every manifest and index of the image that the bundle carries, top first.
        var documents: [ManifestDocument]
        /// Configs and layers, in walk order.
        var blobs: [Descriptor]
        var platforms: [String]
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

    /// Resolves every requested image: tags to digests, and every manifest and index read (into the
    /// cache), with bounded parallelism, in request order. No layer is downloaded.
    func resolveAll(_ options: Options, filter: PlatformFilter, store: BlobStore) async throws -> [ResolvedImage] {
        progress.phase("Resolving \(options.requests.count) image(s)")
        let progress = self.progress
        return try await boundedMap(options.requests, width: options.parallel) { request in
            try await resolve(request, filter: filter, store: store)
        } done: { image in
            progress.imageResolved(image.request.reference.description, digest: image.top.digest.description)
        }
    }

    /// Whole repositories become one request per tag their filters keep, listed from the registry
    /// (bounded parallelism, order kept). A tag also asked for by name is taken once.
    func expandTags(_ options: Options) async throws -> Options {
        guard options.requests.contains(where: { $0.tags != nil }) else { return options }
        let client = self.client
        let progress = self.progress
        let listed = try await boundedMap(options.requests, width: options.parallel) { request -> [ImageRequest] in
            guard let filter = request.tags else { return [] }
            let reference = request.reference
            let listed: [String]
            do {
                listed = try await client.listTags(registry: reference.registry, repository: reference.repository)
            } catch let error as RegistryError {
                throw ExportError.registry(image: "\(reference.name) (\(request.origin))", error)
            }
            // cosign's and the referrers schema's tags are not images of their own: they travel
            // with their subjects (or not at all, with --no-referrers).
            let tags = listed.filter { ReferrerTag(tag: $0) == nil && (try? Tag($0)) != nil }
            let kept = try filter.apply(tags)
            progress.phase("\(reference.name): \(kept.count) of \(tags.count) tag(s) kept")
            return try kept.map { tag in
                let tag = try Tag(tag)
                return ImageRequest(
                    reference: Reference(
                        registry: reference.registry, repository: reference.repository, tag: tag, digest: nil),
                    origin: "\(request.origin) (\(reference.name) tag \(tag))",
                    name: request.name.map {
                        Reference(registry: $0.registry, repository: $0.repository, tag: tag, digest: nil)
                    })
            }
        } done: { _ in
        }
        // A tag also asked for by name, under the same name, is taken once (as asked); the same name
        // from two different sources is left for the name check to refuse.
        struct Key: Hashable {
            var reference: Reference
            var carried: Reference
        }
        let direct = options.requests.filter { $0.tags == nil }
        let directNames = Set(direct.map { BundleWriter.imageName($0.carried) })
        var seen = Set(direct.map { Key(reference: $0.reference, carried: $0.carried) })
        var expanded = options
        expanded.requests = []
        for (request, tags) in zip(options.requests, listed) {
            guard request.tags != nil else {
                expanded.requests.append(request)
                continue
            }
            for tag in tags where !directNames.contains(BundleWriter.imageName(tag.carried)) {
                if seen.insert(Key(reference: tag.reference, carried: tag.carried)).inserted {
                    expanded.requests.append(tag)
                }
            }
        }
        if expanded.requests.isEmpty && options.charts.isEmpty {
            throw ExportError.noTagsKept(options.requests.filter { $0.tags != nil }.map(\.reference.name))
        }
        try ImageRequest.checkNames(expanded.requests, charts: options.charts)
        return expanded
    }

    public func run(_ options: Options) async throws -> Summary {
        let options = try await expandTags(options)
        let started = Date()
        // The cache skips fsync: every blob is hashed again as the bundle writer copies it, and a
        // cached blob found corrupt there is removed so the next run fetches it again.
        // Without a cache, manifests and small blobs wait beside the partial bundle for the run
        // (and for a resumed run), and go when it succeeds or its content failed verification.
        let scratch = options.cacheDirectory == nil ? options.output + ".partial.blobs" : nil
        let store = try BlobStore(root: options.cacheDirectory ?? scratch ?? "", durable: false)
        store.removeStaleIngests(olderThan: 24 * 3600)

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
        do {
            let summary = try await export(expanded, charts: charts, store: store, started: started)
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            return summary
        } catch let error as ExportError where error.isVerificationFailure {
            if let scratch { try? FileManager.default.removeItem(atPath: scratch) }
            throw error
        }
    }

    private func export(_ options: Options, charts: [FetchedChart], store: BlobStore, started: Date) async throws
        -> Summary
    {
        let filter = PlatformFilter(options.platforms)

        // Phase 1: resolve (bounded parallelism, order kept), then what refers to each image.
        var resolved = options.requests.isEmpty ? [] : try await resolveAll(options, filter: filter, store: store)
        if options.referrers { resolved += try await referrers(of: resolved, options: options, store: store) }
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
        var sizes: [Digest: Int64] = [:]
        for blob in allBlobs { sizes[blob.digest] = blob.size }
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
            target, options: options, store: store, sizes: sizes, sources: sources, verifiedInStore: verified)
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
            downloadedBytes: downloadedBytes + fetchedBytes + chartArchives.reduce(0, +),
            cachedBlobs: blobOrder.filter { !resumedOrFetched.contains($0.digest) }.count - downloadedFirst.count
                - chartArchives.count,
            resumedBlobs: placement.resumed.isEmpty ? nil : placement.resumed.count,
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

    /// What refers to the resolved images, as images of their own: for every manifest and index
    /// the bundle carries, the OCI 1.1 referrers API's answer (each referrer by digest), cosign's
    /// tags (`sha256-HEX.sig`, `.att`, `.sbom`) and the referrers tag schema's index (`sha256-HEX`),
    /// in the image's repository. A tag the registry does not have, or a registry without the
    /// referrers API, is skipped; any other failure stops the export. Each is carried whole.
    func referrers(of images: [ResolvedImage], options: Options, store: BlobStore) async throws -> [ResolvedImage] {
        var candidates: [ImageRequest] = []
        var named = Set(images.map(\.request.carried.description))
        // A referrer travels in its subject's repository, under each name the subject is carried
        // under (a renamed image's signatures go with the new name).
        func add(_ text: String, of subject: Reference, carried: Reference) {
            guard let candidate = try? Reference(text) else { return }
            let renamed = carried.registry != subject.registry || carried.repository != subject.repository
            let name =
                renamed
                ? Reference(
                    registry: carried.registry, repository: carried.repository, tag: candidate.tag,
                    digest: candidate.digest) : nil
            guard named.insert((name ?? candidate).description).inserted else { return }
            candidates.append(ImageRequest(reference: candidate, origin: "referrer of \(subject)", name: name))
        }
        // Which of the referrer tags exist: one tag listing per repository (a few at a time)
        // instead of a lookup per tag and document; a repository that cannot be listed is asked
        // tag by tag.
        struct Repository: Hashable, Sendable {
            var registry: String
            var name: RepositoryName
        }
        let client = self.client
        let kinds = ReferrerTag.Kind.allCases.filter { options.referrerTypes?.contains($0.rawValue) ?? true }
        let repositories = Array(
            Set(
                kinds.isEmpty
                    ? []
                    : images.map {
                        Repository(registry: $0.request.reference.registry, name: $0.request.reference.repository)
                    }))
        let listings = try await boundedMap(repositories, width: options.parallel) { repository -> Set<String>? in
            (try? await client.listTags(registry: repository.registry, repository: repository.name)).map(Set.init)
        }
        let listed = Dictionary(uniqueKeysWithValues: zip(repositories, listings))
        var subjects: [(reference: Reference, carried: Reference, digest: Digest)] = []
        for image in images {
            let reference = image.request.reference
            let tags = listed[Repository(registry: reference.registry, name: reference.repository)] ?? nil
            for document in image.documents {
                subjects.append((reference, image.request.carried, document.digest))
                for kind in kinds {
                    let tag = ReferrerTag(subject: document.digest, kind: kind).tag
                    if let tags, !tags.contains(tag) { continue }
                    add("\(reference.name):\(tag)", of: reference, carried: image.request.carried)
                }
            }
        }
        // The referrers API, where the registry has it: each registry asked once first, and only
        // one that answers is asked about every subject, a few at a time.
        @Sendable func ask(_ subject: (reference: Reference, carried: Reference, digest: Digest)) async -> [Descriptor]?
        {
            try? await client.fetchReferrers(
                registry: subject.reference.registry, repository: subject.reference.repository,
                subject: subject.digest)
        }
        var withAPI: Set<String> = []
        for registry in Set(subjects.map(\.reference.registry)).sorted() {
            if let first = subjects.first(where: { $0.reference.registry == registry }), await ask(first) != nil {
                withAPI.insert(registry)
            }
        }
        let answering = withAPI
        let answers = try await boundedMap(subjects, width: options.parallel) { subject in
            answering.contains(subject.reference.registry) ? await ask(subject) ?? [] : []
        }
        for (subject, found) in zip(subjects, answers) {
            for referrer in found where options.referrerTypes.map({ $0.contains(referrer.artifactType ?? "") }) ?? true
            {
                add("\(subject.reference.name)@\(referrer.digest)", of: subject.reference, carried: subject.carried)
            }
        }
        guard !candidates.isEmpty else { return [] }
        progress.phase("Looking for signatures, attestations and SBOMs of \(images.count) image(s)")
        let progress = self.progress
        // A referrer that cannot be had is left out, not a reason to fail the export (a missing
        // signature still fails --verify-signatures); only an unreachable registry stops it.
        let found = try await boundedMap(candidates, width: options.parallel) { request -> ResolvedImage? in
            do {
                return try await resolve(request, filter: .all, store: store)
            } catch ExportError.registry(_, let error) where !Self.isUnreachable(error) {
                return nil
            } catch ExportError.noMatchingPlatform {
                return nil  // an empty referrers index
            }
        } done: { image in
            if let image {
                progress.imageResolved(image.request.reference.description, digest: image.top.digest.description)
            }
        }
        return found.compactMap { $0 }
    }

    /// A registry that could not be reached at all (as opposed to one that answered no).
    static func isUnreachable(_ error: RegistryError) -> Bool {
        switch error {
        case .connection, .unreachable, .tls: true
        case .gaveUp(let underlying, _): isUnreachable(underlying)
        default: false
        }
    }

    /// Fetches the top document and, recursively, the manifests the platform filter selects.
    func resolve(_ request: ImageRequest, filter: PlatformFilter, store: BlobStore) async throws -> ResolvedImage {
        let reference = request.reference
        let top = try await document(reference: reference.manifestReference, in: reference, store: store)
        var documents: [ManifestDocument] = []
        var blobs: [Descriptor] = []
        var platforms: [String] = []
        var seen: Set<Digest> = []
        func walk(_ document: ManifestDocument, depth: Int) async throws {
            guard seen.insert(document.digest).inserted else { return }
            documents.append(document)
            guard depth < 8 else { throw ExportError.tooDeep(image: reference.description) }
            let children = filter.selectedChildren(of: document)
            if document.isIndex {
                if children.isEmpty {
                    throw ExportError.noMatchingPlatform(
                        image: reference.description, requested: filter.platforms.map(\.description),
                        available: document.children.compactMap { $0.platform?.description })
                }
                for child in children {
                    if let platform = child.platform, depth == 0 { platforms.append(platform.description) }
                    guard MediaType.manifests.contains(child.mediaType) || MediaType.indexes.contains(child.mediaType)
                    else {
                        blobs.append(child)  // an artifact or unknown type listed in an index: carry its bytes
                        continue
                    }
                    let childDocument = try await self.document(
                        reference: .digest(child.digest), in: reference, store: store)
                    try await walk(childDocument, depth: depth + 1)
                }
            } else {
                blobs += children
            }
        }
        try await walk(top, depth: 0)
        return ResolvedImage(request: request, top: top, documents: documents, blobs: blobs, platforms: platforms)
    }

    /// A manifest by digest comes from the cache when present; a tag is always asked of the registry.
    func document(reference manifestReference: ManifestReference, in reference: Reference, store: BlobStore)
        async throws -> ManifestDocument
    {
        if let pinned = manifestReference.digest,
            let bytes = try? store.read(pinned, limit: ManifestDocument.maximumSize),
            let document = try? ManifestDocument(bytes: bytes, algorithm: pinned.algorithm), document.digest == pinned
        {
            return document
        }
        do {
            let document = try await client.fetchManifest(
                registry: reference.registry, repository: reference.repository, reference: manifestReference)
            try store.put(document.bytes, as: document.digest)
            return document
        } catch let error as RegistryError {
            throw ExportError.registry(image: reference.description, error)
        }
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
    }

    /// Writes a bundle or a volume set in place (``PlacedBundle``, ``PlacedVolumeSet``): copies
    /// what the cache (or an interrupted run) has into place, downloads the rest straight into
    /// place, verified as it streams, then seals each file with one read that hashes the tar and
    /// checks every entry not verified on the way in. Content that fails verification removes the
    /// partial files; any other failure keeps them, and the next run of the same export resumes.
    /// `sizes` gives every blob's size; a blob that lands whole in more than one place (a manifest
    /// in every volume) must be in `store` already; a blob in parts is downloaded into its parts.
    func writePlaced(
        _ target: any PlacedOutput, options: Options, store: BlobStore, sizes: [Digest: Int64],
        sources: [Digest: BlobSource], verifiedInStore: Set<Digest>
    ) async throws -> Placement {
        struct Place: Sendable {
            let bundle: Int
            let slot: Int
        }
        /// A download: one blob into its slot, or a blob in parts into the slots of its parts.
        enum Fetch: Sendable {
            case slot(Place)
            case parts(Digest)
        }
        let bundles = target.files
        // Blobs in parts exist only in a set of volumes.
        let set = target as? PlacedVolumeSet
        var copies: [Place] = []
        var downloads: [Fetch] = []
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
                if let size = sizes[slot.blob], store.contains(slot.blob, size: size) {
                    copies.append(Place(bundle: b, slot: i))
                    copied.insert(FileSlot(path: bundle.path, slot: i))
                    // Checked when sealing, unless fetched into the cache this run (a blob in
                    // parts is checked whole when the set is published).
                    if !verifiedInStore.contains(slot.blob) && slot.digest == slot.blob { unverified.insert(i) }
                } else if sources[slot.blob] != nil, fetched.insert(slot.blob).inserted {
                    if let set, set.isParted(slot.blob) {
                        downloads.append(.parts(slot.blob))
                    } else if slot.digest == slot.blob {
                        downloads.append(.slot(Place(bundle: b, slot: i)))
                    } else {
                        throw BundleError.io("blob \(slot.blob) has no place to be downloaded to", errno: EINVAL)
                    }
                } else if !fetched.contains(slot.blob) || set?.isParted(slot.blob) != true {
                    throw BundleError.io(
                        "blob \(slot.blob) is neither in the cache nor to be downloaded", errno: EINVAL)
                }
            }
            // Slots an interrupted run wrote are always checked.
            bundle.verifyWhenSealing(unverified)
        }
        let cache = options.cacheDirectory != nil ? store : nil
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
                try await withThrowingTaskGroup(of: Digest?.self) { group in
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
                        switch iterator.next() {
                        case .slot(let place):
                            let bundle = bundles[place.bundle]
                            let blob = bundle.plan.slots[place.slot].blob
                            guard let source = sources[blob] else { return }
                            group.addTask {
                                let sink = CachingSink(bundle.sink(for: place.slot), cache: cache, source.descriptor)
                                try await fetch(source, into: sink) {
                                    try bundle.complete(place.slot)
                                    await sink.keep()
                                }
                                return blob
                            }
                        case .parts(let blob):
                            guard let source = sources[blob], let set else { return }
                            group.addTask {
                                let parts = set.partsSink(for: blob)
                                let sink = CachingSink(parts, cache: cache, source.descriptor)
                                try await fetch(source, into: sink) {
                                    try set.complete(parts)
                                    await sink.keep()
                                }
                                return blob
                            }
                        case nil: return
                        }
                    }
                    for _ in 0..<max(1, options.parallel) { addNext() }
                    while let done = try await group.next() {
                        if done != nil { addNext() }
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
        return Placement(published: published, fetched: fetched, resumed: resumed)
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
    private func fetch(_ source: BlobSource, into sink: some BlobSink, keep: () async throws -> Void)
        async throws
    {
        let progress = self.progress
        do {
            try await client.fetchBlob(
                source.descriptor, repository: source.repository, registry: source.registry, into: sink,
                progress: { progress.downloaded($0) })
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
final class CachingSink<Place: BlobSink>: BlobSink, @unchecked Sendable {
    private let place: Place
    private var cache: BlobWriter?

    init(_ place: Place, cache: BlobStore?, _ descriptor: Descriptor) {
        self.place = place
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
        try place.reset()
        do {
            try cache?.reset()
        } catch {
            drop()
        }
    }

    /// After the blob verified: the cache's copy becomes visible.
    func keep() async {
        guard let cache else { return }
        self.cache = nil
        _ = try? await NIOThreadPool.singleton.runIfActive { try cache.commit() }
    }

    private func drop() {
        cache?.cancel()
        cache = nil
    }
}
