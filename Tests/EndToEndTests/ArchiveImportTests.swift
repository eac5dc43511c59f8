import Foundation
import OCICore
import Testing

/// Other tools' OCI layout tars (issue 17): skopeo's oci-archive and containerd's export, imported
/// with the checks a Ferry bundle gets, served with the digests the source registry reports.
@Suite(.serialized)
struct ArchiveImportTests {
    /// A copy of the tar `source` with one bit of its largest file flipped (a layer, in these archives).
    static func flipLargest(_ source: String, _ destination: String) throws {
        try Shell.run([
            "/usr/bin/python3", "-c",
            """
            import sys, tarfile, io
            with tarfile.open(sys.argv[1]) as t, tarfile.open(sys.argv[2], "w") as out:
                members = [(m, t.extractfile(m).read() if m.isfile() else None) for m in t.getmembers()]
                largest = max((m for m, d in members if d is not None), key=lambda m: m.size)
                for m, d in members:
                    if m is largest:
                        d = bytes([d[0] ^ 1]) + d[1:]
                    out.addfile(m, io.BytesIO(d) if d is not None else None)
            """, source, destination,
        ])
    }

    @Test func skopeoAndContainerdArchivesImportAndServeUpstreamDigests() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let upstream = try #require(seeded.images["test/multi:1.0"])
        let source = "docker://\(registry.host)/test/multi:1.0"
        let certs = registry.skopeoFlags("src")

