import Foundation
import OCICore
import OCIStore
import Testing

struct BlobStoreTests {
    func makeStore() throws -> BlobStore {
        try BlobStore(root: NSTemporaryDirectory() + "ferry-store-\(UUID().uuidString)")
    }

    @Test func verifiedBlobBecomesVisible() throws {
        let store = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let bytes = Array("layer bytes".utf8)
        let digest = Digest.of(bytes)
        #expect(!store.contains(digest, size: Int64(bytes.count)))
        let writer = try store.makeWriter(for: digest, size: Int64(bytes.count))
        try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[0..<5])) }
        #expect(!store.contains(digest, size: Int64(bytes.count)), "nothing visible before commit")
        try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[5...])) }
        try writer.commit()
        #expect(store.contains(digest, size: Int64(bytes.count)))
        #expect(try store.read(digest, limit: 100) == bytes)
        #expect(FileSystem.list("\(store.root)/ingest").isEmpty)
    }

    @Test func wrongContentLeavesNothingBehind() throws {
        let store = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let digest = Digest.of(Array("expected".utf8))
        let writer = try store.makeWriter(for: digest, size: 8)
        try Array("tampered".utf8).withUnsafeBytes { try writer.write($0) }
        #expect(throws: StoreError.self) { try writer.commit() }
        #expect(!FileManager.default.fileExists(atPath: store.path(of: digest)))
        #expect(FileSystem.list("\(store.root)/ingest").isEmpty)

        let tooLong = try store.makeWriter(for: digest, size: 8)
        #expect(throws: StoreError.self) { try Array("expected!".utf8).withUnsafeBytes { try tooLong.write($0) } }
        tooLong.cancel()
        tooLong.cancel()  // idempotent
        #expect(FileSystem.list("\(store.root)/ingest").isEmpty)
    }

    @Test func resetStartsTheBlobAgain() throws {
        let store = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let bytes = Array("content".utf8)
        let writer = try store.makeWriter(for: Digest.of(bytes), size: Int64(bytes.count))
        try Array("cont".utf8).withUnsafeBytes { try writer.write($0) }
        try writer.reset()
        try bytes.withUnsafeBytes { try writer.write($0) }
        try writer.commit()
        #expect(try store.read(Digest.of(bytes), limit: 100) == bytes)
    }

    @Test func readRefusesOversizedDocuments() throws {
        let store = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let bytes = [UInt8](repeating: 7, count: 1000)
        try store.put(bytes, as: Digest.of(bytes))
        #expect(throws: StoreError.self) { try store.read(Digest.of(bytes), limit: 999) }
    }
}
