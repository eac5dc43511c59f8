import Foundation
import OCICore
import Testing

/// The appliance's metadata database under stress from outside: killed writers, writers racing gc
/// and deletes, a store written by the earlier release (`state.json`), a corrupt or missing database.
@Suite(.serialized)
struct StoreTests {
    static var appliance: String { "\(Shell.buildDirectory)/ferry-appliance" }

    /// Every tag the appliance lists pulls with skopeo, and `check` finds nothing wrong.
    func expectEveryVisibleImagePulls(_ appliance: ApplianceFixture, credentials: String, work: String) throws {
        let certs = try appliance.certDirectory()
        let listing = try appliance.command(["images"]).stdout.split(separator: "\n")
        #expect(!listing.isEmpty)
        for line in listing {
            let reference = String(line.split(separator: " ")[0])
            let pulled = try Shell.run(
                [
                    "skopeo", "copy", "-q", "--all", "--src-cert-dir", certs, "--src-creds", credentials,
                    "docker://\(appliance.host)/\(reference)", "oci:\(work)/pulled:x",
                ], check: false)
            #expect(pulled.status == 0, "\(reference): \(pulled.stderr)")
        }
        let check = try appliance.command(["check"], check: false)
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }

    /// Pushes, deletes, imports and gc at once on the same repositories, then kill -9 of serve during
    /// pushes and of gc mid-sweep: no lost tag, no dangling manifest, every visible image pulls, and
    /// the interrupted operations re-run cleanly.
    @Test func concurrentWritersGcAndKillsLeaveEveryVisibleImagePullable() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 16 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags)
        let data = "\(work)/data"
        var appliance = try ApplianceFixture(dataDirectory: data, anonymous: "none")
        try appliance.addUser("ci", password: "ci-password", role: "admin")
        let credentials = "ci:ci-password"
        var certs = try appliance.certDirectory()
        let names = seeded.images.keys.sorted()
        func push(_ name: String, as target: String) throws -> BackgroundProcess {
            try BackgroundProcess(
                ["skopeo", "copy", "-q", "--all", "--preserve-digests"] + registry.skopeoFlags("src") + [
                    "--dest-cert-dir", certs, "--dest-creds", credentials, "docker://\(registry.host)/\(name)",
                    "docker://\(appliance.host)/\(target)",
                ], logPath: "\(work)/push-\(UUID().uuidString.prefix(6)).log")
        }

        // Round 1: pushes, the import of the bundle and gc (default grace period), all at once:
        // every push and the import land, gc never fails.
        var running = try names.map { try push($0, as: "shared/\($0)") }
        let importer = try BackgroundProcess(
            [Self.appliance, "import", bundle, "--data-dir", data], logPath: "\(work)/import.log")
        let collector = try BackgroundProcess(
            [
                "sh", "-c",
                "for i in 1 2 3 4 5 6 7 8; do '\(Self.appliance)' gc --data-dir '\(data)' || exit 1; done",
            ],
            logPath: "\(work)/gc.log")
        for process in running {
            process.process.waitUntilExit()
            #expect(process.process.terminationStatus == 0, "\(process.log)")
        }
        importer.process.waitUntilExit()
        #expect(importer.process.terminationStatus == 0, "\(importer.log)")
        collector.process.waitUntilExit()
        #expect(collector.process.terminationStatus == 0, "gc never fails beside writers: \(collector.log)")

        // Round 1b: gc with no grace period at all beside pushes may take a blob a push uploaded
        // before its manifest came: that push fails cleanly (MANIFEST_BLOB_UNKNOWN), nothing
        // visible lacks a blob, and pushing again succeeds.
        running = try names.map { try push($0, as: "racing/\($0)") }
        let eager = try BackgroundProcess(
            [
                "sh", "-c",
                "for i in 1 2 3 4 5 6 7 8; do '\(Self.appliance)' gc --grace-period 0 --data-dir '\(data)' || exit 1; done",
            ],
            logPath: "\(work)/gc-eager.log")
        for process in running { process.process.waitUntilExit() }
        eager.process.waitUntilExit()
        #expect(eager.process.terminationStatus == 0, "gc never fails beside writers: \(eager.log)")
        try expectEveryVisibleImagePulls(appliance, credentials: credentials, work: work)
        for process in try names.map({ try push($0, as: "racing/\($0)") }) {
            process.process.waitUntilExit()
            #expect(process.process.terminationStatus == 0, "\(process.log)")
        }

        // Deletes beside another gc: the deleted tags are gone, every other tag stays.
        let deleted = "shared/\(names[0])"
        let gcAgain = try BackgroundProcess(
            [Self.appliance, "gc", "--grace-period", "0", "--data-dir", data], logPath: "\(work)/gc2.log")
        try Shell.run(
            ["skopeo", "delete", "--cert-dir", certs, "--creds", credentials, "docker://\(appliance.host)/\(deleted)"])
        gcAgain.process.waitUntilExit()
        let listing = try appliance.command(["images"]).stdout
        #expect(!listing.contains("\(deleted)  "), "\(listing)")
        for name in names.dropFirst() { #expect(listing.contains("shared/\(name)  "), "lost tag \(name)") }
        try expectEveryVisibleImagePulls(appliance, credentials: credentials, work: work)

        // Round 2: kill -9 serve while pushes run; restart; the pushes re-run succeed.
        running = try names.map { try push($0, as: "killed/\($0)") }
        usleep(300_000)
        appliance.process.signal(SIGKILL)
        appliance.process.stop()
        for process in running { process.process.waitUntilExit() }
        appliance = try ApplianceFixture(dataDirectory: data, anonymous: "none")
        certs = try appliance.certDirectory()
        try expectEveryVisibleImagePulls(appliance, credentials: credentials, work: work)
        running = try names.map { try push($0, as: "killed/\($0)") }
        for process in running {
            process.process.waitUntilExit()
            #expect(process.process.terminationStatus == 0, "\(process.log)")
        }

        // Round 3: kill -9 gc mid-sweep (after deletes left garbage); a re-run finishes.
        for name in names {
            try Shell.run(
                [
                    "skopeo", "delete", "--cert-dir", certs, "--creds", credentials,
                    "docker://\(appliance.host)/killed/\(name)",
                ])
        }
        let sweeping = try BackgroundProcess(
            [Self.appliance, "gc", "--grace-period", "0", "--data-dir", data], logPath: "\(work)/gc3.log")
        usleep(20_000)
        sweeping.signal(SIGKILL)
        sweeping.stop()
        try appliance.command(["gc", "--grace-period", "0"])
        try expectEveryVisibleImagePulls(appliance, credentials: credentials, work: work)
        appliance.stop()
    }

    /// A data directory of the earlier release (`state.json`, no database) is migrated once on the
    /// first command that opens it, and every image still pulls with its digest.
    @Test func aStoreOfTheEarlierReleaseIsMigratedAndStillPulls() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 4 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(["export", "-o", bundle] + seeded.references + registry.ferryTrustFlags)
        let data = "\(work)/data"
        try Shell.run([Self.appliance, "import", bundle, "--data-dir", data])
        // Rewrite the store in the earlier release's format: state.json with every repository's
        // tags, manifests and linked blobs (what its importer wrote), and no database.
        let listing =
            try JSONSerialization.jsonObject(
                with: Data(try Shell.run([Self.appliance, "images", "--json", "--data-dir", data]).stdout.utf8))
            as? [String: Any]
        var repositories: [String: Any] = [:]
        for (name, value) in (listing?["repositories"] as? [String: [String: Any]]) ?? [:] {
            let manifests = (value["manifests"] as? [String]) ?? []
            var blobs: Set<String> = []
            for manifest in manifests {
                let bytes = try Data(
                    contentsOf: URL(fileURLWithPath: "\(data)/store/blobs/sha256/\(manifest.dropFirst(7))"))
                let document = (try JSONSerialization.jsonObject(with: bytes) as? [String: Any]) ?? [:]
                let children =
                    ((document["layers"] as? [[String: Any]]) ?? [])
                    + [document["config"] as? [String: Any]]
                    .compactMap { $0 }
                for child in children { if let digest = child["digest"] as? String { blobs.insert(digest) } }
            }
            repositories[name] = ["tags": value["tags"] ?? [:], "manifests": manifests, "blobs": blobs.sorted()]
        }
        let state = try JSONSerialization.data(
            withJSONObject: ["generation": 1, "repositories": repositories], options: [.sortedKeys])
        try state.write(to: URL(fileURLWithPath: "\(data)/state.json"))
        for suffix in ["", "-wal", "-shm"] {
            try? FileManager.default.removeItem(atPath: "\(data)/registry.db\(suffix)")
        }

        let appliance = try ApplianceFixture(dataDirectory: data, anonymous: "pull")
        defer { appliance.stop() }
        #expect(FileManager.default.fileExists(atPath: "\(data)/state.json.migrated"))
        #expect(!FileManager.default.fileExists(atPath: "\(data)/state.json"))
        let certs = try appliance.certDirectory()
        let served = registry.host.replacingOccurrences(of: ":", with: "_")
        for (name, digest) in seeded.images {
            let raw = try Shell.run(
                ["skopeo", "inspect", "--raw", "--cert-dir", certs, "docker://\(appliance.host)/\(served)/\(name)"]
            ).stdout
            #expect(Digest.of(Array(raw.utf8)) == digest, "\(name)")
            try Shell.run(
                [
                    "skopeo", "copy", "-q", "--all", "--src-cert-dir", certs,
                    "docker://\(appliance.host)/\(served)/\(name)", "oci:\(work)/out:x",
                ])
        }
    }

    /// A corrupt or missing database: one line naming it, exit 1, and never a new empty database
    /// over existing blobs.
    @Test func aCorruptOrMissingDatabaseIsRefusedWithItsName() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let data = "\(work)/data"
        try Shell.run([Self.appliance, "images", "--data-dir", data])
        let blob = "\(data)/store/blobs/sha256/" + String(repeating: "ab", count: 32)
        try Data("content".utf8).write(to: URL(fileURLWithPath: blob))
        let database = "\(data)/registry.db"
        try Data(repeating: 0x42, count: 4096).write(to: URL(fileURLWithPath: database))
        for command in [["images"], ["gc"], ["check"]] {
            let result = try Shell.run([Self.appliance] + command + ["--data-dir", data], check: false)
            #expect(result.status == 1, "\(command): \(result.stderr)")
            #expect(result.stderr.contains(database), "\(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        }
        try FileManager.default.removeItem(atPath: database)
        let missing = try Shell.run([Self.appliance, "images", "--data-dir", data], check: false)
        #expect(missing.status == 1)
        #expect(missing.stderr.contains(database) && missing.stderr.contains("missing"), "\(missing.stderr)")
        #expect(!FileManager.default.fileExists(atPath: database), "never re-created over existing blobs")
        let serve = try Shell.run(
            [Self.appliance, "serve", "--data-dir", data, "--listen", "127.0.0.1:\(Shell.freePort())"], check: false)
        #expect(serve.status == 1 && serve.stderr.contains(database), "\(serve.stderr)")
    }

    /// `user add` on a data directory that does not exist yet makes it, as serve and import do.
    @Test func userAddMakesTheDataDirectory() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let data = "\(work)/new/data"
        try Shell.run(
            [Self.appliance, "user", "add", "ci", "--password-stdin", "--role", "push", "--data-dir", data],
            input: Data("ci-password".utf8))
        let mode = try FileManager.default.attributesOfItem(atPath: data)[.posixPermissions] as? Int
        #expect(mode == 0o750)
        #expect(try Shell.run([Self.appliance, "user", "list", "--data-dir", data]).stdout.contains("ci"))
        // `del` answers to the names people try first, as `list` does to `ls`.
        try Shell.run([Self.appliance, "user", "rm", "ci", "--data-dir", data])
        #expect(try !Shell.run([Self.appliance, "user", "ls", "--data-dir", data]).stdout.contains("ci"))
        // An inventory written over a directory is refused before it is made.
        let inventory = try Shell.run([Self.appliance, "inventory", "-o", work, "--data-dir", data], check: false)
        #expect(inventory.status == 64 && inventory.stderr.contains("--output \(work) is a directory"))
    }

    /// `ca` run while the first `serve` starts on a new data directory: one CA, and the server's
    /// certificate verifies against the `ca.crt` on disk.
    @Test func caAndAFirstServeAtOnceMakeOneCA() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        for round in 0..<4 {
            let data = "\(work)/data\(round)"
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
            let port = Shell.freePort()
            let serve = try BackgroundProcess(
                [Self.appliance, "serve", "--data-dir", data, "--listen", "127.0.0.1:\(port)", "--access-log", "off"],
                logPath: "\(work)/serve\(round).log")
            let cas = try (0..<3).map { i in
                try BackgroundProcess(
                    [Self.appliance, "ca", "--data-dir", data], logPath: "\(work)/ca\(round)-\(i).log")
            }
            for ca in cas { ca.process.waitUntilExit() }
            try Shell.waitForPort(port)
            let printed = Set(cas.map { $0.log })
            #expect(printed.count == 1, "every ca printed the same CA")
            let reply = try HTTPReply.fetch("https://127.0.0.1:\(port)/v2/", ca: "\(data)/tls/ca.crt")
            #expect(reply.status == 401 || reply.status == 200, "TLS verified against the CA on disk")
            serve.signal(SIGTERM)
            serve.stop()
        }
    }
}
