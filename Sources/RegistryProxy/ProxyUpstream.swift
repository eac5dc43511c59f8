import Foundation
import OCICore
import OCIRegistryClient

/// A registry the appliance fetches through on behalf of its clients.
public struct ProxyUpstream: Sendable, Equatable {
    /// The registry's name as references spell it: `docker.io`, `HOST[:PORT]`.
    public var registry: String
    /// Plain HTTP (an `http://` URL): the client may fall back to it.
    public var plainHTTP: Bool
    /// Also serves names with no registry in them (`library/nginx`: docker's `registry-mirrors`).
    public var isDefault: Bool
    /// How long a tag seen upstream is served before it is checked again (seconds).
    public var ttl: Int

    /// `url`: `https://HOST[:PORT]` (or `http://`); Docker Hub's API host is known as `docker.io`.
    public init(url: String, isDefault: Bool, ttl: Int) throws(ProxyConfigurationError) {
        var rest = Substring(url)
        if rest.hasPrefix("https://") {
            rest = rest.dropFirst(8)
            plainHTTP = false
        } else if rest.hasPrefix("http://") {
            rest = rest.dropFirst(7)
            plainHTTP = true
        } else {
            throw .badURL(url, "expected https://HOST[:PORT] or http://HOST[:PORT]")
        }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard !rest.isEmpty, !rest.contains("/"), !rest.contains("@"), !rest.contains("?") else {
            throw .badURL(url, "expected https://HOST[:PORT] with no path")
        }
        let host = rest.lowercased()
        registry = host == "registry-1.docker.io" || host == "index.docker.io" ? "docker.io" : host
        guard (try? RepositoryName(Reference.servedHost(registry) + "/x")) != nil else {
            throw .badURL(url, "this host cannot be a repository name's first component")
        }
        guard ttl >= 0 else { throw .badTTL(ttl) }
        self.isDefault = isDefault
        self.ttl = ttl
    }

    /// The first component of the names the appliance serves this registry's repositories under
    /// (`docker.io`, `registry.local_5000`), as for imported images.
    public var prefix: String { Reference.servedHost(registry) }
}

/// The one rule for which upstream a requested name goes to, and as what.
public struct ProxyRoutes: Sendable {
    public let upstreams: [ProxyUpstream]

    public init(_ upstreams: [ProxyUpstream]) throws(ProxyConfigurationError) {
        var seen: Set<String> = []
        for upstream in upstreams where !seen.insert(upstream.prefix).inserted {
            throw .duplicate(upstream.registry)
        }
        let defaults = upstreams.filter(\.isDefault)
        guard defaults.count <= 1 else { throw .severalDefaults(defaults.map(\.registry)) }
        self.upstreams = upstreams
    }

    /// Where a requested name is fetched from.
    public struct Route: Sendable, Equatable {
        public var upstream: ProxyUpstream
        /// The repository's name upstream.
        public var remote: RepositoryName
        /// The name the cache keeps it under: the upstream's prefix and the remote name, whichever
        /// way the client asked (`library/nginx`, `docker.io/library/nginx`, `?ns=docker.io`).
        public var key: RepositoryName
    }

    /// - containerd's `?ns=REGISTRY` names the registry; the path is its repository (with or
    ///   without the registry's prefix);
    /// - a first component that is an upstream's prefix (`docker.io/library/nginx`, as podman's
    ///   mirror entries and containerd's `override_path` send it) names that upstream;
    /// - any other name goes to the default upstream as it is (Docker Hub's single names as
    ///   `library/NAME`, as docker's `registry-mirrors` sends them).
    public func route(_ name: RepositoryName, namespace: String?) -> Route? {
        var upstream: ProxyUpstream?
        var remote = name.value
        if let namespace, !namespace.isEmpty {
            let registry =
                namespace == "registry-1.docker.io" || namespace == "index.docker.io" ? "docker.io" : namespace
            upstream = upstreams.first { $0.registry == registry.lowercased() }
            // containerd sends `ns` with mirror paths too (`override_path`: `REGISTRY_PREFIX/NAME`).
            if let upstream, remote.hasPrefix(upstream.prefix + "/") {
                remote = String(remote.dropFirst(upstream.prefix.count + 1))
            }
        } else if let slash = name.value.firstIndex(of: "/"),
            let named = upstreams.first(where: { $0.prefix == name.value[..<slash] })
        {
            upstream = named
            remote = String(name.value[name.value.index(after: slash)...])
        } else if let first = name.value.split(separator: "/").first, name.value.contains("/"),
            first.contains(".") || first.contains("_") || first.contains(":") || first == "localhost"
        {
            // A registry no upstream serves (`ghcr.io/…` with only Docker Hub configured).
            return nil
        } else {
            upstream = upstreams.first(where: \.isDefault)
        }
        guard let upstream else { return nil }
        if upstream.registry == "docker.io" && !remote.contains("/") { remote = "library/\(remote)" }
        guard let remoteName = try? RepositoryName(remote),
            let key = try? RepositoryName("\(upstream.prefix)/\(remote)")
        else { return nil }
        return Route(upstream: upstream, remote: remoteName, key: key)
    }
}

public enum ProxyConfigurationError: Error, Equatable, CustomStringConvertible {
    case badURL(String, String)
    case badTTL(Int)
    case severalDefaults([String])
    case duplicate(String)
    case badCredentials(String)

    public var description: String {
        switch self {
        case .badURL(let url, let why): "proxy upstream \(url): \(why)"
        case .badTTL(let ttl): "proxy ttl \(ttl): expected seconds, 0 or more"
        case .severalDefaults(let names):
            "proxy: only one upstream may be the default, not \(names.joined(separator: ", "))"
        case .duplicate(let name): "proxy: upstream \(name) is configured twice"
        case .badCredentials(let why): "proxy credentials: \(why)"
        }
    }
}
