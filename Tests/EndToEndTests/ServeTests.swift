import Foundation
import OCICore
import Testing

/// `ferry-appliance serve` with real clients: skopeo, podman and containerd pull over TLS verified
/// against the CA the appliance made; behaviour compared with the distribution registry.
@Suite(.serialized)
struct ServeTests {
    /// A seeded registry, a bundle of all its images, and an appliance serving an empty data directory.
    struct Site {
        let registry: RegistryFixture
        let seeded: SeededRegistry
        let work: String
        let bundle: String
        let appliance: ApplianceFixture
        /// The repository prefix the appliance serves the registry's images under.
        var served: String { registry.host.replacingOccurrences(of: ":", with: "_") }

        static func make(extraTags: [String] = []) throws -> Site {
            let registry = try RegistryFixture(tls: true)
            let seeded = try SeededRegistry.make(registry, largeLayer: 12 << 20)
            let work = try Shell.temporaryDirectory()
            var references = seeded.references
            for tag in extraTags {
                try Shell.run(
                    ["skopeo", "copy", "-q"] + registry.skopeoFlags("src") + registry.skopeoFlags("dest") + [
                        "docker://\(registry.host)/test/single:1.0", "docker://\(registry.host)/test/single:\(tag)",
                    ])
                references.append("\(registry.host)/test/single:\(tag)")
            }
            let bundle = "\(work)/site.tar"
            try Ferry.run(["export", "-o", bundle, "--cache", "\(work)/cache"] + references + registry.ferryTrustFlags)
            let appliance = try ApplianceFixture(dataDirectory: "\(work)/data")
            return Site(registry: registry, seeded: seeded, work: work, bundle: bundle, appliance: appliance)
        }

        func stop() {
            appliance.stop()
            registry.stop()
            Shell.remove(work)
        }
    }

