import ArgumentParser
import Foundation
import NIOPosix
import OCIBundle
import OCICore

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

            Another tool's OCI image layout tar (skopeo oci-archive, ctr export, docker save) is \
            verified the same way: every blob against its digest, and the image graph.

            A volume (from `ferry export --volume-size` or `ferry split`) verifies alone: its header, \
            the signed bundle manifest, and every blob and part it carries. Given several volumes, \
            they must also make one whole set: each volume once, none missing, none from another set.

            Examples:
              ferry verify site.bundle.tar
              ferry verify site.bundle.tar --trust-key keys/
              ferry verify site.vol003.tar
              ferry verify site.vol*.tar --trust-key keys/
              cat /media/usb/site.bundle.tar | ferry verify - --json
            """
    )

    @Argument(help: "The bundle (or volumes of one set), or - for standard input.")
    var bundles: [String]

    @Option(name: .customLong("trust-key"), help: "A trusted public key, or a directory of them (repeatable).")
    var trustKeys: [String] = []

    @Option(
        help: """
            For another tool's archive whose index.json names images by tag only: the repository \
            to show them under (default: unnamed).
            """)
    var name: String?

    @Option(
        name: .customLong("image-keys"),
        help: "Also require each image's cosign signature by this key (repeatable; ECDSA P-256 or Ed25519, PEM).")
    var imageKeyFiles: [String] = []

    @Flag(help: "Print the report as JSON on standard output.")
    var json = false

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let keys = try trustKeys.flatMap { try PublicKey.load($0) }
            if !trustKeys.isEmpty && keys.isEmpty { throw ValidationError("--trust-key names no *.pub or *.pem keys") }
            guard !bundles.isEmpty else { throw ValidationError("name a bundle, or - for standard input") }
            var reports: [VerificationReport] = []
            var failed = false
            let imageKeys = try imageKeyFiles.map { try ImageSignatureKey(pemFile: $0) }
            for bundle in bundles {
                let reader = BundleReader(trustedKeys: keys)
                let repository = name
                let report = try await NIOThreadPool.singleton.runIfActive {
                    let capture = SignatureCapture(passingTo: nil)
                    var report = try reader.verifyAny(
                        path: bundle, sink: imageKeys.isEmpty ? nil : capture, repository: repository ?? "unnamed")
                    if !imageKeys.isEmpty, report.ok, let manifest = report.manifest {
                        let refused = CosignSignature.refused(
                            try manifest.images.map {
                                CosignSignature.Member(
                                    reference: try Reference($0.reference), digest: $0.digest,
                                    manifests: report.imageContents[$0.reference]?.manifests ?? [$0.digest])
                            }, keys: imageKeys, manifest: { capture.kept[$0] }, payload: { capture.kept[$0.digest] })
                        report.problems += refused.map { VerificationProblem(.signature, $0) }
                    }
                    return report
                }
                if !json { Self.show(report, bundle: bundle) }
                failed = failed || !report.ok
                reports.append(report)
            }
            let setProblems = Self.setProblems(reports)
            if json {
                let body: Data
                if reports.count == 1 {
                    body = try jsonEncoder().encode(reports[0])
                } else {
                    body = try jsonEncoder().encode(MultipleReport(reports: reports, setProblems: setProblems))
                }
                FileHandle.standardOutput.write(body + Data("\n".utf8))
            } else {
                for problem in setProblems { FileHandle.standardError.write(Data("ferry: \(problem)\n".utf8)) }
            }
            if failed || !setProblems.isEmpty { throw ExitCode(FerryExitCode.verification) }
        }
    }

    struct MultipleReport: Encodable {
        var reports: [VerificationReport]
        var setProblems: [String]
        var ok: Bool { setProblems.isEmpty && reports.allSatisfy(\.ok) }
        enum CodingKeys: String, CodingKey { case ok, reports, setProblems }
        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(ok, forKey: .ok)
            try c.encode(reports, forKey: .reports)
            try c.encode(setProblems, forKey: .setProblems)
        }
    }

    /// Volumes given together must make one whole set.
    static func setProblems(_ reports: [VerificationReport]) -> [String] {
        let volumes = reports.filter { $0.volume != nil }
        guard volumes.count > 1 || (volumes.count == 1 && reports.count > 1) else { return [] }
        var problems: [String] = []
        for report in reports where report.volume == nil {
            problems.append("\(report.bundle): not a volume, given with volumes")
        }
        guard let first = volumes.first?.volume else { return problems }
        var seen: [Int: String] = [:]
        for report in volumes {
            guard let volume = report.volume else { continue }
            guard volume.set == first.set else {
                problems.append(
                    "\(report.bundle): a volume of another set (\(volume.set.encoded.prefix(12))); "
                        + "\(volumes[0].bundle) is of set \(first.set.encoded.prefix(12))")
                continue
            }
            if let other = seen[volume.number] {
                problems.append("\(report.bundle): volume \(volume.number) given twice (also \(other))")
            } else {
                seen[volume.number] = report.bundle
            }
        }
        let missing = (1...max(1, first.count)).filter { seen[$0] == nil }
        if !missing.isEmpty {
            problems.append(
                "set \(first.set.encoded.prefix(12)) is incomplete: volume(s) "
                    + missing.map(String.init).joined(separator: ", ") + " of \(first.count) not given")
        }
        return problems
    }

    static func show(_ report: VerificationReport, bundle: String) {
        if report.ok {
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
            if let volume = report.volume {
                line +=
                    ", volume \(volume.number) of \(volume.count) of set \(volume.set.encoded.prefix(12)) "
                    + "(the other volumes carry the rest)"
            }
            print(line)
        }
        if !report.unreferencedBlobs.isEmpty {
            for digest in report.unreferencedBlobs {
                FileHandle.standardError.write(
                    Data("ferry: warning: \(bundle): blob \(digest) is not referenced by index.json\n".utf8))
            }
        }
        for problem in report.problems {
            FileHandle.standardError.write(Data("ferry: \(bundle): \(problem)\n".utf8))
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

/// Prints `value` as the JSON summary scripts read (`--json`): sorted keys, one trailing newline.
func printJSON(_ value: some Encodable) throws {
    FileHandle.standardOutput.write(try jsonEncoder().encode(value) + Data("\n".utf8))
}

func jsonEncoder() -> JSONEncoder {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    return encoder
}
