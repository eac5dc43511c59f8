import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCIStore

/// `ferry-appliance`: the isolated side. Imports bundles into its registry store and serves it
/// over TLS with the OCI Distribution API.
public struct ApplianceCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "ferry-appliance",
        abstract: "Import Ferry bundles and serve their images to docker, containerd, podman and Kubernetes.",
        discussion: """
            Typical use on the isolated host:
              ferry-appliance import bundles/*.tar      verify and import, all or nothing per bundle
              ferry-appliance serve                     HTTPS on :5000 with a CA made for you
              ferry-appliance client-config HOST:5000   what each client needs to trust it

            Images keep their source name: docker.io/library/nginx:1.25 is stored as repository \
            docker.io/library/nginx, tag 1.25. A source host with a port is spelled with `_` \
            (registry.local:5000/team/app becomes registry.local_5000/team/app), since repository \
            names cannot hold a colon.

            Settings come from flags, then the configuration file (--config, $FERRY_CONFIG, or \
            /etc/ferry/appliance.yml), then defaults. The data directory is --data-dir, else \
            $FERRY_DATA_DIR, else dataDir in the file, else /var/lib/ferry.

            Exit codes: 0 success; 1 failure; 64 bad usage or configuration; 65 a bundle failed \
            verification or is a delta whose base is missing (nothing was imported from it), or `check` found \
            a problem.
            """,
        version: FerryVersion.string,
        subcommands: [
            ImportCommand.self, ServeCommand.self, ImagesCommand.self, InventoryCommand.self, GarbageCommand.self,
            CheckCommand.self,
            UserCommand.self,
            CACommand.self,
            ClientConfigCommand.self,
        ]
    )

    public init() {}
}

/// Options every command that touches the store takes.
struct StoreOptions: ParsableArguments {
    @Option(
        name: .customLong("data-dir"),
        help:
            "The appliance's data directory (default: $FERRY_DATA_DIR, else dataDir in the config, else /var/lib/ferry)."
    )
    var dataDirectory: String?

    @Option(
        name: .customLong("config"),
        help: "Configuration file (default: $FERRY_CONFIG, else /etc/ferry/appliance.yml when it exists).")
    var configPath: String?

    /// The configuration file's settings and where they came from.
    func configuration() throws(ConfigurationError) -> (ApplianceConfiguration, String?) {
        try ApplianceConfiguration.load(explicitPath: configPath)
    }

    func resolved(_ configuration: ApplianceConfiguration) -> String {
        dataDirectory ?? ProcessInfo.processInfo.environment["FERRY_DATA_DIR"].flatMap { $0.isEmpty ? nil : $0 }
            ?? configuration.dataDir ?? ApplianceConfiguration.defaultDataDirectory
    }

    var resolved: String {
        get throws { try resolved(configuration().0) }
    }
}

/// Runs a command body, printing errors as `ferry-appliance: error: …` lines and mapping them to
/// the documented exit codes.
func reportingApplianceErrors(_ body: () async throws -> Void) async throws {
    do {
        try await body()
    } catch let error as ExitCode {
        throw error
    } catch let error as CleanExit {
        throw error
    } catch {
        for line in String(describing: error).split(separator: "\n") {
            FileHandle.standardError.write(Data("ferry-appliance: error: \(line)\n".utf8))
        }
        switch error {
        case let error as ImportError:
            switch error {
            case .invalid, .baseMissing, .duplicateVolume, .setAlreadyImported, .volumeContentGone, .partsDoNotJoin,
                .unsignedImages:
                throw ExitCode(65)
            case .archive(let error): throw ExitCode(error.isUsage ? 64 : 65)
            default: break
            }
            throw ExitCode(1)
        case is ConfigurationError, is ValidationError, is SigningError: throw ExitCode(64)
        case is CheckFailed: throw ExitCode(65)
        default: throw ExitCode(1)
        }
    }
}

