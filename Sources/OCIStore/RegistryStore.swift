import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// The appliance's ``RegistryStorage``: blobs as files under `ROOT/store`, metadata in SQLite
/// (`ROOT/registry.db`, WAL mode, fsync on commit). Several processes (serve, import, gc) share
/// it; SQLite's write lock serialises their transactions.
///
/// The schema uses plain SQL (integer keys, text digests, `WITHOUT ROWID` tables and partial
/// indexes only as optimisations) so a PostgreSQL driver can carry the same tables.
public final class RegistryStore: RegistryStorage {
    public let root: String
    public let blobs: BlobStore
    public let uploads: UploadStore
    public var databasePath: String { "\(root)/registry.db" }
    let pool: SQLitePool

    static let schemaVersion = 1

    /// Opens the store at `root`, creating it when the directory is new, and migrating a
    /// `state.json` written by an earlier release once (kept as `state.json.migrated`).
    public init(root: String) throws(StoreError) {
        self.root = root
        try FileSystem.makeDirectories(root, mode: 0o750)
        self.blobs = try BlobStore(root: "\(root)/store", durable: true)
        self.uploads = try UploadStore(root: "\(root)/uploads")
        try FileSystem.makeDirectory("\(root)/imports", mode: 0o750)
        let path = "\(root)/registry.db"
        pool = SQLitePool(path: path) { connection in try Self.configure(connection) }
        let legacy = "\(root)/state.json"
        if FileSystem.size(of: path) == nil {
            // Never start an empty database over content an earlier database described.
            if FileSystem.size(of: legacy) == nil, Self.holdsBlobs(blobs) {
                throw .databaseMissing(path: path, blobs: blobs.root)
            }
            try SQLiteConnection.createDatabase(path, schema: Self.schema, version: Self.schemaVersion)
        }
        do {
            try pool.withConnection { connection in
                let version = try connection.scalarInteger("PRAGMA user_version") ?? 0
                guard version == Self.schemaVersion else {
                    throw StoreError.database(
                        path: path, "schema version \(version), this release reads \(Self.schemaVersion)")
                }
            }
            if FileSystem.size(of: legacy) != nil { try StateMigration.migrate(legacy, into: self) }
        } catch let error as StoreError {
            throw error
        } catch {
            throw .database(path: path, "\(error)")
        }
    }

    static func holdsBlobs(_ blobs: BlobStore) -> Bool {
        DigestAlgorithm.allCases.contains { !FileSystem.list("\(blobs.root)/blobs/\($0.rawValue)").isEmpty }
    }

    static func configure(_ connection: SQLiteConnection) throws(StoreError) {
        try connection.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON")
        // The header check: a file that is not a database fails here, not on a later request.
        try connection.execute("SELECT count(*) FROM sqlite_schema")
    }

    static let schema = """
        CREATE TABLE repositories(
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE);
        CREATE TABLE manifests(
            repository INTEGER NOT NULL REFERENCES repositories(id),
            digest TEXT NOT NULL,
            media_type TEXT NOT NULL,
            size INTEGER NOT NULL,
            subject TEXT,
            artifact_type TEXT,
            PRIMARY KEY(repository, digest)) WITHOUT ROWID;
        CREATE INDEX manifests_by_digest ON manifests(digest);
        CREATE INDEX manifests_by_subject ON manifests(repository, subject) WHERE subject IS NOT NULL;
        CREATE TABLE manifest_children(
            manifest TEXT NOT NULL,
            child TEXT NOT NULL,
            PRIMARY KEY(manifest, child)) WITHOUT ROWID;
        CREATE INDEX manifest_children_by_child ON manifest_children(child);
        CREATE TABLE tags(
            repository INTEGER NOT NULL REFERENCES repositories(id),
            name TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY(repository, name)) WITHOUT ROWID;
        CREATE INDEX tags_by_digest ON tags(repository, digest);
        CREATE TABLE blob_links(
            repository INTEGER NOT NULL REFERENCES repositories(id),
            digest TEXT NOT NULL,
            PRIMARY KEY(repository, digest)) WITHOUT ROWID;
        CREATE INDEX blob_links_by_digest ON blob_links(digest);
        """

