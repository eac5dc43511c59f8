import Foundation
import NIOPosix
import OCIBundle
import OCICore
import OCIRegistryClient
import OCIStore

/// `ferry sync`: images from registries into a registry directly, without a bundle.
///
/// 1. Whole repositories become one image per tag their filters keep (as for export).
/// 2. Each image (`images` at once) is resolved at its source, and its destination asked for the
///    tag: the same digest there means nothing more is read (not a blob). A manifest the
///    destination has by digest under another tag is only tagged.
/// 3. Otherwise each blob (`parallel` at once per image) is placed once per destination registry:
///    one image copies it (skipped when the destination repository has it), streaming from source
///    to destination and verified as it passes; every other image that needs it waits for that
///    copy and mounts it across repositories.
/// 4. Manifests go last, children first, bytes unchanged (digests preserved), the tag last of all.
/// 5. Signatures, attestations and SBOMs of the images follow them (as in a bundle).
/// 6. Images that failed are tried again after the pass, `retries` times, with growing pauses.
public struct Syncer: Sendable {
    public struct Options: Sendable {
        public var requests: [ImageRequest]
        /// Where images without a destination of their own go: HOST[:PORT] and a repository prefix.
        public var target: (registry: String, prefix: String?)?
        /// Keep the source registry as the first component of the target repository (as `push`).
        public var keepRegistryHost = true
        public var platforms: [Platform] = []
        /// Images at once.
        public var images = 4
        /// Blobs at once per image.
        public var parallel = 4
        /// Passes over the images that failed, after the first.
        public var retries = 2
        /// Seconds before the first retry pass; doubled for each further one (at most 30).
        public var retryDelay = 2.0
        public var dryRun = false
        public var referrers = true
        public var referrerTypes: Set<String>?
        /// Where resolved manifests are kept (the export cache): no blob is stored.
        public var cacheDirectory: String

        public init(requests: [ImageRequest], cacheDirectory: String) {
            self.requests = requests
            self.cacheDirectory = cacheDirectory
        }
    }

    public struct Summary: Codable, Sendable {
        public enum Status: String, Codable, Sendable {
            /// Blobs and manifests copied.
            case copied
            /// The destination's tag had the digest already.
            case upToDate = "up-to-date"
            /// The destination had the manifest under another name: only the tag was set.
            case tagged
            /// `--dry-run`: would be copied.
            case wouldCopy = "would-copy"
            case failed
        }
        public struct Image: Codable, Sendable {
            public var source: String
            public var destination: String
            public var digest: String?
            public var status: Status
            /// A signature, attestation or SBOM of another image.
            public var referrer: Bool
            public var blobsCopied = 0
            public var bytesCopied: Int64 = 0
            public var blobsMounted = 0
            public var blobsAlreadyThere = 0
            public var manifestsPushed = 0
            /// With `--dry-run`: the blobs and bytes the destination lacks.
            public var blobsMissing: Int?
            public var bytesMissing: Int64?
            public var error: String?
            /// The failure was content that did not match its digest.
            public var corrupt: Bool?
            /// The pass it succeeded or last failed in (1 is the first).
            public var pass: Int
        }
        public var dryRun: Bool
        public var images: [Image] = []
        public var imagesCopied = 0
        public var imagesUpToDate = 0
        public var imagesTagged = 0
        public var imagesFailed = 0
        public var blobsCopied = 0
        public var bytesCopied: Int64 = 0
        public var blobsMounted = 0
        public var blobsAlreadyThere = 0
        public var manifestsPushed = 0
        public var passes = 0
        public var seconds = 0.0
    }

    let client: RegistryClient
    let progress: ProgressReporter

    public init(client: RegistryClient, progress: ProgressReporter) {
        self.client = client
        self.progress = progress
    }

    /// Where one image goes: a repository and the tag (nil: by digest).
    struct Destination: Sendable, CustomStringConvertible {
        var location: RegistryLocation
        var tag: Tag?
        var description: String { location.description + (tag.map { ":\($0)" } ?? "") }
    }

    /// The destination of `request`: its own (image-syncer's renames) or the target's.
    static func destination(of request: ImageRequest, options: Options) throws -> Destination {
        if let name = request.name, name != request.reference {
            return Destination(
                location: RegistryLocation(registry: name.registry, repository: name.repository),
                tag: name.tag ?? (name.digest == nil ? request.reference.tag : nil))
        }
        guard let target = options.target else { throw SyncError.noDestination(request.reference.description) }
        let repository = try BundlePusher.targetRepository(
            request.reference, prefix: target.prefix, keepRegistryHost: options.keepRegistryHost)
        return Destination(
            location: RegistryLocation(registry: target.registry, repository: repository), tag: request.reference.tag)
    }

