import Foundation
import OCICore
import Testing

/// The web console (issue 14) in a real browser: headless Chromium driven by Selenium
/// (`Support/console_browser.py`) against `ferry-appliance serve` over its own TLS, with images
/// exported from the real registry and imported.
@Suite(.serialized)
struct ConsoleTests {
    /// Where the browser's screenshots go (kept for the README): `FERRY_SCREENSHOTS`, else the test's
    /// temporary directory.
    static func screenshotDirectory(_ work: String) throws -> String {
        let directory = ProcessInfo.processInfo.environment["FERRY_SCREENSHOTS"] ?? "\(work)/screenshots"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        return directory
    }

    @Test func signInBrowseSearchAndAccessInABrowser() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let seeded = try SeededRegistry.make(registry, largeLayer: 1 << 20)
        let digest = try #require(seeded.images["test/single:1.0"])
        try Ferry.run(
            [
                "export", "-o", "\(work)/b.tar", "--cache", "\(work)/cache", "\(registry.host)/test/single:1.0",
                "\(registry.host)/test/multi:1.0",
            ] + registry.ferryTrustFlags)
        // A second bundle for the upload, and a copy of it with a flipped layer byte.
        try Ferry.run(
            [
                "export", "-o", "\(work)/upload.tar", "--cache", "\(work)/cache",
                "\(registry.host)/test/nested/docker:v2",
            ]
                + registry.ferryTrustFlags)
        try Shell.run([
            "/usr/bin/python3", "\(Shell.supportDirectory)/bundle_mutator.py", "\(work)/upload.tar",
            "\(work)/tampered.tar", "flip-layer",
        ])
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/site", anonymous: "none")
        defer { appliance.stop() }
        try appliance.command(["import", "\(work)/b.tar"])
        let served = Reference.servedHost(registry.host)
        try appliance.addUser("root", password: "root-password", role: "admin")
        try appliance.addUser("team", password: "team-password", role: "pull", repositories: ["\(served)/test/single"])
        // The browser trusts exactly the appliance's key.
        let spki = try Shell.run([
            "sh", "-c",
            "openssl x509 -pubkey -noout -in \"$1\" | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
            "sh", "\(appliance.dataDirectory)/tls/server.crt",
        ]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let result = try Shell.run(
            [
                "/usr/bin/python3", "\(Shell.supportDirectory)/console_browser.py", "--url",
                "https://\(appliance.host)",
                "--spki", spki, "--ca", appliance.caCertificate, "--screenshots", try Self.screenshotDirectory(work),
                "--admin", "root:root-password", "--limited", "team:team-password", "--repository",
                "\(served)/test/single", "--tag", "1.0", "--digest", digest.description, "--hidden",
                "\(served)/test/multi", "--upload", "\(work)/upload.tar", "--tampered", "\(work)/tampered.tar",
                "--uploaded", "\(served)/test/nested/docker:v2",
            ], check: false)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        // Every check the script makes is printed; none may be missing.
        #expect(result.stdout.split(separator: "\n").filter { $0.hasPrefix("ok: ") }.count == 32, "\(result.stdout)")
        // The image uploaded through the browser pulls, with upstream's digest.
        let uploaded = try #require(seeded.images["test/nested/docker:v2"])
        let raw = try Shell.run([
            "skopeo", "inspect", "--raw", "--cert-dir", try appliance.certDirectory(), "--creds", "root:root-password",
            "docker://\(appliance.host)/\(served)/test/nested/docker:v2",
        ]).stdout
        #expect(Digest.of(Array(raw.utf8)) == uploaded)

        // A body whose bundle part is whole but whose closing boundary never comes: the importer
        // has verified the bundle by then, and still nothing becomes visible.
        try Ferry.run(
            ["export", "-o", "\(work)/large.tar", "--cache", "\(work)/cache", "\(registry.host)/test/large:latest"]
                + registry.ferryTrustFlags)
        let console = try ConsoleClient(appliance: appliance, work: work, user: "root", password: "root-password")
        let csrf = try console.token("/ui/import")
        var body = Data(
            "--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n\(csrf)\r\n--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"large.tar\"\r\n\r\n"
                .utf8)
        body += try Data(contentsOf: URL(fileURLWithPath: "\(work)/large.tar"))
        body += Data("\r\n--b".utf8)
        try body.write(to: URL(fileURLWithPath: "\(work)/unfinished.txt"))
        let unfinished = try console.curl(
            "/ui/import",
            ["-H", "Content-Type: multipart/form-data; boundary=b", "--data-binary", "@\(work)/unfinished.txt"])
        #expect(unfinished.status == 400 && unfinished.body.contains("ended early"), "\(unfinished.body)")
        #expect(!(try appliance.command(["images"]).stdout.contains("test/large")))
        // No password reaches the appliance's logs.
        let logs = appliance.process.log + ((try? String(contentsOfFile: appliance.accessLog, encoding: .utf8)) ?? "")
        #expect(!logs.contains("root-password") && !logs.contains("wrong-again"))
    }
}

