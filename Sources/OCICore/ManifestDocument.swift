import Foundation

/// A manifest or index exactly as received: the raw bytes are the truth, the parsed value a view.
///
/// The digest is computed over `bytes`, so a document is never re-encoded and digests never change.
public struct ManifestDocument: Sendable, Hashable {
    public enum Content: Sendable, Hashable {
        case manifest(ImageManifest)
        case index(ImageIndex)
    }

    public let bytes: [UInt8]
    public let mediaType: String
    public let digest: Digest
    public let content: Content

    /// The largest manifest Ferry accepts (the distribution registry's default limit is 4 MiB).
    public static let maximumSize = 4 * 1024 * 1024

    /// Parses `bytes`. `mediaType` is what the registry declared (`Content-Type`), if anything; the
    /// document's own `mediaType` field wins when present, and must agree with a declared type.
    public init(bytes: [UInt8], declaredMediaType: String? = nil, algorithm: DigestAlgorithm = .sha256)
        throws(ManifestError)
    {
        guard bytes.count <= Self.maximumSize else { throw .tooLarge(bytes.count) }
        // Every field of both shapes, decoded once; which shape it is is decided below.
        struct Probe: Decodable {
            var schemaVersion: Int?
            var mediaType: String?
            var artifactType: String?
            var manifests: [Descriptor]?
            var config: Descriptor?
            var layers: [Descriptor]?
            var subject: Descriptor?
            var annotations: [String: String]?
        }
        let data = Data(bytes)
        let probe: Probe
        do {
            probe = try JSONDecoder().decode(Probe.self, from: data)
        } catch {
            throw .invalidJSON(String(describing: error))
        }
        // Both an index's and an image's fields: which one it is would be a guess, and a wrong guess
        // hides what it references from garbage collection (image-spec: refuse ambiguous documents).
        if probe.manifests != nil && (probe.config != nil || probe.layers != nil) { throw .ambiguous }
        let declared = declaredMediaType.map { Self.stripParameters($0) }
        let type: String
        if let own = probe.mediaType {
            type = own
        } else if let declared, MediaType.manifests.contains(declared) || MediaType.indexes.contains(declared) {
            type = declared
        } else if probe.manifests != nil {
            type = MediaType.ociIndex
        } else if probe.config != nil {
            type = MediaType.ociManifest
        } else {
            throw .unsupportedMediaType(declared ?? "none")
        }
        guard probe.schemaVersion == 2 else { throw .unsupportedSchemaVersion(probe.schemaVersion ?? 0) }
        if MediaType.indexes.contains(type) {
            guard let manifests = probe.manifests else { throw .invalidJSON("an index without \"manifests\"") }
            var index = ImageIndex(mediaType: probe.mediaType, manifests: manifests, annotations: probe.annotations)
            index.artifactType = probe.artifactType
            index.subject = probe.subject
            content = .index(index)
        } else if MediaType.manifests.contains(type) {
            guard let config = probe.config, let layers = probe.layers else {
                throw .invalidJSON("an image manifest without \"config\" and \"layers\"")
            }
            var manifest = ImageManifest(
                mediaType: probe.mediaType, config: config, layers: layers, annotations: probe.annotations)
            manifest.artifactType = probe.artifactType
            manifest.subject = probe.subject
            content = .manifest(manifest)
        } else {
            throw .unsupportedMediaType(type)
        }
        self.bytes = bytes
        self.mediaType = type
        self.digest = Digest.of(bytes, algorithm: algorithm)
    }

    /// A descriptor pointing at this document.
    public var descriptor: Descriptor {
        Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
    }

    /// Every descriptor this document references directly: child manifests of an index, or the
    /// config and layers of a manifest. `subject` is not a child (it points the other way).
    public var children: [Descriptor] {
        switch content {
        case .index(let index): index.manifests
        case .manifest(let manifest): [manifest.config] + manifest.layers
        }
    }

    public var isIndex: Bool {
        if case .index = content { return true }
        return false
    }

    static func stripParameters(_ mediaType: String) -> String {
        String(mediaType.split(separator: ";", maxSplits: 1).first ?? "").trimmingCharacters(in: .whitespaces)
    }
}

public enum ManifestError: Error, Equatable, CustomStringConvertible {
    case tooLarge(Int)
    case invalidJSON(String)
    case unsupportedMediaType(String)
    case unsupportedSchemaVersion(Int)
    case ambiguous

    public var description: String {
        switch self {
        case .tooLarge(let n): "manifest of \(n) bytes exceeds the \(ManifestDocument.maximumSize)-byte limit"
        case .invalidJSON(let why): "manifest is not valid JSON: \(why)"
        case .unsupportedMediaType(let t): "unsupported manifest media type '\(t)'"
        case .unsupportedSchemaVersion(let v): "unsupported manifest schemaVersion \(v) (only 2 is supported)"
        case .ambiguous: "manifest holds both an index's `manifests` and an image's `config`/`layers`"
        }
    }
}
