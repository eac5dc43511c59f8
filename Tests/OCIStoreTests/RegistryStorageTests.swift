import Foundation
import OCICore
import Testing

@testable import OCIStore

#if canImport(Glibc)
    import Glibc
#endif

/// The storage's rules, transactions, migration and check, against SQLite in a temporary directory.
struct RegistryStorageTests {
    struct Fixture {
        let store: RegistryStore
        let app: RepositoryName

        init() throws {
            app = try RepositoryName("team/app")
            store = try RegistryStore(root: NSTemporaryDirectory() + "ferry-storage-\(UUID().uuidString.prefix(8))")
        }

        func blob(_ text: String) throws -> Digest {
            let bytes = Array(text.utf8)
            try store.blobs.put(bytes, as: Digest.of(bytes))
            return Digest.of(bytes)
        }

        func image(config: Digest, layers: [Digest], subject: Digest? = nil) throws -> ManifestDocument {
            func descriptor(_ digest: Digest, _ type: String) throws -> String {
                let size = FileSystem.size(of: store.blobs.path(of: digest)) ?? 0
                return #"{"mediaType":"\#(type)","digest":"\#(digest)","size":\#(size)}"#
            }
            let subjectField = try subject.map { #","subject":\#(try descriptor($0, MediaType.ociManifest))"# } ?? ""
            let text = """
                {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)","config":\(try descriptor(config, MediaType.ociConfig)),\
                "layers":[\(try layers.map { try descriptor($0, MediaType.ociLayer) }.joined(separator: ","))]\(subjectField)}
                """
            return try ManifestDocument(bytes: Array(text.utf8))
        }

        func index(_ children: [ManifestDocument]) throws -> ManifestDocument {
            let entries = children.map {
                #"{"mediaType":"\#(MediaType.ociManifest)","digest":"\#($0.digest)","size":\#($0.bytes.count),"platform":{"os":"linux","architecture":"amd64"}}"#
            }
            let text =
                #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociIndex)","manifests":[\#(entries.joined(separator: ","))]}"#
            return try ManifestDocument(bytes: Array(text.utf8))
        }

        func remove() { try? FileManager.default.removeItem(atPath: store.root) }
    }

    @Test func aManifestEntersOnlyWithEverythingItReferences() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        let config = try fixture.blob(#"{"os":"linux"}"#)
        let layer = try fixture.blob("layer")
        let image = try fixture.image(config: config, layers: [layer])
        let v1 = try Tag("v1")
        try store.linkBlob(config, to: fixture.app)
        #expect(throws: RegistryRuleError.unknownBlob(layer)) {
            try store.putManifest(image, in: fixture.app, tags: [v1])
        }
        #expect(try store.resolve(.tag(v1), in: fixture.app) == nil, "nothing visible after a refused PUT")
        try store.linkBlob(layer, to: fixture.app)
        try store.putManifest(image, in: fixture.app, tags: [v1])
        #expect(try store.resolve(.tag(v1), in: fixture.app) == image.digest)
        #expect(try store.resolve(.digest(image.digest), in: fixture.app) == image.digest)
        #expect(try store.servesBlob(layer, in: fixture.app) && store.servesBlob(image.digest, in: fixture.app))

        // An index needs its child manifests in the same repository.
        let other = try RepositoryName("other")
        let index = try fixture.index([image])
        #expect(throws: RegistryRuleError.unknownManifest(image.digest)) {
            try store.putManifest(index, in: other, tags: [])
        }
        try store.putManifest(index, in: fixture.app, tags: [try Tag("multi")])
        #expect(try store.tags(in: fixture.app, after: nil, limit: nil).map(\.value) == ["multi", "v1"])
        #expect(try store.tags(in: fixture.app, after: "multi", limit: 1).map(\.value) == ["v1"])
        #expect(try store.repositories(after: nil, limit: nil) == [fixture.app])
        #expect(try !store.contains(repository: other))

        // A blob linked elsewhere mounts; a blob the source does not link does not.
        #expect(try store.mountBlob(layer, from: fixture.app, to: other))
        #expect(try !store.mountBlob(image.digest, from: fixture.app, to: other))
        #expect(try store.servesBlob(layer, in: other) && !store.servesBlob(config, in: other))

