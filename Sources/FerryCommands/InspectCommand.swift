import ArgumentParser
import Foundation
import NIOPosix
import OCIBundle
import OCICore

/// `ferry inspect`: what a bundle holds, from its header alone.
public struct InspectCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show a bundle's images, tags, digests, platforms, sizes, creation and signer.",
        discussion: """
            Reads only the start of the bundle (the bundle manifest, signature and index.json), so it \
            is instant however large the bundle; `ferry verify` checks the content. Given a site \
            inventory (`ferry-appliance inventory`, gzip-compressed or not), shows what the site holds.
            """
    )

    @Argument(help: "The bundle, another tool's image archive, or a site inventory.")
    var bundle: String

    @Option(help: "For another tool's archive whose index.json names images by tag only: their repository.")
    var name: String?

    @Flag(help: "Print JSON on standard output.")
    var json = false

    public init() {}

    struct Summary: Codable {
        var bundle: String
        var formatVersion: Int
        var tool: String
        var created: String
        var partial: [String]?
        var images: [BundleManifest.Image]
        var blobs: Int
        var blobBytes: Int64
        /// Bytes the images would take if each carried its own copy of every blob, minus the bundle's.
        var sharedSavings: Int64
        var signed: Bool
        var signer: String?
        var signatureValid: Bool?
        /// A volume of a set: which one, of how many, and the set's id.
        var volume: VolumeHeader?
    }

    /// A site inventory, summed up.
    struct InventorySummary: Codable {
        var inventory: String
        var digest: String
        var appliance: String
        var created: String
        var repositories: Int
        var tags: Int
        var blobs: Int
        var blobBytes: Int64
        var bundles: [String]
        var signer: String?
        /// Whether the signature matches the inventory (against the key it carries).
        var signatureValid: Bool?
    }

    public func run() async throws {
        try await reportingErrors {
            if let (inventory, digest) = try? SiteInventory.read(path: bundle) {
                let summary = InventorySummary(
                    inventory: bundle, digest: digest.description, appliance: inventory.appliance,
                    created: inventory.created, repositories: inventory.repositories.count,
                    tags: inventory.repositories.reduce(0) { $0 + $1.tags.count }, blobs: inventory.blobs.count,
                    blobBytes: inventory.blobs.reduce(Int64(0)) { $0 + $1.size }, bundles: inventory.bundles,
                    signer: inventory.signature?.keyID,
                    signatureValid: inventory.signatureVerdict(trustedKeys: []).map { $0 == .valid(trusted: nil) })
                if json {
                    FileHandle.standardOutput.write(try jsonEncoder().encode(summary) + Data("\n".utf8))
                    return
                }
                print("Inventory: \(bundle) (\(summary.digest))")
                print("Site:      \(summary.appliance), written \(summary.created)")
                print(
                    "Holds:     \(summary.repositories) repositories, \(summary.tags) tag(s), \(summary.blobs) blob(s), "
                        + ProgressReporter.bytes(summary.blobBytes))
                print("Bundles:   \(summary.bundles.count) imported")
                if let signer = summary.signer {
                    print("Signed:    \(signer)\(summary.signatureValid == true ? "" : " (SIGNATURE DOES NOT MATCH)")")
                } else {
                    print("Signed:    no")
                }
                for repository in inventory.repositories {
                    for (tag, digest) in repository.tags.sorted(by: { $0.key < $1.key }) {
                        print("  \(repository.name):\(tag)  \(digest)")
                    }
                }
                return
            }
            var report = VerificationReport(bundle: bundle)
            if bundle != "-", !LayoutArchive.isFerryBundle(path: bundle) {
                // Another tool's archive: its first pass says what it holds (nothing is verified).
                let (path, repository) = (bundle, name ?? "unnamed")
                report.manifest = try await NIOThreadPool.singleton.runIfActive {
                    try LayoutArchive.describe(path: path, repository: repository).manifest
                }
            } else {
                report = try await VerifyCommand.read(
                    bundle, reader: BundleReader(requireSignature: false), headerOnly: true)
            }
            guard let manifest = report.manifest else {
                for problem in report.problems {
                    FileHandle.standardError.write(Data("ferry: \(bundle): \(problem)\n".utf8))
                }
                throw ExitCode(FerryExitCode.verification)
            }
            let total = manifest.blobs.reduce(Int64(0)) { $0 + $1.size }
            let summary = Summary(
                bundle: bundle, formatVersion: manifest.formatVersion,
                tool: "\(manifest.tool.name) \(manifest.tool.version)",
                created: manifest.created, partial: manifest.partial?.platforms, images: manifest.images,
                blobs: manifest.blobs.count, blobBytes: total,
                sharedSavings: manifest.images.reduce(Int64(0)) { $0 + $1.size } - total,
                signed: report.signature != nil, signer: report.signature?.keyID,
                signatureValid: report.signature.map { _ in !report.problems.contains { $0.kind == .signature } },
                volume: report.volume)
            if json {
                FileHandle.standardOutput.write(try jsonEncoder().encode(summary) + Data("\n".utf8))
                return
            }
            print("Bundle:   \(bundle)")
            print("Created:  \(summary.created) by \(summary.tool) (format \(summary.formatVersion))")
            print(
                "Content:  \(summary.images.count) image(s), \(summary.blobs) blob(s), \(ProgressReporter.bytes(total))"
                    + " (shared blobs save \(ProgressReporter.bytes(summary.sharedSavings)))")
            if let partial = summary.partial { print("Partial:  only \(partial.joined(separator: ", "))") }
            if let volume = summary.volume {
                let size = manifest.volumes.map { " of at most \(ProgressReporter.bytes($0.volumeSize))" } ?? ""
                print("Volume:   \(volume.number) of \(volume.count)\(size), set \(volume.set)")
            }
            if let signer = summary.signer {
                print("Signed:   \(signer)\(summary.signatureValid == true ? "" : " (SIGNATURE DOES NOT MATCH)")")
            } else {
                print("Signed:   no")
            }
            print("")
            // Signatures, attestations, SBOMs and referrer indexes, by the digest they refer to.
            var carried: [String: [String]] = [:]
            for image in manifest.images {
                guard let tag = (try? Reference(image.reference))?.tag, let referrer = ReferrerTag(tag: tag.value)
                else { continue }
                carried[referrer.subject.description, default: []].append(referrer.kind.rawValue)
            }
            for image in manifest.images {
                print(image.reference)
                if let served = (try? Reference(image.reference))?.servedRepository {
                    print("  served as  \(served) (on a ferry-appliance)")
                }
                print("  digest     \(image.digest)")
                print("  type       \(image.mediaType)")
                print("  platforms  \(image.platforms.isEmpty ? "-" : image.platforms.joined(separator: ", "))")
                print("  size       \(ProgressReporter.bytes(image.size))")
                if let kinds = carried[image.digest.description] {
                    print("  carries    \(kinds.sorted().joined(separator: ", "))")
                }
            }
        }
    }
}
