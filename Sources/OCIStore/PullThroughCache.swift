import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// What a pull-through cache holds: manifests and blobs fetched from upstream registries, with the
/// tags last seen there. Kept apart from the registry's store (its own directory and database), so
/// aging content out can never touch what was imported or pushed, and the registry's rules (a
/// manifest enters only with everything it references) do not apply to content fetched piecemeal.
///
/// The rule it keeps instead: a blob or manifest is served from a repository only once its upstream
/// served it for that repository (a link), so a client cannot read through one repository what the
/// upstream grants only in another. Tags carry the time they were last checked upstream.
///
/// Every call blocks (database, file I/O): run it off the event loops.
public final class PullThroughCache: Sendable {
    /// The cached files, content-addressed (`ROOT/blobs/ALG/HEX`).
    public let blobs: BlobStore
    /// The most the cached files may take; least recently used entries go first. nil: no limit.
    public let maxBytes: Int64?
    let pool: SQLitePool

    public init(root: String, maxBytes: Int64?) throws(StoreError) {
        self.maxBytes = maxBytes
        try FileSystem.makeDirectories(root, mode: 0o750)
        blobs = try BlobStore(root: root, durable: true)
        // Downloads a killed server left behind.
        blobs.removeStaleIngests(olderThan: 3600)
        let path = "\(root)/cache.db"
        pool = SQLitePool(path: path) { connection in
            try connection.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL")
        }
        if FileSystem.size(of: path) == nil {
            try SQLiteConnection.createDatabase(path, schema: Self.schema, version: 1)
        }
        do {
            try pool.withConnection { db in
                let version = try db.scalarInteger("PRAGMA user_version") ?? 0
                guard version == 1 else {
                    throw StoreError.database(path: path, "schema version \(version), this release reads 1")
                }
            }
        } catch let error as StoreError {
            throw error
        } catch {
            throw .database(path: path, "\(error)")
        }
    }

    static let schema = """
        CREATE TABLE entries(
            digest TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            used INTEGER NOT NULL) WITHOUT ROWID;
        CREATE INDEX entries_by_use ON entries(used);
        CREATE TABLE links(
            repository TEXT NOT NULL,
            digest TEXT NOT NULL,
            PRIMARY KEY(repository, digest)) WITHOUT ROWID;
        CREATE INDEX links_by_digest ON links(digest);
        CREATE TABLE tags(
            repository TEXT NOT NULL,
            tag TEXT NOT NULL,
            digest TEXT NOT NULL,
            checked INTEGER NOT NULL,
            PRIMARY KEY(repository, tag)) WITHOUT ROWID;
        """

    /// A tag as last seen upstream: the manifest it named and when (seconds since 1970).
    public struct CachedTag: Sendable, Equatable {
        public var digest: Digest
        public var checked: Int64

        public init(digest: Digest, checked: Int64) {
            self.digest = digest
            self.checked = checked
        }
    }

    public func tag(_ tag: Tag, in repository: RepositoryName) throws -> CachedTag? {
        try pool.withConnection { db in
            var found: CachedTag?
            try db.query(
                "SELECT digest, checked FROM tags WHERE repository = ? AND tag = ?",
                [.text(repository.value), .text(tag.value)]
            ) { row in
                if let text = row.text(0), let digest = try? Digest(text) {
                    found = CachedTag(digest: digest, checked: row.integer(1))
                }
            }
            return found
        }
    }

    /// Records what a tag names upstream, checked at `checked`.
    public func setTag(_ tag: Tag, in repository: RepositoryName, to digest: Digest, checked: Int64) throws {
        _ = try pool.withConnection { db in
            try db.run(
                "INSERT OR REPLACE INTO tags(repository, tag, digest, checked) VALUES (?, ?, ?, ?)",
                [.text(repository.value), .text(tag.value), .text(digest.description), .integer(checked)])
        }
    }

    /// The size of a blob or manifest the repository may serve from the cache (linked, and its file
    /// there), marking it used; nil otherwise.
    public func linked(_ digest: Digest, in repository: RepositoryName, now: Int64) throws -> Int64? {
        let isLinked = try pool.withConnection { db in
            try db.exists(
                "SELECT 1 FROM links WHERE repository = ? AND digest = ?",
                [.text(repository.value), .text(digest.description)])
        }
        guard isLinked, let size = FileSystem.size(of: blobs.path(of: digest)) else { return nil }
        try touch(digest, now: now)
        return size
    }

    /// The size of a cached file, whichever repository it was fetched for.
    public func storedSize(_ digest: Digest) -> Int64? { FileSystem.size(of: blobs.path(of: digest)) }

    /// Records that `repository` may serve a cached file (its upstream served it there).
    public func link(_ digest: Digest, to repository: RepositoryName, now: Int64) throws {
        guard let size = storedSize(digest) else { throw StoreError.io("link \(digest)", errno: ENOENT) }
        try pool.withConnection { db in
            try db.writing {
                try db.run(
                    "INSERT INTO entries(digest, size, used) VALUES (?, ?, ?) ON CONFLICT(digest) DO UPDATE SET used = excluded.used",
                    [.text(digest.description), .integer(size), .integer(now)])
                try db.run(
                    "INSERT OR IGNORE INTO links(repository, digest) VALUES (?, ?)",
                    [.text(repository.value), .text(digest.description)])
            }
        }
    }

