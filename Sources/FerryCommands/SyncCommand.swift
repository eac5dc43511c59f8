import ArgumentParser
import Foundation
import OCICore
import OCIRegistryClient

/// `ferry sync`: registry to registry, without a bundle.
public struct SyncCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Copy images from registries into a registry directly, only what the destination lacks.",
        discussion: """
            For the connected side and for sites that can reach both registries. It reads the image \
            lists export reads (text, YAML, whole repositories with tag filters, image-syncer's \
            images.json and auth.json) and copies each image with its digests unchanged: every blob \
            streams from source to destination, checked against its digest as it passes, and nothing \
            is stored on the way.

            Incremental: an image whose digest the destination's tag has already is skipped without \
            reading a blob; blobs the destination repository has are not uploaded; a blob copied for \
            one image is mounted into the other repositories that need it. Manifests go last, the tag \
            last of all. Images that failed are tried again after the pass (--retries).

            Destinations: an images.json names each one (renames included); other images go to \
            --to HOST[:PORT][/PREFIX], under HOST/PREFIX/SOURCE-REGISTRY/PATH as `ferry push` puts \
            them (--drop-registry-host: HOST/PREFIX/PATH). Multi-platform images are copied whole; \
            with one --platform, a multi-platform image's manifest for it is copied under the tag.

            Exit codes: 0 every image synced (or up to date); 1 some failed (registry, network); 64 \
            bad usage or input; 65 content failed verification. The summary is printed either way.

            Examples:
              ferry sync --images images.json --auth auth.json --proc 6 --retries 3
              ferry sync -f images.yaml --to harbor.plant.example/mirror --dry-run
              ferry sync --all-tags quay.io/org/app --tags-semver '>=1.2' --to 10.0.0.5:5000 --json
            """)

    @OptionGroup var selection: ImageSelection

    @Option(help: "Where images without a destination of their own go: HOST[:PORT][/PREFIX].")
    var to: String?

    @Flag(name: .customLong("drop-registry-host"), help: "Leave the source registry out of the destination names.")
    var dropRegistryHost = false

    @Option(help: "Images copied at once (image-syncer's --proc).")
    var proc: Int = 4

    @Option(help: "Blobs copied at once for each image.")
    var parallel: Int = 4

    @Option(help: "Passes over the images that failed, after the first (pauses of 2s, 4s, ... up to 30s between).")
    var retries: Int = 2

    @Flag(name: .customLong("dry-run"), help: "Print what would be copied (the destination is asked, not changed).")
    var dryRun = false

    @Flag(name: .customLong("no-referrers"), help: "Leave out the images' signatures, attestations and SBOMs.")
    var noReferrers = false

    @Option(
        name: .customLong("referrers-type"),
        help: "Copy only these referrers (repeatable): signature, attestation, sbom, referrers, or an artifact type.")
    var referrerTypes: [String] = []

    @Option(help: "Where manifests read are kept (the export cache; no blob is stored).")
    var cache: String?

    @OptionGroup var registryOptions: RegistryOptions

    @Option(help: "Progress display: auto, plain, none (one line per image).")
    var progress: ProgressReporter.Mode = .auto

    @Flag(help: "Print a JSON summary on standard output.")
    var json = false

    public init() {}

    public func validate() throws {
        guard (1...64).contains(proc) else { throw ValidationError("--proc must be between 1 and 64") }
        guard (1...64).contains(parallel) else { throw ValidationError("--parallel must be between 1 and 64") }
        guard proc * parallel <= 256 else {
            throw ValidationError("--proc × --parallel must be at most 256 (copies at once)")
        }
        guard (0...10).contains(retries) else { throw ValidationError("--retries must be between 0 and 10") }
        if noReferrers && !referrerTypes.isEmpty {
            throw ValidationError("--referrers-type keeps some referrers; --no-referrers leaves them all out: give one")
        }
    }

    public func run() async throws {
        try await reportingErrors {
            if !selection.against.isEmpty {
                throw ValidationError(
                    "--against makes delta bundles; sync copies only what the destination lacks anyway")
            }
            let (requests, charts) = try selection.load()
            if let chart = charts.first {
                throw ValidationError("\(chart.origin): charts are carried in bundles (ferry export), not synced")
            }
            let credentialStore = try registryOptions.credentialStore()
            if credentialStore.explicitForAll != nil {
                throw ValidationError(
                    "--creds without a host: sync talks to at least two registries, name it: --creds HOST=USER:PASSWORD"
                )
            }
            var options = Syncer.Options(
                requests: requests, cacheDirectory: cache ?? ExportCommand.defaultCacheDirectory())
            options.target = try to.map { try PushCommand.parseTarget($0) }
            options.keepRegistryHost = !dropRegistryHost
            options.platforms = try selection.platforms()
            options.images = proc
            options.parallel = parallel
            options.retries = retries
            options.dryRun = dryRun
            options.referrers = !noReferrers
            options.referrerTypes = referrerTypes.isEmpty ? nil : Set(referrerTypes)
            let reporter = ProgressReporter(mode: (json && progress == .auto) || progress == .bar ? .plain : progress)
            let summary = try await registryOptions.withClient(credentials: credentialStore) { client in
                try await Syncer(client: client, progress: reporter).run(options)
            }
            if json {
                try printJSON(summary)
            } else {
                Self.printSummary(summary)
            }
            let failed = summary.images.filter { $0.status == .failed }
            if !failed.isEmpty { throw SyncError.failed(failed) }
        }
    }

    static func printSummary(_ summary: Syncer.Summary) {
        if summary.dryRun {
            let would = summary.images.filter { $0.status == .wouldCopy }
            print(
                "Would sync \(would.count) image(s): \(would.reduce(0) { $0 + ($1.blobsMissing ?? 0) }) blob(s) "
                    + "(\(ByteCount.text(would.reduce(0) { $0 + ($1.bytesMissing ?? 0) }))) to copy, "
                    + "\(summary.blobsAlreadyThere) already there; \(summary.imagesUpToDate) image(s) up to date")
            for image in would {
                print("  \(image.source) -> \(image.destination)  (\(image.blobsMissing ?? 0) blob(s) missing)")
            }
            return
        }
        print(
            String(
                format:
                    "Synced %d image(s): %d copied, %d up to date, %d tagged, %d failed; %d blob(s) copied (%@), %d mounted, %d already there, in %.1fs",
                summary.images.count, summary.imagesCopied, summary.imagesUpToDate, summary.imagesTagged,
                summary.imagesFailed, summary.blobsCopied, ByteCount.text(summary.bytesCopied), summary.blobsMounted,
                summary.blobsAlreadyThere, summary.seconds))
        for image in summary.images where image.status == .copied || image.status == .tagged {
            print("  \(image.destination)@\(image.digest ?? "")")
        }
    }
}
