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
