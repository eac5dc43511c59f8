import Foundation
import OCICore
import Testing

/// `serve --proxy`: the appliance as a pull-through cache in front of a real distribution registry
/// (behind `upstream_proxy.py`, whose log counts what reached the upstream).
@Suite(.serialized)
struct PullThroughTests {
    struct Site {
        let registry: RegistryFixture
        let seeded: SeededRegistry
        let front: UpstreamProxy
        let appliance: ApplianceFixture
        let work: String

        static func make(
            ttl: String = "10s", frontOptions: [String] = [], largeLayer: Int = 24 << 20, proxyArguments: [String] = []
        ) throws -> Site {
            let registry = try RegistryFixture()
            let seeded = try SeededRegistry.make(registry, largeLayer: largeLayer)
            let front = try UpstreamProxy(backend: registry, options: frontOptions)
            let work = try Shell.temporaryDirectory("ferry-pull-through")
            let appliance = try ApplianceFixture(
                dataDirectory: "\(work)/data",
                extraArguments: ["--proxy", "http://\(front.host)", "--proxy-ttl", ttl, "--no-console"] + proxyArguments
            )
            return Site(registry: registry, seeded: seeded, front: front, appliance: appliance, work: work)
        }

        func stop() {
            appliance.stop()
            front.stop()
            registry.stop()
            Shell.remove(work)
        }

        /// How many requests the upstream answered with 200 for `path` (method and path, as logged).
        func upstreamRequests(_ method: String, _ path: String) -> Int {
            front.requests.filter { $0.hasPrefix("front \(method) \(path) 200 ") }.count
        }

        /// Files in the cache's blob directory.
        var cachedFiles: Set<String> {
            Set((try? FileManager.default.contentsOfDirectory(atPath: "\(work)/data/proxy/blobs/sha256")) ?? [])
        }
    }

