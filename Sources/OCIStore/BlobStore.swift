import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// A filesystem content store: each blob once, at `ROOT/blobs/ALG/HEX`.
///
/// Content becomes visible only through ``BlobWriter/commit()``, which checks size and digest,
/// fsyncs and renames a temporary file from `ROOT/ingest/` into place. Readers therefore never see
/// a partial or unverified blob, and several processes may share one store.
public struct BlobStore: Sendable {
    public let root: String
    /// Whether a commit fsyncs the blob before renaming it into place. A cache whose every read is
    /// verified again (the export cache: the bundle writer hashes each blob as it copies it) may
    /// skip this; a store that serves content must not.
    public let durable: Bool

    /// Opens (creating if needed) a store rooted at `root`.
    public init(root: String, durable: Bool = true) throws(StoreError) {
        self.root = root
        self.durable = durable
        try FileSystem.makeDirectories(root)
        for dir in [root, "\(root)/blobs", "\(root)/ingest"] + DigestAlgorithm.allCases.map({ "\(root)/blobs/\($0)" }) {
            try FileSystem.makeDirectory(dir)
        }
    }

    public func path(of digest: Digest) -> String { "\(root)/\(digest.layoutPath)" }

    /// Whether a blob with this digest is present with the expected size.
    public func contains(_ digest: Digest, size: Int64) -> Bool {
        FileSystem.size(of: path(of: digest)) == size
    }

    /// Starts ingesting the blob `descriptor` names. Write its bytes, then ``BlobWriter/commit()``.
    ///
    /// `verifiedByCaller`: the caller hashes the same bytes and commits only when they matched (the
    /// bundle reader does), so the writer checks the size only instead of hashing a second time.
    /// `writeBehind`: a large blob is written by a thread of its own (``WritePipeline``, a few MiB
    /// of buffers) while the caller goes on; without it, each write is done in the caller's call.
    public func makeWriter(
        for digest: Digest, size: Int64, verifiedByCaller: Bool = false, writeBehind: Bool = true
    ) throws(StoreError) -> BlobWriter {
        try BlobWriter(
            store: self, digest: digest, size: size, hashing: !verifiedByCaller, writeBehind: writeBehind)
    }

    /// Stores a small document (manifest, index) given whole.
    public func put(_ bytes: [UInt8], as digest: Digest) throws(StoreError) {
        if contains(digest, size: Int64(bytes.count)) {
            // Fresh again, so garbage collection's grace period covers the commit that follows.
            utimensat(AT_FDCWD, path(of: digest), nil, 0)
            return
        }
        let writer = try makeWriter(for: digest, size: Int64(bytes.count))
        defer { writer.cancel() }
        let failure = bytes.withUnsafeBytes { buffer -> StoreError? in
            do throws(StoreError) { try writer.write(buffer) } catch { return error }
            return nil
        }
        if let failure { throw failure }
        try writer.commit()
    }

    /// Reads a small stored document, refusing anything larger than `limit`.
    public func read(_ digest: Digest, limit: Int) throws(StoreError) -> [UInt8] {
        try FileSystem.readSmallFile(path(of: digest), limit: limit)
    }

    /// Whether the store holds nothing: no blob, nothing being ingested.
    public var isEmpty: Bool {
        FileSystem.list("\(root)/ingest").isEmpty
            && DigestAlgorithm.allCases.allSatisfy { FileSystem.list("\(root)/blobs/\($0)").isEmpty }
    }

    /// Removes temporary ingest files older than `age` seconds (left behind by killed processes).
    public func removeStaleIngests(olderThan age: Int) {
        let cutoff = time(nil) - age
        for name in FileSystem.list("\(root)/ingest") {
            let file = "\(root)/ingest/\(name)"
            var info = stat()
            if stat(file, &info) == 0, info.st_mtim.tv_sec < cutoff { unlink(file) }
        }
    }
}

/// A blob being written into a ``BlobStore``; verified against its digest and size as it streams.
///
/// Used by one task at a time. ``cancel()`` is idempotent and may sit in a `defer`.
public final class BlobWriter: @unchecked Sendable {
    public let digest: Digest
    public let size: Int64
    private let store: BlobStore
    private let temporaryPath: String
    private var fd: Int32
    private var verifier: BlobVerifier
    private let hashing: Bool
    private var written: Int64 = 0
    /// Large blobs are written on a second thread while the caller hashes (see ``WritePipeline``).
    private var pipeline: WritePipeline?
    /// Without a pipeline, writeback is started here as the blob arrives (a durable store only).
    private var writeback = Writeback()
    private var done = false
    static let pipelineThreshold: Int64 = 8 << 20

