import CLinux
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Reading a file in large chunks, without holding it whole: the one loop that hashing a stored
/// blob, joining parts and copying blobs into volumes all use.
public enum FileChunks {
    public static let chunkSize = 1 << 20

    public struct Failure: Error, CustomStringConvertible {
        public var path: String
        public var what: String
        public var description: String { "\(what) \(path)" }
    }

    /// Calls `body` with each chunk of the file at `path`: all of it, or exactly `size` bytes
    /// (a file that ends sooner is an error).
    public static func read(
        _ path: String, size: Int64? = nil, _ body: (UnsafeRawBufferPointer) throws -> Void
    ) throws {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw Failure(path: path, what: "open: \(String(cString: strerror(errno))):") }
        defer { close(fd) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        var remaining = size ?? Int64.max
        while remaining > 0 {
            let n = Glibc.read(fd, buffer.baseAddress, Int(min(Int64(buffer.count), remaining)))
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Failure(path: path, what: "read: \(String(cString: strerror(errno))):") }
            if n == 0 {
                guard size == nil else { throw Failure(path: path, what: "\(remaining) bytes short:") }
                return
            }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            remaining -= Int64(n)
        }
    }
}

/// Starts writeback of a file written front to back, a step at a time, so the fsync that makes it
/// durable at the end has little left to write: the disk works while the rest still arrives.
/// `sync_file_range(SYNC_FILE_RANGE_WRITE)` only queues the pages; it neither waits nor syncs
/// metadata, so it is a hint and its result is ignored.
public struct Writeback: Sendable {
    public static let step: Int64 = 16 << 20
    private var flushed: Int64

    /// `start`: the file offset of the first byte written.
    public init(from start: Int64 = 0) { flushed = start }

    /// The bytes up to `end` are written: start their writeback once a step has gathered.
    /// Returns whether it did.
    @discardableResult
    public mutating func wrote(_ fd: Int32, through end: Int64) -> Bool {
        guard end - flushed >= Self.step else { return false }
        _ = ferry_start_writeback(fd, flushed, end - flushed)
        flushed = end
        return true
    }
}

/// Copying a range of one file into another at a given offset, in the kernel where it can
/// (`copy_file_range`: a reflink on filesystems that share extents, no trip through user space
/// otherwise), else through a buffer.
public enum FileRange {
    /// Copies `count` bytes from `source` at `sourceOffset` to `destination` at
    /// `destinationOffset`. A source that ends early is an error.
    public static func copy(
        from source: Int32, at sourceOffset: Int64, to destination: Int32, at destinationOffset: Int64,
        count: Int64
    ) throws(FileChunks.Failure) {
        var input = Int64(sourceOffset)
        var output = Int64(destinationOffset)
        var remaining = count
        while remaining > 0 {
            let n = ferry_copy_file_range(source, &input, destination, &output, Int(min(remaining, 1 << 30)))
            if n > 0 {
                remaining -= Int64(n)
                continue
            }
            if n < 0 && errno == EINTR { continue }
            if n == 0 { throw FileChunks.Failure(path: "source", what: "\(remaining) bytes short in") }
            // Not across these filesystems (EXDEV, EINVAL, ENOSYS, EOPNOTSUPP): copy through memory.
            try copyThroughBuffer(
                from: source, at: Int64(input), to: destination, at: Int64(output), count: remaining)
            return
        }
    }

    static func copyThroughBuffer(
        from source: Int32, at sourceOffset: Int64, to destination: Int32, at destinationOffset: Int64,
        count: Int64
    ) throws(FileChunks.Failure) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: FileChunks.chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < count {
            let n = pread(
                source, buffer.baseAddress, Int(min(Int64(buffer.count), count - done)), off_t(sourceOffset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw FileChunks.Failure(
                    path: "source",
                    what: n == 0 ? "\(count - done) bytes short in" : "read: \(String(cString: strerror(errno))):")
            }
            try writeAll(destination, UnsafeRawBufferPointer(rebasing: buffer[..<n]), at: destinationOffset + done)
            done += Int64(n)
        }
    }

    /// Reserves `size` bytes for the file (blocks allocated, so a disk too small fails now), where
    /// the filesystem can; returns errno when it refuses for another reason than not supporting it.
    public static func allocate(_ fd: Int32, size: Int64) -> Int32 {
        guard ferry_fallocate(fd, 0, size) != 0 else { return 0 }
        let code = errno
        return code == EOPNOTSUPP || code == ENOSYS || code == EINVAL ? 0 : code
    }

    /// Writes all of `bytes` at `offset` (pwrite, repeated for short writes).
    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int64) throws(FileChunks
        .Failure)
    {
        guard let base = bytes.baseAddress else { return }
        var written = 0
        while written < bytes.count {
            let n = pwrite(fd, base + written, bytes.count - written, off_t(offset + Int64(written)))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw FileChunks.Failure(path: "destination", what: "write: \(String(cString: strerror(errno))):")
            }
            written += n
        }
    }
}
