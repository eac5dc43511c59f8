import Foundation
import OCICore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `ferry export` against the real distribution registry, checked with skopeo and tar.
@Suite(.serialized)
struct ExportTests {
    @Test func exportsEveryKindOfImageAndSkopeoReadsTheBundle() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let list = "\(work)/images.txt"
        try ("# test images\n\n" + seeded.references.joined(separator: "\n") + "\n")
            .write(toFile: list, atomically: true, encoding: .utf8)
        let bundle = "\(work)/site.bundle.tar"
        let result = try Ferry.run(
            ["export", "-f", list, "-o", bundle, "--cache", "\(work)/cache", "--json"] + registry.ferryTrustFlags)
        let summary = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        #expect((summary?["images"] as? [Any])?.count == 4)

        // Layout entries: fixed order, each blob once.
        let entries = try BundleInspector.entries(bundle)
        #expect(Array(entries.prefix(3)) == ["oci-layout", "ferry-bundle.json", "index.json"])
        let blobs = entries.filter { $0.hasPrefix("blobs/sha256/") && $0.count > "blobs/sha256/".count }
        #expect(Set(blobs).count == blobs.count)
        // 4 images: multi (index + 2 manifests + 2 configs + 3 layers), single (manifest, config, 1 new
        // layer; base shared), docker (manifest, config, layer), large (manifest, config, layer).
        #expect(blobs.count == 5 + 3 + 3 + 3 + 3)

        let manifest = try BundleInspector.manifest(bundle)
        #expect(manifest["formatVersion"] as? Int == 1)
        #expect(manifest["partial"] == nil)
        #expect((manifest["blobs"] as? [Any])?.count == blobs.count)

