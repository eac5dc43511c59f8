/// What follows `/manifests/` in a Distribution API path: a tag or a digest, told apart once at the edge.
public enum ManifestReference: Hashable, Sendable, CustomStringConvertible {
    case tag(Tag)
    case digest(Digest)

    /// A digest when the text holds `:` (a tag never does), else a tag.
    public init(_ text: String) throws(ReferenceError) {
        if text.contains(":") {
            do {
                self = .digest(try Digest(text))
            } catch {
                throw .invalidDigest(text, error)
            }
        } else {
            self = .tag(try Tag(text))
        }
    }

    public var description: String {
        switch self {
        case .tag(let tag): tag.value
        case .digest(let digest): digest.description
        }
    }

    public var digest: Digest? {
        if case .digest(let digest) = self { return digest }
        return nil
    }
}
