/// One page of a sorted list (`_catalog`, `tags/list`): `n` entries after `last`, and whether a
/// `Link: <…>; rel="next"` is due (`../shared/specs/oci-distribution/spec.md`, "Listing Tags").
public struct Page: Equatable, Sendable {
    public var entries: [String]
    /// The `last` value for the next page, when more entries follow.
    public var nextLast: String?

    /// `sorted` must be in ASCII order. `n` is nil when the client asked for everything; n = 0
    /// yields an empty page without a link, as the spec requires.
    public init(sorted: [String], n: Int?, last: String?) {
        var start = 0
        if let last {
            start = Self.firstIndex(after: last, in: sorted)
        }
        let remaining = sorted[start...]
        guard let n else {
            entries = Array(remaining)
            nextLast = nil
            return
        }
        entries = Array(remaining.prefix(n))
        nextLast = n > 0 && remaining.count > n ? entries.last : nil
    }

    /// The index of the first element greater than `value` (binary search).
    static func firstIndex(after value: String, in sorted: [String]) -> Int {
        var low = 0
        var high = sorted.count
        while low < high {
            let middle = (low + high) / 2
            if sorted[middle] <= value { low = middle + 1 } else { high = middle }
        }
        return low
    }

    /// Parses the `n` query value: nil when absent, an error for anything but a non-negative integer.
    public static func parseCount(_ value: String?) throws(DistributionError) -> Int? {
        guard let value else { return nil }
        guard let n = Int(value), n >= 0 else { throw .paginationNumberInvalid(value) }
        return n
    }
}
