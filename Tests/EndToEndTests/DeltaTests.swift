import Foundation
import OCICore
import Testing

/// The second transfer (issue 12): an appliance holding v1 writes its inventory; the export of v2
/// against it carries every manifest but only the layers the site lacks; the delta imports into
/// that appliance and serves v2 exactly as upstream, and is refused by one without the base.
@Suite(.serialized)
struct DeltaTests {
    @Test func aDeltaCarriesOnlyWhatTheSiteLacksAndImportsWhereTheBaseIs() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // v1 and v2 of two images; v2 shares the large base layer and the amd64 platform.
        let builder = try ImageBuilder(directory: "\(work)/images")
        let base = try builder.addRandomLayer(size: 3 << 20)
        let amd64 = try builder.addImage(
            platform: Platform(os: "linux", architecture: "amd64"),
            layers: [base, try builder.addRandomLayer(size: 1000)])
        func arm64() throws -> Descriptor {
            try builder.addImage(
                platform: Platform(os: "linux", architecture: "arm64", variant: "v8"),
                layers: [base, try builder.addRandomLayer(size: 2000)])
        }
        try builder.tag(try builder.addIndex([amd64, try arm64()]), as: "multi1")
        try builder.tag(try builder.addIndex([amd64, try arm64()]), as: "multi2")
        for version in ["1", "2"] {
            try builder.tag(
                try builder.addImage(
                    platform: Platform(os: "linux", architecture: "amd64"),
                    layers: [base, try builder.addRandomLayer(size: 5000)]), as: "app\(version)")
            try builder.push("multi\(version)", to: registry, as: "test/multi:\(version)")
            try builder.push("app\(version)", to: registry, as: "test/app:\(version)")
        }
        let v1 = ["test/multi:1", "test/app:1"].map { "\(registry.host)/\($0)" }
        let v2 = ["test/multi:2", "test/app:2"].map { "\(registry.host)/\($0)" }
        let served = registry.host.replacingOccurrences(of: ":", with: "_")

        // The site holds v1, served while everything below happens.
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        try Ferry.run(["export", "-o", "\(work)/v1.tar", "--cache", "\(work)/cache"] + v1 + registry.ferryTrustFlags)
        try appliance.command(["import", "\(work)/v1.tar"])
        try appliance.command(["inventory", "-o", "\(work)/site.inventory.json"])
        let inventory =
            try JSONSerialization.jsonObject(
                with: Data(contentsOf: URL(fileURLWithPath: "\(work)/site.inventory.json"))) as? [String: Any]
        // multi:1 is an index, 2 manifests, 2 configs, the base and 2 layers; app:1 adds 3 more.
        #expect((inventory?["blobs"] as? [Any])?.count == 11)
        #expect((inventory?["bundles"] as? [String])?.count == 1)

