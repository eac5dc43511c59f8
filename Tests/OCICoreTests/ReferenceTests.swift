import OCICore
import Testing

struct ReferenceTests {
    static let digest = "sha256:" + String(repeating: "a", count: 64)

    typealias Case = (input: String, registry: String, repository: String, tag: String?, digest: String?, full: String)

    /// Normalisation as docker does it.
    static let cases: [Case] = [
        ("nginx", "docker.io", "library/nginx", "latest", nil, "docker.io/library/nginx:latest"),
        ("nginx:1.25", "docker.io", "library/nginx", "1.25", nil, "docker.io/library/nginx:1.25"),
        ("bitnami/redis:7", "docker.io", "bitnami/redis", "7", nil, "docker.io/bitnami/redis:7"),
        ("docker.io/nginx", "docker.io", "library/nginx", "latest", nil, "docker.io/library/nginx:latest"),
        (
            "index.docker.io/library/nginx", "docker.io", "library/nginx", "latest", nil,
            "docker.io/library/nginx:latest"
        ),
        ("localhost/app", "localhost", "app", "latest", nil, "localhost/app:latest"),
        ("localhost:5000/a/b/c:dev", "localhost:5000", "a/b/c", "dev", nil, "localhost:5000/a/b/c:dev"),
        (
            "registry.local:5000/team/app:1.0", "registry.local:5000", "team/app", "1.0", nil,
            "registry.local:5000/team/app:1.0"
        ),
        ("quay.io/coreos/etcd:v3.5.9", "quay.io", "coreos/etcd", "v3.5.9", nil, "quay.io/coreos/etcd:v3.5.9"),
        ("127.0.0.1:5000/x", "127.0.0.1:5000", "x", "latest", nil, "127.0.0.1:5000/x:latest"),
        ("[::1]:5000/x:y", "[::1]:5000", "x", "y", nil, "[::1]:5000/x:y"),
        ("ghcr.io/a/b/c/d:e", "ghcr.io", "a/b/c/d", "e", nil, "ghcr.io/a/b/c/d:e"),
        (
            "my-app__x.y--z", "docker.io", "library/my-app__x.y--z", "latest", nil,
            "docker.io/library/my-app__x.y--z:latest"
        ),
        (
            "nginx@" + Self.digest, "docker.io", "library/nginx", nil, Self.digest,
            "docker.io/library/nginx@" + Self.digest
        ),
        (
            "nginx:1.25@" + Self.digest, "docker.io", "library/nginx", "1.25", Self.digest,
            "docker.io/library/nginx:1.25@" + Self.digest
        ),
    ]

    @Test(arguments: Self.cases)
    func normalises(_ c: Case) throws {
        let (input, registry, repository, tag, digest, full) = c
        let reference = try Reference(input)
        #expect(reference.registry == registry)
        #expect(reference.repository.value == repository)
        #expect(reference.tag?.value == tag)
        #expect(reference.digest?.description == digest)
        #expect(reference.description == full)
        #expect(try Reference(full) == reference, "normalised form parses to itself")
    }

    @Test func digestWinsForTheManifestReference() throws {
        let reference = try Reference("nginx:1.25@" + Self.digest)
        #expect(reference.manifestReference == .digest(try Digest(Self.digest)))
        #expect(try Reference("nginx:1.25").manifestReference == .tag(try Tag("1.25")))
        #expect(
            Reference(registry: "r", repository: reference.repository, tag: nil, digest: nil).manifestReference
                == .tag(.latest))
    }

    @Test(arguments: [
        "", " nginx", "nginx ", "library/Nginx", "nginx:", ":tag", "nginx:-bad",
        "nginx:" + String(repeating: "a", count: 129),
        "a//b", "a/b/", "-a/b", "a_/b", "nginx@sha256:abc", "nginx@md5:" + String(repeating: "a", count: 32),
        "host:port/a", "reg istry/a", "UPPER/lower/Bad",
    ])
    func refusesBadReferences(_ input: String) {
        #expect(throws: ReferenceError.self) { try Reference(input) }
    }

    @Test func refusesOverlongNames() {
        let long = "registry.example.com/" + String(repeating: "a/", count: 120) + "b"
        #expect(throws: ReferenceError.self) { try Reference(long) }
    }
}

struct PlatformTests {
    @Test func parsesAndPrints() throws {
        #expect(try Platform(parsing: "linux/amd64").description == "linux/amd64")
        #expect(try Platform(parsing: "linux/arm64/v8").variant == "v8")
        #expect(throws: PlatformError.self) { try Platform(parsing: "linux") }
        #expect(throws: PlatformError.self) { try Platform(parsing: "linux/arm/v7/x") }
        #expect(throws: PlatformError.self) { try Platform(parsing: "linux//v7") }
    }

