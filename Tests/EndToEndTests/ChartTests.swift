import Foundation
import OCICore
import Testing

/// A chart repository as the web hosts it: `index.yaml` and chart archives over TLS, behind Basic
/// credentials, from `static_server.py`.
final class ChartRepositoryFixture: @unchecked Sendable {
    let port = Shell.freePort()
    let root: String
    let ca: TestCA
    let process: BackgroundProcess
    var host: String { "127.0.0.1:\(port)" }
    var requests: [String] { process.log.split(separator: "\n").map(String.init) }

    init(root: String, credentials: String, withoutLength: Bool = false) throws {
        self.root = root
        ca = try TestCA(directory: "\(root)-tls")
        process = try BackgroundProcess(
            [
                "/usr/bin/python3", "\(Shell.supportDirectory)/static_server.py", "--port", "\(port)", "--root", root,
                "--cert", ca.serverCertificate, "--key", ca.serverKey, "--require-basic", credentials,
            ] + (withoutLength ? ["--no-length"] : []), logPath: "\(root)-server.log")
        try Shell.waitForPort(port)
    }

    func stop() { process.stop() }
    deinit { stop() }
}

/// Helm charts from classic chart repositories (issue 13, point 3): fetched over TLS with the
/// host's credentials, checked against the index's digest, carried as the OCI artifact `helm push`
/// makes, served by the appliance byte for byte; the images a chart names found (values, a
/// template's `args`, a subchart) and exported with it; bad repositories refused by name.
@Suite(.serialized)
struct ChartTests {
    /// A chart `demo` naming three of the seeded images: one by a values image map, one only in a
    /// container's `args`, one in a subchart archived under `charts/`; and one image only a
    /// template helper names (unresolved).
    static func makeChart(in work: String, registry: String) throws -> String {
        let chart = "\(work)/src/demo"
        try FileManager.default.createDirectory(atPath: "\(chart)/templates", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: "\(work)/src/sub/templates", withIntermediateDirectories: true)
        let files = [
            "demo/Chart.yaml": """
            apiVersion: v2
            name: demo
            version: 0.1.0+build.7
            appVersion: "1.0"
            description: A chart <for> tests
            home: https://example.com/demo
            maintainers:
              - name: Ferry
                email: ferry@example.com
            annotations:
              category: Testing

            """,
            "demo/values.yaml": """
            image:
              registry: \(registry)
              repository: test/single
              tag: "1.0"
            replicas: 1

            """,
            "demo/templates/deployment.yaml": """
            apiVersion: apps/v1
            kind: Deployment
            spec:
              template:
                spec:
                  containers:
                    - name: app
                      image: "{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}"
                      args: ["--sidecar-image=\(registry)/test/nested/docker:v2", "--port=8080"]
                    - name: helper
                      image: {{ include "demo.helperImage" . }}

            """,
            "sub/Chart.yaml": "apiVersion: v2\nname: sub\nversion: 0.2.0\n",
            "sub/values.yaml": "image: \(registry)/test/multi:1.0\n",
            "sub/templates/pod.yaml": "kind: Pod\n",
        ]
        for (path, text) in files { try text.write(toFile: "\(work)/src/\(path)", atomically: true, encoding: .utf8) }
        try FileManager.default.createDirectory(atPath: "\(chart)/charts", withIntermediateDirectories: true)
        try Shell.run(["tar", "-C", "\(work)/src", "-czf", "\(chart)/charts/sub-0.2.0.tgz", "sub"])
        let archive = "\(work)/demo-0.1.0+build.7.tgz"
        try Shell.run(["tar", "-C", "\(work)/src", "-czf", archive, "demo"])
        return archive
    }

    static func index(archive: String, url: String, digest: Digest? = nil) throws -> String {
        let bytes = Array(try Data(contentsOf: URL(fileURLWithPath: archive)))
        return """
            apiVersion: v1
            entries:
              demo:
                - name: demo
                  version: 0.1.0+build.7
                  appVersion: "1.0"
                  created: "2026-11-30T10:20:30.123456789Z"
                  digest: \((digest ?? Digest.of(bytes)).encoded)
                  urls:
                    - \(url)
            generated: "2026-11-30T10:20:30Z"

            """
    }

    @Test func aChartFromAChartRepositoryTravelsAsAnOCIChart() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        _ = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let archive = try Self.makeChart(in: work, registry: registry.host)
        let root = "\(work)/www"
        for directory in ["charts", "bad", "broken"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: archive, toPath: "\(root)/charts/demo-0.1.0+build.7.tgz")
        try Self.index(archive: archive, url: "demo-0.1.0+build.7.tgz").write(
            toFile: "\(root)/charts/index.yaml", atomically: true, encoding: .utf8)
        let repository = try ChartRepositoryFixture(root: root, credentials: "reader:chart-secret")
        defer { repository.stop() }
        let trust =
            registry.ferryTrustFlags + [
                "--ca-file", repository.ca.caCertificate, "--creds", "\(repository.host)=reader:chart-secret",
            ]
        try "chart https://\(repository.host)/charts demo 0.1.0+build.7\n".write(
            toFile: "\(work)/list.txt", atomically: true, encoding: .utf8)

