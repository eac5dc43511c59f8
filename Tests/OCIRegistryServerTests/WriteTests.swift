import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OCICore
import OCIStore
import Testing

@testable import OCIRegistryServer

/// The push side in process: uploads (monolithic, chunked, out of order, sha512, mount, cancel),
/// manifests (validation, tags, subject), deletes and the read-only switch.
struct WriteTests {
    struct Server {
        let root: String
        let store: RegistryStore

        init() throws {
            root = NSTemporaryDirectory() + "ferry-write-\(UUID().uuidString.prefix(8))"
            store = try RegistryStore(root: root)
        }

        func application(readOnly: Bool = false, limits: UploadLimits = UploadLimits(minFreeBytes: 0))
            -> some ApplicationProtocol
        {
            Application(
                responder: RegistryResponder(
                    content: RegistryContent(storage: store), accessLog: nil, readOnly: readOnly, limits: limits)
            )
        }

        func remove() { try? FileManager.default.removeItem(atPath: root) }

        var uploadsLeft: [String] { FileSystem.list("\(root)/uploads") }
    }

    static func header(_ response: TestResponse, _ name: String) -> String? {
        HTTPField.Name(name).flatMap { response.headers[$0] }
    }

    /// Pushes `bytes` as one PUT after a POST; returns the response of the PUT.
    static func push(_ bytes: [UInt8], digest: Digest, to repository: String, client: some TestClientProtocol)
        async throws -> TestResponse
    {
        let start = try await client.execute(uri: "/v2/\(repository)/blobs/uploads/", method: .post)
        #expect(start.status == .accepted)
        let location = try #require(start.headers[.location])
        return try await client.execute(
            uri: "\(location)?digest=\(digest)", method: .put, body: ByteBuffer(bytes: bytes))
    }

    @Test func monolithicChunkedAndSha512UploadsLandVerified() async throws {
        let server = try Server()
        defer { server.remove() }
        try await server.application().test(.router) { client in
            // POST ?digest= with the body: one request.
            let small = Array("hello blob".utf8)
            let one = try await client.execute(
                uri: "/v2/team/app/blobs/uploads/?digest=\(Digest.of(small))", method: .post,
                body: ByteBuffer(bytes: small))
            #expect(one.status == .created)
            #expect(Self.header(one, "Docker-Content-Digest") == Digest.of(small).description)

            // Chunked: PATCH, PATCH with Content-Range, status GET, PUT with the last chunk.
            let large = (0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            let start = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            let location = try #require(start.headers[.location])
            let first = try await client.execute(
                uri: location, method: .patch, body: ByteBuffer(bytes: large[0..<1_000_000]))
            #expect(first.status == .accepted && first.headers[.range] == "0-999999")
            // Out of order: refused with 416 and the current range; nothing changes.
            let skipped = try await client.execute(
                uri: location, method: .patch, headers: [.contentRange: "2000000-2999999"],
                body: ByteBuffer(bytes: large[2_000_000...]))
            #expect(skipped.status == .rangeNotSatisfiable && skipped.headers[.range] == "0-999999")
            let second = try await client.execute(
                uri: location, method: .patch, headers: [.contentRange: "1000000-1999999"],
                body: ByteBuffer(bytes: large[1_000_000..<2_000_000]))
            #expect(second.status == .accepted && second.headers[.range] == "0-1999999")
            let status = try await client.execute(uri: location, method: .get)
            #expect(status.status == .noContent && status.headers[.range] == "0-1999999")
            let done = try await client.execute(
                uri: "\(location)?digest=\(Digest.of(large))", method: .put,
                body: ByteBuffer(bytes: large[2_000_000...]))
            #expect(done.status == .created)
            #expect(done.headers[.location] == "/v2/team/app/blobs/\(Digest.of(large))")
            let back = try await client.execute(uri: "/v2/team/app/blobs/\(Digest.of(large))", method: .get)
            #expect(Array(buffer: back.body) == large)

            // sha512, and the empty blob.
            let sha512 = Digest.of(small, algorithm: .sha512)
            #expect(try await Self.push(small, digest: sha512, to: "team/app", client: client).status == .created)
            let got = try await client.execute(uri: "/v2/team/app/blobs/\(sha512)", method: .get)
            #expect(Array(buffer: got.body) == small)
            #expect(try await Self.push([], digest: Digest.of([]), to: "team/app", client: client).status == .created)
            #expect(server.uploadsLeft.isEmpty)
        }
    }

    @Test func aWrongDigestLeavesNothingAndSessionsCanBeCancelled() async throws {
        let server = try Server()
        defer { server.remove() }
        try await server.application().test(.router) { client in
            let bytes = Array("content".utf8)
            let wrong = Digest.of(Array("other".utf8))
            let refused = try await Self.push(bytes, digest: wrong, to: "a/b", client: client)
            #expect(refused.status == .badRequest && String(buffer: refused.body).contains("DIGEST_INVALID"))
            #expect(
                !server.store.blobs.contains(wrong, size: 5) && !server.store.blobs.contains(Digest.of(bytes), size: 7))
            #expect(server.uploadsLeft.isEmpty)
            let head = try await client.execute(uri: "/v2/a/b/blobs/\(wrong)", method: .head)
            #expect(head.status == .notFound)

            let start = try await client.execute(uri: "/v2/a/b/blobs/uploads/", method: .post)
            let location = try #require(start.headers[.location])
            #expect(try await client.execute(uri: location, method: .delete).status == .noContent)
            let gone = try await client.execute(uri: location, method: .get)
            #expect(gone.status == .notFound && String(buffer: gone.body).contains("BLOB_UPLOAD_UNKNOWN"))
            // Another repository's session is not this one's.
            let other = try await client.execute(uri: "/v2/a/b/blobs/uploads/", method: .post)
            let stolen = try #require(other.headers[.location]).replacingOccurrences(of: "/a/b/", with: "/c/d/")
            #expect(try await client.execute(uri: stolen, method: .get).status == .notFound)
        }
    }

