import CLibCrypto
import Foundation
import OCICore

/// Ed25519 keys (PEM, as `openssl pkey` reads them) and the bundle signature.
///
/// A signature covers the exact bytes of `ferry-bundle.json`, which names the digest and size of
/// `index.json` and of every blob: changing any byte of the bundle breaks it.
public struct BundleSignature: Codable, Sendable, Hashable {
    public static let fileName = "ferry-bundle.sig"
    public var algorithm: String
    /// `sha256:` of the raw 32-byte public key.
    public var keyID: String
    /// Base64 of the raw public key (informational: trust comes from the keys the verifier holds).
    public var publicKey: String
    /// Base64 of the Ed25519 signature over `ferry-bundle.json`.
    public var signature: String

    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return Array(try encoder.encode(self)) + [0x0a]
    }

    public static func sign(manifest: [UInt8], with key: SigningKey) throws -> BundleSignature {
        BundleSignature(
            algorithm: "ed25519", keyID: key.publicKey.keyID,
            publicKey: Data(key.publicKey.raw).base64EncodedString(),
            signature: Data(try key.sign(manifest)).base64EncodedString())
    }
}

/// What a signature says about the bytes it signs: the one judgement bundles and inventories share.
public enum SignatureVerdict: Sendable, Equatable {
    /// It verifies: against a trusted key (`trusted` true), or, with no trusted keys given, against
    /// the key it carries (`trusted` nil: intact, but who signed is not established).
    case valid(trusted: Bool?)
    case malformed
    /// The key ID shown is not that of the key carried (no trusted keys given).
    case keyIDMismatch(String)
    /// With no trusted keys given: the bytes changed since they were signed.
    case mismatch
    case untrusted(String)
    /// Signed by a trusted key, but the bytes changed since.
    case tampered(String)
}

extension BundleSignature {
    /// Judges this signature over `bytes`: against `trustedKeys`, or when there are none, against
    /// the key it carries (and that the key ID it shows is that key's, so no report names a
    /// signer falsely).
    public func verdict(over bytes: [UInt8], trustedKeys: [PublicKey]) -> SignatureVerdict {
        guard algorithm == "ed25519", let signatureBytes = Data(base64Encoded: signature).map(Array.init) else {
            return .malformed
        }
        guard !trustedKeys.isEmpty else {
            guard let raw = Data(base64Encoded: publicKey).map(Array.init), raw.count == 32,
                PublicKey(raw: raw).keyID == keyID
            else { return .keyIDMismatch(keyID) }
            return PublicKey(raw: raw).verify(signature: signatureBytes, of: bytes) ? .valid(trusted: nil) : .mismatch
        }
        guard let key = trustedKeys.first(where: { $0.keyID == keyID }) else { return .untrusted(keyID) }
        return key.verify(signature: signatureBytes, of: bytes) ? .valid(trusted: true) : .tampered(keyID)
    }
}

public enum SigningError: Error, CustomStringConvertible {
    case unreadableKey(String, String)
    case openssl(String)

    public var description: String {
        switch self {
        case .unreadableKey(let path, let why): "key \(path): \(why)"
        case .openssl(let what): "OpenSSL: \(what)"
        }
    }
}

/// An Ed25519 public key.
public struct PublicKey: Sendable, Hashable {
    public let raw: [UInt8]

    public init(raw: [UInt8]) { self.raw = raw }

    /// Reads a PEM `PUBLIC KEY` file.
    public init(pemFile path: String) throws {
        let key = try readPEMKey(path, kind: "a PEM public key") { PEM_read_bio_PUBKEY($0, nil, nil, nil) }
        defer { EVP_PKEY_free(key) }
        self.raw = try Self.rawPublicKey(key, path: path)
    }

    static func rawPublicKey(_ key: OpaquePointer, path: String) throws -> [UInt8] {
        guard EVP_PKEY_get_id(key) == EVP_PKEY_ED25519 else {
            throw SigningError.unreadableKey(path, "not an Ed25519 key")
        }
        var length = 32
        var raw = [UInt8](repeating: 0, count: 32)
        guard EVP_PKEY_get_raw_public_key(key, &raw, &length) == 1, length == 32 else {
            throw SigningError.unreadableKey(path, "cannot read the public key")
        }
        return raw
    }