    public func run(_ options: Options) async throws -> Summary {
        let started = Date()
        let resolver = ImageResolver(
            client: client, progress: progress, parallel: options.images, referrerTypes: options.referrerTypes)
        let requests = try await resolver.expandTags(options.requests)
        // Every image has somewhere to go before anything is copied.
        for request in requests { _ = try Self.destination(of: request, options: options) }
        let store = try BlobStore(root: options.cacheDirectory, durable: false)
        // Threads that verify blobs on their way and wait for the destination when it is slower:
        // one for each copy that may run at once, so a copy waiting never holds up another.
        let pool = NIOThreadPool(numberOfThreads: max(1, options.images * options.parallel))
        pool.start()
        defer { pool.shutdownGracefully { _ in } }
        let run = SyncRun(
            client: client, progress: progress, resolver: resolver, options: options, store: store, pool: pool)

        var summary = Summary(dryRun: options.dryRun)
        var results: [String: Summary.Image] = [:]  // by source -> destination, the last pass's word
        var order: [String] = []
        var pending = requests.map { (request: $0, referrer: false) }
        var pass = 0
        while !pending.isEmpty {
            pass += 1
            if pass > 1 {
                let delay = min(30, options.retryDelay * pow(2, Double(pass - 2)))
                progress.phase(
                    "Retry pass \(pass - 1) of \(options.retries): \(pending.count) image(s), after \(Int(delay))s")
                try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
            }
            let outcomes = await run.pass(pending, number: pass)
            for outcome in outcomes {
                let key = "\(outcome.image.source) -> \(outcome.image.destination)"
                if results[key] == nil { order.append(key) }
                results[key] = outcome.image
            }
            let failed = outcomes.filter { $0.image.status == .failed && $0.retryable }
            guard pass <= options.retries else { break }
            pending = failed.map { ($0.request, $0.image.referrer) }
        }
        summary.passes = pass
        summary.images = order.compactMap { results[$0] }
        for image in summary.images {
            switch image.status {
            case .copied: summary.imagesCopied += 1
            case .upToDate: summary.imagesUpToDate += 1
            case .tagged: summary.imagesTagged += 1
            case .failed: summary.imagesFailed += 1
            case .wouldCopy: break
            }
            summary.blobsCopied += image.blobsCopied
            summary.bytesCopied += image.bytesCopied
            summary.blobsMounted += image.blobsMounted
            summary.blobsAlreadyThere += image.blobsAlreadyThere
            summary.manifestsPushed += image.manifestsPushed
        }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }
}

/// One run of `ferry sync`: its passes share the blob ledger (what was placed where).
struct SyncRun: Sendable {
    let client: RegistryClient
    let progress: ProgressReporter
    let resolver: ImageResolver
    let options: Syncer.Options
    let store: BlobStore
    let pool: NIOThreadPool
    let ledger = BlobLedger()

    struct Outcome: Sendable {
        var request: ImageRequest
        var image: Syncer.Summary.Image
        /// Worth another pass: not content that failed verification.
        var retryable: Bool
        var resolved: ResolvedImage?
    }

    /// Syncs `requests`, then the referrers of the images among them that are no referrers.
    func pass(_ requests: [(request: ImageRequest, referrer: Bool)], number: Int) async -> [Outcome] {
        let filter = PlatformFilter(options.platforms)
        var outcomes =
            (try? await boundedMap(requests, width: options.images) { item in
                await sync(item.request, referrer: item.referrer, pass: number) {
                    try await resolver.resolve(item.request, filter: item.referrer ? .all : filter, store: store)
                }
            }) ?? []
        guard options.referrers else { return outcomes }
        let subjects = zip(requests, outcomes).filter { !$0.0.referrer }.compactMap(\.1.resolved)
        guard !subjects.isEmpty else { return outcomes }
        let found: [ResolvedImage]
        do {
            found = try await resolver.referrers(of: subjects, store: store)
        } catch {
            // Only an unreachable registry stops the lookup; the images themselves are synced.
            for subject in subjects {
                let image = Syncer.Summary.Image(
                    source: "\(subject.request.reference) (its signatures, attestations and SBOMs)",
                    destination: (try? Syncer.destination(of: subject.request, options: options))?.description ?? "?",
                    status: .failed, referrer: true, error: String(describing: error), pass: number)
                outcomes.append(Outcome(request: subject.request, image: image, retryable: false))
            }
            return outcomes
        }
        outcomes +=
            (try? await boundedMap(found, width: options.images) { image in
                await sync(image.request, referrer: true, pass: number) { image }
            }) ?? []
        return outcomes
    }

