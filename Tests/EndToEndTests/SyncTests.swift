import Foundation
import OCICore
import Testing

/// `ferry sync` (issue 15, point 3): registry to registry with image-syncer's files, between two real
/// distribution registries (the source behind Basic auth, the destination over TLS with htpasswd).
@Suite(.serialized)
struct SyncTests {
    @Test func syncsImageSyncerFilesIncrementallyAndRetriesASourceThatFailed() throws {
        let backend = try RegistryFixture()
        defer { backend.stop() }
        let seeded = try SeededRegistry.make(backend, largeLayer: 4 << 20)
        try SeededRegistry.retag(backend, "test/single:1.0", as: "test/single:1.1")
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // While this file holds N > 0, the source answers 503 to the next N requests for test/large.
        let outage = "\(work)/outage"
        let source = try UpstreamProxy(
            backend: backend,
            options: [
                "--require-basic", "alice:source-pw", "--unavailable-while", outage, "--unavailable-path",
                "/test/large/",
            ])
        defer { source.stop() }
        let destination = try RegistryFixture(tls: true, auth: .htpasswd(user: "bob", password: "dest-pw"))
        defer { destination.stop() }
        let (from, to) = (source.host, destination.host)
        try """
        {
          "\(from)/test/single": "\(to)/renamed/single",
          "\(from)/test/multi:1.0": "\(to)/mirror/multi",
          "\(from)/test/large:latest": "\(to)/mirror/large:stable"
        }
        """.write(toFile: "\(work)/images.json", atomically: true, encoding: .utf8)
        try """
        {
          "\(from)": {"username": "alice", "password": "source-pw", "insecure": true},
          "\(to)": {"username": "bob", "password": "dest-pw"}
        }
        """.write(toFile: "\(work)/auth.json", atomically: true, encoding: .utf8)
        let common = [
            "sync", "--images", "\(work)/images.json", "--auth", "\(work)/auth.json", "\(from)/test/nested/docker:v2",
            "--to", "\(to)/plain", "--cache", "\(work)/cache", "--json", "--ca-file",
            destination.tls?.caCertificate ?? "",
        ]
        let copies: [(String, String)] = [
            ("renamed/single:1.0", "test/single:1.0"), ("renamed/single:1.1", "test/single:1.0"),
            ("mirror/multi:1.0", "test/multi:1.0"), ("mirror/large:stable", "test/large:latest"),
            ("plain/\(Reference.servedHost(from))/test/nested/docker:v2", "test/nested/docker:v2"),
        ]

        // --dry-run asks the destination and changes nothing.
        let dry = try Self.summary(try Ferry.run(common + ["--dry-run"]))
        #expect(dry["dryRun"] as? Bool == true)
        #expect(Self.statuses(dry) == Array(repeating: "would-copy", count: 5), "\(dry)")
        let catalog = try Shell.run(
            [
                "curl", "-sf", "-u", "bob:dest-pw", "--cacert", destination.tls?.caCertificate ?? "",
                "https://\(to)/v2/_catalog",
            ]
        ).stdout
        #expect(catalog.contains("\"repositories\":[]"), "\(catalog)")

        // The real run, with the source failing test/large for a while: four 503s in a row make the
        // client's own retries give up on it in the first pass; a retry pass copies it.
        try "4".write(toFile: outage, atomically: true, encoding: .utf8)
        let first = try Self.summary(try Ferry.run(common + ["--retries", "3", "--proc", "3"]))
        // single:1.1 is single:1.0: once one of them is copied, the other is only tagged.
        #expect(Self.statuses(first).sorted() == ["copied", "copied", "copied", "copied", "tagged"], "\(first)")
        #expect((first["passes"] as? Int ?? 0) >= 2, "\(first)")
        let large = Self.images(first).first {
            ($0["destination"] as? String)?.hasSuffix("mirror/large:stable") == true
        }
        #expect((large?["pass"] as? Int ?? 0) >= 2)
        #expect(source.requests.contains { $0.contains("/test/large/") && $0.contains(" 503 ") })
        // The base layer single and multi share is copied once and mounted into the other repository.
        #expect((first["blobsMounted"] as? Int ?? 0) >= 1, "\(first)")
        for (name, sourceName) in copies {
            let digest = try SeededRegistry.registryDigest(destination, name, credentials: "bob:dest-pw")
            #expect(digest == seeded.images[sourceName], "\(name)")
        }
        // What arrived is whole: skopeo copies every platform out of the destination.
        try Shell.run(
            ["skopeo", "copy", "-q", "--all"] + destination.skopeoFlags("src", credentials: "bob:dest-pw") + [
                "docker://\(to)/mirror/multi:1.0", "oci:\(work)/out:multi",
            ])

        // A second run reads no blob: every tag is up to date.
        let blobReads = source.requests.filter { $0.contains("/blobs/") }.count
        let second = try Self.summary(try Ferry.run(common))
        #expect(Self.statuses(second) == Array(repeating: "up-to-date", count: 5), "\(second)")
        #expect(second["blobsCopied"] as? Int == 0)
        #expect(source.requests.filter { $0.contains("/blobs/") }.count == blobReads)

        // A tag moved at the source is copied again; the unchanged ones are not.
        try SeededRegistry.retag(backend, "test/nested/docker:v2", as: "test/single:1.1")
        let third = try Self.summary(try Ferry.run(common))
        let moved = Self.images(third).filter { $0["status"] as? String == "copied" }.compactMap {
            $0["destination"] as? String
        }
        #expect(moved == ["\(to)/renamed/single:1.1"], "\(third)")
        #expect(
            try SeededRegistry.registryDigest(destination, "renamed/single:1.1", credentials: "bob:dest-pw")
                == seeded.images["test/nested/docker:v2"])
    }

    @Test func failuresAreReportedAndNamed() throws {
        let source = try RegistryFixture()
        defer { source.stop() }
        _ = try SeededRegistry.make(source, largeLayer: 6 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // No destination for an image: usage, before anything is copied.
        let nowhere = try Ferry.run(
            ["sync", "\(source.host)/test/single:1.0", "--insecure-registry", source.host], check: false)
        #expect(nowhere.status == 64 && nowhere.stderr.contains("no destination"), "\(nowhere.stderr)")
        // A destination that cannot be reached: each image fails, named, exit 1, after the retries.
        let closed = "127.0.0.1:\(Shell.freePort())"
        let unreachable = try Ferry.run(
            [
                "sync", "\(source.host)/test/single:1.0", "\(source.host)/test/multi:1.0", "--to", closed,
                "--insecure-registry", source.host, "--insecure-registry", closed, "--retries", "1", "--cache",
                "\(work)/cache", "--connect-timeout", "1",
            ], check: false)
        #expect(unreachable.status == 1, "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("2 image(s) not synced"), "\(unreachable.stderr)")
        #expect(unreachable.stderr.contains("\(source.host)/test/multi:1.0 -> \(closed)/"), "\(unreachable.stderr)")

        // A destination that answers HEADs but refuses the upload (an appliance anyone may pull
        // from, nobody may push to without signing in): the 6 MiB layer's copy stops, named, exit 1.
        let readOnly = try ApplianceFixture(dataDirectory: "\(work)/readonly", anonymous: "pull")
        defer { readOnly.stop() }
        let refused = try Ferry.run(
            [
                "sync", "\(source.host)/test/large:latest", "--to", readOnly.host, "--insecure-registry", source.host,
                "--ca-file", readOnly.caCertificate, "--cache", "\(work)/cache", "--retries", "0", "--no-referrers",
            ], check: false)
        #expect(refused.status == 1, "\(refused.stderr)")
        #expect(refused.stderr.contains("\(source.host)/test/large:latest -> \(readOnly.host)/"), "\(refused.stderr)")
        #expect(refused.stderr.contains("authentication required"), "\(refused.stderr)")

        // A source blob that does not match its digest: exit 65, and nothing of it at the destination.
        let raw = try Shell.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(source.host)/test/single:1.0"]
        ).stdout
        let manifest = try #require(JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any])
        let layer = try Digest(try #require((manifest["layers"] as? [[String: Any]])?.last?["digest"] as? String))
        let file = "\(source.storage)/docker/registry/v2/blobs/sha256/\(layer.encoded.prefix(2))/\(layer.encoded)/data"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: file))
        bytes[bytes.count / 2] ^= 0xff
        try bytes.write(to: URL(fileURLWithPath: file))
        let destination = try RegistryFixture()
        defer { destination.stop() }
        let corrupt = try Ferry.run(
            [
                "sync", "\(source.host)/test/single:1.0", "--to", destination.host, "--insecure-registry", source.host,
                "--insecure-registry", destination.host, "--cache", "\(work)/cache", "--retries", "0",
            ], check: false)
        #expect(corrupt.status == 65, "\(corrupt.stderr)")
        #expect(corrupt.stderr.contains("does not match its digest"), "\(corrupt.stderr)")
        let served = Reference.servedHost(source.host)
        let head = try Shell.run(
            [
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-I",
                "http://\(destination.host)/v2/\(served)/test/single/blobs/\(layer)",
            ]
        ).stdout
        #expect(head == "404", "the corrupt blob reached the destination")
    }

    static func summary(_ result: Shell.Result) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any])
    }

    static func images(_ summary: [String: Any]) -> [[String: Any]] {
        (summary["images"] as? [[String: Any]] ?? []).filter { $0["referrer"] as? Bool != true }
    }

    static func statuses(_ summary: [String: Any]) -> [String] {
        images(summary).compactMap { $0["status"] as? String }
    }
}

