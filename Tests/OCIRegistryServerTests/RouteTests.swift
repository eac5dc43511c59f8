import OCICore
import Testing

@testable import OCIRegistryServer

struct DistributionRouteTests {
    @Test func readsTheEndpointFromThePathsEnd() throws {
        #expect(DistributionRoute(path: "/v2/") == .base)
        #expect(DistributionRoute(path: "/v2") == .base)
        #expect(DistributionRoute(path: "/v2/_catalog") == .catalog)
        #expect(DistributionRoute(path: "/healthz") == .health)
        #expect(
            DistributionRoute(path: "/v2/library/nginx/manifests/1.25")
                == .manifest(repository: try RepositoryName("library/nginx"), reference: "1.25"))
        #expect(
            DistributionRoute(path: "/v2/a/b/blobs/sha256:abc")
                == .blob(repository: try RepositoryName("a/b"), digest: "sha256:abc"))
        #expect(
            DistributionRoute(path: "/v2/a/b/blobs/sha256%3Aabc")
                == .blob(repository: try RepositoryName("a/b"), digest: "sha256:abc"))
        #expect(DistributionRoute(path: "/v2/a/tags/list") == .tags(repository: try RepositoryName("a")))
        #expect(
            DistributionRoute(path: "/v2/a/referrers/sha256:abc")
                == .referrers(repository: try RepositoryName("a"), digest: "sha256:abc"))
        #expect(
            DistributionRoute(path: "/v2/a/blobs/uploads/")
                == .blobUpload(repository: try RepositoryName("a"), session: nil))
        #expect(
            DistributionRoute(path: "/v2/a/blobs/uploads")
                == .blobUpload(repository: try RepositoryName("a"), session: nil))
        #expect(
            DistributionRoute(path: "/v2/a/blobs/uploads/1234")
                == .blobUpload(repository: try RepositoryName("a"), session: "1234"))
    }

    @Test func repositoryComponentsMayBeNamedLikeEndpoints() throws {
        #expect(
            DistributionRoute(path: "/v2/a/manifests/manifests/latest")
                == .manifest(repository: try RepositoryName("a/manifests"), reference: "latest"))
        #expect(
            DistributionRoute(path: "/v2/blobs/tags/manifests/blobs/sha256:1")
                == .blob(repository: try RepositoryName("blobs/tags/manifests"), digest: "sha256:1"))
        #expect(
            DistributionRoute(path: "/v2/tags/list/tags/list") == .tags(repository: try RepositoryName("tags/list")))
        #expect(
            DistributionRoute(path: "/v2/docker.io/library/nginx/manifests/1.25")
                == .manifest(repository: try RepositoryName("docker.io/library/nginx"), reference: "1.25"))
    }

    @Test func badNamesAndUnknownPaths() {
        #expect(DistributionRoute(path: "/v2/Upper/manifests/1") == .invalidName("Upper"))
        #expect(DistributionRoute(path: "/v2//manifests/1") == .invalidName(""))
        #expect(DistributionRoute(path: "/v2/a//b/manifests/1") == .invalidName("a//b"))
        #expect(DistributionRoute(path: "/v2/a/manifests/") == .notFound)
        #expect(DistributionRoute(path: "/v2/a") == .notFound)
        #expect(DistributionRoute(path: "/v3/") == .notFound)
    }
}

struct ByteRangeTests {
    @Test func singleRangesResolveAgainstTheSize() {
        #expect(ByteRange(header: nil, size: 100) == .whole)
        #expect(ByteRange(header: "bytes=0-9", size: 100) == .partial(0...9))
        #expect(ByteRange(header: "bytes=90-", size: 100) == .partial(90...99))
        #expect(ByteRange(header: "bytes=90-1000", size: 100) == .partial(90...99))
        #expect(ByteRange(header: "bytes=-10", size: 100) == .partial(90...99))
        #expect(ByteRange(header: "bytes=-1000", size: 100) == .partial(0...99))
        #expect(ByteRange(header: "bytes=100-", size: 100) == .unsatisfiable)
        #expect(ByteRange(header: "bytes=5-4", size: 100) == .unsatisfiable)
        #expect(ByteRange(header: "bytes=-0", size: 100) == .unsatisfiable)
        #expect(ByteRange(header: "bytes=abc", size: 100) == .unsatisfiable)
        #expect(ByteRange(header: "bytes=0-0", size: 0) == .unsatisfiable)
        // Several ranges or another unit: a server may ignore the header.
        #expect(ByteRange(header: "bytes=0-1,5-6", size: 100) == .whole)
        #expect(ByteRange(header: "items=0-1", size: 100) == .whole)
    }
}