/// The console under bad input (issue 14, "Bad input"), with curl: oversized, non-bundle and
/// broken uploads, a form without its token, unknown repositories, path tricks and HTML in what is
/// echoed; each gets a clear page and a fitting status, and nothing is stored. The pages pass HTML
/// Tidy without errors.
@Suite(.serialized)
struct ConsoleInputTests {
    @Test func badRequestsGetClearAnswersAndChangeNothing() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        try "storage:\n  maxUploadBytes: 1048576\n".write(
            toFile: "\(work)/appliance.yml", atomically: true, encoding: .utf8)
        let appliance = try ApplianceFixture(
            dataDirectory: "\(work)/site", anonymous: "none", extraArguments: ["--config", "\(work)/appliance.yml"])
        defer { appliance.stop() }
        try appliance.addUser("root", password: "root-password", role: "admin")
        let console = try ConsoleClient(appliance: appliance, work: work, user: "root", password: "root-password")
        let csrf = try console.token("/ui/import")
        #expect(!csrf.isEmpty)
        // The sign-in form's token is bound to the browser's own nonce cookie: taken to a request
        // without it, or with another, it is refused.
        let form = try Shell.run([
            "curl", "-s", "-c", "\(work)/other", "--cacert", appliance.caCertificate,
            "https://\(appliance.host)/ui/login",
        ])
        let stolen = ConsoleClient.token(in: form.stdout)
        for cookie in [[], ["-H", "Cookie: ferry_login=\(String(repeating: "a", count: 64))"]] {
            let forged = try Shell.run(
                ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert", appliance.caCertificate] + cookie
                    + [
                        "--data-urlencode", "csrf=\(stolen)", "--data-urlencode", "user=root", "--data-urlencode",
                        "password=root-password", "https://\(appliance.host)/ui/login",
                    ])
            #expect(forged.stdout == "403", "\(cookie)")
        }
        try Data(repeating: 7, count: 2 << 20).write(to: URL(fileURLWithPath: "\(work)/big.tar"))
        let oversized = try console.curl("/ui/import", ["-F", "csrf=\(csrf)", "-F", "bundle=@\(work)/big.tar"])
        #expect(oversized.status == 413 && oversized.body.contains("larger than this appliance takes"))
        try Data(repeating: 7, count: 100_000).write(to: URL(fileURLWithPath: "\(work)/junk.tar"))
        let junk = try console.curl("/ui/import", ["-F", "csrf=\(csrf)", "-F", "bundle=@\(work)/junk.tar"])
        #expect(junk.status == 422 && junk.body.contains("nothing changed"), "\(junk.body)")
        let tokenless = try console.curl("/ui/import", ["-F", "bundle=@\(work)/junk.tar"])
        #expect(tokenless.status == 403)
        let cut =
            "--b\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n\(csrf)\r\n--b\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"x.tar\"\r\n\r\nabc"
        try cut.write(toFile: "\(work)/cut.txt", atomically: true, encoding: .utf8)
        let broken = try console.curl(
            "/ui/import", ["-H", "Content-Type: multipart/form-data; boundary=b", "--data-binary", "@\(work)/cut.txt"])
        #expect(broken.status == 400 && broken.body.contains("ended early"), "\(broken.body)")
        #expect(try console.curl("/ui/repository?name=nope/absent").status == 404)
        for trick in [
            "/ui/..%2f..%2fetc%2fpasswd", "/ui/image?repository=..%2F..%2Fetc&reference=passwd",
            "/ui/static/..%2fconsole.css",
        ] {
            let answer = try console.curl(trick)
            #expect(answer.status == 404 && !answer.body.contains("root:"), "\(trick)")
        }
        let html = try console.curl("/ui/repositories?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        #expect(html.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !html.body.contains("<script>alert"))
        #expect(try appliance.command(["images"]).stdout.isEmpty)

        // HTML Tidy finds no error in the pages (warnings are printed, not failed on).
        for page in ["/ui/", "/ui/repositories", "/ui/import", "/ui/admin", "/ui/admin/clients"] {
            try console.curl(page).body.write(toFile: "\(work)/page.html", atomically: true, encoding: .utf8)
            let tidy = try Shell.run(["tidy", "-q", "-e", "-utf8", "\(work)/page.html"], check: false)
            #expect(tidy.status < 2, "\(page): \(tidy.stderr)")
        }
    }
}

/// The console through curl: a cookie jar, signed in as one user.
struct ConsoleClient {
    let base: String
    let ca: String
    let jar: String

    init(appliance: ApplianceFixture, work: String, user: String, password: String) throws {
        base = "https://\(appliance.host)"
        ca = appliance.caCertificate
        jar = "\(work)/jar-\(user)"
        let login = try curl("/ui/login")
        #expect(login.status == 200)
        let signedIn = try curl(
            "/ui/login",
            [
                "--data-urlencode", "csrf=\(Self.token(in: login.body))", "--data-urlencode", "user=\(user)",
                "--data-urlencode", "password=\(password)",
            ])
        #expect(signedIn.status == 303)
    }

    func curl(_ path: String, _ arguments: [String] = []) throws -> (status: Int, body: String) {
        let result = try Shell.run(
            ["curl", "-s", "--cacert", ca, "-c", jar, "-b", jar, "-w", "\n%{http_code}"] + arguments + [
                "\(base)\(path)"
            ])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    /// The CSRF token of the form on a page.
    func token(_ path: String) throws -> String { Self.token(in: try curl(path).body) }

    static func token(in page: String) -> String {
        guard let range = page.range(of: #"name="csrf" value="[0-9a-f]+""#, options: .regularExpression) else {
            return ""
        }
        return String(page[range].dropFirst(#"name="csrf" value=""#.count).dropLast())
    }
}