    @Test func manifestsAreValidatedTaggedAndDeleted() async throws {
        let server = try Server()
        defer { server.remove() }
        try await server.application().test(.router) { client in
            let config = Array(#"{"architecture":"amd64","os":"linux"}"#.utf8)
            let layer = Array("layer".utf8)
            let manifest = Array(
                """
                {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)",\
                "config":{"mediaType":"\(MediaType.ociConfig)","digest":"\(Digest.of(config))","size":\(config.count)},\
                "layers":[{"mediaType":"\(MediaType.ociLayer)","digest":"\(Digest.of(layer))","size":\(layer.count)}]}
                """.utf8)
            let manifestDigest = Digest.of(manifest)
            let type: HTTPFields = [.contentType: MediaType.ociManifest]
            // Blobs not pushed yet: refused.
            let early = try await client.execute(
                uri: "/v2/r/manifests/v1", method: .put, headers: type, body: ByteBuffer(bytes: manifest))
            #expect(early.status == .badRequest && String(buffer: early.body).contains("MANIFEST_BLOB_UNKNOWN"))
            for blob in [config, layer] {
                #expect(try await Self.push(blob, digest: Digest.of(blob), to: "r", client: client).status == .created)
            }
            // By digest, with two more tags; a wrong digest in the reference is refused.
            let wrong = try await client.execute(
                uri: "/v2/r/manifests/\(Digest.of(layer))", method: .put, headers: type,
                body: ByteBuffer(bytes: manifest))
            #expect(wrong.status == .badRequest && String(buffer: wrong.body).contains("DIGEST_INVALID"))
            let put = try await client.execute(
                uri: "/v2/r/manifests/\(manifestDigest)?tag=a&tag=b", method: .put, headers: type,
                body: ByteBuffer(bytes: manifest))
            #expect(put.status == .created && Self.header(put, "Docker-Content-Digest") == manifestDigest.description)
            let tagged = try await client.execute(
                uri: "/v2/r/manifests/v1", method: .put, headers: type, body: ByteBuffer(bytes: manifest))
            #expect(tagged.status == .created)
            let got = try await client.execute(uri: "/v2/r/manifests/a", method: .get)
            #expect(Array(buffer: got.body) == manifest)
            let tags = try await client.execute(uri: "/v2/r/tags/list", method: .get)
            #expect(String(buffer: tags.body) == #"{"name":"r","tags":["a","b","v1"]}"#)

            // A manifest with a subject: OCI-Subject answers, and referrers list it.
            let empty = Array("{}".utf8)
            #expect(try await Self.push(empty, digest: Digest.of(empty), to: "r", client: client).status == .created)
            let artifact = Array(
                """
                {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)","artifactType":"application/vnd.example",\
                "config":{"mediaType":"\(MediaType.ociEmpty)","digest":"\(Digest.of(empty))","size":2},\
                "layers":[{"mediaType":"\(MediaType.ociEmpty)","digest":"\(Digest.of(empty))","size":2}],\
                "subject":{"mediaType":"\(MediaType.ociManifest)","digest":"\(manifestDigest)","size":\(manifest.count)}}
                """.utf8)
            let referrer = try await client.execute(
                uri: "/v2/r/manifests/\(Digest.of(artifact))", method: .put, headers: type,
                body: ByteBuffer(bytes: artifact))
            #expect(referrer.status == .created && Self.header(referrer, "OCI-Subject") == manifestDigest.description)
            let referrers = try await client.execute(uri: "/v2/r/referrers/\(manifestDigest)", method: .get)
            #expect(String(buffer: referrers.body).contains(Digest.of(artifact).description))

            // Delete a tag: the manifest stays. Delete by digest: it and its tags go.
            #expect(try await client.execute(uri: "/v2/r/manifests/b", method: .delete).status == .accepted)
            #expect(try await client.execute(uri: "/v2/r/manifests/b", method: .get).status == .notFound)
            #expect(try await client.execute(uri: "/v2/r/manifests/a", method: .get).status == .ok)
            #expect(
                try await client.execute(uri: "/v2/r/manifests/\(manifestDigest)", method: .delete).status == .accepted)
            #expect(try await client.execute(uri: "/v2/r/manifests/a", method: .get).status == .notFound)
            #expect(
                try await client.execute(uri: "/v2/r/manifests/\(manifestDigest)", method: .get).status == .notFound)
            // Blobs: unlinked from the repository.
            #expect(
                try await client.execute(uri: "/v2/r/blobs/\(Digest.of(layer))", method: .delete).status == .accepted)
            #expect(try await client.execute(uri: "/v2/r/blobs/\(Digest.of(layer))", method: .get).status == .notFound)
        }
    }

    @Test func mountLinksABlobFromAnotherRepositoryAndReadOnlyRefusesWrites() async throws {
        let server = try Server()
        defer { server.remove() }
        let bytes = Array("shared layer".utf8)
        try await server.application().test(.router) { client in
            #expect(
                try await Self.push(bytes, digest: Digest.of(bytes), to: "src/repo", client: client).status == .created)
            let mounted = try await client.execute(
                uri: "/v2/dst/repo/blobs/uploads/?mount=\(Digest.of(bytes))&from=src/repo", method: .post)
            #expect(mounted.status == .created)
            #expect(
                try await client.execute(uri: "/v2/dst/repo/blobs/\(Digest.of(bytes))", method: .head).status == .ok)
            // From a repository that does not have it: an upload session instead.
            let fallback = try await client.execute(
                uri: "/v2/third/repo/blobs/uploads/?mount=\(Digest.of(bytes))&from=nowhere", method: .post)
            #expect(fallback.status == .accepted)
        }
        try await server.application(readOnly: true).test(.router) { client in
            let refused = try await client.execute(uri: "/v2/src/repo/blobs/uploads/", method: .post)
            #expect(refused.status == .methodNotAllowed && String(buffer: refused.body).contains("UNSUPPORTED"))
            let delete = try await client.execute(uri: "/v2/src/repo/blobs/\(Digest.of(bytes))", method: .delete)
            #expect(delete.status == .methodNotAllowed)
            #expect(try await client.execute(uri: "/v2/src/repo/blobs/\(Digest.of(bytes))", method: .get).status == .ok)
        }
    }

    /// One upload's size, open sessions per user, a free-disk reserve, and a PATCH whose
    /// Content-Range end is not where its body ends: each refused with an OCI error, nothing kept.
    @Test func uploadsAreBoundedInSizeSessionsAndDiskSpace() async throws {
        let server = try Server()
        defer { server.remove() }
        let limits = UploadLimits(maxUploadBytes: 1_000_000, maxUploadsPerUser: 2, minFreeBytes: 0)
        try await server.application(limits: limits).test(.router) { client in
            let big = [UInt8](repeating: 7, count: 1_500_000)
            let tooBig = try await client.execute(
                uri: "/v2/team/app/blobs/uploads/?digest=\(Digest.of(big))", method: .post, body: ByteBuffer(bytes: big)
            )
            #expect(tooBig.status == .contentTooLarge && String(buffer: tooBig.body).contains("SIZE_INVALID"))
            #expect(!server.store.blobs.contains(Digest.of(big), size: Int64(big.count)))

            // A PATCH claiming bytes 0-99 with 50 bytes of body: refused, the upload stays empty.
            let open = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            let location = try #require(open.headers[.location])
            let short = try await client.execute(
                uri: location, method: .patch, headers: [.contentRange: "0-99"],
                body: ByteBuffer(bytes: [UInt8](repeating: 1, count: 50)))
            #expect(short.status == .rangeNotSatisfiable)
            let status = try await client.execute(uri: location, method: .get)
            #expect(status.headers[.range] == "0-0")

            // Two sessions are open now (the refused monolithic one was removed); a third is refused.
            _ = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            let third = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            #expect(third.status == .tooManyRequests)
            // Cancelling one frees a place.
            _ = try await client.execute(uri: location, method: .delete)
            let again = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            #expect(again.status == .accepted)
        }
        // Below the free-disk reserve: nothing is accepted.
        let full = UploadLimits(minFreeBytes: Int64.max / 2)
        try await server.application(limits: full).test(.router) { client in
            let blocked = try await client.execute(uri: "/v2/team/app/blobs/uploads/", method: .post)
            #expect(blocked.status.code == 507)
        }
    }
}
