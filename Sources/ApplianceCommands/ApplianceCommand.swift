import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCIStore

/// `ferry-appliance`: the isolated side. Imports bundles into its registry store; serving them
/// over TLS follows (issue 4).
public struct ApplianceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry-appliance",
        abstract: "Import Ferry bundles into a registry store (serving it over TLS is not implemented yet).",
        discussion: """
            Images keep their source name: docker.io/library/nginx:1.25 is stored as repository \
            docker.io/library/nginx, tag 1.25. A source host with a port is spelled with `_` \
            (registry.local:5000/team/app becomes registry.local_5000/team/app), since repository \
            names cannot hold a colon.

            Exit codes: 0 success; 1 failure; 64 bad usage; 65 a bundle failed verification \
            (nothing was imported from it).
            """,
        version: FerryVersion.string,
        subcommands: [ImportCommand.self, ImagesCommand.self]
    )

    public init() {}
}

/// Options every command that touches the store takes.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help: "The appliance's data directory (default: $FERRY_DATA_DIR, else /var/lib/ferry).")
    var dataDirectory: String?

    var resolved: String {
        dataDirectory ?? ProcessInfo.processInfo.environment["FERRY_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? "/var/lib/ferry"
    }
}

/// `ferry-appliance import`.
struct ImportCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Verify bundles and import them; each bundle's images appear all at once, or not at all.",
        discussion: """
            Each bundle is read once (a file, or - for standard input): every blob is verified as \
            it is stored, and only when the whole bundle verified do its tags and manifests become \
            visible. A bundle imported before is a fast no-op; a newer bundle moves tags. A killed \
            import leaves the store as it was; run it again to finish. Each import is recorded in \
            DATA/imports/.
            """
    )

    @Argument(help: "Bundles to import, or - for standard input.")
    var bundles: [String]

    @OptionGroup var store: StoreOptions

    @Option(
        name: .customLong("trust-key"), help: "Require a signature by this key, or one in this directory (repeatable).")
    var trustKeys: [String] = []

    @Flag(help: "Print the import results as JSON.")
    var json = false

    func run() throws {
        do {
            let keys = try trustKeys.flatMap { try PublicKey.load($0) }
            let registry = try RegistryStore(root: store.resolved)
            let importer = Importer(store: registry, reader: BundleReader(trustedKeys: keys))
            var results: [Importer.Result] = []
            for bundle in bundles {
                let result = try importer.importBundle(bundle)
                results.append(result)
                if !json {
                    let what = result.unchanged ? "already imported, unchanged" : "imported"
                    print(
                        "\(bundle): \(what): \(result.images.count) image(s), \(result.blobsWritten) blob(s) stored, "
                            + "\(result.blobsAlreadyPresent) already present"
                            + (result.signer.map { ", signed by \($0)" } ?? ""))
                    for image in result.images {
                        print("  \(image.repository)\(image.tag.map { ":\($0)" } ?? "")@\(image.digest)")
                    }
                }
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(results) + Data("\n".utf8))
            }
        } catch let error as ImportError {
            for line in error.description.split(separator: "\n") {
                FileHandle.standardError.write(Data("ferry-appliance: error: \(line)\n".utf8))
            }
            if case .invalid = error { throw ExitCode(65) }
            throw ExitCode(1)
        } catch let error as ExitCode {
            throw error
        } catch {
            FileHandle.standardError.write(Data("ferry-appliance: error: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// `ferry-appliance images`: what the store serves.
struct ImagesCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "List the repositories, tags and digests the store serves.")

    @OptionGroup var store: StoreOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() throws {
        let state = try RegistryStore(root: store.resolved).state()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            FileHandle.standardOutput.write(try encoder.encode(state) + Data("\n".utf8))
            return
        }
        for (name, repository) in state.repositories.sorted(by: { $0.key < $1.key }) {
            for (tag, digest) in repository.tags.sorted(by: { $0.key < $1.key }) { print("\(name):\(tag)  \(digest)") }
        }
    }
}
