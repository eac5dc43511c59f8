import ArgumentParser
import Foundation
import NIOPosix
import OCIBundle
import OCICore
import OCIStore

/// `ferry split`: an existing bundle as volumes of a fixed size.
public struct SplitCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "split",
        abstract: "Cut a bundle into volumes of at most a given size, each verifiable and importable alone.",
        discussion: """
            Writes NAME.vol001.tar, NAME.vol002.tar, ... (NAME: --output without .tar, or the \
            bundle's own name), each with its .sha256, the same volumes `ferry export --volume-size` \
            writes. The bundle is verified while it is read; nothing is written unless every blob \
            holds. The volume plan is part of the bundle manifest, so a signed bundle needs \
            --sign-key to sign the volumes' manifest again (an unsigned one stays unsigned without it). \
            A blob larger than a volume is cut into parts, which costs one more read of the bundle.

            Examples:
              ferry split site.bundle.tar --volume-size 4G
              ferry split site.bundle.tar --volume-size 700M -o /media/disc/site.tar --sign-key ferry.key
            """)

    @Argument(help: "The bundle to split (a file).")
    var bundle: String

    @Option(name: .customLong("volume-size"), help: "Largest volume: 4G, 700M, 4GB, or bytes.")
    var volumeSize: ByteSize

    @Option(name: .shortAndLong, help: "Volume names: NAME.tar gives NAME.vol001.tar, ... (default: the bundle's).")
    var output: String?

    @Option(name: .customLong("sign-key"), help: "Sign the volumes' bundle manifest with this Ed25519 private key.")
    var signKey: String?

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    public init() {}

    struct Summary: Codable {
        var bundle: String
        var set: String
        var signedBy: String?
        var volumes: [Exporter.Summary.Volume]
        var seconds: Double
    }

    public func run() async throws {
        try await reportingErrors {
            let started = Date()
            guard bundle != "-" else { throw ValidationError("ferry split reads a file, not standard input") }
            let signingKey = try signKey.map { try SigningKey(pemFile: $0) }
            let reader = BundleReader(requireSignature: false)
            let header = try await VerifyCommand.read(bundle, reader: reader, headerOnly: true)
            guard header.ok, let manifest = header.manifest, let documents = header.headerDocuments else {
                for problem in header.problems {
                    FileHandle.standardError.write(Data("ferry: \(bundle): \(problem)\n".utf8))
                }
                throw ExitCode(FerryExitCode.verification)
            }
            guard manifest.volumes == nil else {
                throw ValidationError("\(bundle) is already a volume of a set; split the whole bundle")
            }
            if let signature = header.signature, signingKey == nil {
                throw ValidationError(
                    "\(bundle) is signed by \(signature.keyID); give --sign-key to sign the volumes "
                        + "(their plan is part of the signed bundle manifest)")
            }
            let output = self.output ?? bundle
            let modificationTime = ExportCommand.creationTime()
            let (bundle, volumeSize) = (self.bundle, self.volumeSize.bytes)
            let set = try await NIOThreadPool.singleton.runIfActive {
                /// Reads the whole bundle into `sink`; any problem stops the split.
                func pass(_ sink: any BundleBlobSink) throws {
                    let report = try reader.verify(path: bundle, sink: sink)
                    guard report.ok else { throw BundleError.invalid(report.problems) }
                }
                return try VolumeSetWriter.split(
                    manifest, volumeSize: volumeSize, output: output, index: documents.index,
                    dockerManifest: documents.dockerManifest, signingKey: signingKey,
                    modificationTime: modificationTime, hashParts: pass, feed: pass)
            }
            let volumes = set.volumes.map { volume in
                Exporter.Summary.Volume(
                    path: volume.path, size: FileSystem.size(of: volume.path) ?? 0, sha256: volume.digest.description)
            }
            let signer = set.signature?.keyID
            let summary = Summary(
                bundle: bundle, set: set.id.description, signedBy: signer, volumes: volumes,
                seconds: Date().timeIntervalSince(started))
            if json {
                FileHandle.standardOutput.write(try jsonEncoder().encode(summary) + Data("\n".utf8))
                return
            }
            print(
                "\(bundle): \(volumes.count) volume(s) of set \(set.id)\(signer.map { ", signed by \($0)" } ?? ""):"
            )
            for volume in volumes { print("  \(volume.path)  \(ProgressReporter.bytes(volume.size))") }
        }
    }
}
