import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import OCICore
import OCIStore
import Testing

@testable import OCIRegistryServer

/// The responder against a store built here, through Hummingbird's in-process test client.
struct ResponderTests {
    struct Fixture {
        let root: String
        let store: RegistryStore
        var image: Digest
        var imageBytes: [UInt8]
        var layer: Digest
        var layerBytes: [UInt8]
        var sbom: Digest
        var signature: Digest

        static let repository = "registry.example/blobs/manifests/tags"

        init() throws {
            let root = NSTemporaryDirectory() + "ferry-responder-\(UUID().uuidString.prefix(8))"
            let store = try RegistryStore(root: root)
            self.root = root
            self.store = store
            func put(_ bytes: [UInt8]) throws -> Digest {
                let digest = Digest.of(bytes)
                try store.blobs.put(bytes, as: digest)
                return digest
            }
            func json(_ object: [String: Any]) throws -> [UInt8] {
                Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
            }
            let config = Array(#"{"architecture":"amd64","os":"linux"}"#.utf8)
            let configDigest = try put(config)
            let layerBytes = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let layer = try put(layerBytes)
            let imageBytes = try json([
                "schemaVersion": 2, "mediaType": MediaType.ociManifest,
                "config": ["mediaType": MediaType.ociConfig, "digest": configDigest.description, "size": config.count],
                "layers": [["mediaType": MediaType.ociLayer, "digest": layer.description, "size": layerBytes.count]],
            ])
            let image = try put(imageBytes)
            let empty = Array("{}".utf8)
            let emptyDigest = try put(empty)
            let subject: [String: Any] = [
                "mediaType": MediaType.ociManifest, "digest": image.description, "size": imageBytes.count,
            ]
            let emptyDescriptor: [String: Any] = [
                "mediaType": MediaType.ociEmpty, "digest": emptyDigest.description, "size": 2,
            ]
            let sbom = try put(
                try json([
                    "schemaVersion": 2, "mediaType": MediaType.ociManifest, "artifactType": "application/spdx+json",
                    "config": emptyDescriptor, "layers": [emptyDescriptor], "subject": subject,
                    "annotations": ["org.example.kind": "sbom"],
                ]))
            // No artifactType: the config's media type stands in.
            let signature = try put(
                try json([
                    "schemaVersion": 2, "mediaType": MediaType.ociManifest,
                    "config": [
                        "mediaType": "application/vnd.example.sig.config", "digest": emptyDigest.description, "size": 2,
                    ],
                    "layers": [emptyDescriptor], "subject": subject,
                ]))
            (self.image, self.imageBytes, self.layer, self.layerBytes) = (image, imageBytes, layer, layerBytes)
            (self.sbom, self.signature) = (sbom, signature)
            let name = try RepositoryName(Self.repository)
            for blob in [configDigest, layer, emptyDigest] { try store.linkBlob(blob, to: name) }
            try store.putManifest(try Self.document(image, store), in: name, tags: [try Tag("v1")])
            for referrer in [sbom, signature] {
                try store.putManifest(try Self.document(referrer, store), in: name, tags: [])
            }
        }

        static func document(_ digest: Digest, _ store: RegistryStore) throws -> ManifestDocument {
            try ManifestDocument(bytes: store.blobs.read(digest, limit: 1 << 20))
        }

        func application() -> some ApplicationProtocol {
            Application(responder: RegistryResponder(content: RegistryContent(storage: store), accessLog: nil))
        }

        func remove() { try? FileManager.default.removeItem(atPath: root) }
    }

    static let repository = Fixture.repository

    @Test func manifestsByTagAndDigestWithHeadersAndConditionalGet() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try await fixture.application().test(.router) { client in
            for reference in ["v1", fixture.image.description] {
                let response = try await client.execute(
                    uri: "/v2/\(Self.repository)/manifests/\(reference)", method: .get)
                #expect(response.status == .ok)
                #expect(Array(buffer: response.body) == fixture.imageBytes)
                #expect(response.headers[.contentType] == MediaType.ociManifest)
                #expect(response.headers[HTTPField.Name("Docker-Content-Digest")!] == fixture.image.description)
                #expect(response.headers[.eTag] == "\"\(fixture.image)\"")
            }
            let head = try await client.execute(uri: "/v2/\(Self.repository)/manifests/v1", method: .head)
            #expect(head.status == .ok && head.body.readableBytes == 0)
            #expect(head.headers[.contentLength] == String(fixture.imageBytes.count))
            let cached = try await client.execute(
                uri: "/v2/\(Self.repository)/manifests/v1", method: .get,
                headers: [.ifNoneMatch: "\"\(fixture.image)\""])
            #expect(cached.status == .notModified)
        }
    }