        // Deleting a manifest drops its tags; a blob whose file left the store cannot be linked.
        #expect(try store.deleteManifest(index.digest, in: fixture.app))
        #expect(try store.resolve(.tag(try Tag("multi")), in: fixture.app) == nil)
        #expect(try !store.deleteManifest(index.digest, in: fixture.app))
        unlink(store.blobs.path(of: config))
        #expect(throws: RegistryRuleError.contentMissing(config)) { try store.linkBlob(config, to: other) }
    }

    @Test func referrersAreIndexedBySubjectAndArtifactType() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        let config = try fixture.blob("{}")
        try store.linkBlob(config, to: fixture.app)
        let subject = try fixture.image(config: config, layers: [])
        try store.putManifest(subject, in: fixture.app, tags: [try Tag("v1")])
        let signature = try fixture.image(config: config, layers: [], subject: subject.digest)
        try store.putManifest(signature, in: fixture.app, tags: [])
        #expect(try store.referrers(of: subject.digest, in: fixture.app, artifactType: nil) == [signature.digest])
        #expect(
            try store.referrers(of: subject.digest, in: fixture.app, artifactType: MediaType.ociConfig) == [
                signature.digest
            ])
        #expect(try store.referrers(of: subject.digest, in: fixture.app, artifactType: "x/y").isEmpty)
        #expect(try store.referrers(of: signature.digest, in: fixture.app, artifactType: nil).isEmpty)
    }

    @Test func anImportIsAllOrNothing() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        let config = try fixture.blob(#"{"a":1}"#)
        let layer = try fixture.blob("layer-a")
        let image = try fixture.image(config: config, layers: [layer])
        try store.blobs.put(image.bytes, as: image.digest)
        let second = try RepositoryName("team/second")
        let missing = Digest.of(Array("never stored".utf8))
        let plan = ImportPlan(images: [
            .init(
                repository: fixture.app, tag: try Tag("1"), top: image.digest, manifests: [image.digest],
                blobs: [config, layer]),
            .init(
                repository: second, tag: try Tag("1"), top: image.digest, manifests: [image.digest], blobs: [missing]),
        ])
        #expect(throws: RegistryRuleError.contentMissing(missing)) { try store.importImages(plan) }
        #expect(try store.listing().isEmpty, "the first image did not become visible either")
        var good = plan
        good.images[1].blobs = [config, layer]
        try store.importImages(good)
        #expect(try store.listing().map(\.name) == [fixture.app, second])
    }

    @Test func twoWritersNeverLoseEachOthersChanges() async throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let config = try fixture.blob("{}")
        try fixture.store.linkBlob(config, to: fixture.app)
        let image = try fixture.image(config: config, layers: [])
        // Two stores on one directory stand for two processes (serve and an import).
        let stores = [fixture.store, try RegistryStore(root: fixture.store.root)]
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (w, store) in stores.enumerated() {
                group.addTask {
                    for i in 0..<100 { try store.putManifest(image, in: fixture.app, tags: [try Tag("w\(w)-\(i)")]) }
                }
            }
            try await group.waitForAll()
        }
        #expect(try fixture.store.tags(in: fixture.app, after: nil, limit: nil).count == 200)
    }

    @Test func aStateFileOfTheEarlierReleaseIsMigratedOnce() throws {
        let root = NSTemporaryDirectory() + "ferry-migrate-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        // The earlier release's layout: blobs under store/, the state in state.json.
        let blobs = try BlobStore(root: "\(root)/store")
        func put(_ text: String) throws -> Digest {
            try blobs.put(Array(text.utf8), as: Digest.of(Array(text.utf8)))
            return Digest.of(Array(text.utf8))
        }
        let config = try put("{}")
        let manifest = try put(
            #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","config":{"mediaType":"\#(MediaType.ociConfig)","digest":"\#(config)","size":2},"layers":[]}"#
        )
        let state =
            #"{"generation":3,"repositories":{"r.example/app":{"tags":{"1":"\#(manifest)"},"manifests":["\#(manifest)"],"blobs":["\#(config)"]}}}"#
        try FileSystem.replace("\(root)/state.json", with: Array(state.utf8), mode: 0o640)
        let store = try RegistryStore(root: root)
        let app = try RepositoryName("r.example/app")
        #expect(try store.resolve(.tag(try Tag("1")), in: app) == manifest)
        #expect(try store.servesBlob(config, in: app))
        #expect(FileSystem.size(of: "\(root)/state.json") == nil)
        #expect(FileSystem.size(of: "\(root)/state.json.migrated") != nil)
        // Opened again: nothing to migrate, the same content.
        #expect(try RegistryStore(root: root).listing() == store.listing())
    }

    @Test func aCorruptOrMissingDatabaseIsNamedAndNeverReplaced() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        _ = try fixture.blob("content")
        let path = fixture.store.databasePath
        try FileSystem.replace(path, with: Array(repeating: 0x41, count: 8192), mode: 0o640)
        for name in ["\(path)-wal", "\(path)-shm"] { unlink(name) }
        do {
            _ = try RegistryStore(root: fixture.store.root)
            Issue.record("a corrupt database opened")
        } catch {
            #expect("\(error)".contains(path), "\(error)")
            #expect(!"\(error)".contains("\n"))
        }
        unlink(path)
        #expect(throws: StoreError.databaseMissing(path: path, blobs: fixture.store.blobs.root)) {
            _ = try RegistryStore(root: fixture.store.root)
        }
        #expect(FileSystem.size(of: path) == nil, "never re-created over existing blobs")
    }

    @Test func checkFindsCorruptAndMissingContentAndRepairs() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let store = fixture.store
        let config = try fixture.blob(#"{"c":1}"#)
        let layer = try fixture.blob("a layer")
        try store.linkBlob(config, to: fixture.app)
        try store.linkBlob(layer, to: fixture.app)
        let image = try fixture.image(config: config, layers: [layer])
        try store.putManifest(image, in: fixture.app, tags: [try Tag("v1")])
        #expect(try store.check(repair: false).problems.isEmpty)
        // Flip the layer's bytes (same size).
        try FileSystem.replace(store.blobs.path(of: layer), with: Array("A layer".utf8), mode: 0o640)
        let report = try store.check(repair: false)
        #expect(report.problems.map(\.kind) == [.corruptBlob])
        #expect(report.problems.first?.digest == layer.description)
        let repaired = try store.check(repair: true)
        #expect(repaired.removed == [layer.description])
        #expect(repaired.needReimport == ["team/app:v1"])
        let after = try store.check(repair: false)
        #expect(after.problems.map(\.kind) == [.missingContent])
    }
}
