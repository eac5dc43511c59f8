import Foundation
import OCICore
import Testing

/// Volumes (issue 12): a bundle cut into media-sized volumes, each verifiable alone, imported in
/// any order over several runs while `serve` runs, the images appearing only with the last.
@Suite(.serialized)
struct VolumeTests {
    static let mutator = "\(Shell.supportDirectory)/bundle_mutator.py"

    @Test func aFiveVolumeSetImportsInAnyOrderAndAppearsWithTheLast() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // A 2.5 MiB layer (more than two volumes of 1 MiB: carried in parts), two of 0.7 MiB.
        let builder = try ImageBuilder(directory: "\(work)/images")
        let big = try builder.addRandomLayer(size: 5 << 19)
        let amd64 = Platform(os: "linux", architecture: "amd64")
        try builder.tag(
            try builder.addImage(platform: amd64, layers: [big, try builder.addRandomLayer(size: 700 << 10)]),
            as: "big")
        try builder.tag(
            try builder.addImage(platform: amd64, layers: [try builder.addRandomLayer(size: 700 << 10)]), as: "small")
        try builder.push("big", to: registry, as: "test/big:1")
        try builder.push("small", to: registry, as: "test/small:1")
        let images = ["test/big:1", "test/small:1"].map { "\(registry.host)/\($0)" }
        let served = registry.host.replacingOccurrences(of: ":", with: "_")
        try Ferry.run(["keygen", "-o", "\(work)/key"])
        let epoch = ["SOURCE_DATE_EPOCH": "1700000000"]

        // The export writes five volumes of at most 1 MiB; the plan said so before any layer.
        let planned = try Ferry.run(
            ["plan", "--json", "--cache", "\(work)/plan-cache", "--volume-size", "1M"] + images
                + registry.ferryTrustFlags)
        let plan = try JSONSerialization.jsonObject(with: Data(planned.stdout.utf8)) as? [String: Any]
        #expect(plan?["volumes"] as? Int == 5, "\(planned.stdout)")
        let exported = try Ferry.run(
            [
                "export", "-o", "\(work)/site.tar", "--cache", "\(work)/cache", "--volume-size", "1M", "--json",
                "--sign-key", "\(work)/key.key",
            ] + images + registry.ferryTrustFlags, environment: epoch)
        let summary = try JSONSerialization.jsonObject(with: Data(exported.stdout.utf8)) as? [String: Any]
        let volumes = (summary?["volumes"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
        #expect(volumes == (1...5).map { "\(work)/site.vol00\($0).tar" }, "\(exported.stdout)")
        #expect(!FileManager.default.fileExists(atPath: "\(work)/site.tar"))
        for volume in volumes {
            #expect((FileSystemSize.of(volume) ?? .max) <= 1 << 20, "\(volume) is over 1 MiB")
            #expect(FileManager.default.fileExists(atPath: volume + ".sha256"))
        }
        let manifest = try BundleInspector.manifest(volumes[0])
        let parts = (manifest["volumes"] as? [String: Any])?["parts"] as? [[String: Any]] ?? []
        #expect(parts.count == 3 && parts.allSatisfy { $0["blob"] as? String == big.digest.description })

        // Each volume verifies alone (with the signer trusted); together they make the whole set.
        let alone = try Ferry.run(["verify", volumes[2], "--trust-key", "\(work)/key.pub"])
        #expect(alone.stdout.contains("volume 3 of 5"), "\(alone.stdout)")
        try Ferry.run(["verify", "--trust-key", "\(work)/key.pub"] + volumes)

        // `ferry split` of the plain bundle (same time, same key) writes the very same volumes.
        try Ferry.run(
            ["export", "-o", "\(work)/plain.tar", "--cache", "\(work)/cache", "--sign-key", "\(work)/key.key"] + images
                + registry.ferryTrustFlags, environment: epoch)
        let unsigned = try Ferry.run(["split", "\(work)/plain.tar", "--volume-size", "1M"], check: false)
        #expect(unsigned.status == 64 && unsigned.stderr.contains("--sign-key"), "\(unsigned.stderr)")
        try Ferry.run(
            [
                "split", "\(work)/plain.tar", "--volume-size", "1M", "-o", "\(work)/split.tar", "--sign-key",
                "\(work)/key.key",
            ], environment: epoch)
        for n in 1...5 {
            #expect(
                FileManager.default.contentsEqual(atPath: "\(work)/split.vol00\(n).tar", andPath: volumes[n - 1]),
                "split volume \(n) differs from the export's")
        }

        // Broken sets, verified: a duplicate and a missing volume; a volume of another set.
        let twice = try Ferry.run(["verify", volumes[0], volumes[0], volumes[1], volumes[2], volumes[3]], check: false)
        #expect(twice.status == 65)
        #expect(
            twice.stderr.contains("volume 1 given twice") && twice.stderr.contains("volume(s) 5 of 5 not given"),
            "\(twice.stderr)")
        try Ferry.run(
            ["export", "-o", "\(work)/other.tar", "--cache", "\(work)/cache", "--volume-size", "1M"] + images
                + registry.ferryTrustFlags)
        let mixed = try Ferry.run(
            ["verify", volumes[0], volumes[1], "\(work)/other.vol003.tar", volumes[3], volumes[4]], check: false)
        #expect(mixed.status == 65 && mixed.stderr.contains("a volume of another set"), "\(mixed.stderr)")