    @Test func blobsServeRangesOnlyFromRepositoriesThatReferenceThem() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try await fixture.application().test(.router) { client in
            let path = "/v2/\(Self.repository)/blobs/\(fixture.layer)"
            let whole = try await client.execute(uri: path, method: .get)
            #expect(whole.status == .ok && Array(buffer: whole.body) == fixture.layerBytes)
            let part = try await client.execute(uri: path, method: .get, headers: [.range: "bytes=1000-1999"])
            #expect(part.status == .partialContent)
            #expect(Array(buffer: part.body) == Array(fixture.layerBytes[1000...1999]))
            #expect(part.headers[.contentRange] == "bytes 1000-1999/\(fixture.layerBytes.count)")
            let beyond = try await client.execute(uri: path, method: .get, headers: [.range: "bytes=200000-"])
            #expect(beyond.status == .rangeNotSatisfiable)
            #expect(beyond.headers[.contentRange] == "bytes */\(fixture.layerBytes.count)")
            // The blob exists in the store, but this repository does not reference it.
            let other = try RepositoryName("other/repo")
            let sbom = try Fixture.document(fixture.sbom, fixture.store)
            for child in sbom.children { try fixture.store.linkBlob(child.digest, to: other) }
            try fixture.store.putManifest(sbom, in: other, tags: [try Tag("x")])
            let foreign = try await client.execute(uri: "/v2/other/repo/blobs/\(fixture.layer)", method: .get)
            #expect(foreign.status == .notFound)
            #expect(String(buffer: foreign.body).contains("BLOB_UNKNOWN"))
        }
    }

    @Test func referrersListManifestsWhoseSubjectIsTheDigest() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try await fixture.application().test(.router) { client in
            let path = "/v2/\(Self.repository)/referrers/\(fixture.image)"
            let all = try await client.execute(uri: path, method: .get)
            #expect(all.status == .ok && all.headers[.contentType] == MediaType.ociIndex)
            let index = try JSONDecoder().decode(ImageIndex.self, from: Data(buffer: all.body))
            let byDigest = Dictionary(uniqueKeysWithValues: index.manifests.map { ($0.digest, $0) })
            #expect(Set(byDigest.keys) == [fixture.sbom, fixture.signature])
            #expect(byDigest[fixture.sbom]?.artifactType == "application/spdx+json")
            #expect(byDigest[fixture.sbom]?.annotations == ["org.example.kind": "sbom"])
            #expect(byDigest[fixture.signature]?.artifactType == "application/vnd.example.sig.config")

            let filtered = try await client.execute(uri: path + "?artifactType=application/spdx%2Bjson", method: .get)
            #expect(filtered.headers[HTTPField.Name("OCI-Filters-Applied")!] == "artifactType")
            let only = try JSONDecoder().decode(ImageIndex.self, from: Data(buffer: filtered.body))
            #expect(only.manifests.map(\.digest) == [fixture.sbom])

            let none = try await client.execute(
                uri: "/v2/\(Self.repository)/referrers/\(fixture.layer)", method: .get)
            #expect(none.status == .ok)
            #expect(try JSONDecoder().decode(ImageIndex.self, from: Data(buffer: none.body)).manifests.isEmpty)
            let bad = try await client.execute(uri: "/v2/\(Self.repository)/referrers/sha256:nothex", method: .get)
            #expect(bad.status == .badRequest)
        }
    }

    @Test func errorsWritesAndNewStateWithoutRestart() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        try await fixture.application().test(.router) { client in
            let put = try await client.execute(uri: "/v2/\(Self.repository)/manifests/v2", method: .put)
            #expect(put.status == .badRequest && String(buffer: put.body).contains("MANIFEST_INVALID"))
            let patch = try await client.execute(uri: "/v2/\(Self.repository)/tags/list", method: .patch)
            #expect(patch.status == .methodNotAllowed && String(buffer: patch.body).contains("UNSUPPORTED"))
            let invalid = try await client.execute(uri: "/v2/Bad/manifests/v1", method: .get)
            #expect(invalid.status == .badRequest && String(buffer: invalid.body).contains("NAME_INVALID"))
            let unknown = try await client.execute(uri: "/v2/\(Self.repository)/manifests/v9", method: .get)
            #expect(unknown.status == .notFound && String(buffer: unknown.body).contains("MANIFEST_UNKNOWN"))
            let base = try await client.execute(uri: "/v2/", method: .get)
            #expect(base.headers[HTTPField.Name("Docker-Distribution-API-Version")!] == "registry/2.0")

            // A commit (as an import does) is visible on the next request.
            try fixture.store.putManifest(
                try Fixture.document(fixture.image, fixture.store), in: try RepositoryName(Self.repository),
                tags: [try Tag("v2")])
            let tags = try await client.execute(uri: "/v2/\(Self.repository)/tags/list", method: .get)
            let expectedTags = "{\"name\":\"\(Self.repository)\",\"tags\":[\"v1\",\"v2\"]}"
            #expect(String(buffer: tags.body) == expectedTags)
            let page = try await client.execute(uri: "/v2/\(Self.repository)/tags/list?n=1", method: .get)
            #expect(
                page.headers[HTTPField.Name("Link")!] == "</v2/\(Self.repository)/tags/list?last=v1&n=1>; rel=\"next\"")
            let catalog = try await client.execute(uri: "/v2/_catalog", method: .get)
            let expectedCatalog = "{\"repositories\":[\"\(Self.repository)\"]}"
            #expect(String(buffer: catalog.body) == expectedCatalog)
        }
    }
}
