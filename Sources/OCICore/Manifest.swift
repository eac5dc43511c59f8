/// An image manifest: OCI (`../shared/specs/oci-image/manifest.md`) or Docker schema 2
/// (`../shared/specs/docker/manifest-v2-2.md`), which share this shape.
public struct ImageManifest: Hashable, Sendable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var config: Descriptor
    public var layers: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(mediaType: String?, config: Descriptor, layers: [Descriptor], annotations: [String: String]? = nil) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.config = config
        self.layers = layers
        self.annotations = annotations
    }
}

/// An image index (`../shared/specs/oci-image/image-index.md`) or Docker manifest list.
public struct ImageIndex: Hashable, Sendable, Codable {
    public var schemaVersion: Int
    public var mediaType: String?
    public var artifactType: String?
    public var manifests: [Descriptor]
    public var subject: Descriptor?
    public var annotations: [String: String]?

    public init(mediaType: String?, manifests: [Descriptor], annotations: [String: String]? = nil) {
        self.schemaVersion = 2
        self.mediaType = mediaType
        self.manifests = manifests
        self.annotations = annotations
    }
}

/// The `oci-layout` file of an image layout (`../shared/specs/oci-image/image-layout.md`).
public struct ImageLayoutHeader: Hashable, Sendable, Codable {
    public var imageLayoutVersion: String
    public init(imageLayoutVersion: String = "1.0.0") { self.imageLayoutVersion = imageLayoutVersion }
}
