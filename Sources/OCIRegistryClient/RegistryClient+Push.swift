import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OCICore

extension RegistryClient {
    /// Whether the repository at `location` has the blob (HEAD). Retried like every request.
    public func blobExists(_ digest: Digest, in location: RegistryLocation) async throws -> Bool {
        let repository = location.repository
        return try await configuration.retry.run { _ in
            do {
                _ = try await send(
                    .HEAD, registry: location.registry, path: "/v2/\(repository)/blobs/\(digest)",
                    scope: "repository:\(repository):pull,push")
                return true
            } catch RegistryError.notFound {
                return false
            }
        }
    }

    /// Asks the registry to link a blob it already holds in `source` (a repository of the same
    /// registry) into `location`; false when it would not (it then opened an upload session, which
    /// is cancelled).
    public func mountBlob(_ digest: Digest, from source: RepositoryName, to location: RegistryLocation) async throws
        -> Bool
    {
        let (registry, repository) = (location.registry, location.repository)
        return try await configuration.retry.run { _ in
            let response = try await send(
                .POST, registry: registry,
                path: "/v2/\(repository)/blobs/uploads/?mount=\(digest)&from=\(Self.queryEscaped(source.value))",
                scope: "repository:\(repository):pull,push repository:\(source):pull")
            _ = try? await response.body.collect(upTo: 64 * 1024)
            if response.status == .created { return true }
            if let location = response.headers.first(name: "Location") {
                _ = try? await send(
                    .DELETE, registry: registry, path: Self.pathAndQuery(of: location),
                    scope: "repository:\(repository):pull,push")
            }
            return false
        }
    }

    /// Uploads a blob whose bytes `body` streams (exactly `size` of them): POST for a session,
    /// then one PUT with the digest. Not retried (a stream cannot be replayed): the caller runs
    /// again, and blobs already uploaded are skipped by ``blobExists(_:in:)``.
    public func uploadBlob(
        _ digest: Digest, size: Int64, to location: RegistryLocation, body: HTTPClientRequest.Body
    ) async throws {
        let (registry, repository) = (location.registry, location.repository)
        let scope = "repository:\(repository):pull,push"
        let start = try await configuration.retry.run { _ in
            try await send(.POST, registry: registry, path: "/v2/\(repository)/blobs/uploads/", scope: scope)
        }
        _ = try? await start.body.collect(upTo: 64 * 1024)
        guard let location = start.headers.first(name: "Location") else {
            throw RegistryError.status(
                registry: registry, url: "/v2/\(repository)/blobs/uploads/", status: Int(start.status.code),
                detail: "no Location for the upload", retryAfter: nil)
        }
        var path = Self.pathAndQuery(of: location)
        path += (path.contains("?") ? "&" : "?") + "digest=\(Self.queryEscaped(digest.description))"
        let response = try await send(
            .PUT, registry: registry, path: path, scope: scope,
            headers: ["Content-Type": "application/octet-stream", "Content-Length": String(size)], body: body)
        _ = try? await response.body.collect(upTo: 64 * 1024)
    }

    /// Puts a manifest (its exact bytes) under a tag or its digest.
    public func putManifest(_ document: ManifestDocument, reference: ManifestReference, in location: RegistryLocation)
        async throws
    {
        let (registry, repository) = (location.registry, location.repository)
        try await configuration.retry.run { _ in
            let response = try await send(
                .PUT, registry: registry, path: "/v2/\(repository)/manifests/\(reference)",
                scope: "repository:\(repository):pull,push", headers: ["Content-Type": document.mediaType],
                body: .bytes(ByteBuffer(bytes: document.bytes)))
            _ = try? await response.body.collect(upTo: 64 * 1024)
        }
    }

    /// The path and query of a Location header (absolute or relative).
    static func pathAndQuery(of location: String) -> String {
        guard location.hasPrefix("http://") || location.hasPrefix("https://"),
            let components = URLComponents(string: location)
        else { return location }
        return components.percentEncodedPath + (components.percentEncodedQuery.map { "?\($0)" } ?? "")
    }

    static func queryEscaped(_ value: String) -> String {
        var allowed = CharacterSet.urlQueryAllowed
        allowed.remove(charactersIn: "&=+:/")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}
