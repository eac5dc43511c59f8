/// Decides, for one image, which children of a document to follow.
///
/// With no platforms requested every child of an index is followed. With platforms, an index keeps
/// its bytes (so its digest still resolves) but only the matching manifests are followed; entries
/// without a platform (attestations, artifacts) are left out.
public struct PlatformFilter: Sendable, Hashable {
    public let platforms: [Platform]

    public init(_ platforms: [Platform]) { self.platforms = platforms }

    public static let all = PlatformFilter([])

    public var isAll: Bool { platforms.isEmpty }

    /// The children of `document` that belong to the selection.
    public func selectedChildren(of document: ManifestDocument) -> [Descriptor] {
        switch document.content {
        case .manifest:
            return document.children.filter { !MediaType.isNondistributable($0.mediaType) }
        case .index(let index):
            if isAll { return index.manifests }
            return index.manifests.filter { entry in
                guard let platform = entry.platform else { return false }
                return platforms.contains { platform.matches($0) }
            }
        }
    }
}
