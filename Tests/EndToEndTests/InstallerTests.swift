import Foundation
import OCICore
import Testing

/// The offline installer: `./install.sh package`, extracted into a temporary root and run there
/// without the Swift toolchain on PATH, with a prefix and a free port; TLS with the generated CA,
/// the bundles in bundles/ pullable, a second run keeps data, uninstall cleans up.
@Suite(.serialized)
struct InstallerTests {
    static var checkout: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().path
    }

    @Test func offlineInstallerInstallsUpgradesAndUninstalls() throws {
        // The package (a static release build; reused when nothing changed).
        let packaged = try Shell.run(["bash", "\(Self.checkout)/install.sh", "package"])
        let tarball = try #require(
            (try FileManager.default.contentsOfDirectory(atPath: "\(Self.checkout)/dist"))
                .filter { $0.hasPrefix("ferry-offline-installer-") && $0.hasSuffix(".tar.gz") }.first,
            "\(packaged.stdout)")
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        try Shell.run(["tar", "-xzf", "\(Self.checkout)/dist/\(tarball)", "-C", work])
        let installer = "\(work)/\(tarball.replacingOccurrences(of: ".tar.gz", with: ""))"
        #expect(FileManager.default.fileExists(atPath: "\(installer)/bin/ferry-appliance"))
        // The binaries need nothing of the Swift toolchain.
        let ldd = try Shell.run(["ldd", "\(installer)/bin/ferry-appliance"]).stdout
        #expect(!ldd.contains("libswift") && !ldd.contains("libFoundation") && !ldd.contains("not found"), "\(ldd)")

        // A bundle to seed the appliance with.
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        try Ferry.run(
            ["export", "-o", "\(installer)/bundles/site.tar", "--cache", "\(work)/cache"] + seeded.references
                + registry.ferryTrustFlags)
        let served = registry.host.replacingOccurrences(of: ":", with: "_")

        let root = "\(work)/root"
        let port = Shell.freePort()
        let offline = ["PATH": "/usr/sbin:/usr/bin:/sbin:/bin"]  // no Swift toolchain
        let arguments = [
            "bash", "\(installer)/install.sh", "--root", root, "--prefix", "/opt/ferry", "--data-dir", "/srv/ferry",
            "--port", String(port), "--san", "registry.plant.example", "--yes",
        ]
        let data = "\(root)/srv/ferry"
        defer {
            // Stop what the installer started, whatever happened.
            if let pid = try? String(contentsOfFile: "\(data)/ferry-appliance.pid", encoding: .utf8),
                let number = Int32(pid.trimmingCharacters(in: .whitespacesAndNewlines))
            {
                kill(number, SIGTERM)
            }
        }
        let first = try Shell.run(arguments, environment: offline)
        #expect(first.stdout.contains("importing site.tar"), "\(first.stdout)")
        let password = try #require(
            first.stdout.split(separator: "\n").first { $0.contains("password:") }?.split(separator: " ").last
                .map(String.init))
        #expect(FileManager.default.fileExists(atPath: "\(root)/etc/ferry/appliance.yml"))
        #expect(FileManager.default.fileExists(atPath: "\(root)/opt/ferry/bin/ferry-appliance"))
        let keyMode = try FileManager.default.attributesOfItem(atPath: "\(data)/tls/ca.key")[.posixPermissions] as? Int
        #expect(keyMode == 0o600)
        #expect(first.stdout.contains("hosts.toml"), "client configuration printed")
        let clients = try String(contentsOfFile: "\(root)/etc/ferry/clients.txt", encoding: .utf8)
        #expect(clients.contains("registries.conf.d") && clients.contains("registry-mirrors"))

        // The systemd unit, rendered for this installation, is one systemd accepts (no systemd runs
        // here to start it; systemd-analyze only parses, and is part of this machine kind's base).
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/systemd-analyze") {
            let unit = try String(contentsOfFile: "\(installer)/appliance/ferry-appliance.service", encoding: .utf8)
                .replacingOccurrences(of: "@PREFIX@", with: "\(root)/opt/ferry")
                .replacingOccurrences(of: "@DATA_DIR@", with: data)
            try unit.write(toFile: "\(work)/ferry-appliance.service", atomically: true, encoding: .utf8)
            let verified = try Shell.run(
                ["systemd-analyze", "verify", "\(work)/ferry-appliance.service"], check: false)
            #expect(verified.status == 0 && verified.stderr.isEmpty, "\(verified.stderr)")
        }

        // Served over TLS with the generated CA, credentials required, every bundled image pullable.
        let ca = "\(data)/tls/ca.crt"
        let anonymous = try HTTPReply.fetch("https://127.0.0.1:\(port)/v2/", ca: ca)
        #expect(anonymous.status == 401)
        let certs = "\(work)/certs/127.0.0.1:\(port)"
        try FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: ca, toPath: "\(certs)/ca.crt")
        func pullable() throws {
            for (name, digest) in seeded.images {
                let raw = try Shell.run(
                    [
                        "skopeo", "inspect", "--raw", "--cert-dir", certs, "--creds", "admin:\(password)",
                        "docker://127.0.0.1:\(port)/\(served)/\(name)",
                    ]).stdout
                #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
            }
        }
        try pullable()

        // A second run upgrades and keeps data, CA and users; the bundle is already there.
        let caBefore = try String(contentsOfFile: ca, encoding: .utf8)
        let usersBefore = try String(contentsOfFile: "\(data)/users.json", encoding: .utf8)
        let second = try Shell.run(arguments, environment: offline)
        #expect(second.stdout.contains("upgrading binaries") && second.stdout.contains("keeping users"))
        #expect(second.stdout.contains("already imported, unchanged"))
        #expect(!second.stdout.contains("password:"))
        #expect(try String(contentsOfFile: ca, encoding: .utf8) == caBefore)
        #expect(try String(contentsOfFile: "\(data)/users.json", encoding: .utf8) == usersBefore)
        try pullable()

        // Uninstall: binaries and the process go, data stays; --purge takes the data too.
        try Shell.run(
            [
                "bash", "\(installer)/install.sh", "--root", root, "--prefix", "/opt/ferry", "--data-dir", "/srv/ferry",
                "--uninstall", "--yes",
            ], environment: offline)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/opt/ferry/bin/ferry-appliance"))
        #expect(FileManager.default.fileExists(atPath: "\(data)/users.json"))
        #expect(
            try Shell.run(["curl", "-s", "--cacert", ca, "https://127.0.0.1:\(port)/v2/"], check: false).status != 0)
        try Shell.run(
            [
                "bash", "\(installer)/install.sh", "--root", root, "--prefix", "/opt/ferry", "--data-dir", "/srv/ferry",
                "--uninstall", "--purge", "--yes",
            ], environment: offline)
        #expect(!FileManager.default.fileExists(atPath: data))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/etc/ferry"))
    }

    @Test func shellScriptsPassShellcheck() throws {
        let scripts =
            ["install.sh", "scripts/lib.sh", "scripts/quickstart.sh", ".ci/run"]
            + ((try? FileManager.default.contentsOfDirectory(atPath: "\(Self.checkout)/Benchmarks")) ?? [])
            .filter { $0.hasSuffix(".sh") }.map { "Benchmarks/\($0)" }
        let result = try Shell.run(
            ["sh", "-c", "cd '\(Self.checkout)' && shellcheck " + scripts.joined(separator: " ")], check: false)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }
}
