import ArgumentParser
import AsyncHTTPClient
import Dispatch
import Foundation
import NIOCore
import OCIBundle
import OCICore
import OCIRegistryClient
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `ferry push`: every image of a bundle into a registry, verified as it is read.
///
/// 1. The bundle header names the images; each goes to `TARGET/[PREFIX/]NAME`, where NAME keeps the
///    source registry as its first component (as the appliance serves it) unless asked not to.
/// 2. Blobs the first image's repository already has are skipped (HEAD).
/// 3. One pass over the bundle: each other blob streams to the registry while the bundle reader
///    hashes it; a blob that does not match its digest is never finished (its upload is cancelled),
///    and nothing else is published when the bundle fails verification.
/// 4. Each other repository gets its blobs by cross-repository mount from the first one.
/// 5. Manifests go last, children before indexes, the tagged top manifest last of all, bytes unchanged.
struct BundlePusher {
    struct Options {
        var bundle: String
        /// HOST[:PORT]
        var registry: String
        var prefix: String?
        var keepRegistryHost: Bool
        var trustedKeys: [PublicKey]
        /// Names images of another tool's archive that index.json names by tag only.
        var repository: String? = nil
    }

    struct Summary: Codable {
        struct Image: Codable {
            var source: String
            var target: String
            var digest: String
        }
        var bundle: String
        var registry: String
        var images: [Image] = []
        var blobsUploaded = 0
        var bytesUploaded: Int64 = 0
        var blobsAlreadyThere = 0
        var blobsMounted = 0
        var manifestsPushed = 0
        var seconds = 0.0
    }

    let client: RegistryClient
    let progress: ProgressReporter

    /// The repository an image goes to.
    static func targetRepository(_ reference: Reference, prefix: String?, keepRegistryHost: Bool) throws
        -> RepositoryName
    {
        let name = keepRegistryHost ? reference.servedRepository : reference.repository.value
        let full = [prefix, name].compactMap { $0?.isEmpty == false ? $0 : nil }.joined(separator: "/")
        return try RepositoryName(full)
    }

    func run(_ options: Options) async throws -> Summary {
        let started = Date()
        var summary = Summary(bundle: options.bundle, registry: options.registry)
        let reader = BundleReader(trustedKeys: options.trustedKeys)
        // One verifying pass (a pipe has no second): the sink plans from the bundle manifest as
        // soon as the reader has it — target repositories, which blobs the staging repository
        // already has — then uploads each missing blob as the reader hashes it.
        let plan = PushPlan()
        let client = self.client
        let progress = self.progress
        let sink = PushSink(client: client, registry: options.registry, progress: progress) { manifest in
            var targets: [String: RepositoryName] = [:]  // image reference → target repository
            for image in manifest.images {
                targets[image.reference] = try Self.targetRepository(
                    try Reference(image.reference), prefix: options.prefix, keepRegistryHost: options.keepRegistryHost)
            }
            guard let staging = manifest.images.first.flatMap({ targets[$0.reference] }) else {
                throw PushError.invalid(options.bundle, [])
            }
            // A delta relies on its base: the registry must hold it already (in the first image's
            // repository, from which the others mount).
            if let external = manifest.external, !external.isEmpty {
                let held = try PushSink.waiting {
                    try await Self.existing(
                        external, in: RegistryLocation(registry: options.registry, repository: staging), client: client)
                }
                let missing = external.map(\.digest).filter { !held.contains($0) }.sorted()
                if !missing.isEmpty {
                    throw PushError.baseMissing(
                        bundle: options.bundle, base: manifest.base?.description ?? "an unnamed base",
                        target: "\(options.registry)/\(staging)", missing: missing)
                }
            }
            let uploadable = manifest.blobs.filter { !Self.isManifest($0) }
            progress.phase("checking \(uploadable.count) blob(s) in \(options.registry)/\(staging)")
            let present = try PushSink.waiting {
                try await Self.existing(
                    uploadable, in: RegistryLocation(registry: options.registry, repository: staging), client: client)
            }
            let toUpload = uploadable.filter { !present.contains($0.digest) }
            progress.startWriting(bytes: toUpload.reduce(0) { $0 + $1.size }, path: "\(options.registry)/\(staging)")
            plan.set(targets: targets, staging: staging, present: present)
            return (staging, present)
        }
        let report = try await NIOThreadPoolRunner.run {
            try reader.verifyAny(path: options.bundle, sink: sink, repository: options.repository)
        }
        progress.finishWriting()
        if let failure = sink.failure { throw failure }
        guard report.ok, let manifest = report.manifest else {
            throw PushError.invalid(options.bundle, report.problems)
        }
        let (targets, staging, present) = plan.get()
        guard let staging else { throw PushError.invalid(options.bundle, report.problems) }
        summary.blobsAlreadyThere = present.count
        summary.blobsUploaded = sink.uploaded
        summary.bytesUploaded = sink.bytes
        // Other repositories: mount from the staging one.
        for image in manifest.images {
            guard let target = targets[image.reference], target != staging,
                let contents = report.imageContents[image.reference]
            else { continue }
            let location = RegistryLocation(registry: options.registry, repository: target)
            for digest in contents.blobs.sorted() {
                if try await client.blobExists(digest, in: location) { continue }
                guard try await client.mountBlob(digest, from: staging, to: location) else {
                    throw PushError.mountRefused(registry: options.registry, digest: digest, from: staging, to: target)
                }
                summary.blobsMounted += 1
            }
        }
        // Manifests: children first, then the top one under its tag (or digest).
        for image in manifest.images {
            guard let target = targets[image.reference], let contents = report.imageContents[image.reference] else {
                continue
            }
            let documents = try contents.manifests.map { digest -> ManifestDocument in
                guard let document = sink.manifests[digest] else { throw PushError.missingManifest(digest) }
                return document
            }
            let children = documents.filter { $0.digest != image.digest }.sorted {
                ($0.isIndex ? 1 : 0, $0.digest) < ($1.isIndex ? 1 : 0, $1.digest)
            }
            let location = RegistryLocation(registry: options.registry, repository: target)
            for document in children {
                try await client.putManifest(document, reference: .digest(document.digest), in: location)
                summary.manifestsPushed += 1
            }
            guard let top = sink.manifests[image.digest] else { throw PushError.missingManifest(image.digest) }
            let reference = try Reference(image.reference)
            try await client.putManifest(
                top, reference: reference.tag.map { .tag($0) } ?? .digest(image.digest), in: location)
            summary.manifestsPushed += 1
            let targetName = "\(options.registry)/\(target)" + (reference.tag.map { ":\($0.value)" } ?? "")
            progress.phase("pushed \(targetName)@\(image.digest)")
            summary.images.append(.init(source: image.reference, target: targetName, digest: image.digest.description))
        }
        summary.seconds = Date().timeIntervalSince(started)
        return summary
    }

