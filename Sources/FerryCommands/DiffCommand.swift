import ArgumentParser
import Foundation
import OCIBundle
import OCICore

/// `ferry diff A B`: what changed between two bundles, or a site inventory and a bundle.
public struct DiffCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "List the images added, removed or changed from A to B, and the bytes B adds.",
        discussion: """
            A and B are bundles, bundle manifests (ferry-bundle.json) or site inventories \
            (`ferry-appliance inventory`), in any mix. Images are compared by the name the appliance \
            serves them under (repository and tag); a delta bundle's images count with the blobs it \
            relies on.

            Examples:
              ferry diff site.inventory.json update.tar       what importing update.tar changes at the site
              ferry diff march.tar april.tar --json
            """)

    @Argument(help: "The earlier side.") var first: String
    @Argument(help: "The later side.") var second: String

    @Flag(help: "Print the difference as JSON on standard output.")
    var json = false

    public init() {}

    public struct Difference: Codable, Sendable, Equatable {
        public struct Change: Codable, Sendable, Equatable {
            public var image: String
            public var from: String?
            public var to: String?
        }
        public var added: [Change]
        public var removed: [Change]
        public var changed: [Change]
        /// Blobs B holds that A does not, and their bytes.
        public var newBlobs: Int
        public var newBytes: Int64
        /// Blobs A holds that B does not, and their bytes.
        public var goneBlobs: Int
        public var goneBytes: Int64
    }

    /// One side: image name → top digest, and blob → size.
    struct Holdings {
        var images: [String: Digest] = [:]
        var blobs: [Digest: Int64] = [:]
    }

    public func run() async throws {
        try await reportingErrors {
            let difference = Self.compare(try Self.holdings(first), try Self.holdings(second))
            if json {
                try printJSON(difference)
                return
            }
            for change in difference.added { print("+ \(change.image)  \(change.to ?? "")") }
            for change in difference.removed { print("- \(change.image)  \(change.from ?? "")") }
            for change in difference.changed {
                print("~ \(change.image)  \(change.from ?? "") -> \(change.to ?? "")")
            }
            print(
                "\(difference.added.count) added, \(difference.removed.count) removed, "
                    + "\(difference.changed.count) changed; \(second) adds \(difference.newBlobs) blob(s), "
                    + "\(ProgressReporter.bytes(difference.newBytes)); \(difference.goneBlobs) blob(s), "
                    + "\(ProgressReporter.bytes(difference.goneBytes)) of \(first) are not in it")
        }
    }

    static func compare(_ a: Holdings, _ b: Holdings) -> Difference {
        var difference = Difference(
            added: [], removed: [], changed: [], newBlobs: 0, newBytes: 0, goneBlobs: 0, goneBytes: 0)
        for name in Set(a.images.keys).union(b.images.keys).sorted() {
            switch (a.images[name], b.images[name]) {
            case (nil, let to?): difference.added.append(.init(image: name, to: to.description))
            case (let from?, nil): difference.removed.append(.init(image: name, from: from.description))
            case (let from?, let to?) where from != to:
                difference.changed.append(.init(image: name, from: from.description, to: to.description))
            default: break
            }
        }
        for (digest, size) in b.blobs where a.blobs[digest] == nil {
            difference.newBlobs += 1
            difference.newBytes += size
        }
        for (digest, size) in a.blobs where b.blobs[digest] == nil {
            difference.goneBlobs += 1
            difference.goneBytes += size
        }
        return difference
    }

    /// Reads a bundle (its header only), a bundle manifest, or an inventory.
    static func holdings(_ path: String) throws -> Holdings {
        var holdings = Holdings()
        let record = try SiteRecord.read(path)
        holdings.blobs = record.blobs
        switch record {
        case .inventory(let inventory, _):
            for repository in inventory.repositories {
                for (tag, digest) in repository.tags { holdings.images["\(repository.name):\(tag)"] = digest }
            }
        case .bundle(let manifest, _):
            for image in manifest.images {
                let reference = try Reference(image.reference)
                let name = try reference.servedRepositoryName().value
                holdings.images[reference.tag.map { "\(name):\($0.value)" } ?? "\(name)@\(image.digest)"] =
                    image.digest
            }
        }
        return holdings
    }
}
