/// A content digest, `algorithm:encoded`, as defined by the OCI image spec
/// (`../shared/specs/oci-image/descriptor.md`, "Digests").
///
/// Only the registered algorithms with their exact lowercase-hex lengths are accepted, so a
/// `Digest` can safely become part of a file path.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The raw hash, not its hex text: a sha256 digest is 32 bytes inline, with no allocation, so a
    /// bundle or store that lists a million digests holds them in a few tens of MB.
    private enum Storage: Hashable, Sendable {
        /// sha256, as four big-endian words (word order and numeric order are the hex order).
        case sha256(UInt64, UInt64, UInt64, UInt64)
        /// sha512: rare, kept as bytes.
        case sha512([UInt8])
    }
    private let storage: Storage

    public var algorithm: DigestAlgorithm {
        switch storage {
        case .sha256: .sha256
        case .sha512: .sha512
        }
    }

    /// Lowercase hex of exactly `algorithm.hexLength` characters.
    public var encoded: String {
        switch storage {
        case .sha256(let a, let b, let c, let d):
            return String(unsafeUninitializedCapacity: 64) { buffer in
                Self.writeHex(a, into: buffer, at: 0)
                Self.writeHex(b, into: buffer, at: 16)
                Self.writeHex(c, into: buffer, at: 32)
                Self.writeHex(d, into: buffer, at: 48)
                return 64
            }
        case .sha512(let bytes):
            return String(unsafeUninitializedCapacity: bytes.count * 2) { buffer in
                var i = 0
                while i < bytes.count {
                    buffer[2 * i] = Self.hexDigit(bytes[i] >> 4)
                    buffer[2 * i + 1] = Self.hexDigit(bytes[i] & 0xf)
                    i += 1
                }
                return bytes.count * 2
            }
        }
    }

    private static func hexDigit(_ value: UInt8) -> UInt8 { value < 10 ? 0x30 + value : 0x61 - 10 + value }

    private static func writeHex(_ word: UInt64, into buffer: UnsafeMutableBufferPointer<UInt8>, at start: Int) {
        var i = 0
        while i < 16 {
            buffer[start + i] = hexDigit(UInt8(truncatingIfNeeded: word >> UInt64(60 - 4 * i)) & 0xf)
            i += 1
        }
    }

    public init(algorithm: DigestAlgorithm, encoded: String) throws(DigestError) {
        var text = encoded
        let bytes: [UInt8]? = text.withUTF8 { hex in
            guard hex.count == algorithm.hexLength else { return nil }
            var bytes = [UInt8](repeating: 0, count: hex.count / 2)
            var i = 0
            while i < hex.count {
                let character = hex[i]
                let value: UInt8
                if character >= 0x30 && character <= 0x39 {
                    value = character - 0x30
                } else if character >= 0x61 && character <= 0x66 {
                    value = character - 0x61 + 10
                } else {
                    return []
                }
                bytes[i / 2] |= i % 2 == 0 ? value << 4 : value
                i += 1
            }
            return bytes
        }
        guard let bytes else {
            throw .wrongLength(algorithm: algorithm, expected: algorithm.hexLength, found: encoded.utf8.count)
        }
        guard !bytes.isEmpty else { throw .notLowercaseHex(encoded) }
        self.init(algorithm: algorithm, bytes: bytes)
    }

    /// From the raw hash (`algorithm`'s length in bytes: a hasher's output).
    init(algorithm: DigestAlgorithm, bytes: [UInt8]) {
        switch algorithm {
        case .sha256:
            func word(_ n: Int) -> UInt64 {
                var value: UInt64 = 0
                var i = n * 8
                while i < n * 8 + 8 {
                    value = value << 8 | UInt64(bytes[i])
                    i += 1
                }
                return value
            }
            storage = .sha256(word(0), word(1), word(2), word(3))
        case .sha512:
            storage = .sha512(bytes)
        }
    }

    /// Parses `sha256:<64 hex>` or `sha512:<128 hex>`.
    public init(_ string: String) throws(DigestError) {
        guard let colon = string.firstIndex(of: ":") else { throw .malformed(string) }
        let name = String(string[..<colon])
        guard let algorithm = DigestAlgorithm(rawValue: name) else { throw .unsupportedAlgorithm(name) }
        try self.init(algorithm: algorithm, encoded: String(string[string.index(after: colon)...]))
    }

    public var description: String { "\(algorithm.rawValue):\(encoded)" }

    /// The path of this blob inside an OCI image layout: `blobs/<alg>/<encoded>`.
    public var layoutPath: String { "blobs/\(algorithm.rawValue)/\(encoded)" }

    /// The order of `description`: by algorithm name, then by hex.
    public static func < (lhs: Digest, rhs: Digest) -> Bool {
        switch (lhs.storage, rhs.storage) {
        case (.sha256(let a0, let a1, let a2, let a3), .sha256(let b0, let b1, let b2, let b3)):
            return (a0, a1, a2, a3) < (b0, b1, b2, b3)
        case (.sha512(let a), .sha512(let b)):
            return a.lexicographicallyPrecedes(b)
        case (.sha256, .sha512):
            return true
        case (.sha512, .sha256):
            return false
        }
    }

    /// Digest of an in-memory byte sequence (for small documents: manifests, configs).
    public static func of<Bytes: Sequence>(_ bytes: Bytes, algorithm: DigestAlgorithm = .sha256) -> Digest
    where Bytes.Element == UInt8 {
        var hasher = DigestHasher(algorithm)
        let array = Array(bytes)
        array.withUnsafeBytes { hasher.update($0) }
        return hasher.finalize()
    }
}

extension Digest: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let string = try container.decode(String.self)
        do {
            try self.init(string)
        } catch {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: error.description)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(description)
    }
}

/// The digest algorithms registered by the OCI image spec.
public enum DigestAlgorithm: String, Sendable, Hashable, CaseIterable, Codable {
    case sha256
    case sha512

    public var hexLength: Int {
        switch self {
        case .sha256: 64
        case .sha512: 128
        }
    }
}

public enum DigestError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    case unsupportedAlgorithm(String)
    case wrongLength(algorithm: DigestAlgorithm, expected: Int, found: Int)
    case notLowercaseHex(String)

    public var description: String {
        switch self {
        case .malformed(let s): "malformed digest '\(s)': expected ALGORITHM:HEX"
        case .unsupportedAlgorithm(let a): "unsupported digest algorithm '\(a)': expected sha256 or sha512"
        case .wrongLength(let algorithm, let expected, let found):
            "\(algorithm.rawValue) digest must have \(expected) hex characters, found \(found)"
        case .notLowercaseHex(let s): "digest '\(s)' is not lowercase hex"
        }
    }
}