    /// `sha256:` of the raw key: how reports name a signer.
    public var keyID: String { Digest.of(raw).description }

    public var pem: String {
        // SubjectPublicKeyInfo for Ed25519: a fixed 12-byte prefix, then the raw key.
        let prefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]
        return "-----BEGIN PUBLIC KEY-----\n\(Data(prefix + raw).base64EncodedString())\n-----END PUBLIC KEY-----\n"
    }

    public func verify(signature: [UInt8], of message: [UInt8]) -> Bool {
        guard let key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, raw, raw.count) else { return false }
        defer { EVP_PKEY_free(key) }
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, nil, nil, key) == 1 else { return false }
        return EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }

    /// Reads every `*.pub`/`*.pem` key in a directory, or the one file given.
    public static func load(_ path: String) throws -> [PublicKey] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw SigningError.unreadableKey(path, "no such file or directory")
        }
        guard isDirectory.boolValue else { return [try PublicKey(pemFile: path)] }
        return try FileManager.default.contentsOfDirectory(atPath: path).sorted()
            .filter { $0.hasSuffix(".pub") || $0.hasSuffix(".pem") }
            .map { try PublicKey(pemFile: "\(path)/\($0)") }
    }
}

/// An Ed25519 private key.
public final class SigningKey: @unchecked Sendable {
    private let key: OpaquePointer
    public let publicKey: PublicKey

    private init(key: OpaquePointer, path: String) throws {
        self.key = key
        self.publicKey = PublicKey(raw: try PublicKey.rawPublicKey(key, path: path))
    }

    deinit { EVP_PKEY_free(key) }

    /// Reads a PEM `PRIVATE KEY` file (PKCS #8, unencrypted).
    public convenience init(pemFile path: String) throws {
        let key = try readPEMKey(path, kind: "an unencrypted PEM private key") {
            PEM_read_bio_PrivateKey($0, nil, nil, nil)
        }
        try self.init(key: key, path: path)
    }

    /// A new random key.
    public static func generate() throws -> SigningKey {
        guard let context = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, nil) else {
            throw SigningError.openssl("key context")
        }
        defer { EVP_PKEY_CTX_free(context) }
        var key: OpaquePointer?
        guard EVP_PKEY_keygen_init(context) == 1, EVP_PKEY_keygen(context, &key) == 1, let key else {
            throw SigningError.openssl("Ed25519 key generation failed")
        }
        return try SigningKey(key: key, path: "generated key")
    }

    /// The private key as PEM (PKCS #8).
    public func pem() throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw SigningError.openssl("BIO") }
        defer { BIO_free(bio) }
        guard PEM_write_bio_PrivateKey(bio, key, nil, nil, 0, nil, nil) == 1 else {
            throw SigningError.openssl("cannot write the private key")
        }
        var pointer: UnsafeMutablePointer<CChar>?
        let length = BIO_ctrl(bio, BIO_CTRL_INFO, 0, &pointer)
        guard let pointer, length > 0 else { throw SigningError.openssl("empty key") }
        return String(decoding: UnsafeRawBufferPointer(start: pointer, count: length), as: UTF8.self)
    }

    public func sign(_ message: [UInt8]) throws -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw SigningError.openssl("context") }
        defer { EVP_MD_CTX_free(context) }
        var signature = [UInt8](repeating: 0, count: 64)
        var length = 64
        guard EVP_DigestSignInit(context, nil, nil, nil, key) == 1,
            EVP_DigestSign(context, &signature, &length, message, message.count) == 1
        else { throw SigningError.openssl("signing failed") }
        return Array(signature.prefix(length))
    }
}

/// Reads the key file at `path` with one of OpenSSL's PEM readers; the caller frees the key.
func readPEMKey(_ path: String, kind: String, read: (OpaquePointer?) -> OpaquePointer?) throws -> OpaquePointer {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw SigningError.unreadableKey(path, SystemError.unreadable(path))
    }
    let key = data.withUnsafeBytes { bytes -> OpaquePointer? in
        let bio = BIO_new_mem_buf(bytes.baseAddress, Int32(bytes.count))
        defer { BIO_free(bio) }
        return read(bio)
    }
    guard let key else { throw SigningError.unreadableKey(path, "not \(kind)") }
    return key
}
