#if canImport(Glibc)
    import Glibc
#endif

/// The system's words for what went wrong with a file or a socket, for one-line errors.
public enum SystemError {
    /// `errno`'s meaning, lower case as it reads inside a sentence ("no such file or directory").
    public static func words(_ code: Int32) -> String {
        let text = String(cString: strerror(code))
        return text.prefix(1).lowercased() + text.dropFirst()
    }

    /// Why the file at `path` cannot be read: it is missing, not allowed, or a directory.
    public static func unreadable(_ path: String) -> String { whyUnreadable(path) ?? "cannot be read" }

    /// Why the file at `path` cannot be read, or nil when it can be opened and is not a directory.
    public static func whyUnreadable(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)  // a FIFO must not hang the check
        guard fd >= 0 else { return words(errno) }
        defer { close(fd) }
        var info = stat()
        if fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFDIR { return words(EISDIR) }
        return nil
    }

    /// What is wrong with `path` as a file to write, or nil: a directory is not (checked where the
    /// path is given, before anything is fetched for it).
    public static func notAFileToWrite(_ path: String, example: String = "bundle.tar") -> String? {
        var info = stat()
        guard stat(path, &info) == 0, info.st_mode & S_IFMT == S_IFDIR else { return nil }
        let base = path.hasSuffix("/") ? String(path.dropLast()) : path
        return "\(path) is a directory: name the file to write in it (e.g. \(base)/\(example))"
    }
}
