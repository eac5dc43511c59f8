import ArgumentParser
import Foundation
import OCIStore

/// `ferry-appliance gc`.
struct GarbageCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Remove blobs no manifest references (safe while serve, imports and pushes run).",
        discussion: """
            Deleting a manifest or a tag only unlinks it; gc reclaims the space. It sweeps in short \
            transactions (pushes and imports wait for one batch at most, downloads not at all), \
            and keeps anything younger than the grace period: an import writes its blobs before \
            it commits them, and a push uploads blobs before the manifest that references them. \
            Uploads untouched for a day are dropped too.

            Examples:
              ferry-appliance gc --dry-run          what would go, and how many bytes
              ferry-appliance gc --grace-period 0   everything unreferenced, now (nothing else running)
            """)

    @OptionGroup var store: StoreOptions

    @Flag(name: .customLong("dry-run"), help: "Report what would be removed; remove nothing.")
    var dryRun = false

    @Option(
        name: .customLong("grace-period"),
        help: "Keep blobs younger than this: seconds, or with a unit (30m, 1h, 2d). Default 1h.")
    var gracePeriod: String = "1h"

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        try await reportingApplianceErrors {
            guard let grace = Self.seconds(gracePeriod) else {
                throw ValidationError("--grace-period \(gracePeriod): expected seconds or a number with s, m, h or d")
            }
            let registry = try RegistryStore(root: store.resolved)
            let report = try registry.collectGarbage(dryRun: dryRun, gracePeriod: grace)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(report) + Data("\n".utf8))
                return
            }
            let verb = dryRun ? "would remove" : "removed"
            print(
                "\(verb) \(report.blobsRemoved.count) blob(s), \(report.bytesRemoved) bytes; "
                    + "\(report.linksRemoved) unreferenced repository link(s); \(report.blobsKept) blob(s) kept"
                    + (dryRun ? "" : "; \(report.uploadsExpired) expired upload(s)"))
            for digest in report.blobsRemoved { print("  \(digest)") }
        }
    }

    /// `90`, `90s`, `30m`, `1h`, `2d` → seconds.
    static func seconds(_ text: String) -> Int? {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        if let last = text.last, let unit = units[last] {
            return Int(text.dropLast()).flatMap { $0 >= 0 ? $0 * unit : nil }
        }
        return Int(text).flatMap { $0 >= 0 ? $0 : nil }
    }
}

/// `ferry-appliance check`.
struct CheckCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Re-hash every stored blob and check every manifest's references (exit 65 on any problem).",
        discussion: """
            Reads every blob file and compares its bytes with its digest, and checks that every \
            manifest the registry serves has its file, that an image's config and layers are linked \
            to its repository and present, and that every tag points at a manifest its repository \
            holds. Safe while serve runs; it reads every byte once, so it takes as long as reading \
            the store.

            --repair removes blob files whose bytes are corrupt and lists the images (repository:tag) \
            that now need a re-import of their bundle.

            Examples:
              ferry-appliance check
              ferry-appliance check --json | jq '.problems[]'
              ferry-appliance check --repair
            """)

    @OptionGroup var store: StoreOptions

    @Flag(help: "Remove corrupt blob files and report the images that need a re-import.")
    var repair = false

    @Flag(help: "Print the report as JSON.")
    var json = false

    func run() async throws {
        try await reportingApplianceErrors {
            let registry = try RegistryStore(root: store.resolved)
            let report = try registry.check(repair: repair)
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
                FileHandle.standardOutput.write(try encoder.encode(report) + Data("\n".utf8))
            } else {
                print(
                    "checked \(report.blobsChecked) blob(s) (\(report.bytesChecked) bytes) and "
                        + "\(report.manifestsChecked) manifest(s): \(report.problems.count) problem(s)")
                for problem in report.problems { print("  \(problem)") }
                for digest in report.removed { print("removed corrupt blob \(digest)") }
                for image in report.needReimport { print("needs a re-import: \(image)") }
            }
            if !report.problems.isEmpty { throw CheckFailed(count: report.problems.count) }
        }
    }
}

/// `check` found problems (exit 65).
struct CheckFailed: Error, CustomStringConvertible {
    var count: Int
    var description: String { "the store has \(count) problem(s)" }
}
