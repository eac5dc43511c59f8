import Foundation
import OCICore
import Testing

/// Upstreams that fail, redirect, or get interrupted; and memory that stays flat.
@Suite(.serialized)
struct ResilienceTests {
    /// `ignoreRange`: the upstream answers every blob GET with the whole blob (no range support).
    @Test(arguments: [false, true])
    func retries5xx429AndBrokenStreamsThenSucceeds(ignoreRange: Bool) throws {
        let registry = try RegistryFixture()
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let proxy = try UpstreamProxy(
            backend: registry, options: ["--flaky-blobs"] + (ignoreRange ? ["--ignore-range"] : []))
        defer { proxy.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(proxy.host)/test/multi:1.0"
        try Ferry.run(
            ["export", reference, "-o", "\(work)/r.tar", "--cache", "\(work)/cache", "--insecure-registry", proxy.host])
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(work)/r.tar:\(reference)"])
        #expect(Digest.of(Array(raw.stdout.utf8)) == seeded.images["test/multi:1.0"])
        let log = proxy.requests
        #expect(log.contains { $0.contains(" 503 ") })
        #expect(log.contains { $0.contains(" 429 ") })
        // A transfer cut off half way continues where it stopped: the next GET of that blob asks
        // for the rest (206); from a server that sends the whole blob again, the part already
        // written is skipped. Either way the bundle verifies.
        let cut = Set(log.filter { $0.contains("-cut ") }.map { $0.split(separator: " ")[2] })
        #expect(!cut.isEmpty)
        for path in cut {
            let resumed = log.contains { $0.hasPrefix("front GET \(path) 206 ") }
            let whole = log.contains { $0.hasPrefix("front GET \(path) 200 ") }
            #expect(resumed == !ignoreRange && whole == ignoreRange, "\(path): \(log)")
        }
        try Ferry.run(["verify", "\(work)/r.tar"])
        try Shell.run([
            "skopeo", "copy", "--quiet", "--all", "oci-archive:\(work)/r.tar:\(reference)", "oci:\(work)/out:x",
        ])
    }

    @Test func crossOriginRedirectNeverCarriesCredentials() throws {
        let registry = try RegistryFixture()
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let proxy = try UpstreamProxy(
            backend: registry, options: ["--require-basic", "carol:pw", "--redirect-blobs"])
        defer { proxy.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(proxy.host)/test/single:1.0"
        try Ferry.run(
            [
                "export", reference, "-o", "\(work)/r.tar", "--cache", "\(work)/cache", "--insecure-registry",
                proxy.host,
                "--creds", "carol:pw",
            ])
        let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(work)/r.tar:\(reference)"])
        #expect(Digest.of(Array(raw.stdout.utf8)) == seeded.images["test/single:1.0"])
        let cdn = proxy.requests.filter { $0.hasPrefix("cdn ") }
        #expect(cdn.count >= 2, "blobs went through the redirect: \(proxy.requests)")
        #expect(cdn.allSatisfy { $0.hasSuffix("auth=no") }, "\(cdn)")
        #expect(
            proxy.requests.filter { $0.hasPrefix("front ") && $0.contains(" 307 ") }.allSatisfy {
                $0.hasSuffix("auth=yes")
            })
    }

    @Test func killedExportResumesAndGivesTheSameBundle() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 96 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let environment = ["SOURCE_DATE_EPOCH": "1700000000"]
        let arguments =
            ["export", "--parallel", "1", "--progress", "plain"] + seeded.references + registry.ferryTrustFlags
        let bundle = "\(work)/resumed.tar"

        // Start, and kill -9 as soon as the first blob is in the cache.
        let first = try BackgroundProcess(
            [Shell.ferry] + arguments + ["-o", bundle, "--cache", "\(work)/cache"], logPath: "\(work)/first.log",
            environment: environment)
        let deadline = Date().addingTimeInterval(60)
        while first.isRunning && !first.log.contains("fetched ") && Date() < deadline { usleep(2_000) }
        first.signal(SIGKILL)
        first.stop()
        #expect(!FileManager.default.fileExists(atPath: bundle), "killed before the bundle was complete")
        let cached = FileSystem.count("\(work)/cache/blobs/sha256")
        #expect(cached > 0)

        let second = try Ferry.run(
            arguments + ["-o", bundle, "--cache", "\(work)/cache", "--json"], environment: environment)
        let summary = try JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any]
        // What the first run wrote is reused, from the cache or from the partial bundle's journal.
        let reused = (summary?["cachedBlobs"] as? Int ?? 0) + (summary?["resumedBlobs"] as? Int ?? 0)
        #expect(reused > 0, "the second run reused the first run's blobs: \(second.stdout)")
        #expect(
            (summary?["downloadedBlobs"] as? Int ?? .max) < (summary?["blobs"] as? Int ?? 0),
            "the second run downloaded only what the first had not: \(second.stdout)")
        try Ferry.run(
            arguments + ["-o", "\(work)/clean.tar", "--cache", "\(work)/clean-cache"], environment: environment)
        let clean = try Data(contentsOf: URL(fileURLWithPath: "\(work)/clean.tar"))
        #expect(try Data(contentsOf: URL(fileURLWithPath: bundle)) == clean)

        // Without a cache, the partial bundle and its journal are the resume point: killed once a
        // blob is recorded whole, then once a blob is recorded part way written (`SLOT@BYTES`), then
        // finished, it is the same bundle, and what was written is not fetched again, not even the
        // first part of the blob cut off. The killed runs started an hour later than the one that
        // finishes (another creation time in the head): a rerun at any time resumes.
        let earlier = ["SOURCE_DATE_EPOCH": "1700003600"]
        let uncached = "\(work)/uncached.tar"
        let journal = uncached + ".partial.journal"
        func records() -> [Substring] {
            Array(((try? String(contentsOfFile: journal, encoding: .utf8)) ?? "").split(separator: "\n").dropFirst())
        }
        func completed() -> Int { records().filter { !$0.contains("@") }.count }
        func furthest() -> Int64 {
            records().filter { $0.contains("@") }.compactMap { $0.split(separator: "@").last.flatMap { Int64($0) } }
                .max() ?? 0
        }
        for point in 1...2 {
            let (done, reached) = (completed(), furthest())
            let run = try BackgroundProcess(
                [Shell.ferry] + arguments + ["-o", uncached, "--no-cache"], logPath: "\(work)/kill\(point).log",
                environment: earlier)
            let deadline = Date().addingTimeInterval(60)
            while run.isRunning && Date() < deadline && (point == 1 ? completed() <= done : furthest() <= reached) {
                usleep(1_000)
            }
            run.signal(SIGKILL)
            run.stop()
            #expect(!FileManager.default.fileExists(atPath: uncached), "killed at point \(point) before the end")
            #expect(FileManager.default.fileExists(atPath: uncached + ".partial"))
        }
        #expect(completed() > 0, "the journal recorded blobs before the kills")
        #expect(furthest() > 0, "the journal recorded a blob part way: \(records())")
        // A copy with a byte of that blob's written part flipped (what a power cut can leave): the
        // part read back does not match, and the blob is fetched whole, into the same bundle.
        let damaged = "\(work)/damaged.tar"
        for suffix in [".partial", ".partial.journal"] {
            try FileManager.default.copyItem(atPath: uncached + suffix, toPath: damaged + suffix)
        }
        let flip = [
            "import sys, tarfile",
            "with tarfile.open(sys.argv[1]) as tar:",
            "    offset = max(tar.getmembers(), key=lambda m: m.size).offset_data + 4096",
            "with open(sys.argv[1], 'r+b') as f:",
            "    f.seek(offset); byte = f.read(1); f.seek(offset); f.write(bytes([byte[0] ^ 0xFF]))",
        ]
        try Shell.run(["python3", "-c", flip.joined(separator: "\n"), damaged + ".partial"])
        let refetched = try Ferry.run(arguments + ["-o", damaged, "--no-cache", "--json"], environment: environment)
        let refetchedSummary = try JSONSerialization.jsonObject(with: Data(refetched.stdout.utf8)) as? [String: Any]
        #expect(refetchedSummary?["resumedBytes"] == nil, "\(refetched.stdout)")
        #expect((refetchedSummary?["downloadedBytes"] as? Int ?? 0) >= 96 << 20, "\(refetched.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: damaged)) == clean)
        let resumed = try Ferry.run(arguments + ["-o", uncached, "--no-cache", "--json"], environment: environment)
        let resumedSummary = try JSONSerialization.jsonObject(with: Data(resumed.stdout.utf8)) as? [String: Any]
        #expect((resumedSummary?["resumedBlobs"] as? Int ?? 0) > 0, "\(resumed.stdout)")
        #expect((resumedSummary?["resumedBytes"] as? Int ?? 0) >= 16 << 20, "\(resumed.stdout)")
        #expect(try Data(contentsOf: URL(fileURLWithPath: uncached)) == clean)
        let left = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.contains(".partial") }
        #expect(left.isEmpty, "\(left)")

        // Volumes are written in place too, each with its journal: killed once a volume recorded
        // a blob, the run after it resumes and gives the same set as a clean run.
        let volumeArguments = arguments + ["--volume-size", "40M", "--json"]
        let cleanSet = try Ferry.run(
            volumeArguments + ["-o", "\(work)/clean-set.tar", "--cache", "\(work)/clean-cache"],
            environment: environment)
        let cleanVolumes = try Self.volumes(in: cleanSet.stdout)
        #expect(cleanVolumes.count >= 3, "\(cleanSet.stdout)")
        /// Blobs the volumes' journals record whole (not `SLOT@BYTES` progress).
        func journalLines() -> Int {
            let names = (try? FileManager.default.contentsOfDirectory(atPath: work)) ?? []
            return names.filter { $0.hasPrefix("set.vol") && $0.hasSuffix(".journal") }.reduce(0) {
                let text = (try? String(contentsOfFile: "\(work)/\($1)", encoding: .utf8)) ?? ""
                return $0 + text.split(separator: "\n").dropFirst().filter { !$0.contains("@") }.count
            }
        }
        let killed = try BackgroundProcess(
            [Shell.ferry] + volumeArguments + ["-o", "\(work)/set.tar", "--no-cache"], logPath: "\(work)/kill-set.log",
            environment: environment)
        let setDeadline = Date().addingTimeInterval(60)
        while killed.isRunning && journalLines() < 1 && Date() < setDeadline { usleep(1_000) }
        killed.signal(SIGKILL)
        killed.stop()
        #expect(journalLines() > 0, "a volume recorded a blob before the kill")
        let set = try Ferry.run(volumeArguments + ["-o", "\(work)/set.tar", "--no-cache"], environment: environment)
        let setSummary = try JSONSerialization.jsonObject(with: Data(set.stdout.utf8)) as? [String: Any]
        #expect((setSummary?["resumedBlobs"] as? Int ?? 0) > 0, "\(set.stdout)")
        let volumes = try Self.volumes(in: set.stdout)
        #expect(volumes.count == cleanVolumes.count)
        for (volume, clean) in zip(volumes, cleanVolumes) {
            #expect(
                try Data(contentsOf: URL(fileURLWithPath: volume)) == Data(contentsOf: URL(fileURLWithPath: clean)),
                "\(volume)")
        }
        let leftOfSet = try FileManager.default.contentsOfDirectory(atPath: work).filter { $0.contains(".partial") }
        #expect(leftOfSet.isEmpty, "\(leftOfSet)")
    }

    static func volumes(in json: String) throws -> [String] {
        let summary = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        return (summary?["volumes"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
    }

    /// A registry that sends more bytes than the descriptor says: refused before the extra bytes
    /// land anywhere (they would overwrite the next entry of a bundle written in place).
    @Test func registryLyingAboutABlobSizeIsCaught() throws {
        let registry = try RegistryFixture()
        defer { registry.stop() }
        _ = try SeededRegistry.make(registry)
        let proxy = try UpstreamProxy(backend: registry, options: ["--extend-blobs", "4096"])
        defer { proxy.stop() }
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let result = try Ferry.run(
            [
                "export", "\(proxy.host)/test/large:latest", "-o", "\(work)/l.tar", "--no-cache", "--insecure-registry",
                proxy.host,
            ],
            check: false)
        #expect(result.status == 65, "\(result.stderr)")
        #expect(result.stderr.contains("test/large:latest") && result.stderr.contains("sha256:"), "\(result.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: work).isEmpty)
    }

    @Test func peakMemoryStaysFlatForALargeLayer() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, largeLayer: 384 << 20)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let kib = try Self.peakRSS(
            [
                Shell.ferry, "export", "\(registry.host)/test/large:latest", "-o", "\(work)/large.tar", "--cache",
                "\(work)/cache", "--progress", "none",
            ] + registry.ferryTrustFlags)
        #expect(kib < 100 * 1024, "peak RSS \(kib) KiB exporting a 384 MiB layer")
        #expect((FileSystem.size("\(work)/large.tar") ?? 0) > 384 << 20)
        _ = seeded
        // Verifying it keeps memory flat too.
        let verifyKiB = try Self.peakRSS([Shell.ferry, "verify", "\(work)/large.tar"])
        #expect(verifyKiB < 64 * 1024, "peak RSS \(verifyKiB) KiB verifying a 384 MiB bundle")
    }
}

extension ResilienceTests {
    /// Runs `arguments` under GNU time and returns the peak resident set size in KiB.
    static func peakRSS(_ arguments: [String]) throws -> Int {
        let result = try Shell.run(["/usr/bin/time", "-f", "maxrss_kib=%M"] + arguments)
        let line = result.stderr.split(separator: "\n").first { $0.hasPrefix("maxrss_kib=") } ?? ""
        return Int(line.dropFirst("maxrss_kib=".count)) ?? Int.max
    }
}

enum FileSystem {
    static func count(_ directory: String) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).count
    }
    static func size(_ path: String) -> Int? {
        (try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? Int
    }
}