    func failure(_ request: ImageRequest, referrer: Bool, pass: Int, error: any Error) -> Outcome {
        let destination = (try? Syncer.destination(of: request, options: options))?.description ?? "?"
        let code = exitCode(for: error)
        let corrupt = code == FerryExitCode.verification
        let image = Syncer.Summary.Image(
            source: request.reference.description, destination: destination, status: .failed, referrer: referrer,
            error: String(describing: error), corrupt: corrupt ? true : nil, pass: pass)
        progress.phase("failed \(request.reference) -> \(destination): \(error)")
        return Outcome(request: request, image: image, retryable: code == FerryExitCode.failure)
    }

    /// One image: never throws; a failure is its outcome.
    func sync(
        _ request: ImageRequest, referrer: Bool, pass: Int,
        resolve: @Sendable () async throws -> ResolvedImage
    ) async -> Outcome {
        do {
            let destination = try Syncer.destination(of: request, options: options)
            let image = try await resolve()
            var result = try await copy(image, to: destination, referrer: referrer)
            result.pass = pass
            let verb =
                switch result.status {
                case .copied: "copied"
                case .upToDate: "up to date"
                case .tagged: "tagged"
                case .wouldCopy: "would copy"
                case .failed: "failed"
                }
            progress.phase(
                "\(verb) \(request.reference) -> \(destination)"
                    + (result.blobsCopied > 0
                        ? " (\(result.blobsCopied) blob(s), \(ByteCount.text(result.bytesCopied)))" : ""))
            return Outcome(request: request, image: result, retryable: false, resolved: image)
        } catch {
            return failure(request, referrer: referrer, pass: pass, error: error)
        }
    }

    /// What goes to the destination: the image as resolved, or with `--platform` and an index of
    /// which only some manifests were selected, the one selected manifest (a registry refuses an
    /// index whose manifests it does not hold).
    func pushable(_ image: ResolvedImage) throws -> (
        top: ManifestDocument, documents: [ManifestDocument], blobs: [Descriptor]
    ) {
        guard !options.platforms.isEmpty, case .index(let index) = image.top.content else {
            return (image.top, image.documents, image.blobs)
        }
        let carried = Set(image.documents.map(\.digest))
        let all = index.manifests.filter { MediaType.isManifestOrIndex($0.mediaType) }
        if all.allSatisfy({ carried.contains($0.digest) }) { return (image.top, image.documents, image.blobs) }
        let selected = image.documents.filter { !$0.isIndex }
        guard selected.count == 1, let only = selected.first else {
            throw SyncError.partialIndex(
                image.request.reference.description, kept: selected.count, of: all.count)
        }
        return (only, [only], image.blobs)
    }

    func copy(_ image: ResolvedImage, to destination: Syncer.Destination, referrer: Bool) async throws
        -> Syncer.Summary.Image
    {
        let (top, documents, blobs) = try pushable(image)
        var result = Syncer.Summary.Image(
            source: image.request.reference.description, destination: destination.description,
            digest: top.digest.description, status: .copied, referrer: referrer, pass: 0)
        let target = destination.location
        let reference: ManifestReference = destination.tag.map { .tag($0) } ?? .digest(top.digest)
        if try await client.manifestDigest(target, reference: reference) == top.digest {
            result.status = .upToDate
            return result
        }
        // The manifest is there under another name: its blobs are too.
        if destination.tag != nil,
            try await client.manifestDigest(target, reference: .digest(top.digest)) == top.digest
        {
            result.status = options.dryRun ? .wouldCopy : .tagged
            if !options.dryRun {
                try await client.putManifest(top, reference: reference, in: target)
                result.manifestsPushed = 1
            }
            return result
        }
        let source = RegistryLocation(
            registry: image.request.reference.registry, repository: image.request.reference.repository)
        var seen: Set<Digest> = []
        let unique = blobs.filter { seen.insert($0.digest).inserted }
        if options.dryRun {
            let present = try await boundedMap(unique, width: options.parallel) { blob in
                try await client.blobExists(blob.digest, in: target)
            }
            let missing = zip(unique, present).compactMap { blob, there in there ? nil : blob }
            result.status = .wouldCopy
            result.blobsAlreadyThere = unique.count - missing.count
            result.blobsMissing = missing.count
            result.bytesMissing = missing.reduce(0) { $0 + $1.size }
            return result
        }
        let placed = try await boundedMap(unique, width: options.parallel) { blob in
            try await place(blob, from: source, to: target)
        }
        for (blob, how) in zip(unique, placed) {
            switch how {
            case .copied:
                result.blobsCopied += 1
                result.bytesCopied += blob.size
            case .mounted: result.blobsMounted += 1
            case .present: result.blobsAlreadyThere += 1
            }
        }
        // Children before indexes, the tagged top last: no client sees a tag before its content.
        let children = documents.filter { $0.digest != top.digest }.sorted {
            ($0.isIndex ? 1 : 0, $0.digest) < ($1.isIndex ? 1 : 0, $1.digest)
        }
        for document in children {
            try await client.putManifest(document, reference: .digest(document.digest), in: target)
        }
        try await client.putManifest(top, reference: reference, in: target)
        result.manifestsPushed = children.count + 1
        return result
    }