/// `ferry-appliance import`.
struct ImportCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import",
        abstract: "Verify bundles and import them; each bundle's images appear all at once, or not at all.",
        discussion: """
            Each bundle is read once (a file, or - for standard input): every blob is verified as \
            it is stored, and only when the whole bundle verified do its tags and manifests become \
            visible. A bundle imported before is verified again and changes nothing (--skip-known \
            skips reading a known bundle past its header: fast, but an altered copy goes unnoticed); \
            a newer bundle moves tags. A killed \
            import leaves the store as it was; run it again to finish. Each import is recorded in \
            DATA/imports/; the registry's metadata is in DATA/registry.db (SQLite). A running `serve` sees imported images at once.

            With import.requireSignature in the configuration, a bundle must be signed by one of \
            the trusted keys (import.trustedKeys, --trust-key).

            Other tools' OCI image layout tars are imported too, with the same checks: `skopeo copy \
            ... oci-archive:FILE[:NAME]` (one image or --all), `ctr images export`, Docker 25+'s \
            `docker save`; uncompressed, gzip or zstd. They are read twice (structure, then every \
            blob verified and stored), so they must be files. Images are named by \
            io.containerd.image.name, or org.opencontainers.image.ref.name when it is a full \
            reference; a tag-only name needs --name REPOSITORY.

            Volumes of a set (`ferry export --volume-size`, `ferry split`) are taken in any order, \
            over as many runs as it takes: each volume is verified and stored on arrival, and the \
            set's images appear in one step when its last volume is in. A volume given twice is \
            refused (exit 65). --status lists the sets still incomplete and the volumes they need. \
            (`cat NAME.vol*.tar | ferry-appliance import -` does not work: each volume is a tar of \
            its own; import them one by one, in any order.)

            Examples:
              ferry-appliance import site.bundle.tar
              ferry-appliance import /media/disc/site.vol003.tar
              ferry-appliance import --status
              ferry-appliance import nginx.oci.tar --name mirror/nginx   # skopeo's oci-archive:nginx.oci.tar:1.25
              ferry-appliance import --forget 1f0c2a   # give up a set that will never be complete
            """
    )

    @Argument(help: "Bundles (or volumes) to import, or - for standard input.")
    var bundles: [String] = []

    @Option(
        help: """
            For another tool's archive whose index.json names images by tag only (skopeo's \
            oci-archive:FILE:1.0): the repository to import them into, as REPOSITORY:TAG.
            """)
    var name: String?

    @Option(
        name: .customLong("name-prefix"),
        help: """
            Serve every image of these bundles or archives under this prefix: `mirror` serves \
            docker.io/library/nginx as mirror/docker.io/library/nginx.
            """)
    var namePrefix: String?

    @Flag(help: "List volume sets with volumes still to come, and which they need.")
    var status = false

    @Option(
        name: .customLong("forget"),
        help: "Give up an incomplete volume set (its id, or a prefix of it): gc may then take what it stored.")
    var forget: String?

    @OptionGroup var store: StoreOptions

    @Option(
        name: .customLong("trust-key"), help: "Require a signature by this key, or one in this directory (repeatable).")
    var trustKeys: [String] = []

    @Flag(
        name: .customLong("skip-known"),
        help: "Do not re-read a bundle already imported whose tags are unchanged (only its header and signature).")
    var skipKnown = false

    @Flag(
        help: """
            For a delta bundle: re-hash every stored blob it relies on, not only check its size.
            """)
    var paranoid = false

    @Flag(help: "Print the import results as JSON.")
    var json = false

    func run() async throws {
        try await reportingApplianceErrors {
            let (configuration, configPath) = try store.configuration()
            let keyPaths = trustKeys + (configuration.import?.trustedKeys ?? [])
            if configuration.import?.requireSignature == true && keyPaths.isEmpty {
                throw ConfigurationError.requireSignatureWithoutKeys(configPath)
            }
            let keys = try keyPaths.flatMap { try PublicKey.load($0) }
            let registry = try RegistryStore(root: store.resolved(configuration))
            if status {
                try showStatus(registry)
                return
            }
            if let forget {
                let matches = try registry.pendingVolumeSets().filter { $0.id.hasPrefix(forget) && !forget.isEmpty }
                guard matches.count == 1, let set = matches.first else {
                    throw ValidationError(
                        "--forget \(forget): \(matches.isEmpty ? "no" : "more than one") incomplete set has that id "
                            + "(see --status)")
                }
                try registry.withVolumeSetLock(set.id) { try registry.finishVolumeSet(set.id) }
                print("forgot set \(set.id.prefix(12)) (\(set.arrived.count) of \(set.count) volume(s) had arrived)")
                return
            }
            guard !bundles.isEmpty else {
                throw ValidationError("name a bundle to import (or - for standard input), or --status")
            }
            let prefix: RepositoryName?
            do {
                prefix = try namePrefix.map { try RepositoryName($0) }
            } catch {
                throw ValidationError("--name-prefix \(namePrefix ?? ""): \(error)")
            }
            let imageKeys = try (configuration.import?.requireImageSignatures ?? []).map {
                try ImageSignatureKey(pemFile: $0)
            }
            let importer = Importer(
                store: registry, reader: BundleReader(trustedKeys: keys), paranoid: paranoid, namePrefix: prefix,
                imageKeys: imageKeys)
            var results: [Importer.Result] = []
            for bundle in bundles {
                let result = try importer.importBundle(bundle, skipKnown: skipKnown, repository: name)
                results.append(result)
                if !json { Self.describe(result, bundle: bundle).forEach { print($0) } }
            }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(results) + Data("\n".utf8))
            }
        }
    }
}

