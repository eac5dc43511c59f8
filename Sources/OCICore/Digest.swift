/// A content digest, `algorithm:encoded`, as defined by the OCI image spec
/// (`../shared/specs/oci-image/descriptor.md`, "Digests").
///
/// Only the registered algorithms with their exact lowercase-hex lengths are accepted, so a
/// `Digest` can safely become part of a file path.
public struct Digest: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let algorithm: DigestAlgorithm
    /// Lowercase hex of exactly `algorithm.hexLength` characters.
    public let encoded: String

    public init(algorithm: DigestAlgorithm, encoded: String) throws(DigestError) {
        guard encoded.utf8.count == algorithm.hexLength else {
            throw .wrongLength(algorithm: algorithm, expected: algorithm.hexLength, found: encoded.utf8.count)
        }
        guard encoded.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || ($0 >= 0x61 && $0 <= 0x66) }) else {
            throw .notLowercaseHex(encoded)
        }
        self.algorithm = algorithm
        self.encoded = encoded
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

    public static func < (lhs: Digest, rhs: Digest) -> Bool { lhs.description < rhs.description }

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
