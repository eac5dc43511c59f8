import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Small POSIX helpers shared by the store. Blocking calls; callers keep them off event loops.
public enum FileSystem {
    public static func makeDirectory(_ path: String, mode: mode_t = 0o755) throws(StoreError) {
        if mkdir(path, mode) != 0 && errno != EEXIST { throw .io("create directory \(path)", errno: errno) }
    }

    /// Creates `path` and its missing parents.
    public static func makeDirectories(_ path: String, mode: mode_t = 0o755) throws(StoreError) {
        var current = path.hasPrefix("/") ? "" : "."
        for component in path.split(separator: "/") {
            current += "/\(component)"
            try makeDirectory(current, mode: mode)
        }
    }

    public static func size(of path: String) -> Int64? {
        var info = stat()
        guard stat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int64(info.st_size)
    }

    public static func list(_ directory: String) -> [String] {
        guard let dir = opendir(directory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            var nameBytes = entry.pointee.d_name
            let capacity = MemoryLayout.size(ofValue: nameBytes)
            let name = withUnsafePointer(to: &nameBytes) {
                $0.withMemoryRebound(to: CChar.self, capacity: capacity) { String(cString: $0) }
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names.sorted()
    }

    public static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws(StoreError) {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let n = Glibc.write(fd, base + offset, bytes.count - offset)
            if n < 0 {
                if errno == EINTR { continue }
                throw .io("write \(path)", errno: errno)
            }
            offset += n
        }
    }

    public static func readSmallFile(_ path: String, limit: Int) throws(StoreError) -> [UInt8] {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        defer { close(fd) }
        var result: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .io("read \(path)", errno: errno)
            }
            if n == 0 { break }
            result += buffer[0..<n]
            if result.count > limit { throw .tooLarge(path: path, limit: limit) }
        }
        return result
    }

    /// Replaces `path` with `bytes` all at once: a temporary file beside it created with `mode`,
    /// written, fsynced, renamed over `path`, and the directory fsynced. Readers see the old
    /// content or the new, never a part; a failure leaves the old file and no temporary.
    public static func replace(_ path: String, with bytes: [UInt8], mode: mode_t) throws(StoreError) {
        let temporary = "\(path).\(getpid()).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode)
        guard fd >= 0 else { throw .io("create \(temporary)", errno: errno) }
        let failure = bytes.withUnsafeBytes { raw -> StoreError? in
            do throws(StoreError) { try writeAll(fd, raw, path: temporary) } catch { return error }
            return fsync(fd) == 0 ? nil : .io("fsync \(temporary)", errno: errno)
        }
        close(fd)
        if let failure {
            unlink(temporary)
            throw failure
        }
        guard rename(temporary, path) == 0 else {
            let code = errno
            unlink(temporary)
            throw .io("rename to \(path)", errno: code)
        }
        syncDirectory(URL(fileURLWithPath: path).deletingLastPathComponent().path)
    }

    public static func syncDirectory(_ path: String) {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if fd >= 0 {
            fsync(fd)
            close(fd)
        }
    }
}