        // Report: the chart alone is carried; its images are listed with where they were found.
        let reported = try Ferry.run(
            [
                "export", "-f", "\(work)/list.txt", "-o", "\(work)/report.tar", "--cache", "\(work)/cache", "--json",
                "--chart-images", "report",
            ] + trust)
        let report = try JSONSerialization.jsonObject(with: Data(reported.stdout.utf8)) as? [String: Any]
        let chartName = "\(repository.host)/charts/demo:0.1.0_build.7"
        #expect((report?["images"] as? [[String: Any]])?.compactMap { $0["reference"] as? String } == [chartName])
        let chart = try #require((report?["charts"] as? [[String: Any]])?.first)
        let found = (chart["images"] as? [[String: Any]] ?? []).compactMap { $0["reference"] as? String }
        let expected = ["test/single:1.0", "test/nested/docker:v2", "test/multi:1.0"].map { "\(registry.host)/\($0)" }
        #expect(Set(found) == Set(expected), "\(found)")
        let origins = (chart["images"] as? [[String: Any]] ?? []).compactMap { $0["origin"] as? String }
        #expect(origins.contains { $0.contains("sub-0.2.0.tgz:sub/values.yaml") }, "\(origins)")
        #expect(origins.contains { $0.contains("demo/templates/deployment.yaml:9") }, "\(origins)")
        let unresolved = (chart["unresolved"] as? [[String: Any]] ?? []).compactMap { $0["text"] as? String }
        #expect(unresolved == [#"{{ include "demo.helperImage" . }}"#], "\(unresolved)")
        // The repository asked for credentials, and got them only after asking.
        #expect(repository.requests.contains("GET /charts/index.yaml 401 auth=no"), "\(repository.requests)")
        #expect(repository.requests.contains("GET /charts/demo-0.1.0+build.7.tgz 200 auth=yes"))

        // A chart is not an image: cosign's image-signature check leaves it alone.
        _ = try ReferrerTests.cosignSign([], in: work)
        try Ferry.run(["verify", "\(work)/report.tar", "--image-keys", "\(work)/good.pub"])

