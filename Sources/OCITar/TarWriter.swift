import CArchive

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a POSIX tar (pax, restricted: extended headers only where ustar cannot express an entry)
/// as a stream to a file descriptor, through libarchive.
///
/// Entries carry fixed metadata (owner 0:0, no user or group names, one modification time), so the
/// same entries in the same order give a byte-identical archive. Calls block; run them off the
/// event loop.
public final class TarWriter {
    private var archive: OpaquePointer?
    private let modificationTime: Int64
    /// Copy buffer size for file contents.
    public static let chunkSize = 1 << 20

    /// Where the archive's bytes go: the descriptor (fd >= 0), after an optional observer saw
    /// them, or memory (fd < 0: `captured`, until `refuse` is set).
    final class Output {
        let fd: Int32
        let observe: ((UnsafeRawBufferPointer) -> Void)?
        var error: Int32 = 0
        var captured: [UInt8] = []
        var refuse = false
        init(fd: Int32, observe: ((UnsafeRawBufferPointer) -> Void)?) {
            self.fd = fd
            self.observe = observe
        }
    }
    let output: Output

    /// Size of a tar block: headers are whole blocks, and file data is padded to whole blocks.
    public static let blockSize: Int64 = 512
    /// The end-of-archive marker this writer puts after the last entry: two zero blocks.
    public static let endOfArchiveSize: Int64 = 1024

    /// `size` rounded up to whole blocks: the bytes a file's data takes in the archive.
    public static func paddedSize(_ size: Int64) -> Int64 { (size + blockSize - 1) / blockSize * blockSize }

    /// A writer whose bytes are kept in memory (``takeCaptured()``): the small entries of an
    /// archive planned before its large files are written in place.
    public convenience init(capturingWithModificationTime modificationTime: Int64) throws(TarError) {
        try self.init(fileDescriptor: -1, modificationTime: modificationTime)
    }

    /// The bytes a capturing writer produced since the last call.
    public func takeCaptured() -> [UInt8] {
        defer { output.captured = [] }
        return output.captured
    }

    /// The header block(s) this writer puts before a regular file's data: exactly the bytes
    /// ``beginFile(_:size:)`` writes for the same entry (an extended header too, where ustar cannot
    /// express it), so a file's data can be placed at a known offset.
    public static func fileHeader(path: String, size: Int64, modificationTime: Int64) throws(TarError) -> [UInt8] {
        let writer = try TarWriter(capturingWithModificationTime: modificationTime)
        try writer.beginFile(path, size: size)
        let header = writer.takeCaptured()
        // Dropping the writer must not make libarchive pad `size` bytes of data into memory.
        writer.abandon()
        return header
    }

    /// - Parameters:
    ///   - fileDescriptor: an open, writable descriptor; the caller keeps ownership and closes it.
    ///   - modificationTime: seconds since the epoch, stamped on every entry.
    ///   - observeOutput: sees every byte of the archive as it is written (to hash the whole tar).
    public init(
        fileDescriptor: Int32, modificationTime: Int64, observeOutput: ((UnsafeRawBufferPointer) -> Void)? = nil
    ) throws(TarError) {
        guard let archive = archive_write_new() else { throw .libarchive("archive_write_new failed", entry: nil) }
        self.archive = archive
        self.modificationTime = modificationTime
        self.output = Output(fd: fileDescriptor, observe: observeOutput)
        let context = Unmanaged.passUnretained(output).toOpaque()
        guard archive_write_set_format_pax_restricted(archive) == ARCHIVE_OK,
            // Unbuffered: each call becomes one write(2); our chunks are already large. No padding
            // beyond the two zero blocks that end the archive.
            archive_write_set_bytes_per_block(archive, 0) == ARCHIVE_OK,
            archive_write_open2(archive, context, nil, tarWriterOutputCallback, nil, nil) == ARCHIVE_OK
        else {
            let message = Self.errorString(archive)
            archive_write_free(archive)
            self.archive = nil
            throw .libarchive(message, entry: nil)
        }
    }

    deinit {
        if let archive { archive_write_free(archive) }
    }

    public func addDirectory(_ path: String) throws(TarError) {
        try writeHeader(path: path, type: S_IFDIR, permissions: 0o755, size: 0)
    }

