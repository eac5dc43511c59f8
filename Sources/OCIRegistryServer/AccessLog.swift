import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// One line per request, written with a single `write(2)` so lines from concurrent requests never
/// interleave: `TIME REMOTE USER "METHOD TARGET" STATUS BYTES SECONDS "USER-AGENT"` (USER is `-`
/// for anonymous requests; passwords and tokens never appear).
public final class AccessLog: Sendable {
    let fileDescriptor: Int32
    let ownsDescriptor: Bool

    /// Appends to `path`, or writes to standard error for `-`.
    public init(path: String) throws {
        if path == "-" {
            fileDescriptor = STDERR_FILENO
            ownsDescriptor = false
        } else {
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o640)
            guard fd >= 0 else {
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
            }
            fileDescriptor = fd
            ownsDescriptor = true
        }
    }

    deinit { if ownsDescriptor { close(fileDescriptor) } }

    public func record(
        remote: String, user: String? = nil, method: String, target: String, status: Int, bytes: Int?, seconds: Double,
        userAgent: String?
    ) {
        let agent = Self.escaped(userAgent ?? "-").replacingOccurrences(of: "\"", with: "'")
        let line =
            "\(Self.timestamp()) \(remote) \(Self.escaped(user ?? "-")) \"\(Self.escaped(method)) \(Self.escaped(target))\" "
            + "\(status) \(bytes.map(String.init) ?? "-") \(String(format: "%.4f", seconds)) \"\(agent)\"\n"
        var bytes = Array(line.utf8)
        bytes.withUnsafeMutableBytes { raw in _ = write(fileDescriptor, raw.baseAddress, raw.count) }
    }

    /// Control characters (a newline in a user name would start a forged line) as `\xHH`.
    static func escaped(_ field: String) -> String {
        guard field.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7f }) else { return field }
        var out = ""
        for scalar in field.unicodeScalars {
            if scalar.value < 0x20 || scalar.value == 0x7f {
                out += String(format: "\\x%02x", scalar.value)
            } else {
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// `2026-11-23T12:00:00Z`
    static func timestamp() -> String {
        var now = time(nil)
        var parts = tm()
        gmtime_r(&now, &parts)
        return String(
            format: "%04d-%02d-%02dT%02d:%02d:%02dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1,
            Int(parts.tm_mday), Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec))
    }
}
