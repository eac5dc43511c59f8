import Foundation
import OCICore
import Testing

/// Makes `VerifyTests`' corpus before the suite's first test and removes its directory (some 70 MB
/// of bundles) after its last.
struct VerifyCorpusScope: SuiteTrait, TestScoping {
    func provideScope(
        for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void
    ) async throws {
        let directory = try Shell.temporaryDirectory("ferry-corpus")
        defer { Shell.remove(directory) }
        let corpus = Result { try VerifyTests.Corpus(directory: directory) }
        try await VerifyTests.Corpus.$current.withValue(corpus, operation: function)
    }
}

/// `ferry verify`, `inspect`, `keygen` and `sign` on a good bundle exported from the real registry,
/// and on a corpus of broken copies of it.
@Suite(.serialized, VerifyCorpusScope())
struct VerifyTests {
    /// One good bundle (signed, and an unsigned copy) for all cases, exported once.
    final class Corpus: @unchecked Sendable {
        let directory: String
        let good: String
        let unsigned: String
        let key: String
        let publicKey: String

        /// The corpus of the running suite (see `VerifyCorpusScope`).
        @TaskLocal static var current: Result<Corpus, any Error>?

        init(directory: String) throws {
            self.directory = directory
            let registry = try RegistryFixture(tls: true)
            defer { registry.stop() }
            let seeded = try SeededRegistry.make(registry, largeLayer: 2 << 20)
            key = "\(directory)/signer.key"
            publicKey = "\(directory)/signer.pub"
            try Ferry.run(["keygen", "-o", "\(directory)/signer"])
            good = "\(directory)/good.tar"
            unsigned = "\(directory)/unsigned.tar"
            try Ferry.run(
                ["export", "-o", good, "--cache", "\(directory)/cache", "--sign-key", key] + seeded.references
                    + registry.ferryTrustFlags)
            try Ferry.run(
                ["export", "-o", unsigned, "--cache", "\(directory)/cache"] + seeded.references
                    + registry.ferryTrustFlags)
        }

        func mutate(_ operation: String, from source: String? = nil) throws -> String {
            let out =
                "\(directory)/\(operation.replacingOccurrences(of: ":", with: "-"))-\(UUID().uuidString.prefix(6)).tar"
            try Shell.run([
                "python3", "\(Shell.supportDirectory)/bundle_mutator.py", source ?? unsigned, out, operation,
            ])
            return out
        }
    }

    struct NoCorpus: Error {}

    static func corpus() throws -> Corpus {
        guard let made = Corpus.current else { throw NoCorpus() }
        return try made.get()
    }

    static let brokenCases: [(operation: String, message: String)] = [
        ("flip-layer", "content does not match its digest"),
        ("flip-manifest", "content does not match its digest"),
        ("flip-index", "index.json: does not match the bundle manifest"),
        ("swap-blobs", "size differs from the bundle manifest"),
        ("drop-config", "listed in the bundle manifest but missing from the tar"),
        ("unlist-config", "referenced but not in the bundle"),
        ("absolute", "unsafe path"),
        ("dotdot", "unsafe path"),
        ("symlink", "symbolic link not allowed"),
        ("hardlink", "hard link not allowed"),
        ("device", "character device not allowed"),
        ("duplicate", "duplicate entry"),
        ("outside", "name outside the image layout"),
        ("file-for-dir", "a file where a directory belongs"),
        ("unlisted-blob", "blob not listed in the bundle manifest"),
        ("bad-layout", "not an OCI layout header"),
        ("gzip", "gzip-compressed tar"),
        ("garbage", "not a tar archive"),
        ("blob-before-manifest", "blob before the bundle manifest"),
    ]

    @Test(arguments: Self.brokenCases)
    func brokenBundleIsRefusedWithTheRightMessage(_ operation: String, _ message: String) throws {
        let corpus = try Self.corpus()
        let bundle = try corpus.mutate(operation)
        let result = try Ferry.run(["verify", bundle], check: false)
        #expect(result.status == 65, "\(operation): \(result.stderr)")
        #expect(result.stderr.contains(message), "\(operation): \(result.stderr)")
        #expect(result.stderr.split(separator: "\n").allSatisfy { $0.hasPrefix("ferry: ") })
    }

