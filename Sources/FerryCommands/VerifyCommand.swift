import ArgumentParser
import Foundation
import NIOPosix
import OCIBundle

#if canImport(Glibc)
    import Glibc
#endif

/// The bundle did not verify; the problems were already printed.
struct BundleVerificationFailed: Error, CustomStringConvertible {
    var count: Int
    var description: String { "\(count) problem(s) found" }
}

/// `ferry verify`: prove offline that a bundle is complete, intact and signed by a trusted key.
public struct VerifyCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Check a bundle offline: structure, every blob's digest, the image graph, the signature.",
        discussion: """
            Reads the bundle once, from a file or from standard input (`-`), with flat memory. \
            Exits 0 only when everything holds; otherwise prints one line per problem (entry, image, \
            digest, what was expected, what was found) and exits 65.

            With --trust-key (a public key from `ferry keygen`, or a directory of *.pub files), the \
            bundle must be signed by one of those keys and unchanged since.

            Examples:
              ferry verify site.bundle.tar
              ferry verify site.bundle.tar --trust-key keys/
              cat /media/usb/site.bundle.tar | ferry verify - --json
            """
    )

    @Argument(help: "The bundle, or - for standard input.")
    var bundle: String

    @Option(name: .customLong("trust-key"), help: "A trusted public key, or a directory of them (repeatable).")
    var trustKeys: [String] = []

    @Flag(help: "Print the report as JSON on standard output.")
    var json = false

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let keys = try trustKeys.flatMap { try PublicKey.load($0) }
            if !trustKeys.isEmpty && keys.isEmpty { throw ValidationError("--trust-key names no *.pub or *.pem keys") }
            let report = try await Self.read(bundle, reader: BundleReader(trustedKeys: keys))
            if json {
                FileHandle.standardOutput.write(try jsonEncoder().encode(report) + Data("\n".utf8))
            } else if report.ok {
                let manifest = report.manifest
                var line =
                    "\(bundle): OK, \(manifest?.images.count ?? 0) image(s), \(report.blobCount) blob(s), "
                    + ProgressReporter.bytes(report.blobBytes)
                if let signature = report.signature {
                    line +=
                        ", signed by \(signature.keyID)"
                        + (report.trusted == true ? " (trusted)" : " (no trusted keys given)")
                } else {
                    line += ", unsigned"
                }
                if let external = manifest?.external, let base = manifest?.base {
                    let bytes = external.reduce(Int64(0)) { $0 + $1.size }
                    line +=
                        ", a delta against \(base.description): \(external.count) blob(s), "
                        + "\(ProgressReporter.bytes(bytes)) expected at the site"
                }
                if manifest?.partial != nil {
                    line += ", partial: \(manifest?.partial?.platforms.joined(separator: ",") ?? "")"
                }
                print(line)
            }
            if !report.unreferencedBlobs.isEmpty && !json {
                for digest in report.unreferencedBlobs {
                    FileHandle.standardError.write(
                        Data("ferry: warning: \(bundle): blob \(digest) is not referenced by index.json\n".utf8))
                }
            }
            guard report.ok else {
                if !json {
                    for problem in report.problems {
                        FileHandle.standardError.write(Data("ferry: \(bundle): \(problem)\n".utf8))
                    }
                }
                throw ExitCode(FerryExitCode.verification)
            }
        }
    }

    /// Reads `path` (or standard input for `-`) with `reader` on a thread-pool thread.
    static func read(_ path: String, reader: BundleReader, headerOnly: Bool = false) async throws -> VerificationReport
    {
        try await NIOThreadPool.singleton.runIfActive {
            try reader.verify(path: path, stopAfterHeader: headerOnly)
        }
    }
}

func jsonEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return encoder
}