    @Test(arguments: [
        ("linux/arm64/v8", "linux/arm64", true),
        ("linux/arm64", "linux/arm64/v8", true),
        ("linux/arm/v7", "linux/arm", true),
        ("linux/arm/v6", "linux/arm", false),
        ("linux/amd64", "linux/arm64", false),
        ("windows/amd64", "linux/amd64", false),
    ])
    func matchesWithContainerdDefaults(_ entry: String, _ requested: String, _ expected: Bool) throws {
        #expect(try Platform(parsing: entry).matches(try Platform(parsing: requested)) == expected)
    }
}

struct ManifestDocumentTests {
    let config =
        #"{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:\#(String(repeating: "b", count: 64))","size":2}"#

    @Test func keepsBytesAndDigest() throws {
        let json =
            #"{ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": \#(config), "layers": [] }"#
        let bytes = Array(json.utf8)
        let document = try ManifestDocument(bytes: bytes)
        #expect(document.bytes == bytes)
        #expect(document.digest == Digest.of(bytes))
        #expect(document.mediaType == MediaType.ociManifest)
        #expect(document.children.count == 1)
    }

    @Test func detectsTypeFromHeaderOrShape() throws {
        let manifest = #"{"schemaVersion":2,"config":\#(config),"layers":[]}"#
        #expect(
            try ManifestDocument(bytes: Array(manifest.utf8), declaredMediaType: MediaType.dockerManifest).mediaType
                == MediaType.dockerManifest)
        #expect(try ManifestDocument(bytes: Array(manifest.utf8)).mediaType == MediaType.ociManifest)
        let index = #"{"schemaVersion":2,"manifests":[]}"#
        #expect(try ManifestDocument(bytes: Array(index.utf8)).isIndex)
    }

    @Test func refusesBadDocuments() {
        #expect(throws: ManifestError.self) { try ManifestDocument(bytes: Array("not json".utf8)) }
        #expect(throws: ManifestError.self) {
            try ManifestDocument(bytes: Array(#"{"schemaVersion":1,"config":\#(config),"layers":[]}"#.utf8))
        }
        #expect(throws: ManifestError.self) {
            try ManifestDocument(bytes: Array(#"{"schemaVersion":2,"mediaType":"text/plain"}"#.utf8))
        }
        #expect(throws: ManifestError.self) {
            try ManifestDocument(bytes: [UInt8](repeating: 0x20, count: ManifestDocument.maximumSize + 1))
        }
        // An image's and an index's fields at once, with or without a mediaType: refused.
        #expect(throws: ManifestError.ambiguous) {
            try ManifestDocument(
                bytes: Array(#"{"schemaVersion":2,"config":\#(config),"layers":[],"manifests":[]}"#.utf8))
        }
        #expect(throws: ManifestError.ambiguous) {
            try ManifestDocument(
                bytes: Array(
                    #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociIndex)","manifests":[],"layers":[]}"#.utf8))
        }
    }

    @Test func platformFilterSelectsIndexEntries() throws {
        func entry(_ platform: String?) -> String {
            let p =
                platform.map { p -> String in
                    let parts = p.split(separator: "/")
                    return #","platform":{"os":"\#(parts[0])","architecture":"\#(parts[1])"}"#
                } ?? ""
            return
                #"{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:\#(String(repeating: "c", count: 64))","size":1\#(p)}"#
        }
        let index =
            #"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[\#(entry("linux/amd64")),\#(entry("linux/arm64")),\#(entry(nil))]}"#
        let document = try ManifestDocument(bytes: Array(index.utf8))
        #expect(PlatformFilter.all.selectedChildren(of: document).count == 3)
        let arm = PlatformFilter([try Platform(parsing: "linux/arm64/v8")])
        #expect(arm.selectedChildren(of: document).map { $0.platform?.architecture } == ["arm64"])
    }
}

/// The names the appliance serves images under.
struct ServedNameTests {
    @Test func sourceHostsBecomeValidFirstComponentsOrAreRefused() throws {
        #expect(
            try Reference("registry.local:5000/team/app:1").servedRepositoryName().value
                == "registry.local_5000/team/app")
        // Host names are case-insensitive; repository names are lower case.
        #expect(try Reference("Registry.Example.com/app:1").servedRepositoryName().value == "registry.example.com/app")
        #expect(Reference.registry(servedHost: "registry.local_5000") == "registry.local:5000")
        // An IPv6 address cannot be a name component: refused with the registry named.
        #expect(throws: ReferenceError.unservableRegistry("[::1]:5000")) {
            try Reference("[::1]:5000/app:1").servedRepositoryName()
        }
    }
}