    init(store: BlobStore, digest: Digest, size: Int64, hashing: Bool = true, writeBehind: Bool = true)
        throws(StoreError)
    {
        self.store = store
        self.digest = digest
        self.size = size
        self.hashing = hashing
        self.verifier = BlobVerifier(digest: digest, size: size)
        var random = SystemRandomNumberGenerator()
        temporaryPath = "\(store.root)/ingest/\(digest.encoded.prefix(16))-\(String(random.next(), radix: 36))"
        fd = open(temporaryPath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .io("create \(temporaryPath)", errno: errno) }
        if writeBehind && size >= Self.pipelineThreshold {
            pipeline = WritePipeline(fd: fd, path: temporaryPath, direct: store.durable)
        }
    }

    deinit { cancel() }

    /// Bytes received so far.
    public var count: Int64 { written }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        if hashing {
            do {
                try verifier.update(bytes)
            } catch {
                throw .verification(error)
            }
        } else if written + Int64(bytes.count) > size {
            throw .verification(.tooLarge(digest: digest, expected: size))
        }
        written += Int64(bytes.count)
        if let pipeline {
            try pipeline.write(bytes)
        } else {
            try FileSystem.writeAll(fd, bytes, path: temporaryPath)
            if store.durable { writeback.wrote(fd, through: written) }
        }
    }

    /// Drops what was written so far, to start the blob again (after a broken connection).
    public func reset() throws(StoreError) {
        // Nothing to drop (a download's first attempt starts with a reset): no truncation, which
        // would also mark the file for ext4's allocate-on-close (`auto_da_alloc`), making its
        // close write it out, tens of milliseconds for a large blob, on the caller's thread.
        guard written > 0 || verifier.count > 0 else { return }
        try pipeline?.rewind()
        guard ftruncate(fd, 0) == 0, lseek(fd, 0, SEEK_SET) == 0 else {
            throw .io("truncate \(temporaryPath)", errno: errno)
        }
        verifier = BlobVerifier(digest: digest, size: size)
        writeback = Writeback()
        written = 0
    }

    /// Verifies size and digest, then makes the blob visible (fsync, rename, fsync directory).
    /// On a mismatch the temporary file is removed and nothing becomes visible.
    public func commit() throws(StoreError) {
        if hashing {
            do {
                try verifier.finish()
            } catch {
                cancel()
                throw .verification(error)
            }
        } else if written != size {
            cancel()
            throw .verification(.sizeMismatch(digest: digest, expected: size, found: written))
        }
        do throws(StoreError) {
            try pipeline?.finish()
        } catch {
            cancel()
            throw error
        }
        pipeline?.stop()
        pipeline = nil
        guard !store.durable || fsync(fd) == 0 else {
            let e = errno
            cancel()
            throw .io("fsync \(temporaryPath)", errno: e)
        }
        close(fd)
        fd = -1
        let destination = store.path(of: digest)
        guard rename(temporaryPath, destination) == 0 else {
            let e = errno
            cancel()
            throw .io("rename into \(destination)", errno: e)
        }
        done = true
        if store.durable { FileSystem.syncDirectory("\(store.root)/blobs/\(digest.algorithm)") }
    }

    /// Abandons the blob: closes and removes the temporary file. Safe to call more than once.
    public func cancel() {
        pipeline?.stop()
        pipeline = nil
        if fd >= 0 {
            close(fd)
            fd = -1
        }
        if !done {
            unlink(temporaryPath)
            done = true
        }
    }
}

public enum StoreError: Error, Equatable, CustomStringConvertible {
    case io(String, errno: Int32)
    case verification(BlobVerificationError)
    case tooLarge(path: String, limit: Int)
    case corrupt(path: String, String)
    /// The metadata database cannot be opened or used.
    case database(path: String, String)
    /// The metadata database is missing while blobs are stored: never initialised anew over them.
    case databaseMissing(path: String, blobs: String)

    public var description: String {
        switch self {
        case .io(let what, let code): "\(what): \(String(cString: strerror(code)))"
        case .verification(let error): error.description
        case .tooLarge(let path, let limit): "\(path) is larger than the \(limit)-byte limit"
        case .corrupt(let path, let why): "\(path) is corrupt: \(why)"
        case .database(let path, let why): "registry database \(path): \(why)"
        case .databaseMissing(let path, let blobs):
            "registry database \(path) is missing but \(blobs) holds blobs; restore the database from a backup (it is never re-created over existing content)"
        }
    }
}
