import Foundation
import OCICore
import OCIStore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

struct GarbageCollectorTests {
    /// A store with repository `app` holding manifest M (config C, layer L), plus blob U linked
    /// but unreferenced, and blob O in no repository at all.
    struct Fixture {
        let store: RegistryStore
        let manifest: Digest
        let config: Digest
        let layer: Digest
        let unreferenced: Digest
        let orphan: Digest

        init() throws {
            let store = try RegistryStore(root: NSTemporaryDirectory() + "ferry-gc-\(UUID().uuidString.prefix(8))")
            self.store = store
            func put(_ text: String) throws -> Digest {
                let bytes = Array(text.utf8)
                try store.blobs.put(bytes, as: Digest.of(bytes))
                return Digest.of(bytes)
            }
            let configDigest = try put(#"{"os":"linux","architecture":"amd64"}"#)
            let layerDigest = try put("layer")
            let manifestDigest = try put(
                """
                {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)",\
                "config":{"mediaType":"\(MediaType.ociConfig)","digest":"\(configDigest)","size":37},\
                "layers":[{"mediaType":"\(MediaType.ociLayer)","digest":"\(layerDigest)","size":5}]}
                """)
            let unreferencedDigest = try put("pushed, never used")
            let orphanDigest = try put("left by a failed import")
            let app = try RepositoryName("app")
            for blob in [configDigest, layerDigest, unreferencedDigest] { try store.linkBlob(blob, to: app) }
            try store.putManifest(
                try ManifestDocument(bytes: store.blobs.read(manifestDigest, limit: 1 << 20)), in: app,
                tags: [try Tag("1")])
            config = configDigest
            layer = layerDigest
            manifest = manifestDigest
            unreferenced = unreferencedDigest
            orphan = orphanDigest
        }

        /// Makes every blob file look two hours old.
        func age() {
            let past = time(nil) - 7200
            for digest in [manifest, config, layer, unreferenced, orphan] {
                var times = [timeval(tv_sec: past, tv_usec: 0), timeval(tv_sec: past, tv_usec: 0)]
                utimes(store.blobs.path(of: digest), &times)
            }
        }

        func remove() { try? FileManager.default.removeItem(atPath: store.root) }
    }

    @Test func removesOnlyOldUnreferencedBlobs() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        // Young: nothing goes.
        let young = try store.collectGarbage(dryRun: false)
        #expect(young.blobsRemoved.isEmpty && young.linksRemoved == 0)

        fixture.age()
        let dry = try store.collectGarbage(dryRun: true)
        #expect(dry.blobsRemoved == [fixture.orphan, fixture.unreferenced].map(\.description).sorted())
        #expect(dry.linksRemoved == 1)
        #expect(store.blobs.contains(fixture.orphan, size: 23), "a dry run removes nothing")

        let report = try store.collectGarbage(dryRun: false)
        #expect(report.blobsRemoved == dry.blobsRemoved)
        #expect(report.bytesRemoved == 23 + 18)
        for kept in [fixture.manifest, fixture.config, fixture.layer] {
            #expect(FileManager.default.fileExists(atPath: store.blobs.path(of: kept)))
        }
        for gone in [fixture.orphan, fixture.unreferenced] {
            #expect(!FileManager.default.fileExists(atPath: store.blobs.path(of: gone)))
        }
        let app = try RepositoryName("app")
        #expect(try store.servesBlob(fixture.config, in: app) && store.servesBlob(fixture.layer, in: app))
        #expect(try !store.servesBlob(fixture.unreferenced, in: app))

        // A deleted manifest: its blobs go on the next run.
        #expect(try store.deleteManifest(fixture.manifest, in: app))
        let after = try store.collectGarbage(dryRun: false, gracePeriod: 0)
        #expect(Set(after.blobsRemoved) == Set([fixture.manifest, fixture.config, fixture.layer].map(\.description)))
        #expect(try !store.contains(repository: app))
        #expect(try store.listing().isEmpty)
    }

    @Test func expiresAbandonedUploads() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let uploads = fixture.store.uploads
        let old = try uploads.create(repository: "app")
        let fresh = try uploads.create(repository: "app")
        let past = time(nil) - 2 * 86400
        var times = [timeval(tv_sec: past, tv_usec: 0), timeval(tv_sec: past, tv_usec: 0)]
        utimes(uploads.dataPath(old), &times)
        let report = try fixture.store.collectGarbage(dryRun: false)
        #expect(report.uploadsExpired == 1)
        #expect(uploads.status(old) == nil && uploads.status(fresh)?.repository == "app")
    }
}

/// gc beside pushes: a missing file never makes it fail, and what a push commits after gc took its
/// blob is refused, never visible without its blobs.
struct GarbageBesidePushesTests {
    @Test func aMissingFileIsSkippedAndACommitAfterGcIsRefused() throws {
        let fixture = try GarbageCollectorTests.Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        fixture.age()
        let manifest = try ManifestDocument(bytes: try store.blobs.read(fixture.manifest, limit: 1 << 20))
        // A manifest's and a layer's files disappear under the store's feet: gc goes on, twice.
        unlink(store.blobs.path(of: fixture.layer))
        unlink(store.blobs.path(of: fixture.manifest))
        _ = try store.collectGarbage(dryRun: false, gracePeriod: 0)
        _ = try store.collectGarbage(dryRun: false, gracePeriod: 0)
        // The unreferenced blob is gone; a push that links it now (its upload finished before gc) is refused.
        let app = try RepositoryName("app")
        #expect(throws: RegistryRuleError.contentMissing(fixture.unreferenced)) {
            try store.linkBlob(fixture.unreferenced, to: app)
        }
        // A manifest re-PUT whose layer is gone: refused, and its new tag does not appear.
        #expect(throws: RegistryRuleError.contentMissing(fixture.layer)) {
            try store.putManifest(manifest, in: app, tags: [try Tag("again")])
        }
        #expect(try store.resolve(.tag(try Tag("again")), in: app) == nil)
    }
}
