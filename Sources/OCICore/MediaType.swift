/// Media types of the OCI image spec (`../shared/specs/oci-image/media-types.md`) and Docker's
/// manifest v2 schema 2 (`../shared/specs/docker/manifest-v2-2.md`).
public enum MediaType {
    public static let ociManifest = "application/vnd.oci.image.manifest.v1+json"
    public static let ociIndex = "application/vnd.oci.image.index.v1+json"
    public static let ociConfig = "application/vnd.oci.image.config.v1+json"
    public static let ociLayout = "application/vnd.oci.layout.header.v1+json"
    public static let ociEmpty = "application/vnd.oci.empty.v1+json"
    public static let ociLayer = "application/vnd.oci.image.layer.v1.tar"
    public static let ociLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
    public static let ociLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
    public static let ociNondistributableLayer = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    public static let ociNondistributableLayerGzip =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    public static let ociNondistributableLayerZstd =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

    /// A Helm chart's config, as `helm push` writes it.
    public static let helmConfig = "application/vnd.cncf.helm.config.v1+json"
    public static let helmChartContent = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    public static let dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
    public static let dockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
    public static let dockerConfig = "application/vnd.docker.container.image.v1+json"
    public static let dockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    public static let dockerForeignLayerGzip = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

    /// Media types of documents that reference other content (image manifests).
    public static let manifests: Set<String> = [ociManifest, dockerManifest]
    /// Media types of documents that list manifests (indexes, manifest lists).
    public static let indexes: Set<String> = [ociIndex, dockerManifestList]
    /// Every manifest media type a registry client asks for, in `Accept` order.
    public static let acceptedManifestTypes: [String] = [ociIndex, dockerManifestList, ociManifest, dockerManifest]

    /// Layers the spec lets registries and tools skip ("non-distributable" / "foreign").
    /// Whether a descriptor's media type names a manifest or an index (nil: not known to).
    public static func isManifestOrIndex(_ mediaType: String?) -> Bool {
        guard let mediaType else { return false }
        return manifests.contains(mediaType) || indexes.contains(mediaType)
    }

    public static func isNondistributable(_ mediaType: String) -> Bool {
        mediaType == dockerForeignLayerGzip || mediaType.hasPrefix("application/vnd.oci.image.layer.nondistributable.")
    }
}
