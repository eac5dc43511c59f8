import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCIStore
import OCITar

/// `ferry-appliance inventory`: what this appliance holds, for the connected side's next export
/// to carry only what is new (`ferry export --against FILE`).
struct InventoryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inventory",
        abstract: "Write what the appliance holds, so the next bundle can be a delta.",
        discussion: """
            Lists every blob a repository serves (digest and size), every repository's tags and \
            manifests, and the bundles imported. Carry the file to the connected side:
              ferry-appliance inventory -o site.inventory.json
              ferry export -f images.txt --against site.inventory.json -o update.tar
            Signed (--sign-key), the exporter can require it to come from this site:
              ferry-appliance inventory -o site.inventory.json.gz --sign-key site.key
              ferry export -f images.txt --against site.inventory.json.gz --site-key site.pub -o update.tar
            The delta bundle carries only the blobs the inventory does not list; importing it here \
            checks that every blob it relies on is still present before anything becomes visible.
            """)

    @OptionGroup var store: StoreOptions

    @Option(
        name: .shortAndLong,
        help: "Where to write the inventory (JSON, gzip-compressed when the name ends in .gz; - for standard output).")
    var output: String

    @Option(
        name: .customLong("sign-key"),
        help: "Sign the inventory with this Ed25519 private key (`ferry keygen`); `ferry export --site-key` checks it.")
    var signKey: String?

    func validate() throws {
        if let problem = SystemError.notAFileToWrite(output, example: "inventory.json") {
            throw ValidationError("--output \(problem)")
        }
    }

    func run() async throws {
        try await reportingApplianceErrors {
            let storage = try RegistryStore(root: try store.resolved)
            var inventory = try SiteInventory(storage: storage, created: Date())
            if let signKey { inventory = try inventory.signed(with: try SigningKey(pemFile: signKey)) }
            let json = try inventory.encoded()
            let bytes = output.hasSuffix(".gz") ? try Gzip.compress(json) : json
            if output == "-" {
                FileHandle.standardOutput.write(Data(bytes))
            } else {
                try FileSystem.replace(output, with: bytes, mode: 0o644)
                FileHandle.standardError.write(
                    Data(
                        "Wrote \(output): \(inventory.blobs.count) blob(s), \(inventory.repositories.count) repositories, \(bytes.count) bytes\n"
                            .utf8))
            }
        }
    }
}

extension SiteInventory {
    /// What `storage` holds now. Blob sizes come from the files (a blob whose file is gone is left
    /// out: a delta must not rely on it).
    init(storage: any RegistryStorage, created: Date) throws {
        var blobs: [BundleManifest.FileDigest] = []
        for digest in try storage.heldBlobs() {
            guard let size = FileSystem.size(of: storage.blobs.path(of: digest)) else { continue }
            blobs.append(.init(digest: digest, size: size))
        }
        var host = [CChar](repeating: 0, count: 256)
        let name =
            gethostname(&host, host.count) == 0
            ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "unknown"
        self.init(
            appliance: name, created: BundleManifest.timestamp(Int64(created.timeIntervalSince1970)), blobs: blobs,
            repositories: try storage.listing().map {
                .init(name: $0.name.value, tags: $0.tags, manifests: $0.manifests)
            },
            bundles: storage.importRecordIDs())
    }
}