    static func isManifest(_ blob: BundleManifest.Blob) -> Bool { MediaType.isManifestOrIndex(blob.mediaType) }

    /// Which of `blobs` the repository has already (eight HEADs at a time).
    static func existing(
        _ blobs: [BundleManifest.Blob], in location: RegistryLocation, client: RegistryClient
    ) async throws -> Set<Digest> {
        let answers = try await boundedMap(blobs, width: 8) { blob in
            (blob.digest, try await client.blobExists(blob.digest, in: location))
        }
        return Set(answers.filter(\.1).map(\.0))
    }
}

/// Receives the bundle's blobs from the reader's thread: manifests are kept (small, bounded by
/// the manifest limit), other blobs stream to the registry as the reader verifies them, a few
/// 256 KiB buffers ahead of the network at most.
final class PushSink: BundleBlobSink, @unchecked Sendable {
    let client: RegistryClient
    let registry: String
    let progress: ProgressReporter
    /// Plans from the bundle manifest: the staging repository and the blobs it has already.
    let planner: (BundleManifest) throws -> (repository: RepositoryName, present: Set<Digest>)
    private var repository: RepositoryName?
    private var skip: Set<Digest> = []
    private(set) var manifests: [Digest: ManifestDocument] = [:]
    private(set) var uploaded = 0
    private(set) var bytes: Int64 = 0
    private(set) var failure: (any Error)?

    private var current: BundleManifest.Blob?
    private var kept: [UInt8]?
    private var upload: UploadFeed?
    private var batch = ByteBuffer()
    static let batchSize = 256 * 1024

    init(
        client: RegistryClient, registry: String, progress: ProgressReporter,
        planner: @escaping (BundleManifest) throws -> (repository: RepositoryName, present: Set<Digest>)
    ) {
        self.client = client
        self.registry = registry
        self.progress = progress
        self.planner = planner
    }

    func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws {
        if let volume {
            failure = ValidationError(
                "a volume (\(volume.number) of \(volume.count)) holds only part of a set: import the volumes into "
                    + "an appliance, or push the bundle they were cut from")
            throw failure ?? PushError.abandoned
        }
        do {
            (repository, skip) = try planner(manifest)
        } catch {
            failure = error  // the run reports this, not the reader's "sink failed"
            throw error
        }
    }

