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
        let components = path.dropFirst(4).split(separator: "/", omittingEmptySubsequences: false)
        let count = components.count
        // The name is checked once, here; every case carries it typed. It is the path up to the
        // endpoint's components, taken as one slice (no join).
        func named(_ end: Int, _ make: (RepositoryName) -> DistributionRoute) -> DistributionRoute {
            let text = end > 0 ? String(path[components[0].startIndex..<components[end - 1].endIndex]) : ""
            guard let name = try? RepositoryName(text) else { return .invalidName(text) }
            return make(name)
        }
        if count >= 4, components[count - 3] == "blobs", components[count - 2] == "uploads" {
            let session = String(components[count - 1])
            self = named(count - 3) { .blobUpload(repository: $0, session: session.isEmpty ? nil : session) }
        } else if count >= 3, components[count - 2] == "blobs", components[count - 1] == "uploads" {
            self = named(count - 2) { .blobUpload(repository: $0, session: nil) }
        } else if count >= 3, components[count - 2] == "manifests", !components[count - 1].isEmpty {
            self = named(count - 2) { .manifest(repository: $0, reference: String(components[count - 1])) }
        } else if count >= 3, components[count - 2] == "blobs", !components[count - 1].isEmpty {
            self = named(count - 2) { .blob(repository: $0, digest: String(components[count - 1])) }
        } else if count >= 3, components[count - 2] == "tags", components[count - 1] == "list" {
            self = named(count - 2) { .tags(repository: $0) }
        } else if count >= 3, components[count - 2] == "referrers", !components[count - 1].isEmpty {
            self = named(count - 2) { .referrers(repository: $0, digest: String(components[count - 1])) }
        } else {
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
        let first = name.split(separator: "/").first.map(String.init) ?? name
        guard !first.contains("."), !first.contains("_"), first != "localhost" else { return nil }
        return name.contains("/") ? "docker.io/\(name)" : "docker.io/library/\(name)"
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
