import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// Blob uploads in progress (`ROOT/<id>/data` and `ROOT/<id>/repository`), invisible to clients
/// until ``BlobStore/adopt(_:as:size:)`` moves a verified upload into the content store. An upload
/// survives a server restart; one untouched for longer than the expiry is removed by ``expire(olderThan:)``.
public struct UploadStore: Sendable {
    public let root: String

    public init(root: String) throws(StoreError) {
        self.root = root
        try FileSystem.makeDirectories(root, mode: 0o750)
    }

    /// Starts an upload for `repository`; returns its id (32 hex characters).
    public func create(repository: String) throws(StoreError) -> String {
        var generator = SystemRandomNumberGenerator()
        let id = (0..<2).map { _ in String(generator.next(), radix: 16).leftPadded(to: 16) }.joined()
        try FileSystem.makeDirectory(directory(id), mode: 0o750)
        let fd = open(dataPath(id), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("create \(dataPath(id))", errno: errno) }
        close(fd)
        let namePath = "\(directory(id))/repository"
        let file = open(namePath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o640)
        guard file >= 0 else { throw .io("create \(namePath)", errno: errno) }
        defer { close(file) }
        let failure = Array(repository.utf8).withUnsafeBytes { bytes -> StoreError? in
            do throws(StoreError) { try FileSystem.writeAll(file, bytes, path: namePath) } catch { return error }
            return nil
        }
        if let failure { throw failure }
        return id
    }

    /// The repository an upload belongs to and the bytes received so far; nil for an unknown id.
    public func status(_ id: String) -> (repository: String, size: Int64)? {
        guard Self.isValidID(id), let size = FileSystem.size(of: dataPath(id)),
            let name = try? FileSystem.readSmallFile("\(directory(id))/repository", limit: 4096)
        else { return nil }
        return (String(decoding: name, as: UTF8.self), size)
    }

    public func dataPath(_ id: String) -> String { "\(root)/\(id)/data" }

    /// Removes an upload (cancelled, finished, or failed). Idempotent.
    public func remove(_ id: String) {
        guard Self.isValidID(id) else { return }
        unlink(dataPath(id))
        unlink("\(directory(id))/repository")
        rmdir(directory(id))
    }

    /// Removes uploads whose data was last written more than `age` seconds ago; returns how many.
    @discardableResult
    public func expire(olderThan age: Int) -> Int {
        let cutoff = time(nil) - age
        var removed = 0
        for id in FileSystem.list(root) where Self.isValidID(id) {
            var info = stat()
            if stat(dataPath(id), &info) != 0 || info.st_mtim.tv_sec < cutoff {
                remove(id)
                removed += 1
            }
        }
        return removed
    }

    func directory(_ id: String) -> String { "\(root)/\(id)" }

    static func isValidID(_ id: String) -> Bool {
        id.utf8.count == 32 && id.utf8.allSatisfy { ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }
    }
}

extension String {
    fileprivate func leftPadded(to length: Int) -> String {
        count >= length ? self : String(repeating: "0", count: length - count) + self
    }
}

extension BlobStore {
    /// Moves a file whose content the caller verified (digest and size) into the store: fsync,
    /// rename, fsync of the directory. A blob already present is kept and the file removed.
    public func adopt(_ path: String, as digest: Digest, size: Int64) throws(StoreError) {
        if contains(digest, size: size) {
            unlink(path)
            // Fresh again, so garbage collection's grace period covers the link that follows.
            utimensat(AT_FDCWD, self.path(of: digest), nil, 0)
            return
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        let synced = !durable || fsync(fd) == 0
        let code = errno
        close(fd)
        guard synced else { throw .io("fsync \(path)", errno: code) }
        let destination = self.path(of: digest)
        guard rename(path, destination) == 0 else { throw .io("rename into \(destination)", errno: errno) }
        if durable { FileSystem.syncDirectory("\(root)/blobs/\(digest.algorithm)") }
    }

    /// Hashes a stored file with `algorithm` (for uploads whose in-memory hash was lost or used another algorithm).
    public static func hash(file path: String, algorithm: DigestAlgorithm) throws(StoreError) -> Digest {
        var hasher = DigestHasher(algorithm)
        do {
            try FileChunks.read(path) { hasher.update($0) }
        } catch {
            throw .io("read \(path)", errno: EIO)
        }
        return hasher.finalize()
    }
}
