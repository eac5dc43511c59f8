import FerryCommands
import OCICore
import Testing

struct ImageListTests {
    @Test func readsTextWithCommentsAndBlankLines() throws {
        let text = """
            # base images
            nginx:1.25

              quay.io/coreos/etcd:v3.5.9   # pinned
            registry.local:5000/team/app@sha256:\(String(repeating: "a", count: 64))
            """
        let requests = try ImageList.parseText(text, file: "images.txt").images
        #expect(
            requests.map(\.reference.description) == [
                "docker.io/library/nginx:1.25", "quay.io/coreos/etcd:v3.5.9",
                "registry.local:5000/team/app@sha256:\(String(repeating: "a", count: 64))",
            ])
        #expect(requests.map(\.origin) == ["images.txt:2", "images.txt:4", "images.txt:5"])
    }

    @Test func readsWindowsLineEndings() throws {
        let requests = try ImageList.parseText("# list\r\nnginx:1.25\r\n\r\nredis:7\r\n", file: "crlf.txt").images
        #expect(requests.map(\.reference.description) == ["docker.io/library/nginx:1.25", "docker.io/library/redis:7"])
        #expect(requests.map(\.origin) == ["crlf.txt:2", "crlf.txt:4"])
    }

    @Test func reportsEveryBadLineWithFileAndLine() {
        let text = "nginx\nlibrary/Bad\nok:1\nx@sha256:abc\n"
        #expect(throws: ImageListError.self) { try ImageList.parseText(text, file: "l.txt") }
        do {
            _ = try ImageList.parseText(text, file: "l.txt").images
        } catch {
            guard case .invalid(let problems) = error else { Issue.record("wrong error \(error)"); return }
            #expect(problems.map(\.line) == [2, 4])
            #expect(problems[0].description.hasPrefix("l.txt:2: "))
        }
    }

    @Test func readsPlainYAMLList() throws {
        let yaml = """
            images:
              - nginx:1.25
              - "ghcr.io/a/b:c"
            """
        let requests = try ImageList.parseYAML(yaml, file: "i.yaml").images
        #expect(requests.map(\.reference.description) == ["docker.io/library/nginx:1.25", "ghcr.io/a/b:c"])
        #expect(requests.map(\.origin) == ["i.yaml:2", "i.yaml:3"])
    }

    @Test func readsMindthegapForm() throws {
        let yaml = """
            docker.io:
              images:
                library/nginx:
                  - "1.25"
                  - "1.26"
            quay.io:
              tlsVerify: true
              images:
                coreos/etcd: [v3.5.9]
            """
        let requests = try ImageList.parseYAML(yaml, file: "m.yaml").images
        #expect(
            requests.map(\.reference.description) == [
                "docker.io/library/nginx:1.25", "docker.io/library/nginx:1.26", "quay.io/coreos/etcd:v3.5.9",
            ])
        #expect(requests[0].origin == "m.yaml:4")
    }

    @Test(arguments: [
        ("images: nginx", 1),
        ("images:\n  - nginx\n  - Bad/Name\n", 3),
        ("docker.io:\n  images:\n    library/nginx: []\n", 3),
        ("docker.io:\n  other: 1\n", 1),
        ("images: [\n", nil as Int?),
        ("- just\n- a list\n", 1),
    ])
    func refusesBadYAML(_ yaml: String, _ line: Int?) {
        do {
            _ = try ImageList.parseYAML(yaml, file: "y.yaml").images
            Issue.record("accepted bad YAML")
        } catch {
            guard case .invalid(let problems) = error else { Issue.record("wrong error \(error)"); return }
            if let line { #expect(problems.first?.line == line, "\(problems)") }
        }
    }
}

struct ChartListTests {
    @Test func textAndYAMLListsNameCharts() throws {
        let text = try ImageList.parseText(
            "nginx:1.25\nchart https://charts.example.com/stable nginx 1.2.3\n", file: "l.txt")
        #expect(text.images.count == 1)
        #expect(text.charts.map(\.description) == ["https://charts.example.com/stable nginx 1.2.3"])
        #expect(text.charts.first?.origin == "l.txt:2")
        let yaml = try ImageList.parseYAML(
            """
            images: [redis:7]
            charts:
              - {repo: https://charts.example.com/stable, name: nginx, version: 1.2.3}
              - repoURL: https://other.example.com
                name: app
                version: 0.1.0

            """, file: "l.yaml")
        #expect(yaml.images.map(\.reference.description) == ["docker.io/library/redis:7"])
        #expect(yaml.charts.map(\.name) == ["nginx", "app"])
    }