        // The site imports 3, 1, 5, 2, 4 in separate runs while serving; nothing shows before the last.
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        let manifestPath = "/v2/\(served)/test/big/manifests/1"
        let accept = ["Accept: application/vnd.oci.image.manifest.v1+json"]
        for (step, number) in [3, 1, 5, 2].enumerated() {
            let result = try appliance.command(["import", volumes[number - 1]])
            #expect(result.stdout.contains("volume \(number) of 5"), "\(result.stdout)")
            #expect(try appliance.curl(manifestPath, headers: accept).status == 404, "visible after volume \(number)")
            let status = try appliance.command(["import", "--status", "--json"]).stdout
            let sets = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [[String: Any]] ?? []
            #expect(sets.count == 1 && (sets.first?["arrived"] as? [Int])?.count == step + 1, "\(status)")
            // gc keeps what the set's volumes stored, however old.
            try appliance.command(["gc", "--grace-period", "0"])
        }
        let needs = try appliance.command(["import", "--status"]).stdout
        #expect(needs.contains("still needed: 4"), "\(needs)")
        // A volume given twice is refused, and changes nothing.
        let again = try appliance.command(["import", volumes[2]], check: false)
        #expect(again.status == 65 && again.stderr.contains("already imported"), "\(again.stderr)")
        let last = try appliance.command(["import", volumes[3]])
        #expect(last.stdout.contains("the set is imported"), "\(last.stdout)")
        #expect(try appliance.command(["import", "--status"]).stdout.contains("no volume set"))
        let certs = try appliance.certDirectory()
        for name in ["test/big:1", "test/small:1"] {
            let upstream = try SeededRegistry.registryDigest(registry, name)
            let reference = "docker://\(appliance.host)/\(served)/\(name)"
            let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs, reference]).stdout
            #expect(Digest.of(Array(raw.utf8)) == upstream, "\(name)")
            try Shell.run(["skopeo", "copy", "-q", "--src-cert-dir", certs, reference, "oci:\(work)/pulled:x"])
        }
        let pulled = try appliance.pullWithContainerd(
            ["test/big:1", "test/small:1"].map { "\(served)/\($0)" }, work: work)
        for name in ["test/big:1", "test/small:1"] {
            #expect(
                pulled["\(served)/\(name)"] == (try SeededRegistry.registryDigest(registry, name)).description,
                "ctr \(name): \(pulled)")
        }
        #expect(try appliance.command(["check"]).status == 0)
        let after = try appliance.command(["import", volumes[0]], check: false)
        #expect(after.status == 65 && after.stderr.contains("was imported already"), "\(after.stderr)")
    }

    @Test func brokenVolumesAreRefusedAndNothingShows() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let builder = try ImageBuilder(directory: "\(work)/images")
        let amd64 = Platform(os: "linux", architecture: "amd64")
        try builder.tag(
            try builder.addImage(
                platform: amd64,
                layers: [try builder.addRandomLayer(size: 600 << 10), try builder.addRandomLayer(size: 600 << 10)]),
            as: "app")
        try builder.push("app", to: registry, as: "test/app:1")
        try Ferry.run(["keygen", "-o", "\(work)/key"])
        try Ferry.run(
            [
                "export", "-o", "\(work)/set.tar", "--cache", "\(work)/cache", "--volume-size", "1M", "--sign-key",
                "\(work)/key.key", "\(registry.host)/test/app:1",
            ] + registry.ferryTrustFlags)
        let first = "\(work)/set.vol001.tar"
        let second = "\(work)/set.vol002.tar"
        #expect(FileManager.default.fileExists(atPath: second))
        let data = "\(work)/site"

        func refused(_ file: String, _ expected: String, keys: [String] = []) throws {
            let verify = try Ferry.run(["verify", file] + keys, check: false)
            #expect(verify.status == 65, "verify \(file): \(verify.stderr)")
            let result = try Shell.run(
                [ImportTests.appliance, "import", file, "--data-dir", data] + keys, check: false)
            #expect(result.status == 65, "import \(file): \(result.stderr)")
            #expect(result.stderr.contains(file) && result.stderr.contains(expected), "\(result.stderr)")
            let status = try Shell.run([ImportTests.appliance, "import", "--status", "--data-dir", data]).stdout
            #expect(status.contains("no volume set"), "\(file) left a pending set: \(status)")
        }
        // A volume cut short.
        let offsets = try Shell.run(["python3", Self.mutator, second, "/dev/null", "list-offsets"]).stdout
        let cut = offsets.split(separator: "\n").compactMap { Int($0.split(separator: " ").first ?? "") }.max() ?? 0
        try Shell.run(["python3", Self.mutator, second, "\(work)/short.tar", "cut:\(cut)"])
        try refused("\(work)/short.tar", "truncated")
        // A volume header that claims another number.
        try Shell.run(["python3", Self.mutator, second, "\(work)/renumbered.tar", "volume-number:1"])
        try refused("\(work)/renumbered.tar", "belongs to another volume")
        // A tampered bundle manifest in a volume, against the trusted key.
        try Shell.run(["python3", Self.mutator, first, "\(work)/tampered.tar", "tamper-manifest"])
        try refused("\(work)/tampered.tar", "signature", keys: ["--trust-key", "\(work)/key.pub"])
        let shown = try Shell.run([ImportTests.appliance, "images", "--data-dir", data]).stdout
        #expect(!shown.contains("test/app"), "\(shown)")

        // A set that will never be complete can be given up; then gc may take what it stored.
        try Shell.run([ImportTests.appliance, "import", first, "--data-dir", data])
        let waiting = try Shell.run([ImportTests.appliance, "import", "--status", "--json", "--data-dir", data]).stdout
        let id =
            (try JSONSerialization.jsonObject(with: Data(waiting.utf8)) as? [[String: Any]])?.first?["id"] as? String
        #expect(id != nil, "\(waiting)")
        try Shell.run([ImportTests.appliance, "import", "--forget", String((id ?? "").prefix(8)), "--data-dir", data])
        #expect(
            try Shell.run([ImportTests.appliance, "import", "--status", "--data-dir", data]).stdout.contains(
                "no volume set"))
        Thread.sleep(forTimeInterval: 1.1)  // older than a grace period of 0 s
        let swept = try Shell.run([ImportTests.appliance, "gc", "--grace-period", "0", "--json", "--data-dir", data])
            .stdout
        #expect(swept.contains("blobsRemoved") && !swept.contains("\"blobsRemoved\" : [\n\n  ]"), "\(swept)")

        // Too small a volume for what every volume carries: a usage error.
        let tiny = try Ferry.run(
            [
                "export", "-o", "\(work)/tiny.tar", "--cache", "\(work)/cache", "--volume-size", "4K",
                "\(registry.host)/test/app:1",
            ] + registry.ferryTrustFlags, check: false)
        #expect(tiny.status == 64 && tiny.stderr.contains("too small"), "\(tiny.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(work)/tiny.vol001.tar"))
    }
}

