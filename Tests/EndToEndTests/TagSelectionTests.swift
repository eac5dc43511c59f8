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
            try SeededRegistry.retag(registry, "test/single:1.0", as: "test/single:\(tag)")
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

    /// image-syncer's files as they are (issue 15, point 2): `--images images.json --auth auth.json`,
    /// tags listed, a whole repository, renames carried into the bundle so the appliance serves the
    /// destination names with the source's digests.
    @Test func imageSyncerFilesWithRenames() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        try SeededRegistry.retag(registry, "test/single:1.0", as: "test/single:1.1")
        let host = registry.host
        // A cosign signature of test/single:1.0: it follows each name the image is carried under.
        let signed = try #require(seeded.images["test/single:1.0"])
        let builder = try ImageBuilder(directory: "\(work)/artifacts")
        var payload = try builder.addBlob(
            Array(#"{"critical":{"image":{"docker-manifest-digest":"\#(signed)"}}}"#.utf8),
            mediaType: "application/vnd.dev.cosign.simplesigning.v1+json")
        payload.annotations = ["dev.cosignproject.cosign/signature": "MEUCIQ=="]
        try builder.tag(
            try builder.addImage(platform: Platform(os: "linux", architecture: "amd64"), layers: [payload]), as: "sig")
        let signatureTag = "sha256-\(signed.encoded).sig"
        try builder.push("sig", to: registry, as: "test/single:\(signatureTag)")
        try "\(host)/test/single:1.0\n".write(toFile: "\(work)/direct.txt", atomically: true, encoding: .utf8)
        try """
        {
          "\(host)/test/single:1.0": ["\(host)/copies/a", "\(host)/copies/b"],
          "\(host)/test/single:1.0,1.1": "\(host)/renamed/app",
          "\(host)/test/multi": "mirror.example.com/team/multi",
          "\(host)/test/nested/docker:v2": ["\(host)/copies/docker:stable"]
        }
        """.write(toFile: "\(work)/images.json", atomically: true, encoding: .utf8)
        try #"{"\#(host)": {"username": "nobody", "password": "unused-here", "insecure": false}}"#.write(
            toFile: "\(work)/auth.json", atomically: true, encoding: .utf8)
        let result = try Ferry.run(
            [
                "export", "--images", "\(work)/images.json", "--auth", "\(work)/auth.json", "-f", "\(work)/direct.txt",
                "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "--json",
            ] + registry.ferryTrustFlags)
        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let carried = Set((summary?["images"] as? [[String: Any]] ?? []).compactMap { $0["reference"] as? String })
        let expected: Set<String> = [
            "\(host)/renamed/app:1.0", "\(host)/renamed/app:1.1", "mirror.example.com/team/multi:1.0",
            "\(host)/copies/docker:stable", "\(host)/test/single:1.0", "\(host)/copies/a:1.0", "\(host)/copies/b:1.0",
        ]
        #expect(carried.intersection(expected) == expected, "\(carried)")
        // The signature under every name its image is carried under, and nowhere else.
        let signatures = carried.filter { $0.hasSuffix(signatureTag) }
        #expect(
            signatures
                == Set(["test/single", "copies/a", "copies/b", "renamed/app"].map { "\(host)/\($0):\(signatureTag)" }),
            "\(signatures)")
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        try appliance.command(["import", "\(work)/b.tar"])
        let served = Reference.servedHost(host)
        for (name, source) in [
            ("\(served)/renamed/app:1.1", "test/single:1.0"), ("mirror.example.com/team/multi:1.0", "test/multi:1.0"),
            ("\(served)/copies/docker:stable", "test/nested/docker:v2"),
        ] {
            let raw = try Shell.run([
                "skopeo", "inspect", "--raw", "--cert-dir", try appliance.certDirectory(),
                "docker://\(appliance.host)/\(name)",
            ]).stdout
            #expect(Digest.of(Array(raw.utf8)) == seeded.images[source], "\(name)")
        }
        // A destination that cannot take what the source names is refused before anything is fetched.
        try #"{"\#(host)/test/multi": "\#(host)/one/tag:only"}"#.write(
            toFile: "\(work)/bad.json", atomically: true, encoding: .utf8)
        let bad = try Ferry.run(
            ["export", "--images", "\(work)/bad.json", "-o", "\(work)/bad.tar"] + registry.ferryTrustFlags, check: false
        )
        #expect(bad.status == 64 && bad.stderr.contains("cannot go to one tag"), "\(bad.stderr)")
    }
}