struct PageTests {
    let sorted = ["a", "b", "c", "d", "e"]

    @Test func pagesAfterLastWithALinkWhenMoreFollow() throws {
        #expect(Page(sorted: sorted, n: nil, last: nil) == Page(entries: sorted, nextLast: nil))
        #expect(Page(sorted: sorted, n: 2, last: nil) == Page(entries: ["a", "b"], nextLast: "b"))
        #expect(Page(sorted: sorted, n: 2, last: "b") == Page(entries: ["c", "d"], nextLast: "d"))
        #expect(Page(sorted: sorted, n: 2, last: "d") == Page(entries: ["e"], nextLast: nil))
        #expect(Page(sorted: sorted, n: 3, last: "c") == Page(entries: ["d", "e"], nextLast: nil))
        #expect(Page(sorted: sorted, n: nil, last: "bb") == Page(entries: ["c", "d", "e"], nextLast: nil))
        #expect(Page(sorted: sorted, n: 0, last: nil) == Page(entries: [], nextLast: nil))
        #expect(Page(sorted: sorted, n: 5, last: nil) == Page(entries: sorted, nextLast: nil))
        #expect(try Page.parseCount("10") == 10)
        #expect(try Page.parseCount(nil) == nil)
        #expect(throws: DistributionError.self) { try Page.parseCount("-1") }
        #expect(throws: DistributionError.self) { try Page.parseCount("ten") }
    }
}

extension Page {
    init(entries: [String], nextLast: String?) {
        self.init(sorted: [], n: nil, last: nil)
        self.entries = entries
        self.nextLast = nextLast
    }
}

struct MirroredNameTests {
    @Test func dockerHubAndNamespacedPathsMapToStoredNames() {
        #expect(DistributionRoute.mirroredName("library/nginx", namespace: nil) == "docker.io/library/nginx")
        #expect(DistributionRoute.mirroredName("nginx", namespace: nil) == "docker.io/library/nginx")
        #expect(DistributionRoute.mirroredName("bitnami/redis", namespace: nil) == "docker.io/bitnami/redis")
        #expect(DistributionRoute.mirroredName("docker.io/library/nginx", namespace: nil) == nil)
        #expect(DistributionRoute.mirroredName("registry.local_5000/app", namespace: nil) == nil)
        #expect(DistributionRoute.mirroredName("pause", namespace: "registry.k8s.io") == "registry.k8s.io/pause")
        #expect(DistributionRoute.mirroredName("nginx", namespace: "docker.io") == "docker.io/library/nginx")
        #expect(
            DistributionRoute.mirroredName("team/app", namespace: "registry.local:5000")
                == "registry.local_5000/team/app")
        #expect(DistributionRoute.mirroredName("quay.io/x", namespace: "quay.io") == nil)
    }
}

/// Whose address a request comes from, behind proxies.
struct ClientAddressTests {
    @Test func forwardedForIsBelievedFromTrustedProxiesOnly() {
        let trusted: Set<String> = ["10.0.0.5", "10.0.0.6"]
        // No proxy configured: the header is whatever the client wrote.
        #expect(RegistryResponder.client(peer: "192.0.2.1", forwardedFor: "198.51.100.9", trusted: []) == "192.0.2.1")
        // From a trusted proxy: the last address that is not a trusted proxy.
        #expect(
            RegistryResponder.client(peer: "10.0.0.5", forwardedFor: "198.51.100.9, 203.0.113.4", trusted: trusted)
                == "203.0.113.4")
        #expect(
            RegistryResponder.client(peer: "10.0.0.5", forwardedFor: "198.51.100.9, 10.0.0.6", trusted: trusted)
                == "198.51.100.9")
        // A spoofed first hop does not help: the proxy appended the real one.
        #expect(
            RegistryResponder.client(peer: "10.0.0.5", forwardedFor: "10.0.0.6, 192.0.2.77", trusted: trusted)
                == "192.0.2.77")
        #expect(RegistryResponder.client(peer: "10.0.0.5", forwardedFor: nil, trusted: trusted) == "10.0.0.5")
        #expect(RegistryResponder.client(peer: nil, forwardedFor: "1.2.3.4", trusted: trusted) == "-")
    }
}
