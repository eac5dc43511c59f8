/// Checks a stream of bytes against a descriptor's size and digest while it flows.
///
/// Feed every chunk to ``update(_:)``; it throws as soon as more bytes arrive than the expected
/// size. ``finish()`` throws when the stream was short or the digest differs. Callers never compare
/// digests themselves.
public struct BlobVerifier {
    public let expectedDigest: Digest
    public let expectedSize: Int64
    public private(set) var count: Int64 = 0
    private var hasher: DigestHasher

    public init(digest: Digest, size: Int64) {
        expectedDigest = digest
        expectedSize = size
        hasher = DigestHasher(digest.algorithm)
    }

    public init(_ descriptor: Descriptor) {
        self.init(digest: descriptor.digest, size: descriptor.size)
    }

    public mutating func update(_ bytes: UnsafeRawBufferPointer) throws(BlobVerificationError) {
        count += Int64(bytes.count)
        if count > expectedSize {
            throw .tooLarge(digest: expectedDigest, expected: expectedSize)
        }
        hasher.update(bytes)
    }

    public func finish() throws(BlobVerificationError) {
        guard count == expectedSize else {
            throw .sizeMismatch(digest: expectedDigest, expected: expectedSize, found: count)
        }
        let found = hasher.finalize()
        guard found == expectedDigest else {
            throw .digestMismatch(expected: expectedDigest, found: found)
        }
    }
}

public enum BlobVerificationError: Error, Equatable, CustomStringConvertible {
    case tooLarge(digest: Digest, expected: Int64)
    case sizeMismatch(digest: Digest, expected: Int64, found: Int64)
    case digestMismatch(expected: Digest, found: Digest)

    public var description: String {
        switch self {
        case .tooLarge(let digest, let expected):
            "blob \(digest) is larger than its expected \(expected) bytes"
        case .sizeMismatch(let digest, let expected, let found):
            "blob \(digest) has \(found) bytes, expected \(expected)"
        case .digestMismatch(let expected, let found):
            "content does not match its digest: expected \(expected), found \(found)"
        }
    }
}