    @Test func skopeoPodmanAndContainerdPullEveryImageOverVerifiedTLS() throws {
        let site = try Site.make()
        defer { site.stop() }
        let appliance = site.appliance
        #expect(try appliance.curl("/healthz").status == 200)
        #expect(try appliance.curl("/v2/_catalog").json["repositories"] as? [String] == [])

        // Imported while the server runs: served at once, no restart.
        try appliance.command(["import", site.bundle])
        let certs = try appliance.certDirectory()
        for (i, (name, digest)) in site.seeded.images.sorted(by: { $0.key < $1.key }).enumerated() {
            let reference = "docker://\(appliance.host)/\(site.served)/\(name)"
            let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs, reference]).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, reference, "oci:\(site.work)/oci-\(i):x"])
        }
        // Every platform of the multi-platform image, one at a time.
        for (arch, variant) in [("amd64", ""), ("arm64", "v8")] {
            try Shell.run(
                ["skopeo", "--override-os", "linux", "--override-arch", arch]
                    + (variant.isEmpty ? [] : ["--override-variant", variant]) + [
                        "copy", "-q", "--src-cert-dir", certs,
                        "docker://\(appliance.host)/\(site.served)/test/multi:1.0",
                        "oci:\(site.work)/oci-\(arch):x",
                    ])
        }

        // podman (vfs storage of the test's own).
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(site.work)/podman", "--runroot",
            "\(site.work)/podman-run",
        ]
        for name in ["test/multi:1.0", "test/nested/docker:v2", "test/single:1.0"] {
            try Shell.run(podman + ["pull", "-q", "--cert-dir", certs, "\(appliance.host)/\(site.served)/\(name)"])
            let digest = try Shell.run(
                podman + ["image", "inspect", "--format", "{{.Digest}}", "\(appliance.host)/\(site.served)/\(name)"]
            ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            #expect(digest == site.seeded.images[name]?.description, "podman \(name)")
        }
        _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false)

        // containerd, configured with exactly what `client-config --for containerd` prints.
        let snippet = try appliance.command(["client-config", appliance.host, "--for", "containerd"]).stdout
        let hostsDirectory = "\(site.work)/certs.d"
        try Shell.run(
            ["sh", "-c", snippet.replacingOccurrences(of: "/etc/containerd/certs.d", with: hostsDirectory)])
        #expect(FileManager.default.fileExists(atPath: "\(hostsDirectory)/\(appliance.host)/hosts.toml"))
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        for name in ["test/multi:1.0", "test/nested/docker:v2"] {
            let reference = "\(appliance.host)/\(site.served)/\(name)"
            try containerd.ctr(["images", "pull", "--all-platforms", "--hosts-dir", hostsDirectory, reference])
            let listing = try containerd.ctr(["images", "ls"])
            let line = listing.split(separator: "\n").first { $0.hasPrefix(reference + " ") }
            #expect(line?.contains(site.seeded.images[name]?.description ?? "?") == true, "ctr \(name): \(listing)")
        }

        // The access log saw the clients; SIGTERM stops the server cleanly.
        let log = try String(contentsOfFile: appliance.accessLog, encoding: .utf8)
        #expect(log.contains("\"GET /v2/\(site.served)/test/multi/manifests/1.0\" 200"))
        #expect(appliance.stop() == 0)
    }

    @Test func brokenBundlesChangeNothingClientsSee() throws {
        let site = try Site.make()
        defer { site.stop() }
        let appliance = site.appliance
        try appliance.command(["import", site.bundle])
        func view() throws -> [String] {
            var lines: [String] = [try appliance.curl("/v2/_catalog").text]
            for name in site.seeded.images.keys.sorted() {
                let repository = "\(site.served)/\(name.split(separator: ":")[0])"
                lines.append(try appliance.curl("/v2/\(repository)/tags/list").text)
                let head = try appliance.curl(
                    "/v2/\(repository)/manifests/\(name.split(separator: ":")[1])", method: "HEAD")
                lines.append("\(head.status) \(head.headers["docker-content-digest"] ?? "-")")
            }
            return lines
        }
        let before = try view()
        // A bundle with something new (a tag), broken in each way of the verify corpus: had any of
        // them been imported, the new tag would be visible.
        let registry = site.registry
        try Shell.run(
            ["skopeo", "copy", "-q"] + registry.skopeoFlags("src") + registry.skopeoFlags("dest") + [
                "docker://\(registry.host)/test/single:1.0", "docker://\(registry.host)/test/fresh:new",
            ])
        let fresh = "\(site.work)/fresh.tar"
        try Ferry.run(
            ["export", "-o", fresh, "--cache", "\(site.work)/cache", "\(registry.host)/test/fresh:new"]
                + registry.ferryTrustFlags)
        var refusedCount = 0
        for mutation in [
            "flip-layer", "flip-manifest", "flip-index", "swap-blobs", "drop-config", "unlist-config", "dotdot",
            "symlink", "duplicate", "bad-layout", "garbage", "cut:20000",
        ] {
            let broken = "\(site.work)/broken-\(refusedCount).tar"
            let made = try Shell.run(
                ["python3", "\(Shell.supportDirectory)/bundle_mutator.py", fresh, broken, mutation], check: false)
            guard made.status == 0 else { continue }
            let result = try appliance.command(["import", broken], check: false)
            #expect(result.status == 65, "\(mutation): \(result.stderr)")
            #expect(try view() == before, "\(mutation)")
            #expect(try appliance.curl("/v2/\(site.served)/test/fresh/tags/list").status == 404, "\(mutation)")
            refusedCount += 1
        }
        #expect(refusedCount >= 10)
        // A bundle that is not there: named, with the reason, exit 1.
        let missing = try appliance.command(["import", "\(site.work)/missing.tar"], check: false)
        #expect(missing.status == 1, "\(missing.stderr)")
        #expect(missing.stderr.contains("\(site.work)/missing.tar: No such file or directory"), "\(missing.stderr)")

        // A configuration that requires signed bundles: unsigned and tampered bundles are refused
        // (a bad configuration is a usage error), the signed one lands.
        try Ferry.run(["keygen", "-o", "\(site.work)/site"])
        let config = "\(site.work)/appliance.yml"
        try "import:\n  requireSignature: true\n".write(toFile: config, atomically: true, encoding: .utf8)
        #expect(try appliance.command(["import", fresh, "--config", config], check: false).status == 64)
        try "import:\n  requireSignature: true\n  trustedKeys: [\(site.work)/site.pub]\n".write(
            toFile: config, atomically: true, encoding: .utf8)
        let unsigned = try appliance.command(["import", fresh, "--config", config], check: false)
        #expect(unsigned.status == 65 && unsigned.stderr.contains("not signed"), "\(unsigned.stderr)")
        try Ferry.run(["sign", fresh, "--key", "\(site.work)/site.key"])
        let tampered = "\(site.work)/tampered.tar"
        try Shell.run(["python3", "\(Shell.supportDirectory)/bundle_mutator.py", fresh, tampered, "tamper-manifest"])
        #expect(try appliance.command(["import", tampered, "--config", config], check: false).status == 65)
        #expect(try view() == before)
        #expect(try appliance.curl("/v2/\(site.served)/test/fresh/tags/list").status == 404)
        // The intact, signed bundle lands, and shows.
        try appliance.command(["import", fresh, "--config", config])
        #expect(try appliance.curl("/v2/\(site.served)/test/fresh/tags/list").json["tags"] as? [String] == ["new"])
    }

    @Test func rangesPaginationAndErrorsMatchTheDistributionRegistry() throws {
        let site = try Site.make(extraTags: ["1.1", "2.0", "2.1", "10"])
        defer { site.stop() }
        let appliance = site.appliance
        try appliance.command(["import", site.bundle])
        let registryCA = try #require(site.registry.tls?.caCertificate)
        func upstream(_ path: String, method: String = "GET", headers: [String] = []) throws -> HTTPReply {
            try HTTPReply.fetch(
                "https://\(site.registry.host)\(path)", method: method, headers: headers, ca: registryCA)
        }
        func ours(_ path: String, method: String = "GET", headers: [String] = []) throws -> HTTPReply {
            try appliance.curl(
                path.replacingOccurrences(of: "/v2/", with: "/v2/\(site.served)/"), method: method, headers: headers)
        }

        // Manifests, GET and HEAD: same bytes, type, digest and length.
        for (name, _) in site.seeded.images {
            let parts = name.split(separator: ":")
            for method in ["GET", "HEAD"] {
                let path = "/v2/\(parts[0])/manifests/\(parts[1])"
                let accept = "Accept: \(MediaType.acceptedManifestTypes.joined(separator: ", "))"
                let theirs = try upstream(path, method: method, headers: [accept])
                let mine = try ours(path, method: method, headers: [accept])
                #expect(mine.status == theirs.status, "\(method) \(path)")
                #expect(mine.body == theirs.body, "\(method) \(path)")
                for header in ["content-type", "docker-content-digest", "content-length"] {
                    #expect(mine.headers[header] == theirs.headers[header], "\(method) \(path) \(header)")
                }
            }
        }

        // Blob ranges.
        let large = try #require(
            site.seeded.images["test/large:latest"].map { _ in
                try ours("/v2/test/large/manifests/latest").json
            })
        let layer = try #require(((large["layers"] as? [[String: Any]])?.first?["digest"]) as? String)
        let size = try #require(((large["layers"] as? [[String: Any]])?.first?["size"]) as? Int)
        let blob = "/v2/test/large/blobs/\(layer)"
        for range in ["bytes=0-9", "bytes=100-", "bytes=-5", "bytes=\(size - 3)-\(size + 100)", "bytes=\(size)-", nil] {
            let headers = range.map { ["Range: \($0)"] } ?? []
            let theirs = try upstream(blob, headers: headers)
            let mine = try ours(blob, headers: headers)
            #expect(mine.status == theirs.status, "\(range ?? "no range")")
            #expect(mine.headers["content-range"] == theirs.headers["content-range"], "\(range ?? "no range")")
            // On 416 the registry keeps the blob's Content-Length on its error text; lengths and bodies are compared otherwise.
            if mine.status != 416 {
                #expect(mine.headers["content-length"] == theirs.headers["content-length"], "\(range ?? "no range")")
                #expect(mine.body == theirs.body, "\(range ?? "no range")")
            }
        }
        let head = try ours(blob, method: "HEAD")
        #expect(head.status == 200 && head.headers["content-length"] == String(size) && head.body.isEmpty)
        #expect(head.headers["docker-content-digest"] == layer)

        // Errors: same status and code.
        let unknownBlob = "sha256:" + String(repeating: "0", count: 64)
        for (path, code) in [
            ("/v2/test/large/blobs/\(unknownBlob)", "BLOB_UNKNOWN"),
            ("/v2/test/large/blobs/sha256:123", "DIGEST_INVALID"),
            ("/v2/test/large/manifests/no-such-tag", "MANIFEST_UNKNOWN"),
            ("/v2/test/large/manifests/\(unknownBlob)", "MANIFEST_UNKNOWN"),
        ] {
            let theirs = try upstream(path)
            let mine = try ours(path)
            #expect(mine.status == theirs.status, "\(path)")
            #expect(mine.errorCode == code && theirs.errorCode == code, "\(path): \(mine.text) / \(theirs.text)")
        }
        // A repository nobody has: the spec's NAME_UNKNOWN (the registry says MANIFEST_UNKNOWN here).
        let missing = try appliance.curl("/v2/nobody/here/manifests/1")
        #expect(missing.status == 404 && missing.errorCode == "NAME_UNKNOWN")
        #expect(try appliance.curl("/v2/Upper/manifests/1").errorCode == "NAME_INVALID")

        // Catalog pagination: follow Link headers one entry at a time; the same repositories as the registry's.
        func walk(_ fetch: (String) throws -> HTTPReply, start: String, key: String) throws -> [String] {
            var collected: [String] = []
            var next: String? = start
            var pages = 0
            while let path = next, pages < 50 {
                let reply = try fetch(path)
                #expect(reply.status == 200, "\(path)")
                collected += (reply.json[key] as? [String]) ?? []
                next = reply.headers["link"].flatMap { link in
                    link.split(separator: ">").first.map { String($0.dropFirst()) }
                }
                pages += 1
            }
            return collected
        }
        let theirCatalog = try walk({ try upstream($0) }, start: "/v2/_catalog?n=1", key: "repositories")
        let ourCatalog = try walk({ try appliance.curl($0) }, start: "/v2/_catalog?n=1", key: "repositories")
        #expect(ourCatalog == theirCatalog.map { "\(site.served)/\($0)" })
        #expect(ourCatalog.count == 4)
        // Tags: the registry (2.8) ignores n; ours pages in ASCII order and ends with the same set.
        let ourTags = try walk(
            { try appliance.curl($0) }, start: "/v2/\(site.served)/test/single/tags/list?n=2", key: "tags")
        let theirTags = try upstream("/v2/test/single/tags/list").json["tags"] as? [String] ?? []
        #expect(ourTags == theirTags.sorted())
        #expect(ourTags == ["1.0", "1.1", "10", "2.0", "2.1"])
        let empty = try appliance.curl("/v2/\(site.served)/test/single/tags/list?n=0")
        #expect(empty.json["tags"] as? [String] == [] && empty.headers["link"] == nil)
    }

    @Test func tlsIsVerifiedRenewedForNewNamesAndReplaceableByTheOperatorsCertificate() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let data = "\(work)/data"
        var appliance = try ApplianceFixture(dataDirectory: data)
        let ca = try String(contentsOfFile: appliance.caCertificate, encoding: .utf8)
        #expect(try appliance.command(["ca"]).stdout == ca)
        let keyMode = try FileManager.default.attributesOfItem(atPath: "\(data)/tls/ca.key")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        // TLS 1.2 and 1.3 are offered; 1.1 is not.
        #expect(
            try Shell.run([
                "curl", "-sS", "--cacert", appliance.caCertificate, "--tlsv1.2", "--tls-max", "1.2",
                "https://\(appliance.host)/v2/",
            ]).status == 0)
        #expect(
            try Shell.run([
                "curl", "-sS", "--cacert", appliance.caCertificate, "--tlsv1.3", "https://\(appliance.host)/v2/",
            ]).status == 0)
        let old = try Shell.run(
            ["openssl", "s_client", "-connect", appliance.host, "-tls1_1"], input: Data(), check: false)
        #expect(old.status != 0)
        // TLS 1.2 offers AEAD suites only: a CBC suite is refused, GCM accepted.
        for (cipher, accepted) in [
            ("ECDHE-ECDSA-AES128-SHA", false), ("ECDHE-ECDSA-AES128-SHA256", false),
            ("ECDHE-ECDSA-AES128-GCM-SHA256", true),
        ] {
            let handshake = try Shell.run(
                ["openssl", "s_client", "-connect", appliance.host, "-tls1_2", "-cipher", cipher], input: Data(),
                check: false)
            #expect((handshake.status == 0) == accepted, "\(cipher): \(handshake.status)")
        }
        let firstCertificate = try String(contentsOfFile: "\(data)/tls/server.crt", encoding: .utf8)
        #expect(appliance.stop() == 0)

        // Same names: the certificate is kept. A new --san: renewed, same CA, and the name verifies.
        appliance = try ApplianceFixture(dataDirectory: data)
        #expect(try String(contentsOfFile: "\(data)/tls/server.crt", encoding: .utf8) == firstCertificate)
        appliance.stop()
        appliance = try ApplianceFixture(dataDirectory: data, extraArguments: ["--san", "registry.plant.example"])
        #expect(try String(contentsOfFile: "\(data)/tls/server.crt", encoding: .utf8) != firstCertificate)
        #expect(try String(contentsOfFile: appliance.caCertificate, encoding: .utf8) == ca)
        #expect(appliance.process.log.contains("renewed (names changed"))
        let resolved = try Shell.run([
            "curl", "-sS", "--cacert", appliance.caCertificate, "--resolve",
            "registry.plant.example:\(appliance.port):127.0.0.1",
            "https://registry.plant.example:\(appliance.port)/v2/",
        ])
        #expect(resolved.stdout == "{}")
        appliance.stop()

        // The operator's own certificate (with its chain file) instead.
        let operatorCA = try TestCA(directory: "\(work)/operator")
        appliance = try ApplianceFixture(
            dataDirectory: data,
            extraArguments: ["--tls-cert", operatorCA.serverCertificate, "--tls-key", operatorCA.serverKey])
        #expect(try appliance.curl("/v2/", ca: operatorCA.caCertificate).status == 200)
        let refused = try Shell.run(
            ["curl", "-sS", "--cacert", appliance.caCertificate, "https://\(appliance.host)/v2/"], check: false)
        #expect(refused.status != 0)

        // What keeps serve from starting is said in one line naming the address or the file.
        for (arguments, message) in [
            (["--listen", appliance.host], "cannot listen on \(appliance.host): address already in use"),
            (["--listen", "nowhere.invalid:5000"], "cannot listen on nowhere.invalid:5000: the name does not resolve"),
            (
                ["--tls-cert", "\(work)/missing.crt", "--tls-key", operatorCA.serverKey],
                "\(work)/missing.crt: cannot read the certificate chain: no such file or directory"
            ),
            (
                ["--tls-cert", operatorCA.serverCertificate, "--tls-key", operatorCA.serverCertificate],
                "\(operatorCA.serverCertificate): not a PEM private key"
            ),
        ] {
            let listen = arguments.contains("--listen") ? [] : ["--listen", "127.0.0.1:\(Shell.freePort())"]
            let failed = try Shell.run(
                [ApplianceFixture.binary, "serve", "--data-dir", "\(work)/other"] + listen + arguments, check: false)
            #expect(failed.status == 1, "\(arguments): \(failed.stderr)")
            #expect(failed.stderr.contains(message), "\(arguments): \(failed.stderr)")
            #expect(failed.stderr.split(separator: "\n").count == 1, "\(arguments): \(failed.stderr)")
        }
        // A configuration with a setting no one reads (a typo), or that is not YAML: a usage error
        // naming the file, the line and the setting.
        for (yaml, message) in [
            ("listen: \":0\"\nreadonly: true\n", "line 2: unknown setting readonly (did you mean readOnly?)"),
            ("auth:\n  anonymous: pull\n  htpasswdrole: push\n", "line 3: unknown setting auth.htpasswdrole"),
            ("listen: [1, 2\n", "not valid YAML: line 2, column 1: did not find expected ',' or ']'"),
            ("auth:\n  htpasswd: \(work)/missing\n", "auth.htpasswd: \(work)/missing: no such file or directory"),
        ] {
            let config = "\(work)/bad.yml"
            try yaml.write(toFile: config, atomically: true, encoding: .utf8)
            let failed = try Shell.run(
                [ApplianceFixture.binary, "serve", "--data-dir", "\(work)/other", "--config", config], check: false)
            #expect(failed.status == 64, "\(yaml): \(failed.stderr)")
            #expect(failed.stderr.contains("\(config): \(message)"), "\(yaml): \(failed.stderr)")
            #expect(failed.stderr.split(separator: "\n").count == 1, "\(yaml): \(failed.stderr)")
        }
        // Anchors and merge keys are YAML: a merged mapping's keys are checked, not the `<<`.
        let merged = "\(work)/merged.yml"
        try """
        proxy:
          upstreams:
            - &hub {url: "https://registry-1.docker.io", ttl: 600}
            - {<<: *hub, url: "https://quay.io"}
        """.write(toFile: merged, atomically: true, encoding: .utf8)
        let images = try Shell.run(
            [ApplianceFixture.binary, "images", "--data-dir", "\(work)/other", "--config", merged], check: false)
        #expect(images.status == 0, "\(images.stderr)")
        // A template with every line commented out sets nothing, as an empty file.
        try "# listen: \":5000\"\n# readOnly: true\n".write(toFile: merged, atomically: true, encoding: .utf8)
        let commented = try Shell.run(
            [ApplianceFixture.binary, "images", "--data-dir", "\(work)/other", "--config", merged], check: false)
        #expect(commented.status == 0, "\(commented.stderr)")
        appliance.stop()
    }
}