    enum Placement: Sendable {
        case copied, mounted, present
    }

    /// Puts one blob into `target`: the first image to need it in a registry copies it (unless the
    /// repository has it); the others wait for that, then mount it from where it went.
    func place(_ blob: Descriptor, from source: RegistryLocation, to target: RegistryLocation) async throws
        -> Placement
    {
        let key = BlobLedger.Key(registry: target.registry, digest: blob.digest)
        switch await ledger.claim(key) {
        case .placed(let repository):
            if repository == target.repository { return .present }
            if try await client.mountBlob(blob.digest, from: repository, to: target) {
                return .mounted
            }
            return try await transfer(blob, from: source, to: target)  // mounting refused: copy it
        case .mine:
            do {
                let placement = try await transfer(blob, from: source, to: target)
                await ledger.settle(key, at: target.repository)
                return placement
            } catch {
                await ledger.release(key)
                throw error
            }
        }
    }

    func transfer(_ blob: Descriptor, from source: RegistryLocation, to target: RegistryLocation) async throws
        -> Placement
    {
        if try await client.blobExists(blob.digest, in: target) {
            return .present
        }
        do {
            try await client.copyBlob(blob, from: source, to: target, pool: pool)
        } catch let error as RegistryError {
            throw SyncError.blob(blob.digest, error)
        }
        return .copied
    }
}

/// Which blobs a sync has placed in which repository of each destination registry, and which are
/// being copied: a blob is copied once per registry, however many images need it at once.
actor BlobLedger {
    struct Key: Hashable, Sendable {
        var registry: String
        var digest: Digest
    }

    enum Claim: Sendable {
        /// The caller copies it, then calls ``settle(_:at:)`` or ``release(_:)``.
        case mine
        /// It is in this repository of the registry.
        case placed(RepositoryName)
    }

    private enum Entry {
        case placed(RepositoryName)
        case copying([CheckedContinuation<RepositoryName?, Never>])
    }

    private var entries: [Key: Entry] = [:]

    func claim(_ key: Key) async -> Claim {
        while true {
            switch entries[key] {
            case .placed(let repository):
                return .placed(repository)
            case .copying(let waiting):
                let placed = await withCheckedContinuation { continuation in
                    entries[key] = .copying(waiting + [continuation])
                }
                if let placed { return .placed(placed) }  // else its copy failed: claim it anew
            case nil:
                entries[key] = .copying([])
                return .mine
            }
        }
    }

    func settle(_ key: Key, at repository: RepositoryName) {
        if case .copying(let waiting) = entries[key] { waiting.forEach { $0.resume(returning: repository) } }
        entries[key] = .placed(repository)
    }

    func release(_ key: Key) {
        if case .copying(let waiting) = entries[key] { waiting.forEach { $0.resume(returning: nil) } }
        entries[key] = nil
    }
}

public enum SyncError: Error, CustomStringConvertible {
    case noDestination(String)
    case partialIndex(String, kept: Int, of: Int)
    case blob(Digest, RegistryError)
    case referrers(String, any Error)
    /// Images that still failed after the retry passes.
    case failed([Syncer.Summary.Image])

    public var isVerification: Bool {
        switch self {
        case .blob(_, let error): error.isVerificationFailure
        case .failed(let images): images.contains { $0.corrupt == true }
        default: false
        }
    }

    public var isUsage: Bool {
        switch self {
        case .noDestination, .partialIndex: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .noDestination(let image):
            "\(image): no destination: give --to HOST[:PORT][/PREFIX], or a destination in an images.json"
        case .partialIndex(let image, let kept, let total):
            "\(image): --platform keeps \(kept) of the \(total) manifests of its index, and a registry refuses an "
                + "index without all of them: give one platform (its manifest is copied under the tag), or none"
        case .blob(let digest, let error): "blob \(digest): \(error)"
        case .referrers(let image, let error): "referrers of \(image): \(error)"
        case .failed(let images):
            (["\(images.count) image(s) not synced:"]
                + images.map { "  \($0.source) -> \($0.destination): \($0.error ?? "failed")" }).joined(
                    separator: "\n")
        }
    }
}
