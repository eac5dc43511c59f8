import ArgumentParser
import Foundation
import OCICore

/// `ferry plan`: what an export would carry, before any layer is downloaded.
public struct PlanCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Show what an export would carry: images, bytes, shared blobs, what a delta saves.",
        discussion: """
            Resolves every tag and reads the manifests (into the cache), and downloads no layer. Takes \
            the same image lists, references, --platform and --against as `ferry export`.

            Examples:
              ferry plan -f images.txt
              ferry plan -f images.txt --against site.inventory.json --json
              ferry plan -f images.txt --volume-size 4G
            """)

    @OptionGroup var selection: ImageSelection

    @Option(
        name: .customLong("volume-size"),
        help: "Also count the volumes of this size (4G, 700M, 4GB) an export would write.")
    var volumeSize: ByteSize?

    @Option(help: "Manifests read at once.")
    var parallel: Int = 6

    @Option(help: "Cache of verified blobs (default: as `ferry export`).")
    var cache: String?

    @OptionGroup var registryOptions: RegistryOptions

    @Flag(help: "Print the plan as JSON on standard output.")
    var json = false

    public init() {}

    public func run() async throws {
        try await reportingErrors {
            let options = Exporter.Options(
                requests: try selection.loadRequests(), output: "", platforms: try selection.platforms(),
                parallel: parallel, cacheDirectory: cache ?? ExportCommand.defaultCacheDirectory(),
                creationTime: 0, against: try selection.deltaBase(), volumeSize: volumeSize?.bytes)
            let credentials = try registryOptions.credentialStore()
            let plan = try await registryOptions.withClient(credentials: credentials) { client in
                try await Exporter(client: client, progress: ProgressReporter(mode: .none)).plan(options)
            }
            if json {
                try printJSON(plan)
                return
            }
            for image in plan.images {
                let platforms = image.platforms.isEmpty ? "" : " [\(image.platforms.joined(separator: ", "))]"
                print(
                    "\(image.reference)  \(image.digest.prefix(19))…  \(image.manifests) manifest(s), "
                        + "\(image.blobs) blob(s), \(ProgressReporter.bytes(image.bytes))\(platforms)")
            }
            print(
                "\(plan.images.count) image(s): \(plan.manifests) manifest(s) "
                    + "(\(ProgressReporter.bytes(plan.manifestBytes))), \(plan.blobs) config(s) and layer(s) "
                    + "(\(ProgressReporter.bytes(plan.blobBytes))); \(plan.sharedBlobs) shared between images, "
                    + "carried once: \(ProgressReporter.bytes(plan.sharedSavedBytes)) saved")
            if let base = plan.base, let held = plan.heldBlobs, let heldBytes = plan.heldBytes {
                print(
                    "delta against \(base): \(held) blob(s), \(ProgressReporter.bytes(heldBytes)) held at the site")
            }
            print("to carry: \(ProgressReporter.bytes(plan.carryBytes))")
            if let volumes = plan.volumes, let size = plan.volumeSize {
                print("volumes: \(volumes) of at most \(ProgressReporter.bytes(size))")
            }
        }
    }
}