        // The same inventory gzip-compressed: inspect reads it; so does export --against (below).
        try appliance.command(["inventory", "-o", "\(work)/site.inventory.json.gz"])
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/site.inventory.json.gz")).prefix(2)
                == Data([0x1f, 0x8b]))
        let inspected = try Ferry.run(["inspect", "--json", "\(work)/site.inventory.json.gz"]).stdout
        let summaryOfSite = try JSONSerialization.jsonObject(with: Data(inspected.utf8)) as? [String: Any]
        #expect(summaryOfSite?["blobs"] as? Int == 11 && summaryOfSite?["repositories"] as? Int == 2, "\(inspected)")

        // The plan reads manifests only, and says what the delta will carry.
        let planned = try Ferry.run(
            ["plan", "--json", "--cache", "\(work)/plan-cache", "--against", "\(work)/site.inventory.json"] + v2
                + registry.ferryTrustFlags)
        let plan = try JSONSerialization.jsonObject(with: Data(planned.stdout.utf8)) as? [String: Any]
        #expect((plan?["heldBytes"] as? Int ?? 0) >= 3 << 20)
        #expect(plan?["sharedBlobs"] as? Int == 1)  // the base layer
        let cached = try FileManager.default.contentsOfDirectory(atPath: "\(work)/plan-cache/blobs/sha256")
        #expect(cached.count == plan?["manifests"] as? Int, "the plan downloaded more than manifests")

        // The delta: every manifest, only the new layers and configs.
        let export = try Ferry.run(
            [
                "export", "-o", "\(work)/delta.tar", "--cache", "\(work)/cache", "--json", "--against",
                "\(work)/site.inventory.json",
            ] + v2 + registry.ferryTrustFlags)
        let summary = try JSONSerialization.jsonObject(with: Data(export.stdout.utf8)) as? [String: Any]
        #expect((summary?["savedBytes"] as? Int ?? 0) >= 3 << 20)
        let entries = try BundleInspector.entries("\(work)/delta.tar")
        #expect(!entries.contains(base.digest.layoutPath), "the shared base layer was carried")
        #expect(entries.contains(amd64.digest.layoutPath), "a manifest the site has was left out")
        let carried = (try BundleInspector.manifest("\(work)/delta.tar")["blobs"] as? [[String: Any]] ?? [])
            .reduce(0) { $0 + ($1["size"] as? Int ?? 0) }
        #expect(plan?["carryBytes"] as? Int == carried, "the plan and the delta disagree")
        let verified = try Ferry.run(["verify", "\(work)/delta.tar"])
        #expect(verified.stdout.contains("a delta against inventory sha256:"), "\(verified.stdout)")
        // The same delta from the compressed inventory, and from the v1 bundle itself.
        try Ferry.run(
            [
                "export", "-o", "\(work)/delta-gz.tar", "--cache", "\(work)/cache", "--against",
                "\(work)/site.inventory.json.gz",
            ] + v2 + registry.ferryTrustFlags)
        #expect(
            try BundleInspector.entries("\(work)/delta-gz.tar").filter { $0.hasPrefix("blobs/") }
                == entries.filter { $0.hasPrefix("blobs/") })
        try Ferry.run(
            ["export", "-o", "\(work)/delta-b.tar", "--cache", "\(work)/cache", "--against", "\(work)/v1.tar"] + v2
                + registry.ferryTrustFlags)
        #expect(
            try BundleInspector.entries("\(work)/delta-b.tar").filter { $0.hasPrefix("blobs/") }
                == entries.filter { $0.hasPrefix("blobs/") })

        // diff: the site's inventory against the delta names the tags it adds, and the bytes.
        let diffed = try Ferry.run(["diff", "--json", "\(work)/site.inventory.json", "\(work)/delta.tar"])
        let difference = try JSONSerialization.jsonObject(with: Data(diffed.stdout.utf8)) as? [String: Any]
        let added = (difference?["added"] as? [[String: Any]] ?? []).compactMap { $0["image"] as? String }
        #expect(added == ["\(served)/test/app:2", "\(served)/test/multi:2"], "\(diffed.stdout)")
        #expect((difference?["removed"] as? [Any])?.count == 2)
        #expect((difference?["newBytes"] as? Int ?? 0) > 0 && (difference?["newBytes"] as? Int ?? 0) < carried)
        let same = try Ferry.run(["diff", "\(work)/v1.tar", "\(work)/site.inventory.json"]).stdout
        #expect(same.contains("0 added, 0 removed, 0 changed"), "\(same)")

        // An appliance without the base refuses it, naming what it lacks, and shows nothing.
        let empty = "\(work)/empty"
        let refused = try Shell.run(
            [ImportTests.appliance, "import", "\(work)/delta.tar", "--data-dir", empty], check: false)
        #expect(refused.status == 65)
        #expect(
            refused.stderr.contains("lacks") && refused.stderr.contains(base.digest.description), "\(refused.stderr)")
        let nothing = try Shell.run([ImportTests.appliance, "images", "--json", "--data-dir", empty]).stdout
        #expect(
            nothing.contains("\"repositories\" : {\n\n  }") || nothing.contains("\"repositories\" : {}"), "\(nothing)")

        // --paranoid re-hashes what the delta relies on: a base layer changed on disk (same size) is
        // found, and nothing becomes visible.
        let damaged = "\(work)/damaged"
        try Shell.run([ImportTests.appliance, "import", "\(work)/v1.tar", "--data-dir", damaged])
        let layerFile = "\(damaged)/store/\(base.digest.layoutPath)"
        #expect(FileManager.default.fileExists(atPath: layerFile))
        try Data(repeating: 0x5a, count: 3 << 20).write(to: URL(fileURLWithPath: layerFile))
        let paranoid = try Shell.run(
            [ImportTests.appliance, "import", "--paranoid", "\(work)/delta.tar", "--data-dir", damaged], check: false)
        #expect(paranoid.status == 65)
        #expect(paranoid.stderr.contains(base.digest.description), "\(paranoid.stderr)")
        let unchanged = try Shell.run([ImportTests.appliance, "images", "--data-dir", damaged]).stdout
        #expect(!unchanged.contains("test/app:2") && unchanged.contains("test/app:1"), "\(unchanged)")

        // Where the base is, v2 serves exactly as upstream: digests, and every blob with skopeo.
        try appliance.command(["import", "\(work)/delta.tar"])
        let certs = try appliance.certDirectory()
        for (i, name) in ["test/multi:2", "test/app:2"].enumerated() {
            let upstream = try SeededRegistry.registryDigest(registry, name)
            let reference = "docker://\(appliance.host)/\(served)/\(name)"
            let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs, reference]).stdout
            #expect(Digest.of(Array(raw.utf8)) == upstream, "\(name)")
            try Shell.run([
                "skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, reference, "oci:\(work)/oci-\(i):x",
            ])
        }

        // podman (vfs storage of the test's own) pulls them with upstream's digests.
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(work)/podman", "--runroot", "\(work)/podman-run",
        ]
        defer { _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false) }
        for name in ["test/multi:2", "test/app:2"] {
            let reference = "\(appliance.host)/\(served)/\(name)"
            try Shell.run(podman + ["pull", "-q", "--cert-dir", certs, reference])
            let digest = try Shell.run(podman + ["image", "inspect", "--format", "{{.Digest}}", reference]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(digest == (try SeededRegistry.registryDigest(registry, name)).description, "podman \(name)")
        }

        // containerd pulls them too, with upstream's digests.
        let pulled = try appliance.pullWithContainerd(
            ["test/multi:2", "test/app:2"].map { "\(served)/\($0)" }, work: work)
        for name in ["test/multi:2", "test/app:2"] {
            #expect(
                pulled["\(served)/\(name)"] == (try SeededRegistry.registryDigest(registry, name)).description,
                "ctr \(name): \(pulled)")
        }

        // ferry push of the delta: refused by a registry without the base, before anything is
        // pushed; accepted by one that holds v1, with upstream's digests.
        let target = try RegistryFixture(tls: true)
        defer { target.stop() }
        let push = ["--to", target.host, "--drop-registry-host"] + target.ferryTrustFlags
        let lacking = try Ferry.run(["push", "\(work)/delta.tar"] + push, check: false)
        #expect(lacking.status == 65)
        #expect(
            lacking.stderr.contains("lacks") && lacking.stderr.contains(base.digest.description), "\(lacking.stderr)")
        #expect(throws: (any Error).self) { try SeededRegistry.registryDigest(target, "test/app:2") }
        try Ferry.run(["push", "\(work)/v1.tar"] + push)
        try Ferry.run(["push", "\(work)/delta.tar"] + push)
        for name in ["test/multi:2", "test/app:2"] {
            #expect(
                try SeededRegistry.registryDigest(target, name) == (try SeededRegistry.registryDigest(registry, name)),
                "\(name)")
        }

        // A signed inventory: --site-key requires it to be signed by the site, and unchanged since.
        try Ferry.run(["keygen", "-o", "\(work)/site"])
        try Ferry.run(["keygen", "-o", "\(work)/stranger"])
        try appliance.command(["inventory", "-o", "\(work)/signed.json.gz", "--sign-key", "\(work)/site.key"])
        let shown = try Ferry.run(["inspect", "\(work)/signed.json.gz"]).stdout
        #expect(shown.contains("Signed:    sha256:") && !shown.contains("DOES NOT MATCH"), "\(shown)")
        let delta = ["export", "-o", "\(work)/signed-delta.tar", "--cache", "\(work)/cache", "--against"]
        try Ferry.run(
            delta + ["\(work)/signed.json.gz", "--site-key", "\(work)/site.pub"] + v2 + registry.ferryTrustFlags)
        for (inventory, key, why) in [
            ("\(work)/signed.json.gz", "\(work)/stranger.pub", "not a trusted site key"),
            ("\(work)/site.inventory.json", "\(work)/site.pub", "not signed"),
        ] {
            let refused = try Ferry.run(
                delta + [inventory, "--site-key", key] + v2 + registry.ferryTrustFlags, check: false)
            #expect(refused.status == 65 && refused.stderr.contains(why), "\(refused.stderr)")
        }
        // One tag changed in the signed inventory: the signature no longer holds, key or no key.
        let plain = try Shell.run(["gzip", "-dc", "\(work)/signed.json.gz"]).stdout
        try plain.replacingOccurrences(of: "\"1\":", with: "\"one\":").write(
            toFile: "\(work)/forged.json", atomically: true, encoding: .utf8)
        let forged = try Ferry.run(delta + ["\(work)/forged.json"] + v2 + registry.ferryTrustFlags, check: false)
        #expect(forged.status == 65 && forged.stderr.contains("does not match"), "\(forged.stderr)")

        // Not an inventory: a usage error naming the file.
        try "{\"hello\": 1}".write(toFile: "\(work)/not.json", atomically: true, encoding: .utf8)
        let bad = try Ferry.run(
            ["export", "-o", "\(work)/x.tar", "--against", "\(work)/not.json"] + v2 + registry.ferryTrustFlags,
            check: false)
        #expect(bad.status == 64)
        #expect(bad.stderr.contains("\(work)/not.json"), "\(bad.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(work)/x.tar"))
    }
}
