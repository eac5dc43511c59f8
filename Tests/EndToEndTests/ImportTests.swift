import Foundation
import OCICore
import Testing

/// `ferry-appliance import` of bundles exported from the real registry.
@Suite(.serialized)
struct ImportTests {
    static var appliance: String { "\(Shell.buildDirectory)/ferry-appliance" }

    func state(_ dataDir: String) throws -> [String: Any] {
        let out = try Shell.run([Self.appliance, "images", "--json", "--data-dir", dataDir]).stdout
        return (try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any]) ?? [:]
    }

    func tag(_ state: [String: Any], _ repository: String, _ tag: String) -> String? {
        ((state["repositories"] as? [String: Any])?[repository] as? [String: Any]).flatMap {
            ($0["tags"] as? [String: String])?[tag]
        }
    }

    @Test func importsAtomicallyIsIdempotentAndRefusesBrokenBundles() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 48 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags)
        let data = "\(work)/data"
        let served = registry.host.replacingOccurrences(of: ":", with: "_")

        // A broken bundle first: nothing becomes visible.
        let broken = "\(work)/broken.tar"
        try Shell.run(["python3", "\(Shell.supportDirectory)/bundle_mutator.py", bundle, broken, "flip-layer"])
        let refused = try Shell.run([Self.appliance, "import", broken, "--data-dir", data], check: false)
        #expect(refused.status == 65)
        #expect(refused.stderr.contains("not imported, nothing changed"))
        #expect((try state(data)["repositories"] as? [String: Any])?.isEmpty ?? true)

        // The good bundle: every image under its source name, with the registry's digest.
        let first = try Shell.run([Self.appliance, "import", bundle, "--data-dir", data])
        #expect(first.stdout.contains("imported"))
        let imported = try state(data)
        for (name, digest) in seeded.images {
            let parts = name.split(separator: ":")
            #expect(tag(imported, "\(served)/\(parts[0])", String(parts[1])) == digest.description, "\(name)")
        }
        let before = try Shell.run([Self.appliance, "images", "--json", "--data-dir", data]).stdout
        func listing() throws -> String {
            try Shell.run([Self.appliance, "images", "--json", "--data-dir", data]).stdout
        }

        // Again: verified again, and it changes nothing.
        let again = try Shell.run([Self.appliance, "import", bundle, "--data-dir", data])
        #expect(again.stdout.contains("already imported, unchanged"))
        #expect(try listing() == before)
        // A tampered copy of the imported bundle (same header, one layer byte flipped) is read
        // and refused, and leaves what clients see unchanged; --skip-known says it did not read it.
        let tampered = try Shell.run([Self.appliance, "import", broken, "--data-dir", data], check: false)
        #expect(tampered.status == 65, "\(tampered.stdout)\(tampered.stderr)")
        #expect(try listing() == before)
        let skipped = try Shell.run([Self.appliance, "import", broken, "--skip-known", "--data-dir", data])
        #expect(skipped.stdout.contains("the file was not re-read"), "\(skipped.stdout)")
        // From a pipe too (no fast path: it is read and verified, and changes nothing).
        let piped = try Shell.run(["sh", "-c", "cat '\(bundle)' | '\(Self.appliance)' import - --data-dir '\(data)'"])
        #expect(piped.stdout.contains("imported"))
        #expect((try FileManager.default.contentsOfDirectory(atPath: "\(data)/imports")).count == 1)
    }

    @Test func concurrentAndKilledImportsLeaveAConsistentStore() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 64 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let served = registry.host.replacingOccurrences(of: ":", with: "_")
        let names = seeded.images.keys.sorted()
        var bundles: [String] = []
        for (i, name) in names.enumerated() {
            let bundle = "\(work)/b\(i).tar"
            try Ferry.run(
                ["export", "-o", bundle, "--cache", "\(work)/cache", "\(registry.host)/\(name)"]
                    + registry.ferryTrustFlags)
            bundles.append(bundle)
        }
        let data = "\(work)/data"
        // Kill an import mid-way: the store stays consistent (nothing visible), and a rerun finishes it.
        let large = bundles[names.firstIndex(of: "test/large:latest") ?? 0]
        // The import reads from a pipe fed half the bundle, so it is surely in the middle of a blob
        // (a temporary file in the store's ingest directory) when it is killed.
        let feed = Pipe()
        let killed = try BackgroundProcess(
            [Self.appliance, "import", "-", "--data-dir", data], logPath: "\(work)/killed.log", standardInput: feed)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: large))
        feed.fileHandleForWriting.write(bytes.prefix(bytes.count / 2))
        func ingesting() -> [String] {
            (try? FileManager.default.contentsOfDirectory(atPath: "\(data)/store/ingest")) ?? []
        }
        let deadline = Date().addingTimeInterval(20)
        while ingesting().isEmpty && Date() < deadline { usleep(20_000) }
        #expect(!ingesting().isEmpty, "the import never started a blob")
        killed.signal(SIGKILL)
        killed.stop()
        try? feed.fileHandleForWriting.close()
        #expect((try state(data)["repositories"] as? [String: Any])?.isEmpty ?? true)
        // Four imports at once (the large one again among them): all land.
        let running = try bundles.enumerated().map { i, bundle in
            try BackgroundProcess(
                [Self.appliance, "import", bundle, "--data-dir", data], logPath: "\(work)/import\(i).log")
        }
        for process in running {
            process.process.waitUntilExit()
            #expect(process.process.terminationStatus == 0, "\(process.log)")
        }
        let final = try state(data)
        for (name, digest) in seeded.images {
            let parts = name.split(separator: ":")
            #expect(tag(final, "\(served)/\(parts[0])", String(parts[1])) == digest.description, "\(name)")
        }
    }

    /// gc while an import is half-way: with the default grace period the import's blobs stay and it
    /// lands; with none, gc takes them and the import fails without publishing anything, and a
    /// rerun finishes it.
    @Test func garbageCollectionDuringAnImportNeverPublishesMissingBlobs() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 32 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let bundle = "\(work)/site.tar"
        try Ferry.run(
            ["export", "-o", bundle, "--cache", "\(work)/cache"] + seeded.references + registry.ferryTrustFlags)
        let bytes = try Data(contentsOf: URL(fileURLWithPath: bundle))
        signal(SIGPIPE, SIG_IGN)  // an import that failed closes the pipe the test still writes to
        for (grace, lands) in [("1h", true), ("0", false)] {
            let data = "\(work)/data-\(grace)"
            let feed = Pipe()
            let importer = try BackgroundProcess(
                [Self.appliance, "import", "-", "--data-dir", data], logPath: "\(work)/import-\(grace).log",
                standardInput: feed)
            // Most of the bundle (several blobs stored, none visible), then gc, then the rest.
            try? feed.fileHandleForWriting.write(contentsOf: bytes.prefix(bytes.count * 3 / 4))
            let deadline = Date().addingTimeInterval(20)
            func stored() -> Int {
                ((try? FileManager.default.contentsOfDirectory(atPath: "\(data)/store/blobs/sha256")) ?? []).count
            }
            while stored() < 2 && Date() < deadline { usleep(20_000) }
            usleep(1_100_000)  // modification times have one-second resolution in the grace check
            let gc = try Shell.run([Self.appliance, "gc", "--grace-period", grace, "--json", "--data-dir", data])
            #expect(gc.status == 0)
            try? feed.fileHandleForWriting.write(contentsOf: bytes.dropFirst(bytes.count * 3 / 4))
            try? feed.fileHandleForWriting.close()
            importer.process.waitUntilExit()
            let state = try self.state(data)
            if lands {
                #expect(importer.process.terminationStatus == 0, "\(importer.log)")
                #expect((state["repositories"] as? [String: Any])?.count == seeded.images.count)
            } else {
                // gc took its blobs (or, with no grace at all, the blob it was writing): it fails.
                // A failure of the store, not of the bundle: exit 1, not 65.
                #expect(importer.process.terminationStatus == 1, "\(importer.log)")
                #expect(importer.log.contains("nothing changed"), "\(importer.log)")
                #expect((state["repositories"] as? [String: Any])?.isEmpty ?? true, "nothing published")
                try Shell.run([Self.appliance, "import", bundle, "--data-dir", data])
                #expect((try self.state(data)["repositories"] as? [String: Any])?.count == seeded.images.count)
            }
        }
    }
}