        // Every image's top manifest is in the bundle with the registry's digest.
        for (name, digest) in seeded.images {
            let bytes = try BundleInspector.file(bundle, digest.layoutPath)
            #expect(Digest.of(Array(bytes)) == digest, "\(name)")
        }
        // skopeo reads every OCI image, with the registry's digest. (skopeo's oci transport refuses
        // Docker schema-2 manifests in index.json, whatever the tool that wrote it; containerd
        // loads those, see `containerdImportsEveryImageByName`.)
        for (name, digest) in seeded.images where name != "test/nested/docker:v2" {
            let reference = "\(registry.host)/\(name)"
            let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(bundle):\(reference)"])
            #expect(Digest.of(Array(raw.stdout.utf8)) == digest, "\(reference)")
            try Shell.run([
                "skopeo", "copy", "--quiet", "--all", "oci-archive:\(bundle):\(reference)",
                "oci:\(work)/copy-\(name.replacingOccurrences(of: "/", with: "_")):x",
            ])
        }
        // Every platform of the multi-arch image.
        for arch in ["amd64", "arm64"] {
            let inspect = try Shell.run([
                "skopeo", "--override-arch", arch, "inspect", "oci-archive:\(bundle):\(registry.host)/test/multi:1.0",
            ])
            #expect(inspect.stdout.contains("\"Architecture\": \"\(arch)\""))
        }
    }

    @Test func containerdImportsEveryImageByName() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags)
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        try containerd.ctr(["images", "import", "--all-platforms", "--no-unpack", bundle])
        let listing = try containerd.ctr(["images", "ls"])
        for (name, digest) in seeded.images {
            let line = listing.split(separator: "\n").first { $0.hasPrefix("\(registry.host)/\(name) ") }
            #expect(line?.contains(digest.description) == true, "\(name) in:\n\(listing)")
        }
        try containerd.ctr(["content", "get", seeded.images["test/multi:1.0"]?.description ?? ""])
    }

    /// `podman load` takes every image of a bundle by name from its docker-archive manifest.json
    /// (without it podman refuses a layout of several images), the platform of a multi-platform
    /// image chosen by --load-platform; the OCI layout is unchanged (skopeo, ctr: the tests above).
    @Test func podmanLoadsEveryImageByName() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        for (platform, architecture) in [(nil, "amd64"), ("linux/arm64/v8", "arm64")] {
            let bundle = "\(work)/\(architecture).tar"
            try Ferry.run(
                ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags
                    + (platform.map { ["--load-platform", $0] } ?? []))
            #expect(try BundleInspector.entries(bundle).prefix(4).last == "manifest.json")
            try Ferry.run(["verify", bundle])
            let podman = [
                "podman", "--storage-driver", "vfs", "--root", "\(work)/podman-\(architecture)", "--runroot",
                "\(work)/podman-run-\(architecture)",
            ]
            defer { _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false) }
            let load = try Shell.run(podman + ["load", "-i", bundle])
            for name in seeded.images.keys {
                #expect(load.stdout.contains("Loaded image: \(registry.host)/\(name)"), "\(name): \(load.stdout)")
                let loaded = try Shell.run(
                    podman + ["image", "inspect", "--format", "{{.Architecture}}", "\(registry.host)/\(name)"])
                let expected = name == "test/multi:1.0" ? architecture : "amd64"
                #expect(loaded.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == expected, "\(name)")
            }
        }
        // A manifest.json changed after export is refused (the bundle manifest names its digest).
        let changed = "\(work)/changed"
        try Shell.run(["mkdir", "-p", changed])
        try Shell.run(["tar", "-xf", "\(work)/amd64.tar", "-C", changed])
        try "[]".write(toFile: "\(changed)/manifest.json", atomically: true, encoding: .utf8)
        try Shell.run(
            [
                "tar", "-cf", "\(work)/changed.tar", "-C", changed, "oci-layout", "ferry-bundle.json", "index.json",
                "manifest.json", "blobs",
            ])
        let refused = try Ferry.run(["verify", "\(work)/changed.tar"], check: false)
        #expect(refused.status == 65)
        #expect(refused.stderr.contains("entry manifest.json: does not match the bundle manifest"), "\(refused.stderr)")
    }

    @Test func sameInputsGiveAByteIdenticalBundle() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let environment = ["SOURCE_DATE_EPOCH": "1700000000"]
        try Ferry.run(
            ["export", "-o", "\(work)/a.tar", "--cache", "\(work)/cache-a"] + seeded.references
                + registry.ferryTrustFlags, environment: environment)
        let second = try Ferry.run(
            ["export", "-o", "\(work)/b.tar", "--cache", "\(work)/cache-a", "--json"] + seeded.references
                + registry.ferryTrustFlags, environment: environment)
        let summary = try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any]
        #expect(summary?["downloadedBlobs"] as? Int == 0, "second export of the same images downloads nothing")
        try Ferry.run(
            ["export", "-o", "\(work)/c.tar", "--cache", "\(work)/cache-c"] + seeded.references
                + registry.ferryTrustFlags, environment: environment)
        let a = try Data(contentsOf: URL(fileURLWithPath: "\(work)/a.tar"))
        #expect(a == (try Data(contentsOf: URL(fileURLWithPath: "\(work)/b.tar"))))
        #expect(a == (try Data(contentsOf: URL(fileURLWithPath: "\(work)/c.tar"))))
        let manifest = try BundleInspector.manifest("\(work)/a.tar")
        #expect(manifest["created"] as? String == "2023-11-14T22:13:20Z")
    }

    @Test func platformSelectionKeepsTheIndexAndMarksTheBundlePartial() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(registry.host)/test/multi:1.0"
        let bundle = "\(work)/arm.tar"
        try Ferry.run(
            ["export", reference, "--platform", "linux/arm64", "-o", bundle, "--cache", "\(work)/cache"]
                + registry.ferryTrustFlags)
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(bundle):\(reference)"])
        #expect(Digest.of(Array(raw.stdout.utf8)) == seeded.images["test/multi:1.0"])
        let manifest = try BundleInspector.manifest(bundle)
        #expect((manifest["partial"] as? [String: Any])?["platforms"] as? [String] == ["linux/arm64"])
        let images = manifest["images"] as? [[String: Any]]
        #expect(images?.first?["platforms"] as? [String] == ["linux/arm64/v8"])
        // index + arm64 manifest + config + 2 layers; nothing of amd64.
        #expect((manifest["blobs"] as? [Any])?.count == 5)
        // A partial bundle verifies: the platforms left out are not missing.
        #expect(try Ferry.run(["verify", bundle]).stdout.contains("partial: linux/arm64"))
        let inspect = try Shell.run([
            "skopeo", "--override-arch", "arm64", "inspect", "oci-archive:\(bundle):\(reference)",
        ])
        #expect(inspect.stdout.contains("\"Architecture\": \"arm64\""))
        // A platform the image lacks is an error naming what exists.
        let missing = try Ferry.run(
            ["export", reference, "--platform", "linux/s390x", "-o", "\(work)/none.tar", "--cache", "\(work)/cache"]
                + registry.ferryTrustFlags, check: false)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains("no manifest for platform linux/s390x"))
        #expect(missing.stderr.contains("linux/arm64/v8"))
        #expect(!FileManager.default.fileExists(atPath: "\(work)/none.tar"))
    }

    @Test func corruptBlobUpstreamFailsNamingImageAndDigestAndLeavesNoBundle() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // Find the large layer in the registry's storage and flip a byte in it.
        let blobsRoot = "\(registry.storage)/docker/registry/v2/blobs/sha256"
        var largest: (path: String, size: Int) = ("", 0)
        for prefix in try FileManager.default.contentsOfDirectory(atPath: blobsRoot) {
            for hex in try FileManager.default.contentsOfDirectory(atPath: "\(blobsRoot)/\(prefix)") {
                let path = "\(blobsRoot)/\(prefix)/\(hex)/data"
                let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
                if size > largest.size { largest = (path, size) }
            }
        }
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: largest.path))
        try handle.seek(toOffset: 4096)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: 4096)
        handle.write(Data([byte[0] ^ 0xff]))
        try handle.close()
        let digest = URL(fileURLWithPath: largest.path).deletingLastPathComponent().lastPathComponent

        let bundle = "\(work)/bad.tar"
        let result = try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags,
            check: false)
        #expect(result.status == 65)
        #expect(result.stderr.contains("test/large:latest"))
        #expect(result.stderr.contains("sha256:\(digest)"))
        #expect(!FileManager.default.fileExists(atPath: bundle))
        #expect(try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasSuffix(".partial") }.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: bundle + ".sha256"))
        // Nothing unverified entered the cache.
        #expect(!FileManager.default.fileExists(atPath: "\(work)/cache/blobs/sha256/\(digest)"))
        #expect((try FileManager.default.contentsOfDirectory(atPath: "\(work)/cache/ingest")).isEmpty)
    }

    /// An unreachable registry fails fast with one line naming it: a name that does not resolve at
    /// once, a port nobody listens on after a few quick retries, a registry that never accepts the
    /// connection after --connect-timeout.
    @Test func unreachableRegistriesFailFastNamingTheRegistry() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        var started = Date()
        let unresolved = try Ferry.run(
            ["export", "registry.nowhere.invalid/team/app:1", "-o", "\(work)/a.tar", "--progress", "none"], check: false
        )
        #expect(unresolved.status != 0)
        #expect(Date().timeIntervalSince(started) < 8, "a name that does not resolve fails at once")
        #expect(unresolved.stderr.contains("registry.nowhere.invalid") && unresolved.stderr.contains("cannot resolve"))
        #expect(unresolved.stderr.split(separator: "\n").count == 1, "\(unresolved.stderr)")

        // Nothing listens on the port: each attempt is found refused within a second or so, and
        // the retries take seconds (about 8; they took the whole connect timeout each, 43 s).
        let closed = "127.0.0.1:\(Shell.freePort())"
        started = Date()
        let refused = try Ferry.run(
            ["export", "\(closed)/team/app:1", "-o", "\(work)/c.tar", "--progress", "none", "--no-cache"],
            check: false)
        #expect(refused.status != 0)
        #expect(Date().timeIntervalSince(started) < 20, "a refused connection is not retried for the connect timeout")
        #expect(refused.stderr.contains("\(closed): cannot reach") && refused.stderr.contains("connection refused"))
        #expect(refused.stderr.split(separator: "\n").count == 1, "\(refused.stderr)")
        // Nothing was fetched: no scratch store is left beside the output.
        #expect(try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasPrefix("c.tar") } == [])

        // A listener whose accept queue is full: the kernel drops further connection attempts.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) }
        }
        listen(listener, 0)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) }
        }
        var fillers: [Int32] = []
        defer { fillers.forEach { close($0) } }
        for _ in 0..<4 {
            let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            _ = fcntl(client, F_SETFL, O_NONBLOCK)
            _ = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) }
            }
            fillers.append(client)
        }
        usleep(200_000)
        let port = Int(UInt16(bigEndian: address.sin_port))
        started = Date()
        let silent = try Ferry.run(
            [
                "export", "127.0.0.1:\(port)/team/app:1", "-o", "\(work)/b.tar", "--progress", "none",
                "--connect-timeout", "2",
            ], check: false)
        #expect(silent.status != 0)
        #expect(Date().timeIntervalSince(started) < 15, "gave up after the connect timeout, not minutes later")
        #expect(silent.stderr.contains("127.0.0.1:\(port)") && silent.stderr.contains("no connection within 2 s"))
        #expect(silent.stderr.split(separator: "\n").count == 1, "\(silent.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(work)/b.tar"))
    }

    @Test func plainHTTPRegistryNeedsTheInsecureFlag() throws {
        let registry = try RegistryFixture()
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(registry.host)/test/single:1.0"
        let refused = try Ferry.run(
            ["export", reference, "-o", "\(work)/a.tar", "--cache", "\(work)/cache"], check: false)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains(registry.host))
        #expect(
            refused.stderr.contains("a registry without TLS? --insecure-registry \(registry.host)"), "\(refused.stderr)"
        )
        #expect(!FileManager.default.fileExists(atPath: "\(work)/a.tar"))
        try Ferry.run(
            [
                "export", reference, "-o", "\(work)/a.tar", "--cache", "\(work)/cache", "--insecure-registry",
                registry.host,
            ])
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(work)/a.tar:\(reference)"])
        #expect(Digest.of(Array(raw.stdout.utf8)) == seeded.images["test/single:1.0"])
    }

    @Test func tlsRegistryIsTrustedFromCertsDirectoryOrCAFileOnly() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        _ = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(registry.host)/test/single:1.0"
        let untrusted = try Ferry.run(
            ["export", reference, "-o", "\(work)/a.tar", "--cache", "\(work)/cache", "--certs-dir", "\(work)/none"],
            check: false)
        #expect(untrusted.status == 1)
        #expect(untrusted.stderr.contains("TLS failed") && untrusted.stderr.contains("certificate verify failed"))
        #expect(!untrusted.stderr.contains(".swift") && !untrusted.stderr.contains(".cc"), "\(untrusted.stderr)")
        let certs = "\(work)/certs.d/\(registry.host)"
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: registry.tls?.caCertificate ?? "", toPath: "\(certs)/ca.crt")
        try Ferry.run(
            ["export", reference, "-o", "\(work)/a.tar", "--cache", "\(work)/cache", "--certs-dir", "\(work)/certs.d"])
        #expect(FileManager.default.fileExists(atPath: "\(work)/a.tar"))
    }

    @Test func badImageListIsReportedWithFileAndLineBeforeAnythingIsPulled() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        try "nginx:1.25\nlibrary/UPPER:1\n# fine\nbusybox@sha256:abc\n".write(
            toFile: "\(work)/list.txt", atomically: true, encoding: .utf8)
        let result = try Ferry.run(
            ["export", "-f", "\(work)/list.txt", "-o", "\(work)/x.tar", "--cache", "\(work)/cache"], check: false)
        #expect(result.status == 64)
        #expect(result.stderr.contains("\(work)/list.txt:2:"))
        #expect(result.stderr.contains("\(work)/list.txt:4:"))
        #expect(!FileManager.default.fileExists(atPath: "\(work)/cache"), "nothing was pulled")
        // An output that is a directory is refused before anything is pulled, not at the rename.
        let directory = try Ferry.run(["export", "nginx:1.25", "-o", work, "--cache", "\(work)/cache"], check: false)
        #expect(directory.status == 64)
        #expect(directory.stderr.contains("--output \(work) is a directory"), "\(directory.stderr)")
        #expect(!FileManager.default.fileExists(atPath: "\(work).partial"))

        let digest = "sha256:" + String(repeating: "a", count: 64)
        let clash = try Ferry.run(
            ["export", "nginx:1.25", "nginx:1.25@\(digest)", "-o", "\(work)/x.tar", "--cache", "\(work)/cache"],
            check: false)
        #expect(clash.status == 64)
        #expect(clash.stderr.contains("would be stored as docker.io/library/nginx:1.25"))
        let creds = try Ferry.run(
            [
                "export", "nginx:1.25", "quay.io/a/b:1", "--creds", "u:p", "-o", "\(work)/x.tar", "--cache",
                "\(work)/cache",
            ],
            check: false)
        #expect(creds.status == 64)
        #expect(creds.stderr.contains("--creds HOST=USER:PASSWORD"))
    }
}
