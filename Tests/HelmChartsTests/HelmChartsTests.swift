import OCICore
import Testing

@testable import HelmCharts

struct ChartRequestTests {
    @Test func aChartIsNamedAfterItsRepositoryHostPathAndVersion() throws {
        let request = try ChartRequest(
            repository: "https://Charts.Example.com:8443/Stable/", name: "nginx", version: "1.2.3+up4", origin: "l:1")
        #expect(request.repository == "https://Charts.Example.com:8443/Stable")
        #expect(request.indexURL == "https://Charts.Example.com:8443/Stable/index.yaml")
        #expect(request.reference.description == "charts.example.com:8443/stable/nginx:1.2.3_up4")
    }

    @Test func badRequestsAreRefused() {
        #expect(throws: ChartError.self) {
            try ChartRequest(repository: "ftp://x.example.com", name: "a", version: "1", origin: "")
        }
        #expect(throws: ChartError.self) {
            try ChartRequest(repository: "https://x.example.com", name: "a/b", version: "1", origin: "")
        }
        #expect(throws: ChartError.self) {
            try ChartRequest(repository: "https://x.example.com", name: "a", version: "1 2", origin: "")
        }
    }
}

struct ChartIndexTests {
    let yaml = """
        apiVersion: v1
        entries:
          nginx:
            - version: 1.2.3
              digest: \(String(repeating: "ab", count: 32))
              urls: [charts/nginx-1.2.3.tgz]
              created: "2024-01-02T03:04:05.123456789Z"
            - version: 1.2.2
              urls: [https://cdn.example.com/nginx-1.2.2.tgz]

        """

    @Test func findsAnEntryAndResolvesItsURL() throws {
        let index = try ChartIndex(yaml: Array(yaml.utf8), url: "https://x/index.yaml")
        let request = try ChartRequest(
            repository: "https://x.example.com/repo", name: "nginx", version: "1.2.3", origin: "")
        let entry = try index.entry(for: request)
        #expect(
            ChartIndex.archiveURL(entry, repository: request.repository)
                == "https://x.example.com/repo/charts/nginx-1.2.3.tgz")
        #expect(ChartArtifact.rfc3339(entry.created ?? "") == "2024-01-02T03:04:05Z")
    }

    @Test func anEntryWithoutADigestOrAMissingVersionIsRefused() throws {
        let index = try ChartIndex(yaml: Array(yaml.utf8), url: "https://x/index.yaml")
        let unpinned = try ChartRequest(
            repository: "https://x.example.com", name: "nginx", version: "1.2.2", origin: "")
        #expect(throws: ChartError.self) { try index.entry(for: unpinned) }
        let absent = try ChartRequest(repository: "https://x.example.com", name: "nginx", version: "9", origin: "")
        #expect {
            try index.entry(for: absent)
        } throws: { error in
            "\(error)".contains("versions there: 1.2.3, 1.2.2")
        }
    }

    @Test func somethingElseIsNotAnIndex() {
        for text in ["<html></html>", "entries: [1, 2]", ": : :"] {
            #expect(throws: ChartError.self) { try ChartIndex(yaml: Array(text.utf8), url: "u") }
        }
    }
}

struct ChartImagesTests {
    @Test func findsValuesMapsLiteralReferencesAndUnresolvedExpressions() {
        let archive = ChartArchive(
            chartYAML: "name: app\nversion: 1.0.0\n",
            files: [
                .init(
                    path: "app/values.yaml",
                    text: """
                        image:
                          registry: quay.io
                          repository: org/app
                          tag: ""
                        metrics:
                          exporterImage: ghcr.io/org/exporter:0.3
                        pinned:
                          image:
                            repository: nginx
                            digest: sha256:\(String(repeating: "c", count: 64))
                        extraArgs:
                          - --proxy-image=registry.k8s.io/pause:3.9
                          - --url=https://example.com/a:b
                        templated:
                          image: "{{ .Values.global.registry }}/x:1"

                        """),
                .init(
                    path: "app/templates/job.yaml",
                    text: """
                        containers:
                          - image: "{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}"
                            env:
                              - name: HELPER
                                value: "localhost:5000/tools/helper:7"
                          - image: busybox:1.36
                          - image: {{ include "app.other" . }}

                        """),
            ])
        let images = ChartImages(archive: archive, appVersion: "2.1")
        #expect(
            images.found.map(\.reference.description) == [
                "quay.io/org/app:2.1", "ghcr.io/org/exporter:0.3",
                "docker.io/library/nginx@sha256:\(String(repeating: "c", count: 64))", "registry.k8s.io/pause:3.9",
                "localhost:5000/tools/helper:7", "docker.io/library/busybox:1.36",
            ])
        #expect(images.found[0].origin.contains("tag from appVersion"))
        #expect(
            images.unresolved.map(\.text) == ["{{ .Values.global.registry }}/x:1", #"{{ include "app.other" . }}"#])
    }
}

struct ChartImagesEdgeTests {
    @Test func namesThatAreNotReferencesAreListedNotGuessed() {
        let archive = ChartArchive(
            chartYAML: """
                name: mesh
                version: 1.0.0
                annotations:
                  artifacthub.io/images: |
                    - name: proxy
                      image: docker.io/istio/proxyv2:1.22.0

                """,
            files: [
                .init(
                    path: "mesh/values.yaml",
                    text: """
                        global:
                          imageRegistry: mirror.example.com
                        proxy:
                          image: proxyv2
                        pullImage: true
                        sidecarImage: null
                        controller:
                          image:
                            registry: registry.k8s.io
                            image: ingress-nginx/controller
                            tag: v1.10.1
                        webhook:
                          image:
                            tag: v2
                        app:
                          image:
                            repository: org/app
                            tag: "3"

                        """)
            ])
        let images = ChartImages(archive: archive, appVersion: nil)
        #expect(
            images.found.map(\.reference.description) == [
                "docker.io/istio/proxyv2:1.22.0", "mirror.example.com/ingress-nginx/controller:v1.10.1",
                "mirror.example.com/org/app:3",
            ])
        #expect(images.unresolved.map(\.text) == ["proxyv2", "(a map without repository)"])
        #expect(images.unresolved[0].origin.contains("a bare name"))
    }
}

struct GoJSONTests {
    @Test func escapesLikeGo() {
        let value = GoJSON.object([
            ("b", .string("<a & b>\n\u{2028}\"\\")), ("a", .array([.number(2), .bool(true)])), ("é", .string("ü")),
        ])
        #expect(value.encoded() == #"{"b":"\u003ca \u0026 b\u003e\n\u2028\"\\","a":[2,true],"é":"ü"}"#)
    }
}
