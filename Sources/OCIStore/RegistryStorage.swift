import OCICore

/// The registry's storage: blobs as content-addressed files, and the metadata clients see
/// (repositories, tags, manifests and what they reference, per-repository blob links, the referrers
/// index). It owns the registry's rules, so the server, imports, gc and the commands all call it
/// and never edit state themselves:
/// - a manifest enters a repository only when everything it references is there (an index's
///   child manifests, an image's config and layers as blobs linked to the repository, whose files
///   exist); non-distributable layers are exempt;
/// - a blob is served only from a repository that links it or whose manifest it is;
/// - each write is one transaction: a bundle's images appear at once, a killed writer changes
///   nothing, and two writers (in one process or several) never lose each other's changes.
///
/// Every call blocks (database, file I/O): run it off the event loops.
public protocol RegistryStorage: Sendable {
    /// The content-addressed blob files (manifests are stored there too, byte for byte).
    var blobs: BlobStore { get }
    /// Blob uploads in progress.
    var uploads: UploadStore { get }

    // MARK: Reading

    /// Repositories holding at least one manifest, in name order, after `last`, at most `limit`.
    func repositories(after last: RepositoryName?, limit: Int?) throws -> [RepositoryName]
    /// How many repositories hold at least one manifest.
    /// Repositories whose name contains one of `texts` (by byte), in name order after `last`.
    func repositories(containingAny texts: [String], after last: RepositoryName?, limit: Int?) throws
        -> [RepositoryName]
    func repositoryCount() throws -> Int
    /// How many tags the store serves (the console's image count).
    func tagCount() throws -> Int
    /// Whether the repository holds anything (a manifest, or a pushed blob).
    func contains(repository: RepositoryName) throws -> Bool
    /// The repository's tags in order, after `last`, at most `limit`.
    func tags(in repository: RepositoryName, after last: String?, limit: Int?) throws -> [Tag]
    /// The manifest a tag points at, or the digest itself when the repository holds that manifest.
    func resolve(_ reference: ManifestReference, in repository: RepositoryName) throws -> Digest?
    /// Whether the repository may serve this blob (it links it, or it is one of its manifests).
    func servesBlob(_ digest: Digest, in repository: RepositoryName) throws -> Bool
    /// The repository's manifests whose `subject` is `digest` (optionally of one artifact type), in digest order.
    func referrers(of digest: Digest, in repository: RepositoryName, artifactType: String?) throws -> [Digest]
    /// Every repository with its tags and manifests (for `images` and the client configuration).
    func listing() throws -> [RepositoryListing]
    /// Every blob some repository serves (linked blobs and manifests), each once, in digest order:
    /// what a site holds for a delta bundle to rely on (unreferenced files may be collected).
    func heldBlobs() throws -> [Digest]

    // MARK: Writing

    /// Links a stored blob to a repository (a finished upload). The blob's file must exist.
    func linkBlob(_ digest: Digest, to repository: RepositoryName) throws
    /// Links a blob `source` links to `target` too (a cross-repository mount); false when `source`
    /// does not link it or its file is gone.
    func mountBlob(_ digest: Digest, from source: RepositoryName, to target: RepositoryName) throws -> Bool
    /// Stores a manifest's bytes and adds it to the repository under `tags`, if everything it references is there.
    func putManifest(_ document: ManifestDocument, in repository: RepositoryName, tags: [Tag]) throws
    /// Removes a manifest and every tag pointing at it; false when the repository does not hold it.
    func deleteManifest(_ digest: Digest, in repository: RepositoryName) throws -> Bool
    /// Removes a tag; false when there was none.
    func deleteTag(_ tag: Tag, in repository: RepositoryName) throws -> Bool
    /// Unlinks a blob from a repository (gc reclaims the file); false when it was not linked.
    func unlinkBlob(_ digest: Digest, from repository: RepositoryName) throws -> Bool
    /// Makes a verified bundle's images visible, all in one transaction, under the same rules as
    /// ``putManifest(_:in:tags:)``; blobs and manifests must already be stored.
    func importImages(_ plan: ImportPlan) throws

    /// Import records (one per bundle, keyed by the bundle manifest's digest).
    func recordImport(_ record: [UInt8], id: String) throws
    func hasImportRecord(_ id: String) -> Bool
    /// The ids of every import recorded, in order.
    func importRecordIDs() -> [String]
    /// The records of the latest `limit` imports, newest first.
    func latestImportRecords(limit: Int) -> [[UInt8]]

    // MARK: Volume sets, imported over several runs

