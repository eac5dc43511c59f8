import Foundation
import OCICore
import Testing

/// Pushing into the appliance with real clients: skopeo copies in and out (digests unchanged),
/// copies across repositories (mount), deletes; a raw chunked upload with curl; gc reclaims what
/// the deletes unlinked; `--read-only` refuses pushes.
@Suite(.serialized)
struct PushTests {
    @Test func skopeoPushesPullsDeletesAndGarbageIsCollected() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 24 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        var appliance = try ApplianceFixture(dataDirectory: "\(work)/data", anonymous: "none")
        defer { appliance.stop() }
        try appliance.addUser("ci", password: "ci-password", role: "delete")
        let certs = try appliance.certDirectory()
        let into = ["--dest-cert-dir", certs, "--dest-creds", "ci:ci-password"]
        let creds = ["--creds", "ci:ci-password"]
        let from = ["--src-creds", "ci:ci-password"]
        for (name, digest) in seeded.images {
            let target = "docker://\(appliance.host)/ci/\(name)"
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--preserve-digests"] + registry.skopeoFlags("src") + into + [
                    "docker://\(registry.host)/\(name)", target,
                ])
            let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs] + creds + [target]).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--src-cert-dir", certs] + from + [target, "oci:\(work)/out:x"])
        }
        // Across repositories: skopeo mounts the large layer instead of uploading it again.
        let largeManifest = try appliance.curl("/v2/ci/test/large/manifests/latest", user: "ci:ci-password").json
        let layer = try #require(((largeManifest["layers"] as? [[String: Any]])?.first?["digest"]) as? String)
        try Shell.run(
            ["skopeo", "copy", "-q", "--all", "--src-cert-dir", certs] + from + into + [
                "docker://\(appliance.host)/ci/test/large:latest", "docker://\(appliance.host)/other/large:copy",
            ])
        let log = try String(contentsOfFile: appliance.accessLog, encoding: .utf8)
        let mount =
            "POST /v2/other/large/blobs/uploads/?from=ci%2Ftest%2Flarge&mount="
            + layer.replacingOccurrences(of: ":", with: "%3A") + "\" 201"
        #expect(log.contains(mount))

        // A chunked upload by hand: POST, two PATCHes with Content-Range, PUT with the digest.
        let chunkA = Data(repeating: 0x61, count: 700_000)
        let chunkB = Data(repeating: 0x62, count: 300_000)
        let digest = Digest.of(Array(chunkA + chunkB))
        try chunkA.write(to: URL(fileURLWithPath: "\(work)/a"))
        try chunkB.write(to: URL(fileURLWithPath: "\(work)/b"))
        let start = try appliance.curl("/v2/raw/blob/blobs/uploads/", method: "POST", user: "ci:ci-password")
        #expect(start.status == 202)
        let location = try #require(start.headers["location"])
        func patch(_ file: String, _ range: String) throws -> HTTPReply {
            try HTTPReply.fetch(
                "https://\(appliance.host)\(location)", method: "PATCH",
                headers: ["Content-Range: \(range)", "Content-Type: application/octet-stream"],
                ca: appliance.caCertificate, bodyFile: file, user: "ci:ci-password")
        }
        #expect(try patch("\(work)/a", "0-699999").headers["range"] == "0-699999")
        #expect(try patch("\(work)/a", "0-699999").status == 416, "a repeated chunk is out of order")
        #expect(try patch("\(work)/b", "700000-999999").headers["range"] == "0-999999")
        let done = try HTTPReply.fetch(
            "https://\(appliance.host)\(location)?digest=\(digest)", method: "PUT", ca: appliance.caCertificate,
            user: "ci:ci-password")
        #expect(done.status == 201)
        #expect(try appliance.curl("/v2/raw/blob/blobs/\(digest)", user: "ci:ci-password").body == chunkA + chunkB)

        // Delete one image; gc (no grace) reclaims its unshared blobs; the rest still pull.
        let large = "docker://\(appliance.host)/ci/test/large:latest"
        try Shell.run(["skopeo", "delete", "--cert-dir", certs] + creds + [large])
        try Shell.run(
            ["skopeo", "delete", "--cert-dir", certs] + creds + ["docker://\(appliance.host)/other/large:copy"])
        #expect(try Shell.run(["skopeo", "inspect", "--cert-dir", certs] + creds + [large], check: false).status != 0)
        let gc = try appliance.command(["gc", "--grace-period", "0", "--json"]).stdout
        #expect(gc.contains(layer), "the large layer is collected: \(gc)")
        let layerFile = "\(appliance.dataDirectory)/store/blobs/sha256/\(layer.dropFirst(7))"
        #expect(!FileManager.default.fileExists(atPath: layerFile))
        for name in ["test/multi:1.0", "test/single:1.0", "test/nested/docker:v2"] {
            try Shell.run(
                [
                    "skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, "--src-creds", "ci:ci-password",
                    "docker://\(appliance.host)/ci/\(name)",
                    "oci:\(work)/after-gc:x",
                ])
        }

        // Read-only: pushes are refused, pulls work.
        appliance.stop()
        appliance = try ApplianceFixture(
            dataDirectory: "\(work)/data", anonymous: "none", extraArguments: ["--read-only"])
        let refused = try Shell.run(
            ["skopeo", "copy", "-q", "--all", "--preserve-digests"] + registry.skopeoFlags("src") + into + [
                "docker://\(registry.host)/test/single:1.0", "docker://\(appliance.host)/ci/refused:1",
            ], check: false)
        #expect(refused.status != 0)
        try Shell.run(
            ["skopeo", "inspect", "--cert-dir", certs] + creds + ["docker://\(appliance.host)/ci/test/single:1.0"])
    }
}

