import Foundation

/// Byte counts as people read them: `512 B`, `1.5 KiB`, `3.2 GiB` (powers of 1024).
public enum ByteCount {
    public static func text(_ count: Int64) -> String {
        let units = ["B", "KiB", "MiB", "GiB", "TiB"]
        var value = Double(count)
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        return unit == 0 ? "\(count) B" : String(format: "%.1f %@", value, units[unit])
    }

    /// A size as people and split(1) write it: `4G`, `512M`, `700K` (powers of 1024; `GiB` too),
    /// `4GB`, `700MB` (powers of 1000), or plain bytes; nil for anything else, 0, or an overflow.
    public static func parse(_ text: String) -> Int64? {
        let text = text.trimmingCharacters(in: .whitespaces)
        let digits = text.prefix { $0.isNumber }
        guard let number = Int64(digits), number > 0 else { return nil }
        let units: [String: Int64] = [
            "": 1, "B": 1,
            "K": 1 << 10, "KIB": 1 << 10, "KB": 1000,
            "M": 1 << 20, "MIB": 1 << 20, "MB": 1_000_000,
            "G": 1 << 30, "GIB": 1 << 30, "GB": 1_000_000_000,
            "T": 1 << 40, "TIB": 1 << 40, "TB": 1_000_000_000_000,
        ]
        guard let unit = units[text.dropFirst(digits.count).uppercased()] else { return nil }
        let (value, overflow) = number.multipliedReportingOverflow(by: unit)
        return overflow ? nil : value
    }
}