    @Test func layerProblemNamesEntryImageDigestExpectedAndFound() throws {
        let corpus = try Self.corpus()
        let result = try Ferry.run(["verify", try corpus.mutate("flip-layer"), "--json"], check: false)
        #expect(result.status == 65)
        let report = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any]
        let problem = (report?["problems"] as? [[String: Any]])?.first
        #expect(report?["ok"] as? Bool == false)
        #expect((problem?["entry"] as? String)?.hasPrefix("blobs/sha256/") == true)
        #expect(
            (problem?["image"] as? String)?.contains("/test/large:latest") == true, "\(String(describing: problem))")
        #expect(problem?["expected"] as? String == problem?["digest"] as? String)
        #expect((problem?["found"] as? String)?.hasPrefix("sha256:") == true)
    }

    @Test func cutAtEveryEntryBoundaryAndMidEntryIsRefused() throws {
        let corpus = try Self.corpus()
        let offsets = try Shell.run([
            "python3", "\(Shell.supportDirectory)/bundle_mutator.py", corpus.unsigned, "/dev/null", "list-offsets",
        ]).stdout.split(separator: "\n").compactMap { Int($0) }
        #expect(offsets.count > 20)
        for offset in offsets {
            let bundle = try corpus.mutate("cut:\(offset)")
            let result = try Ferry.run(["verify", bundle], check: false)
            #expect(result.status == 65, "cut at \(offset): \(result.stdout)\(result.stderr)")
            try? FileManager.default.removeItem(atPath: bundle)
        }
    }

    @Test func goodBundleVerifiesFromFileAndPipeAndChecksumFile() throws {
        let corpus = try Self.corpus()
        let result = try Ferry.run(["verify", corpus.unsigned])
        #expect(result.stdout.contains("OK, 4 image(s)"))
        #expect(result.stdout.contains("unsigned"))
        let piped = try Shell.run(["sh", "-c", "cat '\(corpus.unsigned)' | '\(Shell.ferry)' verify -"])
        #expect(piped.stdout.contains("OK"))
        let check = try Shell.run(["sh", "-c", "cd '\(corpus.directory)' && sha256sum -c unsigned.tar.sha256"])
        #expect(check.stdout.contains("unsigned.tar: OK"))
    }

    @Test func signatures() throws {
        let corpus = try Self.corpus()
        // Good: signed at export, trusted key (a file or a directory of keys).
        #expect(try Ferry.run(["verify", corpus.good, "--trust-key", corpus.publicKey]).stdout.contains("(trusted)"))
        let keys = "\(corpus.directory)/trusted"
        try FileManager.default.createDirectory(atPath: keys, withIntermediateDirectories: true)
        try? FileManager.default.copyItem(atPath: corpus.publicKey, toPath: "\(keys)/signer.pub")
        try Ferry.run(["verify", corpus.good, "--trust-key", keys])
        // Private key file is 0600.
        let mode = (try FileManager.default.attributesOfItem(atPath: corpus.key)[.posixPermissions] as? Int) ?? 0
        #expect(mode == 0o600)
        // Wrong key.
        try Ferry.run(["keygen", "-o", "\(corpus.directory)/other"])
        let wrong = try Ferry.run(
            ["verify", corpus.good, "--trust-key", "\(corpus.directory)/other.pub"], check: false)
        #expect(wrong.status == 65)
        #expect(wrong.stderr.contains("not trusted"))
        // Unsigned.
        let unsigned = try Ferry.run(["verify", corpus.unsigned, "--trust-key", corpus.publicKey], check: false)
        #expect(unsigned.status == 65)
        #expect(unsigned.stderr.contains("not signed"))
        // Tampered manifest, tampered blob.
        let tamperedManifest = try Ferry.run(
            ["verify", try corpus.mutate("tamper-manifest", from: corpus.good), "--trust-key", corpus.publicKey],
            check: false)
        #expect(tamperedManifest.status == 65)
        #expect(tamperedManifest.stderr.contains("signature does not match"))
        let tamperedBlob = try Ferry.run(
            ["verify", try corpus.mutate("flip-layer", from: corpus.good), "--trust-key", corpus.publicKey],
            check: false)
        #expect(tamperedBlob.status == 65)
        #expect(tamperedBlob.stderr.contains("content does not match its digest"))
        // `ferry sign` signs an existing bundle without changing its blobs.
        let copy = "\(corpus.directory)/later-signed.tar"
        try? FileManager.default.removeItem(atPath: copy)
        try FileManager.default.copyItem(atPath: corpus.unsigned, toPath: copy)
        let blobsBefore = try BundleInspector.entries(copy).filter { $0.hasPrefix("blobs/sha256/") }
        try Ferry.run(["sign", copy, "--key", corpus.key])
        try Ferry.run(["verify", copy, "--trust-key", corpus.publicKey])
        #expect(try BundleInspector.entries(copy).filter { $0.hasPrefix("blobs/sha256/") } == blobsBefore)
        let check = try Shell.run(["sh", "-c", "cd '\(corpus.directory)' && sha256sum -c later-signed.tar.sha256"])
        #expect(check.stdout.contains("OK"))
    }

    @Test func inspectShowsImagesAndSigner() throws {
        let corpus = try Self.corpus()
        let text = try Ferry.run(["inspect", corpus.good]).stdout
        #expect(text.contains("/test/multi:1.0"))
        #expect(text.contains("linux/amd64, linux/arm64/v8"))
        #expect(text.contains("Signed:   sha256:"))
        let json = try Ferry.run(["inspect", corpus.good, "--json"]).stdout
        let summary = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        #expect((summary?["images"] as? [Any])?.count == 4)
        #expect((summary?["sharedSavings"] as? Int ?? 0) > 0, "the multi-arch and single images share a base layer")
        #expect(summary?["signed"] as? Bool == true)
    }
}
