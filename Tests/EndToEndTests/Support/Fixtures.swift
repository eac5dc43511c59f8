import Foundation
import OCICore

/// A registry seeded with the standard test images:
/// - `single`: one linux/amd64 image with two layers (one shared with `multi`);
/// - `multi`: an index of linux/amd64 and linux/arm64/v8 (both sharing a base layer);
/// - `docker`: a Docker schema-2 image (skopeo converts it);
/// - `large`: an image with a large layer of random bytes.
struct SeededRegistry {
    let registry: RegistryFixture
    /// Repository:tag → digest the registry reports (sha256 of the raw manifest it serves).
    var images: [String: Digest] = [:]
    var references: [String] { images.keys.sorted().map { "\(registry.host)/\($0)" } }

    static func make(
        _ registry: RegistryFixture, credentials: String? = nil, largeLayer: Int = 8 << 20
    ) throws -> SeededRegistry {
        let work = try Shell.temporaryDirectory("ferry-images")
        defer { Shell.remove(work) }
        let builder = try ImageBuilder(directory: work)
        let base = try builder.addRandomLayer(size: 300_000)
        let amd64 = try builder.addImage(
            platform: Platform(os: "linux", architecture: "amd64"),
            layers: [base, try builder.addRandomLayer(size: 120_000)])
        let arm64 = try builder.addImage(
            platform: Platform(os: "linux", architecture: "arm64", variant: "v8"),
            layers: [base, try builder.addRandomLayer(size: 110_000)])
        let index = try builder.addIndex([amd64, arm64])
        let single = try builder.addImage(
            platform: Platform(os: "linux", architecture: "amd64"),
            layers: [base, try builder.addRandomLayer(size: 50_000)])
        let docker = try builder.addImage(
            platform: Platform(os: "linux", architecture: "amd64"), layers: [try builder.addRandomLayer(size: 70_000)])
        let large = try builder.addImage(
            platform: Platform(os: "linux", architecture: "amd64"),
            layers: [try builder.addRandomLayer(size: largeLayer)])
        try builder.tag(index, as: "multi")
        try builder.tag(single, as: "single")
        try builder.tag(docker, as: "docker")
        try builder.tag(large, as: "large")
        try builder.push("multi", to: registry, as: "test/multi:1.0", credentials: credentials)
        try builder.push("single", to: registry, as: "test/single:1.0", credentials: credentials)
        try builder.push(
            "docker", to: registry, as: "test/nested/docker:v2", dockerSchema2: true, credentials: credentials)
        try builder.push("large", to: registry, as: "test/large:latest", credentials: credentials)
        var seeded = SeededRegistry(registry: registry)
        for name in ["test/multi:1.0", "test/single:1.0", "test/nested/docker:v2", "test/large:latest"] {
            seeded.images[name] = try registryDigest(registry, name, credentials: credentials)
        }
        return seeded
    }

    /// Tags `source` (`REPO:TAG` in `registry`) also as `target`, digests unchanged (skopeo).
    static func retag(_ registry: RegistryFixture, _ source: String, as target: String) throws {
        try Shell.run(
            ["skopeo", "copy", "-q", "--preserve-digests"] + registry.skopeoFlags("src") + registry.skopeoFlags("dest")
                + ["docker://\(registry.host)/\(source)", "docker://\(registry.host)/\(target)"])
    }

    /// The digest of the manifest the registry serves for `name` (sha256 of its raw bytes).
    static func registryDigest(_ registry: RegistryFixture, _ name: String, credentials: String? = nil) throws
        -> Digest
    {
        let raw = try Shell.run(
            ["skopeo", "inspect", "--raw"]
                + registry.skopeoFlags("src", credentials: credentials).map {
                    $0.replacingOccurrences(of: "--src-", with: "--")
                } + ["docker://\(registry.host)/\(name)"])
        return Digest.of(Array(raw.stdout.utf8))
    }
}

/// Runs the ferry binary.
enum Ferry {
    @discardableResult
    static func run(_ arguments: [String], environment: [String: String] = [:], check: Bool = true) throws
        -> Shell.Result
    {
        try Shell.run([Shell.ferry] + arguments, environment: environment, check: check)
    }
}

/// Reads a bundle with the system tools: entry names in order, and small files.
enum BundleInspector {
    static func entries(_ bundle: String) throws -> [String] {
        try Shell.run(["tar", "-tf", bundle]).stdout.split(separator: "\n").map(String.init)
    }

    static func file(_ bundle: String, _ name: String) throws -> Data {
        Data(try Shell.run(["tar", "-xOf", bundle, name]).stdout.utf8)
    }

    static func manifest(_ bundle: String) throws -> [String: Any] {
        (try JSONSerialization.jsonObject(with: try file(bundle, "ferry-bundle.json")) as? [String: Any]) ?? [:]
    }
}
