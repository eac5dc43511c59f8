import Foundation

/// A `Range: bytes=…` request header resolved against a blob's size (RFC 9110 §14).
public enum ByteRange: Equatable, Sendable {
    /// Serve the whole blob (no header, several ranges, or a unit other than bytes: a server may ignore those).
    case whole
    /// Serve `range` (inclusive offsets) with 206.
    case partial(ClosedRange<Int64>)
    /// 416 with `Content-Range: bytes */SIZE`.
    case unsatisfiable

    public init(header: String?, size: Int64) {
        guard let header else { self = .whole; return }
        let trimmed = header.trimmingCharacters(in: .whitespaces)
        guard trimmed.lowercased().hasPrefix("bytes=") else { self = .whole; return }
        let spec = trimmed.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(",") else { self = .whole; return }
        let parts = spec.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else { self = .unsatisfiable; return }
        let first = parts[0].trimmingCharacters(in: .whitespaces)
        let last = parts[1].trimmingCharacters(in: .whitespaces)
        if first.isEmpty {
            // Suffix: the last N bytes.
            guard let suffix = Int64(last), suffix > 0, size > 0 else { self = .unsatisfiable; return }
            self = .partial(max(0, size - suffix)...(size - 1))
            return
        }
        guard let start = Int64(first), start >= 0, start < size else { self = .unsatisfiable; return }
        if last.isEmpty {
            self = .partial(start...(size - 1))
            return
        }
        guard let end = Int64(last), end >= start else { self = .unsatisfiable; return }
        self = .partial(start...min(end, size - 1))
    }
}