    @Test func badChartLinesAreReportedWithTheirLine() {
        #expect {
            try ImageList.parseText("chart https://x.example.com nginx\nchart ftp://x a 1\n", file: "l.txt")
        } throws: { error in
            let text = "\(error)"
            return text.contains("l.txt:1: expected `chart REPO_URL NAME VERSION`") && text.contains("l.txt:2:")
        }
        #expect(throws: ImageListError.self) { try ImageList.parseYAML("charts:\n  - {name: a}\n", file: "c.yaml") }
    }
}

struct TagFilterTests {
    let tags = ["latest", "1.0.0", "1.2.0", "1.2.5", "1.10.1", "v2.0.0", "2.0.0-rc.1", "1.3.0-alpine", "edge", "1.2"]

    @Test func semverRangesAndLatest() throws {
        #expect(try TagFilter(semver: ">=1.2 <2").apply(tags) == ["1.10.1", "1.2", "1.2.0", "1.2.5"])
        #expect(try TagFilter(semver: "^1.2").apply(tags) == ["1.10.1", "1.2", "1.2.0", "1.2.5"])
        #expect(try TagFilter(semver: "~1.2").apply(tags) == ["1.2", "1.2.0", "1.2.5"])
        #expect(
            try TagFilter(semver: "1.x || >=2").apply(tags) == ["1.0.0", "1.10.1", "1.2", "1.2.0", "1.2.5", "v2.0.0"])
        #expect(try TagFilter(semver: ">=2.0.0-rc.0").apply(tags) == ["2.0.0-rc.1", "v2.0.0"])
        #expect(try TagFilter(latest: 2).apply(tags) == ["v2.0.0", "1.10.1"])
        #expect(try TagFilter(semver: "<2", latest: 2).apply(tags) == ["1.10.1", "1.2.5"])
    }

    @Test func partialVersionsStandForAllTheirVersions() throws {
        let tags = ["0.0.3", "0.4.0", "1.2.1", "1.2.5", "1.3.0", "2.0.0", "1.2.3-alpine"]
        #expect(try TagFilter(semver: "<=1.2").apply(tags) == ["0.0.3", "0.4.0", "1.2.1", "1.2.5"])
        #expect(try TagFilter(semver: ">1.2").apply(tags) == ["1.3.0", "2.0.0"])
        #expect(try TagFilter(semver: "1.2").apply(tags) == ["1.2.1", "1.2.5"])
        #expect(try TagFilter(semver: "^0").apply(tags) == ["0.0.3", "0.4.0"])
        #expect(try TagFilter(semver: "^0.0").apply(tags) == ["0.0.3"])
        // Huge numbers are not versions (and do not overflow).
        #expect(try TagFilter(semver: ">=1").apply(["99999999999999999999.0.0", "1.0.0"]) == ["1.0.0"])
        #expect(throws: TagFilterError.self) { try TagFilter(semver: "^9223372036854775807").validated() }
        // A regex that picks variants keeps them for latest N.
        #expect(try TagFilter(regex: "alpine", latest: 1).apply(tags) == ["1.2.3-alpine"])
    }

    @Test func regexAndExclusions() throws {
        #expect(try TagFilter(regex: "^1\\.2").apply(tags) == ["1.2", "1.2.0", "1.2.5"])
        #expect(try TagFilter(regex: "^1\\.", exclude: ["alpine", "^1\\.2"]).apply(tags) == ["1.0.0", "1.10.1"])
    }

    @Test func badFiltersAreRefusedByName() {
        #expect(throws: TagFilterError.badRegex("(")) { try TagFilter(regex: "(").validated() }
        #expect(throws: TagFilterError.badSemver(">=x")) { try TagFilter(semver: ">=x").validated() }
        #expect(throws: TagFilterError.badLatest(0)) { try TagFilter(latest: 0).validated() }
    }

    @Test func aYAMLEntryNamesAWholeRepository() throws {
        let list = try ImageList.parseYAML(
            """
            images:
              - nginx:1.25
              - name: quay.io/org/app
                allTags: true
                tagsSemver: ">=1.2 <2"
                excludeTags: [alpine]

            """, file: "l.yaml")
        #expect(list.images.count == 2)
        #expect(list.images[1].tags == TagFilter(semver: ">=1.2 <2", exclude: ["alpine"]))
        #expect(list.images[1].reference.tag == nil)
        #expect(throws: ImageListError.self) {
            try ImageList.parseYAML("images:\n  - {name: 'quay.io/a/b:1', allTags: true}\n", file: "b.yaml")
        }
    }
}
