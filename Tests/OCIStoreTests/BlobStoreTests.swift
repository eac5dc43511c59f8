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

    /// Blobs of 8 MiB and more are written on a second thread (with O_DIRECT in a durable store):
    /// the bytes on disk are the bytes given, in odd-sized writes, across a reset, with the caller
    /// verifying or the writer hashing, and a cancel leaves nothing.
    @Test(arguments: [true, false]) func largeBlobsWrittenInTheBackgroundArriveIntact(durable: Bool) throws {
        let store = try BlobStore(root: NSTemporaryDirectory() + "ferry-store-\(UUID().uuidString)", durable: durable)
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<(9 << 20) + 12345).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let digest = Digest.of(bytes)
        func write(_ writer: BlobWriter, _ range: Range<Int>) throws {
            var start = range.lowerBound
            while start < range.upperBound {
                let end = min(range.upperBound, start + 333_333)
                try bytes.withUnsafeBytes { try writer.write(UnsafeRawBufferPointer(rebasing: $0[start..<end])) }
                start = end
            }
        }
        for verifiedByCaller in [false, true] {
            let writer = try store.makeWriter(for: digest, size: Int64(bytes.count), verifiedByCaller: verifiedByCaller)
            try write(writer, 0..<(3 << 20))
            try writer.reset()
            try write(writer, 0..<bytes.count)
            try writer.commit()
            #expect(try Data(contentsOf: URL(fileURLWithPath: store.path(of: digest))) == Data(bytes))
            try FileManager.default.removeItem(atPath: store.path(of: digest))
        }
        let abandoned = try store.makeWriter(for: digest, size: Int64(bytes.count), verifiedByCaller: true)
        try write(abandoned, 0..<(5 << 20))
        abandoned.cancel()
        #expect(FileSystem.list("\(store.root)/ingest").isEmpty)
        // A caller-verified writer still refuses a wrong size.
        let short = try store.makeWriter(for: digest, size: Int64(bytes.count), verifiedByCaller: true)
        try write(short, 0..<(bytes.count - 1))
        #expect(throws: StoreError.self) { try short.commit() }
        #expect(!FileManager.default.fileExists(atPath: store.path(of: digest)))
    }

    @Test func readRefusesOversizedDocuments() throws {
        let store = try makeStore()
        defer { try? FileManager.default.removeItem(atPath: store.root) }
        let bytes = [UInt8](repeating: 7, count: 1000)
        try store.put(bytes, as: Digest.of(bytes))
        #expect(throws: StoreError.self) { try store.read(Digest.of(bytes), limit: 999) }
    }
}