extension ImportCommand {
    /// What an import did, as lines for a terminal: the headline, then the images made visible.
    static func describe(_ result: Importer.Result, bundle: String) -> [String] {
        let stored = "\(result.blobsWritten) blob(s) stored, \(result.blobsAlreadyPresent) already present"
        let signer = result.signer.map { ", signed by \($0)" } ?? ""
        let headline: String
        if let volume = result.volume {
            let set = "volume \(volume.number) of \(volume.count)"
            let id = volume.set.split(separator: ":").last?.prefix(12) ?? ""
            guard volume.stillNeeded.isEmpty else {
                return [
                    "\(bundle): \(set) of set \(id) stored: \(stored); still needed: "
                        + volume.stillNeeded.map(String.init).joined(separator: ", ")
                        + " (nothing visible until the last)"
                ]
            }
            headline =
                "\(bundle): \(set), the last of set \(id): \(stored); the set is imported: "
                + "\(result.images.count) image(s)\(signer)"
        } else {
            let what =
                result.skippedUnread
                ? "already imported, unchanged; the file was not re-read (--skip-known)"
                : (result.unchanged ? "already imported, unchanged (verified again)" : "imported")
            headline = "\(bundle): \(what): \(result.images.count) image(s), \(stored)\(signer)"
        }
        return [headline]
            + result.images.map { "  \($0.repository)\($0.tag.map { ":\($0)" } ?? "")@\($0.digest)" }
    }

    func showStatus(_ registry: RegistryStore) throws {
        let sets = try registry.pendingVolumeSets()
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            FileHandle.standardOutput.write(try encoder.encode(sets) + Data("\n".utf8))
            return
        }
        guard !sets.isEmpty else {
            print("no volume set is waiting for volumes")
            return
        }
        for set in sets {
            print(
                "set \(set.id.prefix(12)) (first seen \(set.started) in \(set.firstVolume)): "
                    + "\(set.arrived.count) of \(set.count) volume(s) stored; still needed: "
                    + set.needed.map(String.init).joined(separator: ", ") + "; \(set.images.count) image(s) waiting")
        }
    }
}

/// `ferry-appliance images`: what the store serves.
struct ImagesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "images", abstract: "List the repositories, tags and digests the store serves.")

    @OptionGroup var store: StoreOptions

    @Flag(help: "Print JSON.")
    var json = false

    func run() async throws {
        try await reportingApplianceErrors {
            let registry = try RegistryStore(root: try store.resolved)
            let listing = try registry.listing()
            let carried = try Self.carried(listing, registry: registry)
            if json {
                struct Listing: Encodable {
                    var repositories: [String: RepositoryListing]
                    /// `REPOSITORY:TAG` → what refers to its manifest (signature, attestation, sbom, referrers).
                    var carries: [String: [String]]
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                let document = Listing(
                    repositories: Dictionary(uniqueKeysWithValues: listing.map { ($0.name.value, $0) }),
                    carries: carried)
                FileHandle.standardOutput.write(try encoder.encode(document) + Data("\n".utf8))
                return
            }
            for repository in listing {
                for (tag, digest) in repository.tags.sorted(by: { $0.key < $1.key }) {
                    let kinds = carried["\(repository.name):\(tag)"].map { "  [\($0.joined(separator: ", "))]" } ?? ""
                    print("\(repository.name):\(tag)  \(digest)\(kinds)")
                }
            }
        }
    }

    /// For each tag that is not itself a signature, attestation, SBOM or referrers tag: what
    /// refers to its manifest, by cosign's tags and by the referrers index.
    static func carried(_ listing: [RepositoryListing], registry: RegistryStore) throws -> [String: [String]] {
        var carried: [String: [String]] = [:]
        for repository in listing {
            var kinds: [Digest: Set<String>] = [:]
            for tag in repository.tags.keys {
                if let referrer = ReferrerTag(tag: tag) {
                    kinds[referrer.subject, default: []].insert(referrer.kind.rawValue)
                }
            }
            for (tag, digest) in repository.tags where ReferrerTag(tag: tag) == nil {
                var found = kinds[digest] ?? []
                if try !registry.referrers(of: digest, in: repository.name, artifactType: nil).isEmpty {
                    found.insert("referrers")
                }
                if !found.isEmpty { carried["\(repository.name):\(tag)"] = found.sorted() }
            }
        }
        return carried
    }
}
