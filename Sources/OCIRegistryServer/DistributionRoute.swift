import Foundation
import OCICore

/// Which Distribution API endpoint a request path names.
///
/// Repository names may hold components called `blobs`, `manifests`, `tags` or `referrers`
/// (`/v2/a/manifests/manifests/latest` is manifest `latest` of repository `a/manifests`), so the
/// path is read from its end: the last one or two components say the endpoint, the rest is the name.
public enum DistributionRoute: Equatable, Sendable {
    case base
    case catalog
    case health
    /// The token endpoint of the Docker token flow.
    case token
    case manifest(repository: RepositoryName, reference: String)
    case blob(repository: RepositoryName, digest: String)
    /// `/v2/<name>/blobs/uploads/` (start) or `/v2/<name>/blobs/uploads/<session>`.
    case blobUpload(repository: RepositoryName, session: String?)
    case tags(repository: RepositoryName)
    case referrers(repository: RepositoryName, digest: String)
    /// A Distribution API path whose repository name breaks the name grammar.
    case invalidName(String)
    case notFound

    /// `path` is the request path without its query, percent-encoded or not.
    public init(path rawPath: String) {
        // Foundation's decoding costs as much as the rest of the routing: only when there is any.
        let path = rawPath.utf8.contains(UInt8(ascii: "%")) ? (rawPath.removingPercentEncoding ?? rawPath) : rawPath
        switch path {
        case "/v2", "/v2/": self = .base; return
        case "/v2/_catalog": self = .catalog; return
        case "/healthz": self = .health; return
        case "/token": self = .token; return
        default: break
        }
        guard path.hasPrefix("/v2/") else { self = .notFound; return }
        // Components are peeled off the end, one slash at a time (no array of them): what is left
        // before the endpoint's components is the name, checked once, here; every case carries it
        // typed.
        func peel(_ text: Substring) -> (rest: Substring?, last: Substring) {
            guard let slash = text.utf8.lastIndex(of: UInt8(ascii: "/")) else { return (nil, text) }
            return (text[..<slash], text[text.index(after: slash)...])
        }
        func named(_ text: Substring, _ make: (RepositoryName) -> DistributionRoute) -> DistributionRoute {
            guard let name = try? RepositoryName(String(text)) else { return .invalidName(String(text)) }
            return make(name)
        }
        let (before, last) = peel(path.dropFirst(4))
        guard let before, case let (name?, endpoint) = peel(before) else { self = .notFound; return }
        switch endpoint {
        case "uploads":
            // `/v2/<name>/blobs/uploads/<session>`
            guard case let (owner?, "blobs") = peel(name) else { self = .notFound; return }
            let session = String(last)
            self = named(owner) { .blobUpload(repository: $0, session: session.isEmpty ? nil : session) }
        case "blobs" where last == "uploads":
            self = named(name) { .blobUpload(repository: $0, session: nil) }
        case "manifests" where !last.isEmpty:
            self = named(name) { .manifest(repository: $0, reference: String(last)) }
        case "blobs" where !last.isEmpty:
            self = named(name) { .blob(repository: $0, digest: String(last)) }
        case "tags" where last == "list":
            self = named(name) { .tags(repository: $0) }
        case "referrers" where !last.isEmpty:
            self = named(name) { .referrers(repository: $0, digest: String(last)) }
        default:
            self = .notFound
        }
    }

    /// The same endpoint on another repository.
    public func renamed(_ repository: RepositoryName) -> DistributionRoute {
        switch self {
        case .manifest(_, let reference): .manifest(repository: repository, reference: reference)
        case .blob(_, let digest): .blob(repository: repository, digest: digest)
        case .blobUpload(_, let session): .blobUpload(repository: repository, session: session)
        case .tags: .tags(repository: repository)
        case .referrers(_, let digest): .referrers(repository: repository, digest: digest)
        default: self
        }
    }

    /// Where a mirror request goes, for names that keep their source registry as first component
    /// (as the appliance stores them): containerd and its kin send `?ns=REGISTRY` with the path a
    /// registry would see (`library/nginx`), docker's `registry-mirrors` sends Docker Hub paths
    /// without it. nil when the name needs no rewriting.
    public static func mirroredName(_ name: String, namespace: String?) -> String? {
        if let namespace, !namespace.isEmpty {
            let host = Reference.servedHost(namespace)
            let served = host == "docker.io" && !name.contains("/") ? "docker.io/library/\(name)" : "\(host)/\(name)"
            return name.hasPrefix(host + "/") ? nil : served
        }
        // Byte scans: this runs for every pull, and Foundation's substring search is slow.
        let slash = name.utf8.firstIndex(of: UInt8(ascii: "/"))
        let first = name.utf8[..<(slash ?? name.utf8.endIndex)]
        guard !first.contains(UInt8(ascii: ".")), !first.contains(UInt8(ascii: "_")),
            !first.elementsEqual("localhost".utf8)
        else { return nil }
        return slash != nil ? "docker.io/\(name)" : "docker.io/library/\(name)"
    }

    public var repository: RepositoryName? {
        switch self {
        case .manifest(let name, _), .blob(let name, _), .blobUpload(let name, _), .tags(let name),
            .referrers(let name, _):
            name
        default: nil
        }
    }
}
