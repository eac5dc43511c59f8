import ArgumentParser
import OCICore

/// A size given on the command line as split(1) reads it: `4G`, `512M`, `700K` (powers of 1024;
/// `GiB` too), `4GB`, `700MB` (powers of 1000), or plain bytes.
public struct ByteSize: ExpressibleByArgument, Sendable, Equatable {
    public var bytes: Int64

    public init(bytes: Int64) { self.bytes = bytes }

    public init?(argument: String) {
        guard let bytes = ByteCount.parse(argument) else { return nil }
        self.bytes = bytes
    }

    public static var defaultCompletionKind: CompletionKind { .default }
}
