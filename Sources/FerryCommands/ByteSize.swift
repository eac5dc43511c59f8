import ArgumentParser

/// A size given on the command line as split(1) reads it: `4G`, `512M`, `700K` (powers of 1024;
/// `GiB` too), `4GB`, `700MB` (powers of 1000), or plain bytes.
public struct ByteSize: ExpressibleByArgument, Sendable, Equatable {
    public var bytes: Int64

    public init(bytes: Int64) { self.bytes = bytes }

    public init?(argument: String) {
        let text = argument.trimmingCharacters(in: .whitespaces)
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
        guard !overflow else { return nil }
        bytes = value
    }

    public static var defaultCompletionKind: CompletionKind { .default }
}
