import CArchive

#if canImport(Glibc)
    import Glibc
#endif

/// Reads a tar archive as a stream from a file descriptor (a file or a pipe), through libarchive.
///
/// Only plain tar formats are accepted (ustar, pax, GNU); a compressed archive is recognised and
/// reported, not unpacked. Entry data is handed out as libarchive's own blocks (no copy). Calls
/// block; run them off the event loop.
public final class TarReader {
    public enum EntryType: Equatable, Sendable, CustomStringConvertible {
        case regular, directory, symlink, hardlink, characterDevice, blockDevice, fifo, socket, other

        public var description: String {
            switch self {
            case .regular: "file"
            case .directory: "directory"
            case .symlink: "symbolic link"
            case .hardlink: "hard link"
            case .characterDevice: "character device"
            case .blockDevice: "block device"
            case .fifo: "FIFO"
            case .socket: "socket"
            case .other: "special file"
            }
        }
    }

    public struct Entry: Sendable, Equatable {
        public var path: String
        public var type: EntryType
        public var size: Int64
        public var linkTarget: String?
        public var modificationTime: Int64
    }

    private var archive: OpaquePointer?
    private var expectedOffset: Int64 = 0
    private var currentPath = ""
    /// The declared size of the current entry (to read small files into one allocation).
    private var currentSize: Int64 = 0
    /// The compression filter wrapped around the tar (`gzip`, `zstd`, …), or nil for a plain tar.
    public private(set) var compression: String?

    /// - Parameter blockSize: bytes requested per read(2) from the descriptor.
    public init(fileDescriptor: Int32, blockSize: Int = 1 << 20) throws(TarError) {
        guard let archive = archive_read_new() else { throw .libarchive("archive_read_new failed", entry: nil) }
        self.archive = archive
        archive_read_support_format_tar(archive)
        archive_read_support_format_gnutar(archive)
        // Recognise compression only to report it: a bundle is a plain tar.
        archive_read_support_filter_all(archive)
        guard archive_read_open_fd(archive, fileDescriptor, blockSize) == ARCHIVE_OK else {
            let message = TarWriter.errorString(archive)
            archive_read_free(archive)
            self.archive = nil
            throw .libarchive(Self.explain(message), entry: nil)
        }
        if archive_filter_count(archive) > 1, archive_filter_code(archive, 0) != ARCHIVE_FILTER_NONE {
            compression = archive_filter_name(archive, 0).map { String(cString: $0) } ?? "compressed"
        }
    }

    deinit {
        if let archive { archive_read_free(archive) }
    }

    /// The next entry's header, or nil at the end of the archive. Unread data of the previous entry
    /// is skipped.
    public func next() throws(TarError) -> Entry? {
        var entry: OpaquePointer?
        let status = archive_read_next_header(archive, &entry)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN, let entry else {
            throw .libarchive(
                Self.explain(TarWriter.errorString(archive)), entry: currentPath.isEmpty ? nil : "after \(currentPath)")
        }
        let path = archive_entry_pathname(entry).map { String(cString: $0) } ?? ""
        currentPath = path
        currentSize = max(0, archive_entry_size(entry))
        expectedOffset = 0
        let type: EntryType
        if archive_entry_hardlink(entry) != nil {
            type = .hardlink
        } else {
            // The AE_IF* values are the POSIX S_IF* bits.
            switch archive_entry_filetype(entry) & 0o170000 {
            case 0o100000: type = .regular
            case 0o040000: type = .directory
            case 0o120000: type = .symlink
            case 0o020000: type = .characterDevice
            case 0o060000: type = .blockDevice
            case 0o010000: type = .fifo
            case 0o140000: type = .socket
            default: type = .other
            }
        }
        let link = (archive_entry_symlink(entry) ?? archive_entry_hardlink(entry)).map { String(cString: $0) }
        return Entry(
            path: path, type: type, size: archive_entry_size(entry), linkTarget: link,
            modificationTime: Int64(archive_entry_mtime(entry)))
    }

    /// The next block of the current entry's data, valid until the next call; nil at its end.
    public func nextBlock() throws(TarError) -> UnsafeRawBufferPointer? {
        var buffer: UnsafeRawPointer?
        var size = 0
        var offset: Int64 = 0
        let status = archive_read_data_block(archive, &buffer, &size, &offset)
        if status == ARCHIVE_EOF { return nil }
        guard status == ARCHIVE_OK || status == ARCHIVE_WARN else {
            throw .libarchive(Self.explain(TarWriter.errorString(archive)), entry: currentPath)
        }
        guard offset == expectedOffset else {
            throw .libarchive("sparse entries are not supported", entry: currentPath)
        }
        expectedOffset += Int64(size)
        return UnsafeRawBufferPointer(start: buffer, count: size)
    }

    /// Reads the whole current entry, refusing more than `limit` bytes.
    public func readAll(limit: Int) throws(TarError) -> [UInt8] {
        var bytes: [UInt8] = []
        // One allocation of the declared size (growing by doubling would hold old and new at once).
        bytes.reserveCapacity(Int(min(currentSize, Int64(limit))))
        while let block = try nextBlock() {
            guard bytes.count + block.count <= limit else {
                throw .io("larger than the \(limit)-byte limit", entry: currentPath)
            }
            bytes.append(contentsOf: block)
        }
        return bytes
    }

    static func explain(_ message: String) -> String {
        if message.contains("Truncated") || message.contains("truncated") { return "archive is truncated (\(message))" }
        if message.contains("Unrecognized archive format") { return "not a tar archive (\(message))" }
        return message
    }
}
