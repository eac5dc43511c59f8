import CLibCrypto
import Foundation
import OCICore

/// A key cosign signs images with: ECDSA P-256 (cosign's default) or Ed25519, from a PEM public
/// key file. Verified with OpenSSL; no cosign binary.
public final class ImageSignatureKey: @unchecked Sendable {
    private let key: OpaquePointer
    public let path: String
    private let isEd25519: Bool

    public init(pemFile path: String) throws {
        key = try readPEMKey(path, kind: "a PEM public key") { PEM_read_bio_PUBKEY($0, nil, nil, nil) }
        self.path = path
        let type = EVP_PKEY_get_id(key)
        isEd25519 = type == EVP_PKEY_ED25519
        guard isEd25519 || type == EVP_PKEY_EC else {
            EVP_PKEY_free(key)
            throw SigningError.unreadableKey(path, "not an ECDSA or Ed25519 public key")
        }
    }

    deinit { EVP_PKEY_free(key) }

    /// Whether `signature` (ECDSA: DER over SHA-256; Ed25519: raw) signs `message`.
    public func verify(signature: [UInt8], of message: [UInt8]) -> Bool {
        guard let context = EVP_MD_CTX_new() else { return false }
        defer { EVP_MD_CTX_free(context) }
        guard EVP_DigestVerifyInit(context, nil, isEd25519 ? nil : EVP_sha256(), nil, key) == 1 else { return false }
        return EVP_DigestVerify(context, signature, signature.count, message, message.count) == 1
    }
}

/// Cosign's signature of an image (the manifest tagged `sha256-HEX.sig`): each layer is a
/// simple-signing payload naming the image's digest, with its signature in the
/// `dev.cosignproject.cosign/signature` annotation.
public enum CosignSignature {
    public static let payloadMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
    public static let signatureAnnotation = "dev.cosignproject.cosign/signature"

    private struct Payload: Decodable {
        struct Critical: Decodable {
            struct Image: Decodable {
                var manifestDigest: String
                enum CodingKeys: String, CodingKey { case manifestDigest = "docker-manifest-digest" }
            }
            var image: Image
            var type: String
        }
        var critical: Critical
    }

    /// Whether one of the signature manifest's layers is a payload for `subject` signed by one of
    /// `keys`. `payload` gives a layer's bytes (small documents, from wherever they are kept).
    public static func verifies(
        _ signature: ImageManifest, subject: Digest, keys: [ImageSignatureKey], payload: (Descriptor) -> [UInt8]?
    ) -> Bool {
        for layer in signature.layers where layer.mediaType == payloadMediaType {
            guard let encoded = layer.annotations?[signatureAnnotation],
                let signatureBytes = Data(base64Encoded: encoded).map(Array.init), let bytes = payload(layer),
                Digest.of(bytes, algorithm: layer.digest.algorithm) == layer.digest,
                let parsed = try? JSONDecoder().decode(Payload.self, from: Data(bytes)),
                parsed.critical.type == "cosign container image signature",
                parsed.critical.image.manifestDigest == subject.description
            else { continue }
            if keys.contains(where: { $0.verify(signature: signatureBytes, of: bytes) }) { return true }
        }
        return false
    }
}
