import OCICore
import RegistryProxy
import Testing

/// Which upstream a requested name goes to, and as what: the forms docker, containerd and podman send.
struct ProxyRoutesTests {
    let hub: ProxyUpstream
    let local: ProxyUpstream
    let routes: ProxyRoutes

    init() throws {
        hub = try ProxyUpstream(url: "https://registry-1.docker.io", isDefault: true, ttl: 600)
        local = try ProxyUpstream(url: "https://registry.local:5000/", isDefault: false, ttl: 60)
        routes = try ProxyRoutes([hub, local])
    }

    func route(_ name: String, ns: String? = nil) throws -> (String, String, String)? {
        try routes.route(RepositoryName(name), namespace: ns).map {
            ($0.upstream.registry, $0.remote.value, $0.key.value)
        }
    }

    @Test func dockerHubNamesInEveryForm() throws {
        #expect(hub.registry == "docker.io")
        #expect(hub.prefix == "docker.io")
        // docker's registry-mirrors: Docker Hub paths as they are, to the default upstream.
        #expect(try route("library/nginx")! == ("docker.io", "library/nginx", "docker.io/library/nginx"))
        #expect(try route("nginx")! == ("docker.io", "library/nginx", "docker.io/library/nginx"))
        // containerd's ns query and podman's or override_path's prefixed names: the same cache key.
        #expect(
            try route("library/nginx", ns: "docker.io")! == ("docker.io", "library/nginx", "docker.io/library/nginx"))
        #expect(try route("docker.io/library/nginx")! == ("docker.io", "library/nginx", "docker.io/library/nginx"))
    }

    @Test func namedUpstreamsByPrefixOrNamespace() throws {
        #expect(local.registry == "registry.local:5000")
        #expect(local.prefix == "registry.local_5000")
        #expect(
            try route("registry.local_5000/team/app")! == (
                "registry.local:5000", "team/app", "registry.local_5000/team/app"
            ))
        #expect(
            try route("team/app", ns: "registry.local:5000")! == (
                "registry.local:5000", "team/app", "registry.local_5000/team/app"
            ))
        // containerd's override_path mirror: the prefixed path and `ns` together.
        #expect(
            try route("registry.local_5000/team/app", ns: "registry.local:5000")! == (
                "registry.local:5000", "team/app", "registry.local_5000/team/app"
            ))
        // A namespace no upstream serves is not proxied.
        #expect(try route("team/app", ns: "quay.io") == nil)
    }

    @Test func registriesNoUpstreamServesAreNotSentToTheDefault() throws {
        #expect(try route("ghcr.io/org/img") == nil)
        #expect(try route("localhost/team/app") == nil)
    }

    @Test func withoutADefaultOnlyPrefixedNamesAreProxied() throws {
        let routes = try ProxyRoutes([local])
        #expect(routes.route(try RepositoryName("team/app"), namespace: nil) == nil)
        #expect(routes.route(try RepositoryName("registry.local_5000/team/app"), namespace: nil) != nil)
    }

    @Test func badConfigurationsAreRefused() throws {
        #expect(throws: ProxyConfigurationError.self) {
            try ProxyUpstream(url: "registry.local:5000", isDefault: false, ttl: 0)
        }
        #expect(throws: ProxyConfigurationError.self) {
            try ProxyUpstream(url: "https://h/v2/x", isDefault: false, ttl: 0)
        }
        #expect(throws: ProxyConfigurationError.self) { try ProxyUpstream(url: "https://h", isDefault: false, ttl: -1) }
        let other = try ProxyUpstream(url: "https://quay.io", isDefault: true, ttl: 0)
        #expect(throws: ProxyConfigurationError.severalDefaults(["docker.io", "quay.io"])) {
            try ProxyRoutes([hub, other])
        }
        #expect(throws: ProxyConfigurationError.duplicate("docker.io")) { try ProxyRoutes([hub, hub]) }
    }
}
