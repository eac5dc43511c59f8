import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCIRegistryClient

/// `ferry push BUNDLE --to HOST[:PORT][/PREFIX]`.
public struct PushCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "push",
        abstract: "Push every image of a bundle into a registry, verifying it as it is read.",
        discussion: """
            For sites that already run a registry (Harbor, a distribution registry, a Ferry \
            appliance): one pass over the bundle verifies every blob while it streams it to the \
            registry; blobs the registry has are skipped, other repositories get theirs by \
            cross-repository mount, and manifests go last with their bytes (and digests) unchanged. \
            If the bundle does not verify, no manifest is pushed. Run it again after a failure: \
            what arrived is skipped.

            Names: docker.io/library/nginx:1.25 goes to HOST/PREFIX/docker.io/library/nginx:1.25 \
            (the source registry kept as the first component, as the appliance serves it; a port \
            is spelled _), or with --drop-registry-host to HOST/PREFIX/library/nginx:1.25.

            Examples:
              ferry push site.tar --to harbor.plant.example/mirror --creds harbor.plant.example=ci:$PASS
              ferry push site.tar --to appliance.local:5000 --ca-file ferry-ca.crt --drop-registry-host
            """)

    @Argument(help: "The bundle (or another tool's OCI layout or docker-archive tar), or - for standard input.")
    var bundle: String

    @Option(help: "For another tool's archive whose index.json names images by tag only: their repository.")
    var name: String?

    @Option(help: "Target: HOST[:PORT], optionally followed by /PREFIX for the repositories.")
    var to: String

    @Flag(name: .customLong("drop-registry-host"), help: "Leave the source registry out of the target names.")
    var dropRegistryHost = false

    @Option(
        name: .customLong("trust-key"), help: "Require a signature by this key, or one in this directory (repeatable).")
    var trustKeys: [String] = []

    @OptionGroup var registryOptions: RegistryOptions

    @Option(help: "Progress display: auto, bar, plain, none.")
    var progress: ProgressReporter.Mode = .auto

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let target = try Self.parseTarget(to)
            let reporter = ProgressReporter(mode: json && progress == .auto ? .plain : progress)
            let options = BundlePusher.Options(
                bundle: bundle, registry: target.registry, prefix: target.prefix, keepRegistryHost: !dropRegistryHost,
                trustedKeys: try trustKeys.flatMap { try PublicKey.load($0) }, repository: name)
            let summary = try await registryOptions.withClient(credentials: try registryOptions.credentialStore()) {
                client in try await BundlePusher(client: client, progress: reporter).run(options)
            }
            if json {
                try printJSON(summary)
            } else {
                print(
                    String(
                        format:
                            "Pushed %d image(s) to %@: %d blob(s) uploaded (%.1f MiB), %d already there, %d mounted, %d manifest(s) in %.1fs",
                        summary.images.count, summary.registry, summary.blobsUploaded,
                        Double(summary.bytesUploaded) / 1_048_576, summary.blobsAlreadyThere, summary.blobsMounted,
                        summary.manifestsPushed, summary.seconds))
                for image in summary.images { print("  \(image.target)@\(image.digest)") }
            }
        }
    }

    /// `HOST[:PORT][/PREFIX]`.
    static func parseTarget(_ text: String) throws -> (registry: String, prefix: String?) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let registry = parts.first, Reference.isValidRegistry(registry) else {
            throw ValidationError("--to \(text): expected HOST[:PORT][/PREFIX]")
        }
        let prefix = parts.count > 1 ? parts[1].trimmingCharacters(in: CharacterSet(charactersIn: "/")) : nil
        if let prefix, !prefix.isEmpty, (try? RepositoryName(prefix)) == nil {
            throw ValidationError("--to \(text): \(prefix) is not a valid repository prefix")
        }
        return (registry, prefix?.isEmpty == true ? nil : prefix)
    }
}
