import Foundation
import OCICore
import Testing

/// Exports from registries that need credentials: htpasswd basic auth and the Docker token flow.
@Suite(.serialized)
struct AuthTests {
    @Test func basicAuthFromFlagsDockerConfigAndAuthJSON() throws {
        let registry = try RegistryFixture(tls: true, auth: .htpasswd(user: "alice", password: "s3cret"))
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, credentials: "alice:s3cret")
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let reference = "\(registry.host)/test/multi:1.0"
        let base = ["export", reference, "--cache", "\(work)/cache"] + registry.ferryTrustFlags
        let isolated = [
            "HOME": work, "DOCKER_CONFIG": "\(work)/nodocker", "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": "",
        ]

        let anonymous = try Ferry.run(base + ["-o", "\(work)/a.tar"], environment: isolated, check: false)
        #expect(anonymous.status == 1)
        #expect(anonymous.stderr.contains("authentication required"))
        #expect(!FileManager.default.fileExists(atPath: "\(work)/a.tar"))

        let wrong = try Ferry.run(
            base + ["-o", "\(work)/a.tar", "--creds", "alice:wrong"], environment: isolated, check: false)
        #expect(wrong.status == 1)

        try Ferry.run(
            base + ["-o", "\(work)/a.tar", "--creds", "\(registry.host)=alice:s3cret"], environment: isolated)
        #expect(FileManager.default.fileExists(atPath: "\(work)/a.tar"))

        // docker's config.json with a base64 `auth`.
        let docker = "\(work)/docker"
        try FileManager.default.createDirectory(atPath: docker, withIntermediateDirectories: true)
        let auth = Data("alice:s3cret".utf8).base64EncodedString()
        try #"{"auths":{"https://\#(registry.host)":{"auth":"\#(auth)"}}}"#.write(
            toFile: "\(docker)/config.json", atomically: true, encoding: .utf8)
        var environment = isolated
        environment["DOCKER_CONFIG"] = docker
        try Ferry.run(base + ["-o", "\(work)/b.tar"], environment: environment)

        // containers' auth.json, keyed by repository.
        try #"{"auths":{"\#(registry.host)/test":{"auth":"\#(auth)"}}}"#.write(
            toFile: "\(work)/auth.json", atomically: true, encoding: .utf8)
        environment = isolated
        environment["REGISTRY_AUTH_FILE"] = "\(work)/auth.json"
        try Ferry.run(base + ["-o", "\(work)/c.tar"], environment: environment)

        let raw = try Shell.run(["skopeo", "inspect", "--raw", "oci-archive:\(work)/c.tar:\(reference)"])
        #expect(Digest.of(Array(raw.stdout.utf8)) == seeded.images["test/multi:1.0"])
    }

    @Test func bearerTokenFlowWithCachedTokens() throws {
        let tokens = try TokenServer(user: "bob", password: "t0ken")
        defer { tokens.stop() }
        let registry = try RegistryFixture(tls: true, auth: .token(tokens))
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry, credentials: "bob:t0ken")
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let isolated = [
            "HOME": work, "DOCKER_CONFIG": "\(work)/nodocker", "REGISTRY_AUTH_FILE": "", "XDG_RUNTIME_DIR": "",
        ]
        let before = tokens.tokensIssued
        let result = try Ferry.run(
            ["export", "-o", "\(work)/t.tar", "--cache", "\(work)/cache", "--creds", "bob:t0ken", "--json"]
                + seeded.references + registry.ferryTrustFlags, environment: isolated)
        #expect(result.stdout.contains("\"downloadedBlobs\""))
        // One token per repository scope, however many manifests and blobs were fetched.
        #expect(tokens.tokensIssued - before == seeded.images.count, "\(tokens.process.log)")
        for (name, digest) in seeded.images where name != "test/nested/docker:v2" {
            let raw = try Shell.run([
                "skopeo", "inspect", "--raw", "oci-archive:\(work)/t.tar:\(registry.host)/\(name)",
            ])
            #expect(Digest.of(Array(raw.stdout.utf8)) == digest)
        }
        let refused = try Ferry.run(
            ["export", "-o", "\(work)/u.tar", "--cache", "\(work)/cache2", "--creds", "bob:nope"]
                + seeded.references + registry.ferryTrustFlags, environment: isolated, check: false)
        #expect(refused.status == 1)
        #expect(refused.stderr.contains("token request"))
    }
}