    /// Sets with some volumes stored whose images are not yet visible, by id.
    func pendingVolumeSets() throws -> [PendingVolumeSet]
    /// Runs `body` holding the set's lock: two imports of volumes of one set (in any processes)
    /// take turns, so exactly one of them sees the set complete.
    func withVolumeSetLock<T>(_ id: String, _ body: () throws -> T) throws -> T
    /// Records that a volume of `set` arrived, verified and stored, with the blobs it stored and
    /// those every volume carries (`shared`, kept once): gc keeps them until the set is finished.
    func recordVolume(_ number: Int, of set: PendingVolumeSet, holding blobs: [Digest], shared: [Digest]) throws
    /// Where the parts of a blob carried in parts are written, each at its offset, until the set
    /// is complete (the file, not yet created, in the set's own directory).
    func volumePartFile(set id: String, blob: Digest) throws -> String
    /// Forgets the arrival of every volume that stored one of `digests` (gone from the store), so
    /// those volumes can be imported again; returns their numbers.
    func forgetVolumes(holding digests: Set<Digest>, of id: String) throws -> [Int]
    /// Forgets a set (imported, or given up): its blobs are garbage once nothing references them.
    func finishVolumeSet(_ id: String) throws
    /// Every blob a pending set holds.
    func volumeSetHolds() throws -> Set<Digest>
}

/// A volume set being imported: what it is, which volumes arrived.
public struct PendingVolumeSet: Codable, Sendable, Equatable {
    /// The set's id: the hex sha256 of its bundle manifest.
    public var id: String
    public var count: Int
    /// The images it will make visible.
    public var images: [String]
    /// The volume file the set was first seen in (for messages).
    public var firstVolume: String
    /// Volume numbers stored so far, in order.
    public var arrived: [Int] = []
    /// RFC 3339 time of the first arrival.
    public var started: String

    public init(id: String, count: Int, images: [String], firstVolume: String, started: String) {
        self.id = id
        self.count = count
        self.images = images
        self.firstVolume = firstVolume
        self.started = started
    }

    /// The volume numbers still to come.
    public var needed: [Int] { (1...max(1, count)).filter { !arrived.contains($0) } }
}

/// One repository's tags and manifests.
public struct RepositoryListing: Encodable, Sendable, Equatable {
    public var name: RepositoryName
    public var tags: [String: Digest]
    public var manifests: [Digest]

    enum CodingKeys: String, CodingKey { case tags, manifests }

    public init(name: RepositoryName, tags: [String: Digest], manifests: [Digest]) {
        self.name = name
        self.tags = tags
        self.manifests = manifests
    }
}

/// What an import makes visible: per image, the repository, its tag, and everything it reaches
/// that the bundle carries (manifests and blobs, all already in the blob store).
public struct ImportPlan: Sendable {
    public struct Image: Sendable {
        public var repository: RepositoryName
        public var tag: Tag?
        public var top: Digest
        public var manifests: Set<Digest>
        public var blobs: Set<Digest>

        public init(repository: RepositoryName, tag: Tag?, top: Digest, manifests: Set<Digest>, blobs: Set<Digest>) {
            self.repository = repository
            self.tag = tag
            self.top = top
            self.manifests = manifests
            self.blobs = blobs
        }
    }

    public var images: [Image]
    /// A partial bundle carries only these platforms of its indexes; the other children may be absent.
    public var platforms: PlatformFilter

    public init(images: [Image], platforms: PlatformFilter = .all) {
        self.images = images
        self.platforms = platforms
    }
}

/// A registry rule a write would break; nothing was changed.
public enum RegistryRuleError: Error, Equatable, CustomStringConvertible {
    /// An index references a manifest the repository does not hold.
    case unknownManifest(Digest)
    /// An image references a blob the repository does not link.
    case unknownBlob(Digest)
    /// A blob or manifest the change needs left the store (garbage collection) before it committed.
    case contentMissing(Digest)

    public var description: String {
        switch self {
        case .unknownManifest(let digest): "manifest references an unknown manifest \(digest)"
        case .unknownBlob(let digest): "manifest references an unknown blob \(digest)"
        case .contentMissing(let digest):
            "\(digest) left the store before the change committed (garbage collection?); nothing changed, try again"
        }
    }
}

extension RegistryStorage {
    /// What refers to `digest` in `repository`, by kind: cosign's tags and the referrers tag that
    /// exist (``ReferrerTag``), and `referrers` also when the referrers index lists any.
    public func carried(_ digest: Digest, in repository: RepositoryName) throws -> [String] {
        var kinds: Set<String> = []
        for kind in ReferrerTag.Kind.allCases {
            guard let tag = try? Tag(ReferrerTag(subject: digest, kind: kind).tag) else { continue }
            if try resolve(.tag(tag), in: repository) != nil { kinds.insert(kind.rawValue) }
        }
        if try !referrers(of: digest, in: repository, artifactType: nil).isEmpty { kinds.insert("referrers") }
        return kinds.sorted()
    }
}
