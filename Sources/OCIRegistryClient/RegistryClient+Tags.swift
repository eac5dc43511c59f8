import AsyncHTTPClient
import Foundation
import NIOCore
import OCICore

extension RegistryClient {
    /// Every tag of `repository` (`GET /v2/NAME/tags/list`), following the `Link` header's next
    /// page (pages of up to `pageSize`) until the registry says there is none.
    public func listTags(registry: String, repository: RepositoryName, pageSize: Int = 1000) async throws -> [String] {
        struct Page: Decodable { var tags: [String]? }
        var tags: [String] = []
        var path: String? = "/v2/\(repository)/tags/list?n=\(pageSize)"
        var pages = 0
        while let next = path {
            pages += 1
            guard pages <= 10_000 else {
                throw RegistryError.status(
                    registry: registry, url: next, status: 200, detail: "more than 10,000 pages of tags",
                    retryAfter: nil)
            }
            let (page, link) = try await configuration.retry.run { _ -> (Page, String?) in
                let response: HTTPClientResponse
                do {
                    response = try await send(
                        .GET, registry: registry, path: next, scope: "repository:\(repository):pull")
                } catch RegistryError.notFound(let registry, _, let detail) {
                    throw RegistryError.notFound(registry: registry, what: "repository \(repository)", detail: detail)
                }
                let body = try await response.body.collect(upTo: 16 << 20)
                guard let page = try? JSONDecoder().decode(Page.self, from: Data(body.readableBytesView)) else {
                    throw RegistryError.status(
                        registry: registry, url: next, status: 200, detail: "not a tag list", retryAfter: nil)
                }
                return (page, response.headers.first(name: "Link"))
            }
            let added = page.tags ?? []
            tags += added
            let following = link.flatMap { Self.nextPage($0, from: next) }
            // A registry that keeps sending the same page, or an empty one with a next link: done.
            path = (following == next || added.isEmpty) ? nil : following
        }
        return tags
    }

    /// The target of a `Link: </v2/NAME/tags/list?n=100&last=x>; rel="next"` header: its path and
    /// query (the registry's own origin is kept).
    static func nextPage(_ link: String, from current: String = "/") -> String? {
        for part in link.split(separator: ",") {
            guard part.contains("rel=\"next\"") || part.contains("rel=next"),
                let open = part.firstIndex(of: "<"), let close = part.firstIndex(of: ">"), open < close
            else { continue }
            let target = String(part[part.index(after: open)..<close])
            // Resolved against the page that sent it; only its path and query are kept (the
            // registry's own origin, never another host).
            guard let base = URL(string: "https://registry.invalid" + current),
                let url = URL(string: target, relativeTo: base)?.absoluteURL
            else { return nil }
            return url.path + (url.query.map { "?" + $0 } ?? "")
        }
        return nil
    }
}