    /// Stores a manifest's bytes (verified by the caller) and links it to the repository.
    public func putManifest(_ bytes: [UInt8], digest: Digest, in repository: RepositoryName, now: Int64) throws {
        try blobs.put(bytes, as: digest)
        try link(digest, to: repository, now: now)
    }

    /// Reads a cached manifest the repository may serve.
    public func manifest(_ digest: Digest, in repository: RepositoryName, now: Int64) throws -> [UInt8]? {
        guard try linked(digest, in: repository, now: now) != nil else { return nil }
        return try? blobs.read(digest, limit: ManifestDocument.maximumSize)
    }

    /// Starts writing a blob of `size` bytes; readers may follow the file as it grows.
    public func makeIngest(for digest: Digest, size: Int64) throws(StoreError) -> CacheIngest {
        try CacheIngest(store: blobs, digest: digest, size: size)
    }

    /// Bytes the cached files take.
    public func totalBytes() throws -> Int64 {
        try pool.withConnection { db in try db.scalarInteger("SELECT coalesce(sum(size), 0) FROM entries") ?? 0 }
    }

    /// Removes least recently used entries until the cache fits ``maxBytes``, sparing `busy`
    /// (blobs being written) and entries used at `recent` or later (maybe being read); returns how
    /// many entries and bytes went. Run one at a time.
    @discardableResult
    public func evict(sparing busy: Set<Digest> = [], usedSince recent: Int64 = .max) throws -> (
        entries: Int, bytes: Int64
    ) {
        guard let maxBytes else { return (0, 0) }
        var total = try totalBytes()
        var removed = (entries: 0, bytes: Int64(0))
        while total > maxBytes {
            var victims: [(Digest, Int64)] = []
            try pool.withConnection { db in
                try db.query(
                    "SELECT digest, size FROM entries WHERE used < ? ORDER BY used LIMIT 64", [.integer(recent)]
                ) { row in
                    if let text = row.text(0), let digest = try? Digest(text), !busy.contains(digest) {
                        victims.append((digest, row.integer(1)))
                    }
                }
            }
            guard !victims.isEmpty else { break }
            for (digest, size) in victims where total > maxBytes {
                // The row first: a reader that finds no row refetches; one that finds a row but no
                // file does too.
                try pool.withConnection { db in
                    try db.writing {
                        try db.run("DELETE FROM links WHERE digest = ?", [.text(digest.description)])
                        try db.run("DELETE FROM entries WHERE digest = ?", [.text(digest.description)])
                    }
                }
                unlink(blobs.path(of: digest))
                total -= size
                removed.entries += 1
                removed.bytes += size
            }
        }
        return removed
    }

    /// Marks an entry used now; written at most once a minute per entry.
    func touch(_ digest: Digest, now: Int64) throws {
        _ = try pool.withConnection { db in
            try db.run(
                "UPDATE entries SET used = ?1 WHERE digest = ?2 AND used < ?1 - 60",
                [.integer(now), .text(digest.description)])
        }
    }
}

/// A blob being written into the cache in order, by one writer, while readers follow the
/// temporary file (``path``) up to the bytes written. Its content is verified by the caller (the
/// registry client hashes the stream); ``commit()`` checks the size, fsyncs and renames it into place.
public final class CacheIngest: @unchecked Sendable {
    public let digest: Digest
    public let size: Int64
    /// The temporary file; open it for reading before ``commit()`` renames it.
    public let path: String
    private let store: BlobStore
    private let fd: Int32
    private var written: Int64 = 0
    private var done = false

    init(store: BlobStore, digest: Digest, size: Int64) throws(StoreError) {
        self.store = store
        self.digest = digest
        self.size = size
        var random = SystemRandomNumberGenerator()
        path = "\(store.root)/ingest/\(digest.encoded.prefix(16))-\(String(random.next(), radix: 36))"
        fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("create \(path)", errno: errno) }
    }

    deinit { cancel() }

    /// Bytes written so far.
    public var count: Int64 { written }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        guard written + Int64(bytes.count) <= size else {
            throw .io("write \(digest): more than its \(size) bytes", errno: EFBIG)
        }
        var offset = 0
        while offset < bytes.count {
            guard let base = bytes.baseAddress else { return }
            let n = pwrite(fd, base + offset, bytes.count - offset, off_t(written) + off_t(offset))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io("write \(path)", errno: errno) }
            offset += n
        }
        written += Int64(bytes.count)
    }

    /// Starts over (a retried download).
    public func reset() throws(StoreError) {
        guard ftruncate(fd, 0) == 0 else { throw .io("truncate \(path)", errno: errno) }
        written = 0
    }

    /// Makes the blob visible at its content address once all its bytes arrived.
    public func commit() throws(StoreError) {
        guard written == size else {
            throw .io("commit \(digest): \(written) of \(size) bytes", errno: EIO)
        }
        guard fsync(fd) == 0 else { throw .io("fsync \(path)", errno: errno) }
        guard rename(path, store.path(of: digest)) == 0 else { throw .io("rename \(path)", errno: errno) }
        done = true
        close(fd)
        FileSystem.syncDirectory((store.path(of: digest) as NSString).deletingLastPathComponent)
    }

    /// Drops the temporary file (idempotent).
    public func cancel() {
        guard !done else { return }
        done = true
        close(fd)
        unlink(path)
    }
}
