import CArchive

/// gzip of small files held in memory (a site inventory), through libarchive's raw format.
public enum Gzip {
    /// Whether `bytes` start like a gzip stream.
    public static func isCompressed(_ bytes: [UInt8]) -> Bool {
        bytes.count >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b
    }

    public static func compress(_ bytes: [UInt8]) throws(TarError) -> [UInt8] {
        guard let archive = archive_write_new() else { throw .libarchive("archive_write_new failed", entry: nil) }
        defer { archive_write_free(archive) }
        // Room for the worst case (stored blocks) plus headers.
        var output = [UInt8](repeating: 0, count: bytes.count + bytes.count / 100 + 1024)
        var used = 0
        let status = output.withUnsafeMutableBytes { buffer -> Int32 in
            guard archive_write_add_filter_gzip(archive) == ARCHIVE_OK,
                archive_write_set_format_raw(archive) == ARCHIVE_OK,
                archive_write_set_bytes_per_block(archive, 0) == ARCHIVE_OK,
                archive_write_open_memory(archive, buffer.baseAddress, buffer.count, &used) == ARCHIVE_OK,
                let entry = archive_entry_new()
            else { return ARCHIVE_FATAL }
            defer { archive_entry_free(entry) }
            archive_entry_set_filetype(entry, UInt32(0o100000))
            archive_entry_set_pathname(entry, "data")
            guard archive_write_header(archive, entry) == ARCHIVE_OK else { return ARCHIVE_FATAL }
            let written = bytes.withUnsafeBytes { archive_write_data(archive, $0.baseAddress, $0.count) }
            guard written == bytes.count else { return ARCHIVE_FATAL }
            return archive_write_close(archive)
        }
        guard status == ARCHIVE_OK else { throw .libarchive(TarWriter.errorString(archive), entry: nil) }
        return Array(output.prefix(used))
    }

    /// The bytes a gzip stream holds, at most `limit` of them.
    public static func decompress(_ bytes: [UInt8], limit: Int) throws(TarError) -> [UInt8] {
        // libarchive would read anything else as raw data; only a gzip stream is one.
        guard isCompressed(bytes) else { throw .libarchive("gzip: not a gzip stream", entry: nil) }
        guard let archive = archive_read_new() else { throw .libarchive("archive_read_new failed", entry: nil) }
        defer { archive_read_free(archive) }
        var result: [UInt8] = []
        let failure: String? = bytes.withUnsafeBytes { buffer -> String? in
            var entry: OpaquePointer?
            guard archive_read_support_filter_gzip(archive) == ARCHIVE_OK,
                archive_read_support_format_raw(archive) == ARCHIVE_OK,
                archive_read_open_memory(archive, buffer.baseAddress, buffer.count) == ARCHIVE_OK
            else { return TarWriter.errorString(archive) }
            // (A stream of no bytes is refused here: the raw format needs one byte to recognise.)
            guard archive_read_next_header(archive, &entry) == ARCHIVE_OK else { return TarWriter.errorString(archive) }
            var chunk = [UInt8](repeating: 0, count: 1 << 16)
            while true {
                let got = chunk.withUnsafeMutableBytes { archive_read_data(archive, $0.baseAddress, $0.count) }
                if got < 0 { return TarWriter.errorString(archive) }
                if got == 0 { return nil }
                guard result.count + got <= limit else { return "larger than \(limit) bytes uncompressed" }
                result.append(contentsOf: chunk.prefix(got))
            }
        }
        if let failure { throw .libarchive("gzip: \(failure)", entry: nil) }
        return result
    }
}