    // MARK: Reading

    public func repositories(after last: RepositoryName?, limit: Int?) throws -> [RepositoryName] {
        try pool.withConnection { db in
            var names: [RepositoryName] = []
            try db.query(
                """
                SELECT name FROM repositories r WHERE name > ?
                AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository = r.id) ORDER BY name LIMIT ?
                """, [.text(last?.value ?? ""), .integer(Int64(limit ?? -1))]
            ) { row in
                if let name = row.text(0), let parsed = try? RepositoryName(name) { names.append(parsed) }
            }
            return names
        }
    }

    public func repositories(containingAny texts: [String], after last: RepositoryName?, limit: Int?) throws
        -> [RepositoryName]
    {
        guard !texts.isEmpty else { return try repositories(after: last, limit: limit) }
        return try pool.withConnection { db in
            var names: [RepositoryName] = []
            let match = texts.map { _ in "instr(name, ?) > 0" }.joined(separator: " OR ")
            try db.query(
                """
                SELECT name FROM repositories r WHERE name > ? AND (\(match))
                AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository = r.id) ORDER BY name LIMIT ?
                """, [.text(last?.value ?? "")] + texts.map { .text($0) } + [.integer(Int64(limit ?? -1))]
            ) { row in
                if let name = row.text(0), let parsed = try? RepositoryName(name) { names.append(parsed) }
            }
            return names
        }
    }

    public func tagCount() throws -> Int {
        try pool.withConnection { db in Int(try db.scalarInteger("SELECT count(*) FROM tags") ?? 0) }
    }

    public func repositoryCount() throws -> Int {
        try pool.withConnection { db in
            Int(
                try db.scalarInteger(
                    "SELECT count(*) FROM repositories r WHERE EXISTS (SELECT 1 FROM manifests m WHERE m.repository = r.id)"
                ) ?? 0)
        }
    }

