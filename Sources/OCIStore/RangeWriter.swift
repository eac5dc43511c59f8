import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Writes bytes into a file from a given offset on, on a writer thread (like a blob's ingest),
/// through the page cache with writeback started as it goes; ``commit()`` fsyncs. For the parts
/// of a blob carried in parts, each written at its place in one file as its volume arrives.
public final class RangeWriter: @unchecked Sendable {
    private var fd: Int32
    private let path: String
    private var pipeline: WritePipeline?

    public init(path: String, offset: Int64) throws(StoreError) {
        self.path = path
        fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        pipeline = WritePipeline(fd: fd, path: path, direct: false, start: offset)
    }

    deinit { cancel() }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) { try pipeline?.write(bytes) }

    /// Waits for every byte, fsyncs and closes.
    public func commit() throws(StoreError) {
        try pipeline?.finish()
        pipeline?.stop()
        pipeline = nil
        guard fsync(fd) == 0 else { throw .io("fsync \(path)", errno: errno) }
        close(fd)
        fd = -1
    }

    /// Stops writing and closes; what was written stays (a later arrival writes it again).
    public func cancel() {
        pipeline?.stop()
        pipeline = nil
        if fd >= 0 {
            close(fd)
            fd = -1
        }
    }
}