    /// Runs async work from the reader's thread (a pool thread, never an event loop) and waits for it.
    static func waiting<Value: Sendable>(_ work: @escaping @Sendable () async throws -> Value) throws -> Value {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<Result<Value, any Error>?>(nil)
        Task {
            let outcome: Result<Value, any Error>
            do {
                outcome = .success(try await work())
            } catch {
                outcome = .failure(error)
            }
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        guard let outcome = result.withLock({ $0 }) else { throw PushError.abandoned }
        return try outcome.get()
    }

    func begin(_ blob: BundleManifest.Blob) throws {
        current = blob
        kept = nil
        if BundlePusher.isManifest(blob) || blob.mediaType == nil, blob.size <= Int64(ManifestDocument.maximumSize) {
            kept = []
        }
        guard !BundlePusher.isManifest(blob), !skip.contains(blob.digest), failure == nil else { return }
        guard let repository else { throw PushError.abandoned }  // planned before the first blob
        let upload = UploadFeed(size: blob.size)
        self.upload = upload
        let (client, location) = (self.client, RegistryLocation(registry: registry, repository: repository))
        Task {
            do {
                try await client.uploadBlob(blob.digest, size: blob.size, to: location, body: upload.body)
                upload.complete(.success(()))
            } catch {
                upload.complete(.failure(error))
            }
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        if kept != nil { kept?.append(contentsOf: bytes) }
        guard upload != nil else { return }
        batch.writeBytes(bytes)
        if batch.readableBytes >= Self.batchSize { try send() }
    }

    /// Hands the batch to the upload; when the upload stopped taking bytes, its own error.
    private func send() throws {
        guard let upload, batch.readableBytes > 0 else { return }
        let count = Int64(batch.readableBytes)
        do {
            try upload.send(batch)
        } catch {
            if case .failure(let uploadError) = upload.waitForUpload() { throw uploadError }
            throw error
        }
        batch = ByteBuffer()
        progress.wrote(count)
    }

    func commit() throws {
        defer {
            upload = nil
            current = nil
        }
        if let kept, let blob = current,
            let document = try? ManifestDocument(
                bytes: kept, declaredMediaType: blob.mediaType, algorithm: blob.digest.algorithm)
        {
            manifests[blob.digest] = document
        }
        guard let upload, let blob = current else { return }
        do {
            try send()
            do {
                try upload.finish()
            } catch {
                // The upload ended before its last batch: its own error says why.
                if case .failure(let uploadError) = upload.waitForUpload() { throw uploadError }
                throw error
            }
            try upload.waitForUpload().get()
            uploaded += 1
            bytes += blob.size
        } catch {
            failure = failure ?? error
            throw error
        }
    }

    func abort() {
        batch = ByteBuffer()
        guard let upload else { return }
        upload.fail(PushError.abandoned)
        _ = upload.waitForUpload()
        self.upload = nil
    }
}

/// What the sink planned from the bundle manifest, for the steps after the pass.
final class PushPlan: Sendable {
    private let state = Mutex<(targets: [String: RepositoryName], staging: RepositoryName?, present: Set<Digest>)>(
        ([:], nil, []))

    func set(targets: [String: RepositoryName], staging: RepositoryName, present: Set<Digest>) {
        state.withLock { $0 = (targets, staging, present) }
    }

    func get() -> (targets: [String: RepositoryName], staging: RepositoryName?, present: Set<Digest>) {
        state.withLock { $0 }
    }
}

enum PushError: Error, CustomStringConvertible {
    case mountRefused(registry: String, digest: Digest, from: RepositoryName, to: RepositoryName)
    case missingManifest(Digest)
    case abandoned
    case invalid(String, [VerificationProblem])
    /// A delta bundle whose base the registry does not hold.
    case baseMissing(bundle: String, base: String, target: String, missing: [Digest])

    var isVerification: Bool {
        switch self {
        case .invalid, .baseMissing: true
        default: false
        }
    }

    var description: String {
        switch self {
        case .mountRefused(let registry, let digest, let from, let to):
            "\(registry) would not mount \(digest) from \(from) into \(to) (give the pushing user pull rights on \(from))"
        case .missingManifest(let digest): "manifest \(digest) is not in the bundle"
        case .abandoned: "upload abandoned: the blob did not verify"
        case .baseMissing(let bundle, let base, let target, let missing):
            "\(bundle): nothing pushed: a delta against \(base), and \(target) lacks \(missing.count) blob(s) it "
                + "relies on: " + missing.prefix(5).map(\.description).joined(separator: ", ")
                + (missing.count > 5 ? ", …" : "") + " (push its base first, or push a full bundle)"
        case .invalid(let bundle, let problems):
            (["\(bundle): does not verify; no manifest was pushed:"] + problems.map { "  \($0)" }).joined(
                separator: "\n")
        }
    }
}
