import Foundation
import HelmCharts
import OCIBundle
import OCICore
import OCIRegistryClient
import OCIStore

/// An image as resolved: its request, its top document, every manifest and index the bundle (or
/// the copy) carries, and the configs and layers they name.
struct ResolvedImage: Sendable {
    var request: ImageRequest
    var top: ManifestDocument
    /// Every manifest and index of the image that the bundle carries, top first.
    var documents: [ManifestDocument]
    /// Configs and layers, in walk order.
    var blobs: [Descriptor]
    var platforms: [String]
}

/// Turns image requests into resolved images: whole repositories into one request per tag kept,
/// tags into digests, every manifest and index read (into a store), and what refers to them. The
/// export, the plan and the sync all resolve through it.
struct ImageResolver: Sendable {
    let client: RegistryClient
    let progress: ProgressReporter
    /// Requests, tag listings and referrer lookups at once.
    var parallel: Int
    /// The referrer artifact types to carry (nil: every one).
    var referrerTypes: Set<String>?

    /// Resolves every requested image: tags to digests, and every manifest and index read (into the
    /// cache), with bounded parallelism, in request order. No layer is downloaded.
    func resolveAll(_ requests: [ImageRequest], filter: PlatformFilter, store: BlobStore) async throws
        -> [ResolvedImage]
    {
        progress.phase("Resolving \(requests.count) image(s)")
        let progress = self.progress
        return try await boundedMap(requests, width: parallel) { request in
            try await resolve(request, filter: filter, store: store)
        } done: { image in
            progress.imageResolved(image.request.reference.description, digest: image.top.digest.description)
        }
    }

    /// Whole repositories become one request per tag their filters keep, listed from the registry
    /// (bounded parallelism, order kept). A tag also asked for by name is taken once. `charts`:
    /// the charts carried beside (an export of charts alone may keep no tag).
    func expandTags(_ requests: [ImageRequest], charts: [ChartRequest] = []) async throws -> [ImageRequest] {
        guard requests.contains(where: { $0.tags != nil }) else { return requests }
        let client = self.client
        let progress = self.progress
        let listed = try await boundedMap(requests, width: parallel) { request -> [ImageRequest] in
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
        let direct = requests.filter { $0.tags == nil }
        let directNames = Set(direct.map { BundleWriter.imageName($0.carried) })
        var seen = Set(direct.map { Key(reference: $0.reference, carried: $0.carried) })
        var expanded: [ImageRequest] = []
        for (request, tags) in zip(requests, listed) {
            guard request.tags != nil else {
                expanded.append(request)
                continue
            }
            for tag in tags where !directNames.contains(BundleWriter.imageName(tag.carried)) {
                if seen.insert(Key(reference: tag.reference, carried: tag.carried)).inserted {
                    expanded.append(tag)
                }
            }
        }
        if expanded.isEmpty && charts.isEmpty {
            throw ExportError.noTagsKept(requests.filter { $0.tags != nil }.map(\.reference.name))
        }
        try ImageRequest.checkNames(expanded, charts: charts)
        return expanded
    }

    /// What refers to the resolved images, as images of their own: for every manifest and index
    /// the bundle carries, the OCI 1.1 referrers API's answer (each referrer by digest), cosign's
    /// tags (`sha256-HEX.sig`, `.att`, `.sbom`) and the referrers tag schema's index (`sha256-HEX`),
    /// in the image's repository. A tag the registry does not have, or a registry without the
    /// referrers API, is skipped; any other failure stops the export. Each is carried whole.
    func referrers(of images: [ResolvedImage], store: BlobStore) async throws -> [ResolvedImage] {
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
        let kinds = ReferrerTag.Kind.allCases.filter { referrerTypes?.contains($0.rawValue) ?? true }
        let repositories = Array(
            Set(
                kinds.isEmpty
                    ? []
                    : images.map {
                        Repository(registry: $0.request.reference.registry, name: $0.request.reference.repository)
                    }))
        let listings = try await boundedMap(repositories, width: parallel) { repository -> Set<String>? in
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
        let answers = try await boundedMap(subjects, width: parallel) { subject in
            answering.contains(subject.reference.registry) ? await ask(subject) ?? [] : []
        }
        for (subject, found) in zip(subjects, answers) {
            for referrer in found where referrerTypes.map({ $0.contains(referrer.artifactType ?? "") }) ?? true {
                add("\(subject.reference.name)@\(referrer.digest)", of: subject.reference, carried: subject.carried)
            }
        }
        guard !candidates.isEmpty else { return [] }
        progress.phase("Looking for signatures, attestations and SBOMs of \(images.count) image(s)")
        let progress = self.progress
        // A referrer that cannot be had is left out, not a reason to fail the export (a missing
        // signature still fails --verify-signatures); only an unreachable registry stops it.
        let found = try await boundedMap(candidates, width: parallel) { request -> ResolvedImage? in
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
}