    public func contains(repository: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.exists(
                """
                SELECT 1 FROM repositories r WHERE r.name = ? AND (EXISTS (SELECT 1 FROM manifests m WHERE m.repository = r.id)
                OR EXISTS (SELECT 1 FROM blob_links l WHERE l.repository = r.id))
                """, [.text(repository.value)])
        }
    }

    public func tags(in repository: RepositoryName, after last: String?, limit: Int?) throws -> [Tag] {
        try pool.withConnection { db in
            var tags: [Tag] = []
            try db.query(
                """
                SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository
                WHERE r.name = ? AND t.name > ? ORDER BY t.name LIMIT ?
                """, [.text(repository.value), .text(last ?? ""), .integer(Int64(limit ?? -1))]
            ) { row in
                if let name = row.text(0), let tag = try? Tag(name) { tags.append(tag) }
            }
            return tags
        }
    }

    public func resolve(_ reference: ManifestReference, in repository: RepositoryName) throws -> Digest? {
        try pool.withConnection { db in
            switch reference {
            case .tag(let tag):
                return try db.scalarText(
                    "SELECT t.digest FROM tags t JOIN repositories r ON r.id = t.repository WHERE r.name = ? AND t.name = ?",
                    [.text(repository.value), .text(tag.value)]
                ).flatMap { try? Digest($0) }
            case .digest(let digest):
                let held = try db.exists(
                    "SELECT 1 FROM manifests m JOIN repositories r ON r.id = m.repository WHERE r.name = ? AND m.digest = ?",
                    [.text(repository.value), .text(digest.description)])
                return held ? digest : nil
            }
        }
    }

    public func servesBlob(_ digest: Digest, in repository: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.exists(
                """
                SELECT 1 FROM repositories r WHERE r.name = ?1 AND (
                EXISTS (SELECT 1 FROM blob_links l WHERE l.repository = r.id AND l.digest = ?2)
                OR EXISTS (SELECT 1 FROM manifests m WHERE m.repository = r.id AND m.digest = ?2))
                """, [.text(repository.value), .text(digest.description)])
        }
    }

    public func referrers(of digest: Digest, in repository: RepositoryName, artifactType: String?) throws -> [Digest] {
        try pool.withConnection { db in
            var found: [Digest] = []
            let sql = """
                SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository
                WHERE r.name = ? AND m.subject = ? AND (? IS NULL OR m.artifact_type = ?) ORDER BY m.digest
                """
            let type = SQLiteValue.optional(artifactType)
            try db.query(sql, [.text(repository.value), .text(digest.description), type, type]) { row in
                if let text = row.text(0), let parsed = try? Digest(text) { found.append(parsed) }
            }
            return found
        }
    }

    public func listing() throws -> [RepositoryListing] {
        try pool.withConnection { db in
            try db.reading {
                var listings: [String: RepositoryListing] = [:]
                func entry(_ name: String) -> RepositoryListing? {
                    if let existing = listings[name] { return existing }
                    guard let parsed = try? RepositoryName(name) else { return nil }
                    return RepositoryListing(name: parsed, tags: [:], manifests: [])
                }
                try db.query(
                    "SELECT r.name, m.digest FROM manifests m JOIN repositories r ON r.id = m.repository ORDER BY r.name, m.digest"
                ) { row in
                    guard let name = row.text(0), var listing = entry(name), let digest = try? Digest(row.text(1) ?? "")
                    else { return }
                    listing.manifests.append(digest)
                    listings[name] = listing
                }
                try db.query("SELECT r.name, t.name, t.digest FROM tags t JOIN repositories r ON r.id = t.repository") {
                    row in
                    guard let name = row.text(0), var listing = entry(name), let tag = row.text(1),
                        let digest = try? Digest(row.text(2) ?? "")
                    else { return }
                    listing.tags[tag] = digest
                    listings[name] = listing
                }
                return listings.values.sorted { $0.name < $1.name }
            }
        }
    }

    public func heldBlobs() throws -> [Digest] {
        try pool.withConnection { db in
            var digests: [Digest] = []
            try db.query("SELECT digest FROM blob_links UNION SELECT digest FROM manifests ORDER BY 1") { row in
                if let digest = try? Digest(row.text(0) ?? "") { digests.append(digest) }
            }
            return digests
        }
    }

    // MARK: Writing

    public func linkBlob(_ digest: Digest, to repository: RepositoryName) throws {
        try pool.withConnection { db in
            try db.writing {
                guard FileSystem.size(of: blobs.path(of: digest)) != nil else {
                    throw RegistryRuleError.contentMissing(digest)
                }
                let id = try Self.repositoryID(db, repository)
                try db.run(
                    "INSERT OR IGNORE INTO blob_links(repository, digest) VALUES (?, ?)",
                    [.integer(id), .text(digest.description)])
            }
        }
    }

    public func mountBlob(_ digest: Digest, from source: RepositoryName, to target: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.writing {
                guard let sourceID = try Self.existingRepositoryID(db, source),
                    try db.exists(
                        "SELECT 1 FROM blob_links WHERE repository = ? AND digest = ?",
                        [.integer(sourceID), .text(digest.description)]),
                    FileSystem.size(of: blobs.path(of: digest)) != nil
                else { return false }
                let id = try Self.repositoryID(db, target)
                try db.run(
                    "INSERT OR IGNORE INTO blob_links(repository, digest) VALUES (?, ?)",
                    [.integer(id), .text(digest.description)])
                return true
            }
        }
    }

    public func putManifest(_ document: ManifestDocument, in repository: RepositoryName, tags: [Tag]) throws {
        try blobs.put(document.bytes, as: document.digest)
        try pool.withConnection { db in
            try db.writing {
                let id = try Self.repositoryID(db, repository)
                try insert(document, repository: id, platforms: .all, db)
                for tag in tags { try Self.setTag(tag, to: document.digest, repository: id, db) }
            }
        }
    }

    public func deleteManifest(_ digest: Digest, in repository: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.writing {
                guard let id = try Self.existingRepositoryID(db, repository) else { return false }
                let removed = try db.run(
                    "DELETE FROM manifests WHERE repository = ? AND digest = ?",
                    [.integer(id), .text(digest.description)])
                guard removed > 0 else { return false }
                try db.run(
                    "DELETE FROM tags WHERE repository = ? AND digest = ?", [.integer(id), .text(digest.description)])
                try Self.dropIfEmpty(id, db)
                return true
            }
        }
    }

    public func deleteTag(_ tag: Tag, in repository: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.writing {
                guard let id = try Self.existingRepositoryID(db, repository) else { return false }
                return try db.run(
                    "DELETE FROM tags WHERE repository = ? AND name = ?", [.integer(id), .text(tag.value)])
                    > 0
            }
        }
    }

    public func unlinkBlob(_ digest: Digest, from repository: RepositoryName) throws -> Bool {
        try pool.withConnection { db in
            try db.writing {
                guard let id = try Self.existingRepositoryID(db, repository) else { return false }
                let removed = try db.run(
                    "DELETE FROM blob_links WHERE repository = ? AND digest = ?",
                    [.integer(id), .text(digest.description)])
                try Self.dropIfEmpty(id, db)
                return removed > 0
            }
        }
    }

    public func importImages(_ plan: ImportPlan) throws {
        // Read and parse the manifests before taking the write lock.
        var documents: [Digest: ManifestDocument] = [:]
        for image in plan.images {
            for digest in image.manifests where documents[digest] == nil {
                let bytes: [UInt8]
                do {
                    bytes = try blobs.read(digest, limit: ManifestDocument.maximumSize)
                } catch {
                    throw RegistryRuleError.contentMissing(digest)
                }
                documents[digest] = try ManifestDocument(bytes: bytes, algorithm: digest.algorithm)
            }
        }
        try pool.withConnection { db in
            try db.writing {
                for image in plan.images {
                    let id = try Self.repositoryID(db, image.repository)
                    // Under the write lock: every blob is still in the store (gc removes only blobs
                    // older than its grace period, but one found early in a long import may be that old).
                    for digest in image.blobs.sorted() {
                        guard FileSystem.size(of: blobs.path(of: digest)) != nil else {
                            throw RegistryRuleError.contentMissing(digest)
                        }
                        try db.run(
                            "INSERT OR IGNORE INTO blob_links(repository, digest) VALUES (?, ?)",
                            [.integer(id), .text(digest.description)])
                    }
                    // Children before the indexes that list them.
                    var pending = image.manifests.sorted().compactMap { documents[$0] }
                    while !pending.isEmpty {
                        let ready = pending.filter { document in
                            !document.isIndex
                                || !document.children.contains { child in pending.contains { $0.digest == child.digest }
                                }
                        }
                        guard !ready.isEmpty else { throw RegistryRuleError.unknownManifest(pending[0].digest) }
                        for document in ready { try insert(document, repository: id, platforms: plan.platforms, db) }
                        let done = Set(ready.map(\.digest))
                        pending.removeAll { done.contains($0.digest) }
                    }
                    if let tag = image.tag { try Self.setTag(tag, to: image.top, repository: id, db) }
                }
            }
        }
    }

    public func recordImport(_ record: [UInt8], id: String) throws {
        try FileSystem.replace("\(root)/imports/\(id).json", with: record, mode: 0o640)
    }

    public func hasImportRecord(_ id: String) -> Bool { FileSystem.size(of: "\(root)/imports/\(id).json") != nil }

    public func latestImportRecords(limit: Int) -> [[UInt8]] {
        let directory = "\(root)/imports"
        var dated: [(Int, String)] = []
        for name in FileSystem.list(directory) where name.hasSuffix(".json") {
            var info = stat()
            if stat("\(directory)/\(name)", &info) == 0 { dated.append((info.st_mtim.tv_sec, name)) }
        }
        return dated.sorted { $0.0 > $1.0 }.prefix(limit).compactMap {
            try? FileSystem.readSmallFile("\(directory)/\($0.1)", limit: 16 << 20)
        }
    }

    public func importRecordIDs() -> [String] {
        FileSystem.list("\(root)/imports").filter { $0.hasSuffix(".json") }.map { String($0.dropLast(5)) }.sorted()
    }

    // MARK: The rules

    /// Adds a manifest to a repository if everything it references is there: the one check every
    /// path in (push, import) goes through. Its bytes must be in the blob store.
    func insert(_ document: ManifestDocument, repository id: Int64, platforms: PlatformFilter, _ db: SQLiteConnection)
        throws
    {
        let digest = document.digest
        guard FileSystem.size(of: blobs.path(of: digest)) != nil else { throw RegistryRuleError.contentMissing(digest) }
        if document.isIndex {
            for child in platforms.selectedChildren(of: document) {
                guard
                    try db.exists(
                        "SELECT 1 FROM manifests WHERE repository = ? AND digest = ?",
                        [.integer(id), .text(child.digest.description)])
                else { throw RegistryRuleError.unknownManifest(child.digest) }
            }
        } else {
            for child in document.children where !MediaType.isNondistributable(child.mediaType) {
                guard
                    try db.exists(
                        "SELECT 1 FROM blob_links WHERE repository = ? AND digest = ?",
                        [.integer(id), .text(child.digest.description)])
                else { throw RegistryRuleError.unknownBlob(child.digest) }
                guard FileSystem.size(of: blobs.path(of: child.digest)) != nil else {
                    throw RegistryRuleError.contentMissing(child.digest)
                }
            }
        }
        try Self.add(document, repository: id, db)
    }

    /// Writes a manifest's rows (no checks: ``insert(_:repository:platforms:_:)`` and the migration of an
    /// earlier release's state call it).
    static func add(_ document: ManifestDocument, repository id: Int64, _ db: SQLiteConnection) throws {
        let digest = document.digest
        let subject: Descriptor?
        let artifactType: String?
        switch document.content {
        case .manifest(let manifest):
            subject = manifest.subject
            artifactType = manifest.artifactType ?? manifest.config.mediaType
        case .index(let index):
            subject = index.subject
            artifactType = index.artifactType
        }
        try db.run(
            """
            INSERT OR IGNORE INTO manifests(repository, digest, media_type, size, subject, artifact_type)
            VALUES (?, ?, ?, ?, ?, ?)
            """,
            [
                .integer(id), .text(digest.description), .text(document.mediaType),
                .integer(Int64(document.bytes.count)),
                .optional(subject?.digest.description), .optional(artifactType),
            ])
        for child in document.children {
            try db.run(
                "INSERT OR IGNORE INTO manifest_children(manifest, child) VALUES (?, ?)",
                [.text(digest.description), .text(child.digest.description)])
        }
    }

    static func setTag(_ tag: Tag, to digest: Digest, repository id: Int64, _ db: SQLiteConnection) throws {
        try db.run(
            "INSERT INTO tags(repository, name, digest) VALUES (?, ?, ?) ON CONFLICT(repository, name) DO UPDATE SET digest = excluded.digest",
            [.integer(id), .text(tag.value), .text(digest.description)])
    }

    static func existingRepositoryID(_ db: SQLiteConnection, _ name: RepositoryName) throws -> Int64? {
        try db.scalarInteger("SELECT id FROM repositories WHERE name = ?", [.text(name.value)])
    }

    /// The repository's id, made when it is new.
    static func repositoryID(_ db: SQLiteConnection, _ name: RepositoryName) throws -> Int64 {
        if let id = try existingRepositoryID(db, name) { return id }
        try db.run("INSERT INTO repositories(name) VALUES (?)", [.text(name.value)])
        guard let id = try existingRepositoryID(db, name) else {
            throw StoreError.database(path: db.path, "repository \(name) could not be created")
        }
        return id
    }

    /// Forgets a repository that holds nothing any more.
    static func dropIfEmpty(_ id: Int64, _ db: SQLiteConnection) throws {
        try db.run(
            """
            DELETE FROM repositories WHERE id = ?1
            AND NOT EXISTS (SELECT 1 FROM manifests WHERE repository = ?1)
            AND NOT EXISTS (SELECT 1 FROM blob_links WHERE repository = ?1)
            AND NOT EXISTS (SELECT 1 FROM tags WHERE repository = ?1)
            """, [.integer(id)])
    }
}