extension SyncTests {
    /// `--platform`: one platform of an index is copied as its manifest under the tag; every
    /// platform selected is the index whole.
    @Test func onePlatformOfAnIndexIsCopiedAsItsManifest() throws {
        let source = try RegistryFixture()
        defer { source.stop() }
        let seeded = try SeededRegistry.make(source, largeLayer: 1 << 20)
        let destination = try RegistryFixture()
        defer { destination.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let raw = try Shell.run(
            ["skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(source.host)/test/multi:1.0"]
        ).stdout
        let index = try #require(JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any])
        let arm = (index["manifests"] as? [[String: Any]] ?? []).first {
            ($0["platform"] as? [String: Any])?["architecture"] as? String == "arm64"
        }
        let armDigest = try #require(arm?["digest"] as? String)
        func sync(_ platform: String, into prefix: String) throws -> Digest {
            try Ferry.run(
                [
                    "sync", "\(source.host)/test/multi:1.0", "--platform", platform, "--to",
                    "\(destination.host)/\(prefix)", "--drop-registry-host", "--insecure-registry", source.host,
                    "--insecure-registry", destination.host, "--cache", "\(work)/cache",
                ])
            return try SeededRegistry.registryDigest(destination, "\(prefix)/test/multi:1.0")
        }
        #expect(try sync("linux/arm64/v8", into: "one").description == armDigest)
        #expect(try sync("linux/amd64,linux/arm64/v8", into: "both") == seeded.images["test/multi:1.0"])
    }
}
