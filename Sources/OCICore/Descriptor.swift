/// A content descriptor (`../shared/specs/oci-image/descriptor.md`).
public struct Descriptor: Hashable, Sendable, Codable {
    public var mediaType: String
    public var digest: Digest
    public var size: Int64
    public var urls: [String]?
    public var annotations: [String: String]?
    public var platform: Platform?
    public var artifactType: String?

    public init(
        mediaType: String, digest: Digest, size: Int64, annotations: [String: String]? = nil,
        platform: Platform? = nil
    ) {
        self.mediaType = mediaType
        self.digest = digest
        self.size = size
        self.annotations = annotations
        self.platform = platform
    }
}

/// Annotation keys used by Ferry (`../shared/specs/oci-image/annotations.md`).
public enum AnnotationKey {
    public static let refName = "org.opencontainers.image.ref.name"
    public static let containerdImageName = "io.containerd.image.name"
}
