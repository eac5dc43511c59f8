import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import OCICore
import Testing

@testable import OCIRegistryServer
@testable import OCIStore

/// Downloads never wait for the store's write lock: while another process (gc, an import) holds
/// it and pushes queue behind it, blobs and manifests are served at once.
struct StallTests {
    @Test func downloadsGoOnWhileWritersWaitForTheLock() async throws {
        let root = NSTemporaryDirectory() + "ferry-stall-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try RegistryStore(root: root)
        let app = try RepositoryName("team/app")
        let layer = (0..<2_000_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        try store.blobs.put(layer, as: Digest.of(layer))
        try store.linkBlob(Digest.of(layer), to: app)
        let config = Array("{}".utf8)
        try store.blobs.put(config, as: Digest.of(config))
        try store.linkBlob(Digest.of(config), to: app)
        @Sendable func manifest(_ n: Int) -> [UInt8] {
            Array(
                #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","config":{"mediaType":"\#(MediaType.ociConfig)","digest":"\#(Digest.of(config))","size":2},"layers":[],"annotations":{"n":"\#(n)"}}"#
                    .utf8)
        }
        try store.putManifest(try ManifestDocument(bytes: manifest(0)), in: app, tags: [try Tag("v0")])
        let application = Application(
            responder: RegistryResponder(content: RegistryContent(storage: store), accessLog: nil))
        try await application.test(.router) { client in
            // Another process takes the write lock for three seconds.
            let holder = try SQLiteConnection(path: store.databasePath, create: false)
            try holder.execute("BEGIN IMMEDIATE")
            let release = Task.detached {
                try await Task.sleep(for: .seconds(3))
                try holder.execute("COMMIT")
            }
            // Eight pushes queue behind it (more than the commit pool has threads).
            let pushes = Task {
                try await withThrowingTaskGroup(of: HTTPResponse.Status.self) { group in
                    for n in 1...8 {
                        group.addTask {
                            try await client.execute(
                                uri: "/v2/team/app/manifests/v\(n)", method: .put,
                                headers: [.contentType: MediaType.ociManifest], body: ByteBuffer(bytes: manifest(n))
                            ).status
                        }
                    }
                    var statuses: [HTTPResponse.Status] = []
                    for try await status in group { statuses.append(status) }
                    return statuses
                }
            }
            try await Task.sleep(for: .milliseconds(300))
            // Meanwhile: blob and manifest GETs answer at once.
            for _ in 0..<5 {
                let started = ContinuousClock.now
                let blob = try await client.execute(uri: "/v2/team/app/blobs/\(Digest.of(layer))", method: .get)
                let tagged = try await client.execute(uri: "/v2/team/app/manifests/v0", method: .get)
                let took = ContinuousClock.now - started
                #expect(blob.status == .ok && blob.body.readableBytes == layer.count)
                #expect(tagged.status == .ok)
                #expect(took < .seconds(1), "a download waited \(took) for the write lock")
            }
            try await release.value
            #expect(try await pushes.value.allSatisfy { $0 == .created }, "the queued pushes land after the lock")
        }
    }
}