        // Add: the chart and its three images, in a bundle that verifies.
        let added = try Ferry.run(
            [
                "export", "-f", "\(work)/list.txt", "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "--json",
                "--chart-images", "add",
            ] + trust)
        let summary = try JSONSerialization.jsonObject(with: Data(added.stdout.utf8)) as? [String: Any]
        let carried = (summary?["images"] as? [[String: Any]] ?? []).compactMap { $0["reference"] as? String }
        for name in expected + [chartName] { #expect(carried.contains(name), "\(carried)") }
        try Ferry.run(["verify", "\(work)/b.tar"])
        let inspected = try Ferry.run(["inspect", "\(work)/b.tar"]).stdout
        #expect(inspected.contains(chartName), "\(inspected)")

        // The appliance serves it as an OCI chart: Helm's media types, the archive byte for byte.
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site")
        defer { appliance.stop() }
        try appliance.command(["import", "\(work)/b.tar"])
        let served = "\(Reference.servedHost(repository.host))/charts/demo"
        let manifest = try appliance.curl(
            "/v2/\(served)/manifests/0.1.0_build.7", headers: ["Accept: \(MediaType.ociManifest)"])
        #expect(manifest.status == 200, "\(manifest.text)")
        let document = try JSONSerialization.jsonObject(with: Data(manifest.text.utf8)) as? [String: Any]
        let config = document?["config"] as? [String: Any]
        #expect(config?["mediaType"] as? String == "application/vnd.cncf.helm.config.v1+json")
        let layer = try #require((document?["layers"] as? [[String: Any]])?.first)
        #expect(layer["mediaType"] as? String == "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
        let annotations = document?["annotations"] as? [String: String] ?? [:]
        #expect(annotations["org.opencontainers.image.title"] == "demo")
        #expect(annotations["org.opencontainers.image.version"] == "0.1.0+build.7")
        #expect(annotations["org.opencontainers.image.created"] == "2026-11-30T10:20:30Z")
        #expect(annotations["org.opencontainers.image.authors"] == "Ferry (ferry@example.com)")
        #expect(annotations["category"] == "Testing")
        let layerDigest = try #require(layer["digest"] as? String)
        try Shell.run([
            "curl", "-sSf", "--cacert", appliance.caCertificate, "-o", "\(work)/pulled.tgz",
            "https://\(appliance.host)/v2/\(served)/blobs/\(layerDigest)",
        ])
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: "\(work)/pulled.tgz"))
                == Data(contentsOf: URL(fileURLWithPath: archive)))
        let configDigest = try #require(config?["digest"] as? String)
        let configText = try Shell.run([
            "curl", "-sSf", "--cacert", appliance.caCertificate,
            "https://\(appliance.host)/v2/\(served)/blobs/\(configDigest)",
        ]).stdout
        #expect(
            configText
                == #"{"name":"demo","home":"https://example.com/demo","version":"0.1.0+build.7","description":"A chart \u003cfor\u003e tests","maintainers":[{"name":"Ferry","email":"ferry@example.com"}],"apiVersion":"v2","appVersion":"1.0","annotations":{"category":"Testing"}}"#,
            "\(configText)")
        let images = try appliance.command(["images"]).stdout
        #expect(images.contains("\(served):0.1.0_build.7"), "\(images)")
    }

    /// An archive that does not match its index's digest, and an index that is not one: refused
    /// with one line naming the chart or the URL, and nothing written under the bundle's name. The
    /// server sends the archives without Content-Length (spooled, then checked like any other).
    @Test func badChartRepositoriesAreRefusedByName() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let archive = try Self.makeChart(in: work, registry: "registry.example.com")
        let root = "\(work)/www"
        for directory in ["bad", "broken", "missing", "good"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(directory)", withIntermediateDirectories: true)
        }
        try FileManager.default.copyItem(atPath: archive, toPath: "\(root)/bad/demo.tgz")
        try FileManager.default.copyItem(atPath: archive, toPath: "\(root)/good/demo.tgz")
        try Self.index(archive: archive, url: "demo.tgz", digest: Digest.of(Array("other".utf8))).write(
            toFile: "\(root)/bad/index.yaml", atomically: true, encoding: .utf8)
        try "<html><body>Not here</body></html>\n".write(
            toFile: "\(root)/broken/index.yaml", atomically: true, encoding: .utf8)
        for directory in ["missing", "good"] {
            try Self.index(archive: archive, url: "demo.tgz").write(
                toFile: "\(root)/\(directory)/index.yaml", atomically: true, encoding: .utf8)
        }
        let repository = try ChartRepositoryFixture(
            root: root, credentials: "reader:chart-secret", withoutLength: true)
        defer { repository.stop() }
        let trust = ["--ca-file", repository.ca.caCertificate, "--creds", "\(repository.host)=reader:chart-secret"]
        func export(_ line: String) throws -> Shell.Result {
            try line.write(toFile: "\(work)/list.txt", atomically: true, encoding: .utf8)
            let result = try Ferry.run(
                ["export", "-f", "\(work)/list.txt", "-o", "\(work)/out.tar", "--cache", "\(work)/cache"] + trust,
                check: false)
            if result.status != 0 {
                // One line, and nothing under the bundle's name.
                #expect(
                    result.stderr.split(separator: "\n").filter { $0.hasPrefix("ferry: error:") }.count == 1,
                    "\(result.stderr)")
                let left = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.hasPrefix("out.tar") }
                #expect(left.isEmpty, "\(left)")
            }
            return result
        }
        let mismatch = try export("chart https://\(repository.host)/bad demo 0.1.0+build.7\n")
        #expect(mismatch.status == 65 && mismatch.stderr.contains("chart demo 0.1.0+build.7"), "\(mismatch.stderr)")
        #expect(mismatch.stderr.contains("does not match the digest"), "\(mismatch.stderr)")
        let broken = try export("chart https://\(repository.host)/broken demo 0.1.0+build.7\n")
        #expect(
            broken.status == 65
                && broken.stderr.contains("\(repository.host)/broken/index.yaml: not a chart repository index"),
            "\(broken.stderr)")
        let absent = try export("chart https://\(repository.host)/missing demo 9.9.9\n")
        #expect(absent.status == 1 && absent.stderr.contains("versions there: 0.1.0+build.7"), "\(absent.stderr)")
        let gone = try export("chart https://\(repository.host)/missing demo 0.1.0+build.7\n")
        #expect(gone.status == 1 && gone.stderr.contains("demo.tgz"), "\(gone.stderr)")
        let malformed = try export("chart https://\(repository.host)/charts demo\n")
        #expect(malformed.status == 64 && malformed.stderr.contains("list.txt:1"), "\(malformed.stderr)")
        let password = try export("chart https://user:pw@\(repository.host)/good demo 0.1.0+build.7\n")
        #expect(password.status == 64 && !password.stderr.contains("pw@"), "\(password.stderr)")
        // The same archive, matching its index, sent without a length: carried.
        let good = try export("chart https://\(repository.host)/good demo 0.1.0+build.7\n")
        #expect(good.status == 0, "\(good.stderr)")
        try Ferry.run(["verify", "\(work)/out.tar"])
        #expect(repository.requests.contains("GET /good/demo.tgz 200 auth=yes"), "\(repository.requests)")
    }
}
