import Foundation
import OCICore
import Testing

/// Whole repositories with tag filters (issue 15, point 1): the tags listed from the real
/// distribution registry, filtered by semver range, regex, exclusions and latest N, from the command
/// line and from a YAML list entry.
@Suite(.serialized)
struct TagSelectionTests {
    @Test func wholeRepositoriesAreFilteredByTheirTags() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        _ = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        for tag in ["1.1.0", "1.2.0", "1.2.0-alpine", "2.0.0", "2.1.0-rc.1", "edge"] {
            try Shell.run(
                ["skopeo", "copy", "-q", "--preserve-digests"] + registry.skopeoFlags("src")
                    + registry.skopeoFlags("dest")
                    + ["docker://\(registry.host)/test/single:1.0", "docker://\(registry.host)/test/single:\(tag)"])
        }
        func exported(_ arguments: [String]) throws -> [String] {
            let result = try Ferry.run(
                ["export", "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "--json", "--no-referrers"] + arguments
                    + registry.ferryTrustFlags)
            let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
            return (summary?["images"] as? [[String: Any]] ?? []).compactMap { $0["reference"] as? String }
                .map { String($0.split(separator: ":").last ?? "") }
        }
        let repository = "\(registry.host)/test/single"
        #expect(try exported(["--all-tags", repository, "--tags-semver", ">=1.1 <2"]) == ["1.1.0", "1.2.0"])
        #expect(try exported(["--all-tags", repository, "--tags-latest", "2"]) == ["2.0.0", "1.2.0"])
        let regex = try exported(["--all-tags", repository, "--tags-regex", "^1\\.", "--exclude-tags", "alpine"])
        #expect(regex == ["1.0", "1.1.0", "1.2.0"], "\(regex)")
        try """
        images:
          - \(registry.host)/test/multi:1.0
          - name: \(repository)
            allTags: true
            tagsSemver: ">=2.1.0-rc.0"

        """.write(toFile: "\(work)/list.yaml", atomically: true, encoding: .utf8)
        #expect(try exported(["-f", "\(work)/list.yaml"]) == ["1.0", "2.1.0-rc.1"])
        // Filters keeping nothing, and filters without a whole repository, are told apart.
        let none = try Ferry.run(
            [
                "export", "-o", "\(work)/n.tar", "--cache", "\(work)/cache", "--all-tags", repository, "--tags-semver",
                ">=9",
            ]
                + registry.ferryTrustFlags, check: false)
        #expect(none.status != 0 && none.stderr.contains("keep no tag of \(repository)"), "\(none.stderr)")
        let stray = try Ferry.run(
            ["export", "-o", "\(work)/n.tar", "\(repository):1.0", "--tags-latest", "1"] + registry.ferryTrustFlags,
            check: false)
        #expect(stray.status == 64 && stray.stderr.contains("--all-tags"), "\(stray.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(work)/n.tar"))
    }
}
