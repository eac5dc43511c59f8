import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OCICore
import OCIStore
import Testing

@testable import OCIRegistryServer

/// The OCI distribution-spec conformance suite's categories (pull, push, content discovery,
/// content management), for the requirements `ResponderTests` and `WriteTests` leave out.
struct SpecCoverageTests {
    typealias Client = any TestClientProtocol

    static func json(_ object: [String: Any]) -> [UInt8] {
        Array((try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data())
    }

    static func descriptor(_ mediaType: String, _ bytes: [UInt8], algorithm: DigestAlgorithm = .sha256) -> [String: Any]
    {
        ["mediaType": mediaType, "digest": Digest.of(bytes, algorithm: algorithm).description, "size": bytes.count]
    }

    static func pushBlob(_ bytes: [UInt8], to repository: String, _ client: Client) async throws {
        let response = try await client.execute(
            uri: "/v2/\(repository)/blobs/uploads/?digest=\(Digest.of(bytes))", method: .post,
            body: ByteBuffer(bytes: bytes))
        #expect(response.status == .created)
    }

    static func putManifest(
        _ bytes: [UInt8], _ reference: String, in repository: String, type: String, _ client: Client
    ) async throws -> TestResponse {
        try await client.execute(
            uri: "/v2/\(repository)/manifests/\(reference)", method: .put, headers: [.contentType: type],
            body: ByteBuffer(bytes: bytes))
    }

    /// An image (config + one layer) pushed under `tag`; returns its manifest bytes.
    static func pushImage(_ repository: String, tag: String, seed: String, _ client: Client) async throws -> [UInt8] {
        let config = Array(#"{"architecture":"amd64","os":"linux","seed":"\#(seed)"}"#.utf8)
        let layer = Array("layer \(seed)".utf8)
        try await pushBlob(config, to: repository, client)
        try await pushBlob(layer, to: repository, client)
        let manifest = json([
            "schemaVersion": 2, "mediaType": MediaType.ociManifest,
            "config": descriptor(MediaType.ociConfig, config), "layers": [descriptor(MediaType.ociLayer, layer)],
        ])
        let put = try await putManifest(manifest, tag, in: repository, type: MediaType.ociManifest, client)
        #expect(put.status == .created)
        return manifest
    }

    func withServer(_ body: @Sendable @escaping (Client, RegistryStore) async throws -> Void) async throws {
        let root = NSTemporaryDirectory() + "ferry-spec-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try RegistryStore(root: root)
        let application = Application(
            responder: RegistryResponder(content: RegistryContent(storage: store), accessLog: nil))
        try await application.test(.router) { client in try await body(client, store) }
    }

    // MARK: Pull

    @Test func pullAnswersHeadsAndUnknownsAsTheSpecSays() async throws {
        try await withServer { client, _ in
            let manifest = try await Self.pushImage("pull/repo", tag: "v1", seed: "a", client)
            let digest = Digest.of(manifest)
            for reference in ["v1", digest.description] {
                let head = try await client.execute(uri: "/v2/pull/repo/manifests/\(reference)", method: .head)
                #expect(head.status == .ok && head.body.readableBytes == 0)
                #expect(head.headers[HTTPField.Name("Docker-Content-Digest")!] == digest.description)
                #expect(head.headers[.contentLength] == String(manifest.count))
            }
            let missing = try await client.execute(uri: "/v2/pull/repo/manifests/nope", method: .head)
            #expect(missing.status == .notFound)
            let blob = try await client.execute(
                uri: "/v2/pull/repo/blobs/\(Digest.of(Array("layer a".utf8)))", method: .head)
            #expect(blob.status == .ok && blob.headers[.contentLength] == "7")
        }
    }

    // MARK: Push

    @Test func pushStreamedChunksSha512NestedIndexesAndNonDistributableLayers() async throws {
        try await withServer { client, _ in
            // Streamed PATCH without Content-Range, then a PUT without a body.
            let bytes = Array(repeating: UInt8(9), count: 200_000)
            let start = try await client.execute(uri: "/v2/push/repo/blobs/uploads/", method: .post)
            let location = try #require(start.headers[.location])
            _ = try await client.execute(uri: location, method: .patch, body: ByteBuffer(bytes: bytes))
            let closed = try await client.execute(uri: "\(location)?digest=\(Digest.of(bytes))", method: .put)
            #expect(closed.status == .created)

            // A last chunk sent with the PUT out of order: 416, and the upload is kept as it was.
            let chunked = try await client.execute(uri: "/v2/push/repo/blobs/uploads/", method: .post)
            let chunkedLocation = try #require(chunked.headers[.location])
            _ = try await client.execute(
                uri: chunkedLocation, method: .patch, headers: [.contentRange: "0-99999"],
                body: ByteBuffer(bytes: bytes[0..<100_000]))
            let skipped = try await client.execute(
                uri: "\(chunkedLocation)?digest=\(Digest.of(bytes))", method: .put,
                headers: [.contentRange: "150000-199999"], body: ByteBuffer(bytes: bytes[150_000...]))
            #expect(skipped.status == .rangeNotSatisfiable)
            let kept = try await client.execute(uri: chunkedLocation, method: .get)
            #expect(kept.status == .noContent && kept.headers[.range] == "0-99999")
            let finished = try await client.execute(
                uri: "\(chunkedLocation)?digest=\(Digest.of(bytes))", method: .put,
                headers: [.contentRange: "100000-199999"], body: ByteBuffer(bytes: bytes[100_000...]))
            #expect(finished.status == .created)

            // sha512: announced with digest-algorithm, proven at the PUT.
            let sha512 = Digest.of(bytes, algorithm: .sha512)
            let announced = try await client.execute(
                uri: "/v2/push/repo/blobs/uploads/?digest-algorithm=sha512", method: .post)
            let session = try #require(announced.headers[.location])
            let put = try await client.execute(
                uri: "\(session)?digest=\(sha512)", method: .put, body: ByteBuffer(bytes: bytes))
            #expect(
                put.status == .created && put.headers[HTTPField.Name("Docker-Content-Digest")!] == sha512.description)

            // Mount without `from`: a plain upload session (202).
            let noFrom = try await client.execute(uri: "/v2/push/other/blobs/uploads/?mount=\(sha512)", method: .post)
            #expect(noFrom.status == .accepted)

            // A manifest with a non-distributable layer that was never pushed, by a sha512 digest.
            let config = Array(#"{"os":"windows","architecture":"amd64"}"#.utf8)
            try await Self.pushBlob(config, to: "push/repo", client)
            let foreign = Array("foreign layer".utf8)
            let manifest = Self.json([
                "schemaVersion": 2, "mediaType": MediaType.ociManifest,
                "config": Self.descriptor(MediaType.ociConfig, config),
                "layers": [Self.descriptor(MediaType.ociNondistributableLayerGzip, foreign)],
            ])
            let manifest512 = Digest.of(manifest, algorithm: .sha512)
            let stored = try await client.execute(
                uri: "/v2/push/repo/manifests/\(manifest512)?tag=win&tag=latest", method: .put,
                headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(bytes: manifest))
            #expect(stored.status == .created)
            #expect(stored.headers[values: HTTPField.Name("OCI-Tag")!] == ["win", "latest"])
            let fetched = try await client.execute(uri: "/v2/push/repo/manifests/\(manifest512)", method: .get)
            #expect(Array(buffer: fetched.body) == manifest)

            // Nested indexes: an index whose child is an index; children must be there first.
            let inner = Self.json([
                "schemaVersion": 2, "mediaType": MediaType.ociIndex,
                "manifests": [Self.descriptor(MediaType.ociManifest, manifest, algorithm: .sha512)],
            ])
            let outer = Self.json([
                "schemaVersion": 2, "mediaType": MediaType.ociIndex,
                "manifests": [Self.descriptor(MediaType.ociIndex, inner)],
            ])
            let early = try await Self.putManifest(outer, "nested", in: "push/repo", type: MediaType.ociIndex, client)
            #expect(early.status == .badRequest && String(buffer: early.body).contains("MANIFEST_BLOB_UNKNOWN"))
            let innerPut = try await Self.putManifest(
                inner, Digest.of(inner).description, in: "push/repo", type: MediaType.ociIndex, client)
            #expect(innerPut.status == .created)
            #expect(
                try await Self.putManifest(outer, "nested", in: "push/repo", type: MediaType.ociIndex, client).status
                    == .created)

            // Invalid and oversized manifests.
            let invalid = try await Self.putManifest(
                Array("{not json".utf8), "bad", in: "push/repo", type: MediaType.ociManifest, client)
            #expect(invalid.status == .badRequest && String(buffer: invalid.body).contains("MANIFEST_INVALID"))
            let huge = [UInt8](repeating: 0x20, count: ManifestDocument.maximumSize + 1)
            let tooLarge = try await Self.putManifest(
                huge, "huge", in: "push/repo", type: MediaType.ociManifest, client)
            #expect(tooLarge.status == .contentTooLarge)
        }
    }

    // MARK: Content discovery

    @Test func tagListsPageAndReferrersIncludeIndexes() async throws {
        try await withServer { client, _ in
            let manifest = try await Self.pushImage("disc/repo", tag: "a", seed: "x", client)
            for tag in ["b", "c", "d"] {
                _ = try await Self.putManifest(manifest, tag, in: "disc/repo", type: MediaType.ociManifest, client)
            }
            let page = try await client.execute(uri: "/v2/disc/repo/tags/list?n=2&last=a", method: .get)
            #expect(String(buffer: page.body) == #"{"name":"disc/repo","tags":["b","c"]}"#)
            #expect(page.headers[HTTPField.Name("Link")!] == "</v2/disc/repo/tags/list?last=c&n=2>; rel=\"next\"")
            let rest = try await client.execute(uri: "/v2/disc/repo/tags/list?last=c", method: .get)
            #expect(String(buffer: rest.body) == #"{"name":"disc/repo","tags":["d"]}"#)
            let none = try await client.execute(uri: "/v2/disc/repo/tags/list?n=0", method: .get)
            #expect(String(buffer: none.body) == #"{"name":"disc/repo","tags":[]}"#)
            let unknown = try await client.execute(uri: "/v2/disc/nothing/tags/list", method: .get)
            #expect(unknown.status == .notFound && String(buffer: unknown.body).contains("NAME_UNKNOWN"))
            // Referrers never 404, even for a repository nobody pushed to.
            let noReferrers = try await client.execute(
                uri: "/v2/disc/nothing/referrers/\(Digest.of(manifest))", method: .get)
            #expect(noReferrers.status == .ok && noReferrers.headers[.contentType] == MediaType.ociIndex)
            #expect(String(buffer: noReferrers.body).contains(#""manifests":[]"#))

            // An index can refer to a manifest through `subject`; it is listed without artifactType.
            let subject = Self.descriptor(MediaType.ociManifest, manifest)
            let index = Self.json([
                "schemaVersion": 2, "mediaType": MediaType.ociIndex, "manifests": [subject], "subject": subject,
                "annotations": ["org.example": "index"],
            ])
            let put = try await Self.putManifest(
                index, Digest.of(index).description, in: "disc/repo", type: MediaType.ociIndex, client)
            #expect(put.headers[HTTPField.Name("OCI-Subject")!] == Digest.of(manifest).description)
            let referrers = try await client.execute(
                uri: "/v2/disc/repo/referrers/\(Digest.of(manifest))", method: .get)
            let listed = try JSONDecoder().decode(ImageIndex.self, from: Data(buffer: referrers.body))
            #expect(listed.manifests.map(\.digest) == [Digest.of(index)])
            #expect(listed.manifests.first?.artifactType == nil)
            #expect(listed.manifests.first?.annotations == ["org.example": "index"])
        }
    }

    // MARK: Content management

    @Test func deletesOfWhatIsNotThereAre404() async throws {
        try await withServer { client, _ in
            let manifest = try await Self.pushImage("mgmt/repo", tag: "v1", seed: "m", client)
            let layer = Digest.of(Array("layer m".utf8))
            let absent = "sha256:" + String(repeating: "a", count: 64)
            #expect(
                try await client.execute(uri: "/v2/mgmt/repo/manifests/\(absent)", method: .delete).status == .notFound)
            #expect(try await client.execute(uri: "/v2/mgmt/repo/manifests/nope", method: .delete).status == .notFound)
            #expect(try await client.execute(uri: "/v2/mgmt/repo/blobs/\(absent)", method: .delete).status == .notFound)
            #expect(try await client.execute(uri: "/v2/mgmt/repo/blobs/\(layer)", method: .delete).status == .accepted)
            #expect(try await client.execute(uri: "/v2/mgmt/repo/blobs/\(layer)", method: .delete).status == .notFound)
            #expect(try await client.execute(uri: "/v2/mgmt/repo/blobs/\(layer)", method: .get).status == .notFound)
            let digest = Digest.of(manifest)
            #expect(
                try await client.execute(uri: "/v2/mgmt/repo/manifests/\(digest)", method: .delete).status == .accepted)
            let tags = try await client.execute(uri: "/v2/mgmt/repo/tags/list", method: .get)
            #expect(!String(buffer: tags.body).contains("v1"))
        }
    }
}
