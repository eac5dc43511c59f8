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
        #expect(result.stdout.split(separator: "\n").filter { $0.hasPrefix("ok: ") }.count == 31, "\(result.stdout)")
        // The image uploaded through the browser pulls, with upstream's digest.
        let uploaded = try #require(seeded.images["test/nested/docker:v2"])
        let raw = try Shell.run([
            "skopeo", "inspect", "--raw", "--cert-dir", try appliance.certDirectory(), "--creds", "root:root-password",
            "docker://\(appliance.host)/\(served)/test/nested/docker:v2",
        ]).stdout
        #expect(Digest.of(Array(raw.utf8)) == uploaded)
        // No password reaches the appliance's logs.
        let logs = appliance.process.log + ((try? String(contentsOfFile: appliance.accessLog, encoding: .utf8)) ?? "")
        #expect(!logs.contains("root-password") && !logs.contains("wrong-again"))
    }
}
