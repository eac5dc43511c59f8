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

extension CosignSignature {
    /// An image of a bundle, for the signature check: its name, digest, and every manifest and
    /// index it reaches.
    public struct Member: Sendable {
        public var reference: Reference
        public var digest: Digest
        public var manifests: Set<Digest>
        public init(reference: Reference, digest: Digest, manifests: Set<Digest>) {
            self.reference = reference
            self.digest = digest
            self.manifests = manifests
        }
    }

    /// The images of `images` without a signature that one of `keys` verifies (cosign's
    /// `sha256-HEX.sig` among `images`, or an artifact among them whose `subject` is the image);
    /// Helm charts are exempt: the one check an export, `ferry verify --image-keys` and an import
    /// share. A signature, attestation, SBOM or referrers image (by its tag, or by digest with a
    /// `subject`) is exempt only when what it refers to is one of the checked images' manifests:
    /// a tag that merely looks like one does not exempt a runnable image.
    /// `manifest` and `payload` give the bytes of a manifest and of a payload layer.
    public static func refused(
        _ images: [Member], keys: [ImageSignatureKey], manifest: (Digest) -> [UInt8]?,
        payload: (Descriptor) -> [UInt8]?
    ) -> [String] {
        func subject(of image: Member) -> Digest? {
            if let tag = image.reference.tag { return ReferrerTag(tag: tag.value)?.subject }
            guard let bytes = manifest(image.digest), let document = try? ManifestDocument(bytes: bytes) else {
                return nil
            }
            switch document.content {
            case .manifest(let manifest): return manifest.subject?.digest
            case .index(let index): return index.subject?.digest
            }
        }
        // Helm charts are not images: cosign signs images, and a chart from a chart repository
        // comes with its index's digest instead.
        func isChart(_ image: Member) -> Bool {
            guard let bytes = manifest(image.digest), let document = try? ManifestDocument(bytes: bytes),
                case .manifest(let manifest) = document.content
            else { return false }
            return manifest.config.mediaType == MediaType.helmConfig
        }
        let images = images.filter { !isChart($0) }
        // Exempt referrers, grown to a fixed point (a signature of an SBOM refers to a referrer).
        var checked = images.filter { subject(of: $0) == nil }
        var known = checked.reduce(into: Set<Digest>()) { $0.formUnion($1.manifests) }
        var pending = images.filter { subject(of: $0) != nil }
        var grew = true
        while grew {
            grew = false
            pending.removeAll { image in
                guard let target = subject(of: image), known.contains(target) else { return false }
                known.formUnion(image.manifests)
                grew = true
                return true
            }
        }
        checked += pending  // referring to nothing checked: an image like any other
        var byName: [String: Digest] = [:]
        for image in images { byName[image.reference.description] = image.digest }
        // Signatures in the referrers form (cosign's OCI 1.1 mode): artifacts whose subject is the image.
        var bySubject: [Digest: [Digest]] = [:]
        for image in images where image.reference.tag == nil {
            if let target = subject(of: image) { bySubject[target, default: []].append(image.digest) }
        }
        func signature(_ digest: Digest) -> ImageManifest? {
            guard let bytes = manifest(digest), let document = try? ManifestDocument(bytes: bytes),
                case .manifest(let signature) = document.content,
                signature.layers.contains(where: { $0.mediaType == payloadMediaType })
            else { return nil }
            return signature
        }
        var refused: [String] = []
        for image in checked {
            let tag = ReferrerTag(subject: image.digest, kind: .signature).tag
            var candidates: [ImageManifest] = []
            if let name = try? Reference("\(image.reference.name):\(tag)"), let digest = byName[name.description],
                let found = signature(digest)
            {
                candidates.append(found)
            }
            candidates += (bySubject[image.digest] ?? []).compactMap(signature)
            if candidates.isEmpty {
                refused.append("\(image.reference): not signed (no \(tag), no signature among its referrers)")
            } else if !candidates.contains(where: {
                verifies($0, subject: image.digest, keys: keys, payload: payload)
            }) {
                refused.append("\(image.reference): its signature does not verify with the given keys")
            }
        }
        return refused
    }
}

/// Keeps, while a bundle is read, what checking its images' signatures needs: the manifests of
/// its signature images and the simple-signing payloads (small), passing every blob on to `inner`.
public final class SignatureCapture: BundleBlobSink {
    let inner: (any BundleBlobSink)?
    private var wanted: Set<Digest> = []
    private var current: Digest?
    private var bytes: [UInt8] = []
    public private(set) var kept: [Digest: [UInt8]] = [:]

    public init(passingTo inner: (any BundleBlobSink)?) { self.inner = inner }

    public func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws {
        // Signature manifests, and the top manifests of images named by tag-like or digest-only
        // names (to learn what they refer to).
        // With charts in the bundle, every image manifest (to tell the charts, which are exempt).
        let charts = manifest.blobs.contains { $0.mediaType == MediaType.helmConfig }
        for image in manifest.images {
            let tag = (try? Reference(image.reference))?.tag
            if tag == nil || tag.flatMap({ ReferrerTag(tag: $0.value) }) != nil
                || (charts && image.mediaType == MediaType.ociManifest)
            {
                wanted.insert(image.digest)
            }
        }
        for blob in manifest.blobs where blob.mediaType == CosignSignature.payloadMediaType && blob.size <= 1 << 20 {
            wanted.insert(blob.digest)
        }
        try inner?.prepare(manifest, volume: volume)
    }

    /// The most a capture keeps, all blobs together; each is at most a manifest's size.
    public static let budget = 64 << 20
    private var used = 0

    public func begin(_ blob: BundleManifest.Blob) throws {
        let fits = blob.size <= ManifestDocument.maximumSize && used + Int(blob.size) <= Self.budget
        current = wanted.contains(blob.digest) && fits ? blob.digest : nil
        bytes = []
        try inner?.begin(blob)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        if current != nil { self.bytes += bytes }
        try inner?.write(bytes)
    }

    public func commit() throws {
        try inner?.commit()
        if let current {
            kept[current] = bytes
            used += bytes.count
        }
        current = nil
    }

    public func abort() {
        current = nil
        inner?.abort()
    }
}