    public func addFile(_ path: String, bytes: [UInt8]) throws(TarError) {
        try writeHeader(path: path, type: S_IFREG, permissions: 0o644, size: Int64(bytes.count))
        let archive = self.archive
        let written = bytes.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw .libarchive(Self.errorString(archive), entry: path) }
    }

    /// Adds `size` bytes read from `source` (from its current offset) as a regular file, handing
    /// each chunk to `observe` (to hash it) before it is written.
    public func addFile(
        _ path: String, size: Int64, from source: Int32,
        observe: (UnsafeRawBufferPointer) throws -> Void = { _ in }
    ) throws {
        try writeHeader(path: path, type: S_IFREG, permissions: 0o644, size: size)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.chunkSize, alignment: 16)
        defer { buffer.deallocate() }
        var remaining = size
        while remaining > 0 {
            let want = Int(min(Int64(Self.chunkSize), remaining))
            let got = read(source, buffer.baseAddress, want)
            if got < 0 {
                if errno == EINTR { continue }
                throw TarError.io("reading source of \(path): \(String(cString: strerror(errno)))", entry: path)
            }
            if got == 0 { throw TarError.io("source of \(path) ended \(remaining) bytes early", entry: path) }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[0..<got])
            try observe(chunk)
            let written = archive_write_data(archive, chunk.baseAddress, got)
            guard written == got else { throw TarError.libarchive(Self.errorString(archive), entry: path) }
            remaining -= Int64(got)
        }
    }

    /// Starts a regular file of `size` bytes, to be given with ``writeData(_:)``.
    public func beginFile(_ path: String, size: Int64) throws(TarError) {
        try writeHeader(path: path, type: S_IFREG, permissions: 0o644, size: size)
    }

    public func writeData(_ bytes: UnsafeRawBufferPointer) throws(TarError) {
        guard !bytes.isEmpty else { return }
        let written = archive_write_data(archive, bytes.baseAddress, bytes.count)
        guard written == bytes.count else { throw .libarchive(Self.errorString(archive), entry: nil) }
    }

    /// Drops the archive without writing another byte (no padding of the current entry, no
    /// end-of-archive marker).
    public func abandon() {
        output.refuse = true
        guard let archive else { return }
        archive_write_fail(archive)
        archive_write_free(archive)
        self.archive = nil
    }

    /// Writes the end-of-archive marker. The descriptor is not closed.
    public func finish() throws(TarError) {
        guard let archive else { return }
        guard archive_write_close(archive) == ARCHIVE_OK else {
            throw .libarchive(Self.errorString(archive), entry: nil)
        }
        archive_write_free(archive)
        self.archive = nil
    }

    private func writeHeader(path: String, type: mode_t, permissions: mode_t, size: Int64) throws(TarError) {
        guard let entry = archive_entry_new() else { throw .libarchive("archive_entry_new failed", entry: path) }
        defer { archive_entry_free(entry) }
        archive_entry_set_pathname(entry, path)
        archive_entry_set_filetype(entry, UInt32(type))
        archive_entry_set_perm(entry, permissions)
        archive_entry_set_size(entry, size)
        archive_entry_set_mtime(entry, time_t(modificationTime), 0)
        archive_entry_set_uid(entry, 0)
        archive_entry_set_gid(entry, 0)
        guard archive_write_header(archive, entry) == ARCHIVE_OK else {
            throw .libarchive(Self.errorString(archive), entry: path)
        }
    }

    static func errorString(_ archive: OpaquePointer?) -> String {
        guard let message = archive_error_string(archive) else { return "unknown libarchive error" }
        return String(cString: message)
    }
}

public enum TarError: Error, Equatable, CustomStringConvertible {
    case libarchive(String, entry: String?)
    case io(String, entry: String?)

    public var description: String {
        switch self {
        case .libarchive(let message, let entry), .io(let message, let entry):
            if let entry { "tar entry '\(entry)': \(message)" } else { "tar: \(message)" }
        }
    }
}

/// libarchive's write callback: writes to the descriptor, then shows the bytes to the observer.
private func tarWriterOutputCallback(
    _ archive: OpaquePointer?, _ context: UnsafeMutableRawPointer?, _ buffer: UnsafeRawPointer?, _ length: Int
) -> Int {
    guard let context, let buffer else { return -1 }
    let output = Unmanaged<TarWriter.Output>.fromOpaque(context).takeUnretainedValue()
    guard output.fd >= 0 else {
        if output.refuse { return -1 }
        output.captured.append(contentsOf: UnsafeRawBufferPointer(start: buffer, count: length))
        return length
    }
    var offset = 0
    while offset < length {
        let n = write(output.fd, buffer + offset, length - offset)
        if n < 0 {
            if errno == EINTR { continue }
            output.error = errno
            return -1
        }
        offset += n
    }
    output.observe?(UnsafeRawBufferPointer(start: buffer, count: length))
    return length
}