    @Test func clientsPullThroughTheCacheAndKeepPullingWhenTheUpstreamIsGone() throws {
        let site = try Site.make()
        defer { site.stop() }
        let appliance = site.appliance
        let certs = try appliance.certDirectory()
        let upstream = site.front.host
        let served = upstream.replacingOccurrences(of: ":", with: "_")

        // 20 clients at once ask for one large blob nobody fetched yet: one upstream download,
        // and every client gets the whole blob.
        let large = try Shell.run([
            "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(site.registry.host)/test/large:latest",
        ]).stdout
        let manifest = try JSONSerialization.jsonObject(with: Data(large.utf8)) as? [String: Any]
        let layer = try #require((manifest?["layers"] as? [[String: Any]])?.first?["digest"] as? String)
        let path = "/v2/test/large/blobs/\(layer)"
        // xargs, not `sh -c '… & wait'`: a shell started from the test process waited forever
        // for its finished children here.
        try Shell.run([
            "sh", "-c",
            "seq 20 | xargs -P 20 -I N curl -sf --cacert \(appliance.caCertificate) -o \(site.work)/pull-N https://\(appliance.host)\(path)",
        ])
        for i in 1...20 {
            let sum = try Shell.run(["sha256sum", "\(site.work)/pull-\(i)"]).stdout.prefix(64)
            #expect("sha256:\(sum)" == layer, "client \(i) got other bytes")
        }
        #expect(site.upstreamRequests("GET", path) == 1, "\(site.front.requests.filter { $0.contains(layer) })")
        #expect(site.cachedFiles.contains(String(layer.dropFirst(7))))
        // The whole image now: the layer comes from the cache.
        try Shell.run([
            "skopeo", "copy", "-q", "--src-cert-dir", certs, "docker://\(appliance.host)/test/large:latest",
            "oci:\(site.work)/large:x",
        ])
        #expect(site.upstreamRequests("GET", path) == 1)

        // skopeo by the upstream's own names (docker's registry-mirrors form), every platform.
        let multi = "docker://\(appliance.host)/test/multi:1.0"
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs, multi]).stdout
        #expect(Digest.of(Array(raw.utf8)) == site.seeded.images["test/multi:1.0"])
        try Shell.run(["skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, multi, "oci:\(site.work)/multi:x"])

        // containerd and podman through the mirror snippets client-config prints.
        let snippet = try appliance.command([
            "client-config", appliance.host, "--for", "containerd", "--upstream", upstream,
        ]).stdout
        let hosts = "\(site.work)/certs.d"
        try Shell.run(["sh", "-c", snippet.replacingOccurrences(of: "/etc/containerd/certs.d", with: hosts)])
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        try containerd.ctr(["images", "pull", "--hosts-dir", hosts, "\(upstream)/test/single:1.0"])
        #expect(
            try containerd.ctr(["images", "ls"]).contains(site.seeded.images["test/single:1.0"]?.description ?? "?"))
        let podmanSnippet = try appliance.command([
            "client-config", appliance.host, "--for", "podman", "--upstream", upstream,
        ]).stdout
        let conf = "\(site.work)/registries.conf"
        try Shell.run([
            "sh", "-c",
            podmanSnippet.replacingOccurrences(of: "/etc/containers/registries.conf.d/ferry.conf", with: conf)
                .replacingOccurrences(of: "/etc/containers", with: "\(site.work)/containers"),
        ])
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(site.work)/podman", "--runroot",
            "\(site.work)/podman-run",
        ]
        defer { _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false) }
        try Shell.run(
            podman + ["pull", "-q", "--cert-dir", certs, "\(upstream)/test/nested/docker:v2"],
            environment: ["CONTAINERS_REGISTRIES_CONF": conf])
        // The mirror served it: the appliance fetched its manifest from the upstream.
        #expect(
            site.upstreamRequests(
                "GET",
                "/v2/test/nested/docker/manifests/\(site.seeded.images["test/nested/docker:v2"]?.description ?? "?")")
                == 1)
        let accessLog = try String(contentsOfFile: appliance.accessLog, encoding: .utf8)
        #expect(accessLog.contains("/v2/\(served)/test/nested/docker/manifests/v2"))

        // A tag moved upstream: the cached answer within the TTL, the new one after it.
        let single = "docker://\(appliance.host)/test/single:1.0"
        func digest(_ reference: String) throws -> Digest {
            Digest.of(Array(try Shell.run(["skopeo", "inspect", "--raw", "--cert-dir", certs, reference]).stdout.utf8))
        }
        #expect(try digest(single) == site.seeded.images["test/single:1.0"])
        try SeededRegistry.retag(site.registry, "test/multi:1.0", as: "test/single:1.0")
        #expect(try digest(single) == site.seeded.images["test/single:1.0"], "re-checked before the TTL")
        Thread.sleep(forTimeInterval: 10.5)
        // (skopeo copied one platform of the index: the tag now names that image.)
        let moved = Digest.of(
            Array(
                try Shell.run([
                    "skopeo", "inspect", "--raw", "--tls-verify=false",
                    "docker://\(site.registry.host)/test/single:1.0",
                ]).stdout.utf8))
        #expect(moved != site.seeded.images["test/single:1.0"])
        #expect(try digest(single) == moved, "not re-checked after the TTL")

        // The upstream is gone: what was pulled still pulls, tags as last seen (TTL passed).
        site.front.stop()
        site.registry.stop()
        Thread.sleep(forTimeInterval: 10.5)
        try Shell.run(["skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, multi, "oci:\(site.work)/again:x"])
        try Shell.run([
            "skopeo", "copy", "-q", "--src-cert-dir", certs, "docker://\(appliance.host)/test/large:latest",
            "oci:\(site.work)/large-again:x",
        ])
        // Never fetched: a clear error, not a hang.
        let missing = try appliance.curl("/v2/test/never/manifests/1.0")
        #expect(missing.status == 502)
        #expect(missing.text.contains("upstream registry unavailable"))
        #expect(!missing.text.contains(site.work))
    }

    @Test func contentThatDoesNotMatchItsDigestIsNeverCached() throws {
        // The upstream wants credentials: the appliance's own (--proxy-creds).
        let site = try Site.make(
            frontOptions: ["--corrupt-blobs", "--require-basic", "mirror:s3cret"], largeLayer: 2 << 20,
            proxyArguments: ["--proxy-creds", "mirror:s3cret"])
        defer { site.stop() }
        let appliance = site.appliance
        let large = try Shell.run([
            "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://\(site.registry.host)/test/large:latest",
        ]).stdout
        let manifest = try JSONSerialization.jsonObject(with: Data(large.utf8)) as? [String: Any]
        let layers = try #require(manifest?["layers"] as? [[String: Any]])
        let layer = try #require(layers.first?["digest"] as? String)
        let layerSize = try #require(layers.first?["size"] as? Int)
        let path = "/v2/test/large/blobs/\(layer)"
        let ingest = "\(site.work)/data/proxy/ingest"
        for attempt in 1...2 {
            // The body is cut short before its last byte: no client takes it as complete.
            let pulled = try Shell.run(
                [
                    "curl", "-sf", "--cacert", appliance.caCertificate, "-o", "\(site.work)/blob",
                    "https://\(appliance.host)\(path)",
                ],
                check: false)
            #expect(pulled.status != 0, "attempt \(attempt)")
            let size = (try? FileManager.default.attributesOfItem(atPath: "\(site.work)/blob")[.size] as? Int) ?? 0
            #expect(size < layerSize, "attempt \(attempt): \(size) bytes")
            // The client's answer ends when the download fails or starts over; the download's own
            // retry may still run: wait for it to end, so the next request starts a new one.
            for _ in 0..<100 where site.upstreamRequests("GET", path) < 2 * attempt || !Shell.isEmptyDirectory(ingest) {
                Thread.sleep(forTimeInterval: 0.1)
            }
            Thread.sleep(forTimeInterval: 0.3)
        }
        #expect(!site.cachedFiles.contains(String(layer.dropFirst(7))))
        #expect(Shell.isEmptyDirectory(ingest), "a temporary file was left in the cache")
        // Each request went upstream again (the client's own retry makes it two GETs each).
        #expect(site.upstreamRequests("GET", path) == 4, "\(site.front.requests.filter { $0.contains(layer) })")
        // With the appliance's credentials, every one of them.
        #expect(
            site.front.requests.filter { $0.contains(layer) && $0.contains(" 200 ") }.allSatisfy {
                $0.hasSuffix("auth=yes")
            })
        #expect(
            try String(contentsOfFile: "\(site.appliance.dataDirectory)/serve-\(appliance.port).log", encoding: .utf8)
                .contains("not cached"))
        let skopeo = try Shell.run(
            [
                "skopeo", "copy", "-q", "--src-cert-dir", try appliance.certDirectory(),
                "docker://\(appliance.host)/test/large:latest", "oci:\(site.work)/large:x",
            ], check: false)
        #expect(skopeo.status != 0)
    }
}
