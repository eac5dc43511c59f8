import OCICore
import Testing

struct DigestTests {
    static let sha256Empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

    @Test func hashesKnownVectors() {
        #expect(Digest.of([UInt8]()).description == Self.sha256Empty)
        #expect(
            Digest.of(Array("abc".utf8), algorithm: .sha512).description
                == "sha512:ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                + "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f")
    }

    @Test func streamingEqualsOneShot() {
        let bytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        var hasher = DigestHasher(.sha256)
        for chunk in stride(from: 0, to: bytes.count, by: 7_777) {
            bytes[chunk..<min(chunk + 7_777, bytes.count)].withUnsafeBytes { hasher.update($0) }
        }
        #expect(hasher.finalize() == Digest.of(bytes))
    }

    @Test(arguments: [
        Self.sha256Empty,
        "sha512:" + String(repeating: "ab", count: 64),
    ])
    func parsesValidDigests(_ string: String) throws {
        #expect(try Digest(string).description == string)
    }

    static let a64 = String(repeating: "a", count: 64)
    static let invalid: [(String, DigestError)] = [
        ("", .malformed("")),
        ("sha256", .malformed("sha256")),
        ("md5:abc", .unsupportedAlgorithm("md5")),
        ("sha256:abc", .wrongLength(algorithm: .sha256, expected: 64, found: 3)),
        ("sha256:" + a64.uppercased(), .notLowercaseHex(a64.uppercased())),
        ("sha256:" + String(repeating: "g", count: 64), .notLowercaseHex(String(repeating: "g", count: 64))),
        ("sha512:" + a64, .wrongLength(algorithm: .sha512, expected: 128, found: 64)),
        (
            "sha256:../../etc/passwd/" + String(a64.prefix(47)),
            .notLowercaseHex("../../etc/passwd/" + String(a64.prefix(47)))
        ),
    ]

    @Test(arguments: Self.invalid)
    func refusesInvalidDigests(_ input: String, _ expected: DigestError) {
        #expect(throws: expected) { try Digest(input) }
    }

    @Test func verifierChecksSizeAndDigest() throws {
        let bytes = Array("hello".utf8)
        var ok = BlobVerifier(digest: Digest.of(bytes), size: 5)
        try bytes.withUnsafeBytes { try ok.update($0) }
        try ok.finish()

        var short = BlobVerifier(digest: Digest.of(bytes), size: 6)
        try bytes.withUnsafeBytes { try short.update($0) }
        #expect(throws: BlobVerificationError.self) { try short.finish() }

        var long = BlobVerifier(digest: Digest.of(bytes), size: 4)
        #expect(throws: BlobVerificationError.self) { try bytes.withUnsafeBytes { try long.update($0) } }

        var wrong = BlobVerifier(digest: Digest.of(Array("world".utf8)), size: 5)
        try bytes.withUnsafeBytes { try wrong.update($0) }
        #expect(throws: BlobVerificationError.self) { try wrong.finish() }
    }
}

struct DigestHasherTests {
    /// A copy hashes on by itself (a verifier carried from one transfer attempt to the next keeps
    /// the state it was copied with), and finishing does not end the hasher.
    @Test func copiesHashOnIndependentlyAndFinishingDoesNotEndIt() {
        var first = DigestHasher(.sha256)
        Array("abc".utf8).withUnsafeBytes { first.update($0) }
        var second = first
        Array("def".utf8).withUnsafeBytes { second.update($0) }
        #expect(first.finalize() == Digest.of(Array("abc".utf8)))
        #expect(second.finalize() == Digest.of(Array("abcdef".utf8)))
        Array("xyz".utf8).withUnsafeBytes { first.update($0) }
        #expect(first.finalize() == Digest.of(Array("abcxyz".utf8)))
        #expect(second.finalize() == Digest.of(Array("abcdef".utf8)))
    }
}
