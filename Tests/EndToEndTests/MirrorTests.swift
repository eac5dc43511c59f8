import Foundation
import OCICore
import Testing

/// Clients keep their image names: with what `client-config` prints, the original references
/// (`REGISTRY/test/multi:1.0`) pull from the appliance while the source registry is gone.
@Suite(.serialized)
struct MirrorTests {
    @Test func originalReferencesPullThroughTheMirrorConfiguration() throws {
        let site = try ServeTests.Site.make()
        defer { site.stop() }
        let appliance = site.appliance
        try appliance.command(["import", site.bundle])
        let upstream = site.registry.host
        let digests = site.seeded.images
        site.registry.stop()  // from here on only the appliance has the images

        // containerd: the hosts.toml files exactly as printed, under a directory of the test's.
        let snippet = try appliance.command(["client-config", appliance.host, "--for", "containerd"]).stdout
        #expect(snippet.contains("/etc/containerd/certs.d/\(upstream)/hosts.toml"))
        let hosts = "\(site.work)/certs.d"
        try Shell.run(["sh", "-c", snippet.replacingOccurrences(of: "/etc/containerd/certs.d", with: hosts)])
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        for name in ["test/multi:1.0", "test/single:1.0"] {
            try containerd.ctr(["images", "pull", "--hosts-dir", hosts, "\(upstream)/\(name)"])
            let listing = try containerd.ctr(["images", "ls"])
            let line = listing.split(separator: "\n").first { $0.hasPrefix("\(upstream)/\(name) ") }
            #expect(line?.contains(digests[name]?.description ?? "?") == true, "ctr \(name): \(listing)")
        }

        // podman: the registries.conf mirror entries as printed.
        let podmanSnippet = try appliance.command(["client-config", appliance.host, "--for", "podman"]).stdout
        let conf = "\(site.work)/registries.conf"
        try Shell.run([
            "sh", "-c",
            podmanSnippet.replacingOccurrences(
                of: "/etc/containers/registries.conf.d/ferry.conf", with: conf
            ).replacingOccurrences(of: "/etc/containers", with: "\(site.work)/containers"),
        ])
        #expect(try String(contentsOfFile: conf, encoding: .utf8).contains("location = \"\(appliance.host)/"))
        let certs = try appliance.certDirectory()
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(site.work)/podman", "--runroot",
            "\(site.work)/podman-run",
        ]
        try Shell.run(
            podman + ["pull", "-q", "--cert-dir", certs, "\(upstream)/test/single:1.0"],
            environment: ["CONTAINERS_REGISTRIES_CONF": conf])
        let digest = try Shell.run(
            podman + ["image", "inspect", "--format", "{{.Digest}}", "\(upstream)/test/single:1.0"],
            environment: ["CONTAINERS_REGISTRIES_CONF": conf]
        ).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(digest == digests["test/single:1.0"]?.description)
        _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false)

        // Docker Hub-style and containerd `ns` paths reach the stored name.
        let served = upstream.replacingOccurrences(of: ":", with: "_")
        let viaNamespace = try appliance.curl("/v2/test/single/manifests/1.0?ns=\(upstream)", method: "HEAD")
        #expect(viaNamespace.status == 200)
        #expect(viaNamespace.headers["docker-content-digest"] == digests["test/single:1.0"]?.description)
        #expect(try appliance.curl("/v2/\(served)/test/single/manifests/1.0", method: "HEAD").status == 200)
    }
}