        // skopeo copy --all into an oci-archive whose image is named by tag only.
        let archive = "oci-archive:\(work)/multi.tar:1.0"
        try Shell.run(["skopeo", "copy", "-q", "--all", "--preserve-digests"] + certs + [source, archive])
        let verified = try Ferry.run(["verify", "\(work)/multi.tar"])
        #expect(verified.stdout.contains("OK, 1 image(s)"), "\(verified.stdout)")
        // gzip-compressed, the same archive verifies alike.
        try Shell.run(["gzip", "-k", "\(work)/multi.tar"])
        let gzipped = try Ferry.run(["verify", "\(work)/multi.tar.gz"])
        #expect(gzipped.stdout.contains("OK, 1 image(s)"), "\(gzipped.stdout)")
        let inspected = try Ferry.run(["inspect", "\(work)/multi.tar", "--name", "site/multi"]).stdout
        #expect(
            inspected.contains("site/multi:1.0") && inspected.contains(upstream.description), "\(inspected)")
        let site = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { site.stop() }
        let unnamed = try site.command(["import", "\(work)/multi.tar"], check: false)
        #expect(unnamed.status == 64 && unnamed.stderr.contains("--name"), "\(unnamed.stderr)")
        // From a pipe it cannot be read twice: refused, saying why.
        let piped = try Shell.run(
            [
                "sh", "-c", "cat \"$1\" | \"$2\" import - --data-dir \"$3\"", "sh", "\(work)/multi.tar",
                ImportTests.appliance, "\(work)/site",
            ],
            check: false)
        #expect(piped.status == 65 && piped.stderr.contains("from a file"), "\(piped.stderr)")
        // A flipped byte in a layer: refused, nothing visible.
        try Self.flipLargest("\(work)/multi.tar", "\(work)/flipped.tar")
        let flipped = try site.command(["import", "\(work)/flipped.tar", "--name", "site/multi"], check: false)
        #expect(flipped.status == 65 && flipped.stderr.contains("does not match its digest"), "\(flipped.stderr)")
        #expect(try site.curl("/v2/docker.io/site/multi/manifests/1.0").status == 404)

        let imported = try site.command(["import", "\(work)/multi.tar", "--name", "site/multi"])
        #expect(imported.stdout.contains("imported: 1 image(s)"), "\(imported.stdout)")
        let siteCerts = try site.certDirectory()
        let served = "docker://\(site.host)/docker.io/site/multi:1.0"
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", siteCerts, served]).stdout
        #expect(Digest.of(Array(raw.utf8)) == upstream)
        try Shell.run(["skopeo", "copy", "-q", "--all", "--src-cert-dir", siteCerts, served, "oci:\(work)/back:x"])
        // One image (no --all: skopeo keeps the platform's image manifest), imported the same way.
        let single = try #require(seeded.images["test/single:1.0"])
        try Shell.run(
            ["skopeo", "copy", "-q", "--preserve-digests"] + certs
                + ["docker://\(registry.host)/test/single:1.0", "oci-archive:\(work)/single.tar:1.0"])
        try site.command(["import", "\(work)/single.tar", "--name", "site/single"])
        let singleRaw = try Shell.run(
            ["skopeo", "inspect", "--raw", "--cert-dir", siteCerts, "docker://\(site.host)/docker.io/site/single:1.0"]
        ).stdout
        #expect(Digest.of(Array(singleRaw.utf8)) == single)
        let again = try site.command(["import", "\(work)/multi.tar", "--name", "site/multi"])
        #expect(again.stdout.contains("already imported, unchanged"), "\(again.stdout)")

        // ferry convert: a signed Ferry bundle with the same digests, verified against the key.
        try Ferry.run(["keygen", "-o", "\(work)/key"])
        let converted = try Ferry.run(
            [
                "convert", "\(work)/multi.tar", "--name", "site/multi", "-o", "\(work)/converted.tar", "--sign-key",
                "\(work)/key.key", "--cache", "\(work)/cache", "--json",
            ])
        #expect(converted.stdout.contains(upstream.description), "\(converted.stdout)")
        try Ferry.run(["verify", "\(work)/converted.tar", "--trust-key", "\(work)/key.pub"])
        #expect(try BundleInspector.entries("\(work)/converted.tar").prefix(2) == ["oci-layout", "ferry-bundle.json"])
        // ferry push of the archive itself: the digest upstream has.
        let target = try RegistryFixture(tls: true)
        defer { target.stop() }
        try Ferry.run(
            ["push", "\(work)/multi.tar", "--name", "site/multi", "--to", target.host, "--drop-registry-host"]
                + target.ferryTrustFlags)
        #expect(try SeededRegistry.registryDigest(target, "site/multi:1.0") == upstream)

        // containerd's export of the one platform it pulled (an index with the others absent),
        // named by io.containerd.image.name, into a second site.
        let snippet = try site.command(["client-config", site.host, "--for", "containerd"]).stdout
        let hosts = "\(work)/certs.d"
        try Shell.run(["sh", "-c", snippet.replacingOccurrences(of: "/etc/containerd/certs.d", with: hosts)])
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        let name = "\(site.host)/docker.io/site/multi:1.0"
        try containerd.ctr(["images", "pull", "--platform", "linux/amd64", "--hosts-dir", hosts, name])
        try containerd.ctr(["images", "export", "--platform", "linux/amd64", "\(work)/ctr.tar", name])
        let second = "\(work)/second"
        try Shell.run([ImportTests.appliance, "import", "\(work)/ctr.tar", "--data-dir", second])
        let listed = try Shell.run([ImportTests.appliance, "images", "--json", "--data-dir", second]).stdout
        #expect(listed.contains(upstream.description), "\(listed)")
        #expect(listed.contains(Reference.servedHost(site.host)), "\(listed)")
    }

    /// podman's docker-archive of two images (layers as uncompressed tars, named by
    /// `manifest.json`): imported with the configs and layers it holds, so podman pulls back the
    /// same image IDs.
    @Test func aPodmanDockerArchiveImportsWithItsImageIDs() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        _ = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(work)/podman", "--runroot", "\(work)/podman-run",
        ]
        defer { _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false) }
        let certs = registry.skopeoFlags("src")[1]
        var ids: [String: String] = [:]
        let names = ["test/single:1.0", "test/nested/docker:v2"].map { "\(registry.host)/\($0)" }
        for name in names {
            try Shell.run(podman + ["pull", "-q", "--cert-dir", certs, name])
            ids[name] = try Shell.run(podman + ["image", "inspect", "--format", "{{.Id}}", name]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
        }
        try Shell.run(
            podman + ["save", "-q", "--format", "docker-archive", "--multi-image-archive", "-o", "\(work)/saved.tar"]
                + names)
        #expect(try BundleInspector.entries("\(work)/saved.tar").contains("manifest.json"))
        let verified = try Ferry.run(["verify", "\(work)/saved.tar"])
        #expect(verified.stdout.contains("OK, 2 image(s)"), "\(verified.stdout)")

        let site = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { site.stop() }
        try site.command(["import", "\(work)/saved.tar"])
        _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false)
        let siteCerts = try site.certDirectory()
        for name in names {
            let served =
                "\(site.host)/\(Reference.servedHost(registry.host))/\(name.split(separator: "/", maxSplits: 1)[1])"
            try Shell.run(podman + ["pull", "-q", "--cert-dir", siteCerts, served])
            let id = try Shell.run(podman + ["image", "inspect", "--format", "{{.Id}}", served]).stdout
                .trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(id == ids[name], "\(name): image ID \(id), saved as \(ids[name] ?? "?")")
        }
        // A layer cut short: refused, nothing visible (a fresh site).
        try Shell.run([
            "/usr/bin/python3", "-c",
            """
            import sys, tarfile, io
            with tarfile.open(sys.argv[1]) as t, tarfile.open(sys.argv[2], "w") as out:
                for m in t.getmembers():
                    d = t.extractfile(m).read() if m.isfile() else None
                    if d is not None and m.name.endswith(".tar"):
                        d = d[:-1] + bytes([d[-1] ^ 1])
                    out.addfile(m, io.BytesIO(d) if d is not None else None)
            """, "\(work)/saved.tar", "\(work)/broken.tar",
        ])
        let refused = try Shell.run(
            [ImportTests.appliance, "import", "\(work)/broken.tar", "--data-dir", "\(work)/other"], check: false)
        #expect(refused.status == 65 && refused.stderr.contains("does not match its digest"), "\(refused.stderr)")
    }

    /// A Hauler haul (`haul.tar.zst`: an OCI layout whose index names images by containerd name,
    /// with a cosign signature tagged under the image's name) and a Zarf package (a zstd tar with
    /// the layout under `images/`, named by `org.opencontainers.image.base.name`), built from their
    /// documented layouts around what skopeo writes.
    @Test func haulerAndZarfShapedArchivesImport() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let multi = try #require(seeded.images["test/multi:1.0"])
        let single = try #require(seeded.images["test/single:1.0"])
        let certs = registry.skopeoFlags("src")
        for name in ["multi", "single"] {
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--preserve-digests"] + certs
                    + ["docker://\(registry.host)/test/\(name):1.0", "oci:\(work)/layout:\(name)"])
        }
        let host = registry.host
        // index.json rewritten in each tool's way; Hauler's signature entry reuses the single image.
        try Shell.run([
            "/usr/bin/python3", "-c",
            """
            import json, os, sys, tarfile
            work, host = sys.argv[1], sys.argv[2]
            index = json.load(open(f"{work}/layout/index.json"))
            by_tag = {m["annotations"]["org.opencontainers.image.ref.name"]: m for m in index["manifests"]}
            def layout_tar(path, prefix, manifests, extra=None):
                with tarfile.open(path, "w") as t:
                    if extra:
                        for name, data in extra.items():
                            info = tarfile.TarInfo(name); info.size = len(data)
                            t.addfile(info, __import__("io").BytesIO(data))
                    t.add(f"{work}/layout/oci-layout", prefix + "oci-layout")
                    data = json.dumps({"schemaVersion": 2, "manifests": manifests}).encode()
                    info = tarfile.TarInfo(prefix + "index.json"); info.size = len(data)
                    t.addfile(info, __import__("io").BytesIO(data))
                    t.add(f"{work}/layout/blobs", prefix + "blobs")
            def entry(tag, annotations):
                m = dict(by_tag[tag]); m["annotations"] = annotations; return m
            layout_tar(f"{work}/haul.tar", "", [
                entry("multi", {"io.containerd.image.name": f"{host}/test/multi:1.0",
                                "org.opencontainers.image.ref.name": "test/multi:1.0", "kind": "dev.hauler/imageIndex"}),
                entry("single", {"io.containerd.image.name": f"{host}/test/multi:1.0",
                                 "org.opencontainers.image.ref.name": "test/multi:sha256-abc.sig", "kind": "dev.hauler/sigs"}),
            ])
            layout_tar(f"{work}/zarf.tar", "images/", [
                entry("multi", {"org.opencontainers.image.base.name": f"{host}/test/multi:1.0"}),
                entry("single", {"org.opencontainers.image.base.name": f"{host}/test/single:1.0"}),
            ], {"zarf.yaml": b"kind: ZarfPackageConfig\\nmetadata:\\n  name: test\\n"})
            """, work, host,
        ])
        try Self.flipLargest("\(work)/zarf.tar", "\(work)/flipped-zarf.tar")
        for name in ["haul", "zarf", "flipped-zarf"] {
            try Shell.run(["zstd", "-q", "--rm", "\(work)/\(name).tar", "-o", "\(work)/\(name).tar.zst"])
            if name == "flipped-zarf" {
                let refused = try Shell.run(
                    [ImportTests.appliance, "import", "\(work)/\(name).tar.zst", "--data-dir", "\(work)/site-bad"],
                    check: false)
                #expect(
                    refused.status == 65 && refused.stderr.contains("does not match its digest"), "\(refused.stderr)")
                continue
            }
            let site = "\(work)/site-\(name)"
            try Shell.run([ImportTests.appliance, "import", "\(work)/\(name).tar.zst", "--data-dir", site])
            let listed = try Shell.run([ImportTests.appliance, "images", "--json", "--data-dir", site]).stdout
            let served = Reference.servedHost(registry.host)
            #expect(listed.contains("\(served)/test/multi") && listed.contains(multi.description), "\(name): \(listed)")
            #expect(listed.contains(single.description), "\(name): \(listed)")
            if name == "haul" { #expect(listed.contains("sha256-abc.sig"), "\(listed)") }
        }
    }

    /// A tar of a distribution registry's storage directory (as mindthegap and oc-mirror carry
    /// one): every repository and tag in it, with the registry's digests.
    @Test func aRegistryStorageDirectoryImportsEveryTag() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        // A repository without a slash, as a Docker Hub mirror holds `alpine`.
        try SeededRegistry.retag(registry, "test/single:1.0", as: "plain:1")
        try Shell.run(["tar", "-C", registry.storage, "-cf", "\(work)/storage.tar", "."])
        try Self.flipLargest("\(work)/storage.tar", "\(work)/flipped.tar")
        let refused = try Shell.run(
            [ImportTests.appliance, "import", "\(work)/flipped.tar", "--data-dir", "\(work)/site"], check: false)
        #expect(refused.status == 65 && refused.stderr.contains("does not match its digest"), "\(refused.stderr)")
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        let catalog = try appliance.curl("/v2/_catalog").text
        #expect(!catalog.contains("test/"), "a refused archive left something visible: \(catalog)")
        try appliance.command(["import", "\(work)/storage.tar"])
        let site = "\(work)/site"
        let listed = try Shell.run([ImportTests.appliance, "images", "--json", "--data-dir", site]).stdout
        let raw = try Shell.run(
            [
                "skopeo", "inspect", "--raw", "--cert-dir", try appliance.certDirectory(),
                "docker://\(appliance.host)/docker.io/test/nested/docker:v2",
            ]
        ).stdout
        #expect(Digest.of(Array(raw.utf8)) == seeded.images["test/nested/docker:v2"])
        #expect(listed.contains("docker.io/library/plain"), "\(listed)")
        for (name, digest) in seeded.images {
            #expect(listed.contains(digest.description), "\(name): \(listed)")
            #expect(listed.contains("docker.io/\(name.split(separator: ":")[0])"), "\(name): \(listed)")
        }
        // --name-prefix puts every image where the site wants it.
        let prefixed = "\(work)/prefixed"
        try Shell.run(
            [ImportTests.appliance, "import", "\(work)/storage.tar", "--name-prefix", "mirror", "--data-dir", prefixed])
        let names = try Shell.run([ImportTests.appliance, "images", "--data-dir", prefixed]).stdout
        #expect(names.contains("mirror/docker.io/test/multi:1.0"), "\(names)")
        let bad = try Shell.run(
            [ImportTests.appliance, "import", "\(work)/storage.tar", "--name-prefix", "Bad/", "--data-dir", prefixed],
            check: false)
        #expect(bad.status == 64, "\(bad.stderr)")
    }
}