/// `ferry push` of a bundle into the real distribution registry and into the appliance.
@Suite(.serialized)
struct FerryPushTests {
    @Test func ferryPushIntoTheDistributionRegistryAndTheApplianceKeepsDigests() throws {
        let source = try RegistryFixture(tls: true)
        defer { source.stop() }
        let seeded = try SeededRegistry.make(source, largeLayer: 16 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + source.ferryTrustFlags)
        let served = source.host.replacingOccurrences(of: ":", with: "_")

        // Into a distribution registry with htpasswd auth, names without the source host.
        let target = try RegistryFixture(tls: true, auth: .htpasswd(user: "ci", password: "ci-password"))
        defer { target.stop() }
        let first = try Ferry.run(
            [
                "push", bundle, "--to", "\(target.host)/mirror", "--drop-registry-host", "--creds", "ci:ci-password",
                "--json",
            ] + target.ferryTrustFlags)
        let summary = try #require(
            (try? JSONSerialization.jsonObject(with: Data(first.stdout.utf8))) as? [String: Any])
        #expect((summary["images"] as? [Any])?.count == seeded.images.count)
        #expect((summary["blobsMounted"] as? Int ?? 0) > 0, "blobs shared across repositories are mounted")
        for (name, digest) in seeded.images {
            let raw = try Shell.run(
                ["skopeo", "inspect", "--raw", "--creds", "ci:ci-password"]
                    + target.skopeoFlags("src").map { $0.replacingOccurrences(of: "--src-", with: "--") }
                    + ["docker://\(target.host)/mirror/\(name)"]
            ).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--src-creds", "ci:ci-password"] + target.skopeoFlags("src")
                    + ["docker://\(target.host)/mirror/\(name)", "oci:\(work)/pulled:x"])
        }
        // Again: everything is there already.
        let again = try Ferry.run(
            [
                "push", bundle, "--to", "\(target.host)/mirror", "--drop-registry-host", "--creds", "ci:ci-password",
                "--json",
            ] + target.ferryTrustFlags)
        let second = try #require((try? JSONSerialization.jsonObject(with: Data(again.stdout.utf8))) as? [String: Any])
        #expect(second["blobsUploaded"] as? Int == 0)

        // A corrupted bundle: exit 65, and no manifest of it reaches the registry.
        let broken = "\(work)/broken.tar"
        try Shell.run(["python3", "\(Shell.supportDirectory)/bundle_mutator.py", bundle, broken, "flip-layer"])
        let refused = try Ferry.run(
            ["push", broken, "--to", "\(target.host)/broken", "--creds", "ci:ci-password"] + target.ferryTrustFlags,
            check: false)
        #expect(refused.status == 65, "\(refused.stderr)")
        let catalog = try Shell.run(
            [
                "curl", "-s", "-u", "ci:ci-password", "--cacert", try #require(target.tls?.caCertificate),
                "https://\(target.host)/v2/_catalog",
            ]).stdout
        #expect(!catalog.contains("broken/\(served)/test/multi"), "\(catalog)")

        // Into the appliance, keeping the source host: the names the appliance would serve after an import.
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/data", anonymous: "none")
        defer { appliance.stop() }
        try appliance.addUser("ci", password: "ci-password", role: "push")
        try Ferry.run(
            ["push", bundle, "--to", appliance.host, "--ca-file", appliance.caCertificate, "--creds", "ci:ci-password"])
        let certs = try appliance.certDirectory()
        for (name, digest) in seeded.images {
            let raw = try Shell.run(
                [
                    "skopeo", "inspect", "--raw", "--cert-dir", certs, "--creds", "ci:ci-password",
                    "docker://\(appliance.host)/\(served)/\(name)",
                ]).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
        }

        // From a pipe: one pass (the bundle cannot be read twice), into another prefix.
        try Shell.run([
            "sh", "-c",
            "cat '\(bundle)' | '\(Shell.ferry)' push - --to '\(appliance.host)/piped' --ca-file '\(appliance.caCertificate)'"
                + " --creds ci:ci-password --progress none",
        ])
        for (name, digest) in seeded.images {
            let raw = try Shell.run(
                [
                    "skopeo", "inspect", "--raw", "--cert-dir", certs, "--creds", "ci:ci-password",
                    "docker://\(appliance.host)/piped/\(served)/\(name)",
                ]).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "piped \(name)")
        }
    }
}