extension VolumeTests {
    /// A delta cut into volumes, whose last volume arrives before the base: refused (65), and the
    /// same volume imported again once the base is in completes the set (the last volume is
    /// recorded only by the set's import).
    @Test func aDeltaSetWhoseBaseArrivesLateCompletesWithTheLastVolumeAgain() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let builder = try ImageBuilder(directory: "\(work)/images")
        let amd64 = Platform(os: "linux", architecture: "amd64")
        let base = try builder.addRandomLayer(size: 600 << 10)
        try builder.tag(try builder.addImage(platform: amd64, layers: [base]), as: "v1")
        try builder.tag(
            try builder.addImage(
                platform: amd64,
                layers: [
                    base, try builder.addRandomLayer(size: 700 << 10), try builder.addRandomLayer(size: 700 << 10),
                ]),
            as: "v2")
        try builder.push("v1", to: registry, as: "test/app:1")
        try builder.push("v2", to: registry, as: "test/app:2")
        let cache = ["--cache", "\(work)/cache"] + registry.ferryTrustFlags
        try Ferry.run(["export", "-o", "\(work)/v1.tar", "\(registry.host)/test/app:1"] + cache)
        try Ferry.run(
            [
                "export", "-o", "\(work)/d.tar", "--against", "\(work)/v1.tar", "--volume-size", "1M",
                "\(registry.host)/test/app:2",
            ]
                + cache)
        let volumes = ["\(work)/d.vol001.tar", "\(work)/d.vol002.tar"]
        #expect(volumes.allSatisfy { FileManager.default.fileExists(atPath: $0) })
        #expect(!FileManager.default.fileExists(atPath: "\(work)/d.vol003.tar"))
        let data = ["--data-dir", "\(work)/site"]
        try Shell.run([ImportTests.appliance, "import", volumes[1]] + data)
        let early = try Shell.run([ImportTests.appliance, "import", volumes[0]] + data, check: false)
        #expect(early.status == 65 && early.stderr.contains("lacks"), "\(early.stderr)")
        try Shell.run([ImportTests.appliance, "import", "\(work)/v1.tar"] + data)
        let done = try Shell.run([ImportTests.appliance, "import", volumes[0]] + data).stdout
        #expect(done.contains("the set is imported"), "\(done)")
        let images = try Shell.run([ImportTests.appliance, "images"] + data).stdout
        #expect(images.contains("test/app:2"), "\(images)")
    }
}

enum FileSystemSize {
    static func of(_ path: String) -> Int64? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value
    }
}
