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
    case manifest(repository: String, reference: String)
    case blob(repository: String, digest: String)
    /// `/v2/<name>/blobs/uploads/` (start) or `/v2/<name>/blobs/uploads/<session>`.
    case blobUpload(repository: String, session: String?)
    case tags(repository: String)
    case referrers(repository: String, digest: String)
    /// A Distribution API path whose repository name breaks the name grammar.
    case invalidName(String)
    case notFound

    /// `path` is the request path without its query, percent-encoded or not.
    public init(path rawPath: String) {
        let path = rawPath.removingPercentEncoding ?? rawPath
        switch path {
        case "/v2", "/v2/": self = .base; return
        case "/v2/_catalog": self = .catalog; return
        case "/healthz": self = .health; return
        case "/token": self = .token; return
        default: break
        }
        guard path.hasPrefix("/v2/") else { self = .notFound; return }
        let components = path.dropFirst(4).split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        let count = components.count
        func name(_ end: Int) -> String { components[..<end].joined(separator: "/") }
        let route: DistributionRoute
        let nameEnd: Int
        if count >= 4, components[count - 3] == "blobs", components[count - 2] == "uploads" {
            nameEnd = count - 3
            let session = components[count - 1]
            route = .blobUpload(repository: name(nameEnd), session: session.isEmpty ? nil : session)
        } else if count >= 3, components[count - 2] == "blobs", components[count - 1] == "uploads" {
            nameEnd = count - 2
            route = .blobUpload(repository: name(nameEnd), session: nil)
        } else if count >= 3, components[count - 2] == "manifests", !components[count - 1].isEmpty {
            nameEnd = count - 2
            route = .manifest(repository: name(nameEnd), reference: components[count - 1])
        } else if count >= 3, components[count - 2] == "blobs", !components[count - 1].isEmpty {
            nameEnd = count - 2
            route = .blob(repository: name(nameEnd), digest: components[count - 1])
        } else if count >= 3, components[count - 2] == "tags", components[count - 1] == "list" {
            nameEnd = count - 2
            route = .tags(repository: name(nameEnd))
        } else if count >= 3, components[count - 2] == "referrers", !components[count - 1].isEmpty {
            nameEnd = count - 2
            route = .referrers(repository: name(nameEnd), digest: components[count - 1])
        } else {
            self = .notFound
            return
        }
        let repository = name(nameEnd)
        self = (try? RepositoryName(repository)) == nil ? .invalidName(repository) : route
    }

    /// The repository a route names, if any.
    public var repository: String? {
        switch self {
        case .manifest(let name, _), .blob(let name, _), .blobUpload(let name, _), .tags(let name),
            .referrers(let name, _):
            name
        default: nil
        }
    }
}
