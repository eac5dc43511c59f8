import Foundation
import OCITar
import Testing

struct TarWriterTests {
    func write(_ build: (TarWriter) throws -> Void) throws -> (path: String, bytes: Data) {
        let path = NSTemporaryDirectory() + "ferry-tar-\(UUID().uuidString).tar"
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        defer { close(fd) }
        do {
            let tar = try TarWriter(fileDescriptor: fd, modificationTime: 1_700_000_000)
            try build(tar)
            try tar.finish()
            return (path, try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            unlink(path)  // a failed write is a test's expectation, not a file to keep
            throw error
        }
    }

    @Test func writesEntriesSystemTarReads() throws {
        let (path, bytes) = try write { tar in
            try tar.addFile("oci-layout", bytes: Array("{}".utf8))
            try tar.addDirectory("blobs")
            try tar.addFile("blobs/" + String(repeating: "x", count: 140), bytes: [1, 2, 3])
        }
        defer { unlink(path) }
        #expect(bytes.count % 512 == 0)
        let listing = Process()
        listing.executableURL = URL(fileURLWithPath: "/bin/tar")
        listing.arguments = ["-tvf", path]
        let pipe = Pipe()
        listing.standardOutput = pipe
        try listing.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        listing.waitUntilExit()
        #expect(listing.terminationStatus == 0)
        #expect(output.contains("oci-layout"))
        #expect(output.contains("blobs/" + String(repeating: "x", count: 140)), "long names use pax headers")
        #expect(output.contains("root/root") || output.contains("0/0"))
        #expect(output.contains("2023-11-14"))
    }

    @Test func sameEntriesGiveIdenticalBytes() throws {
        let entries: (TarWriter) throws -> Void = { tar in
            try tar.addFile("a", bytes: Array("alpha".utf8))
            try tar.addFile("b", bytes: [UInt8](repeating: 9, count: 5000))
        }
        let first = try write(entries)
        let second = try write(entries)
        defer {
            unlink(first.path)
            unlink(second.path)
        }
        #expect(first.bytes == second.bytes)
    }

    @Test func copiesFromADescriptorAndObservesEveryByte() throws {
        let source = NSTemporaryDirectory() + "ferry-src-\(UUID().uuidString)"
        let content = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0) })
        try content.write(to: URL(fileURLWithPath: source))
        defer { unlink(source) }
        var observed = 0
        let fd = open(source, O_RDONLY)
        defer { close(fd) }
        let (path, _) = try write { tar in
            try tar.addFile("big", size: Int64(content.count), from: fd) { observed += $0.count }
        }
        defer { unlink(path) }
        #expect(observed == content.count)
        let fdShort = open(source, O_RDONLY)
        defer { close(fdShort) }
        #expect(throws: TarError.self) {
            _ = try write { tar in try tar.addFile("big", size: Int64(content.count) + 1, from: fdShort) }
        }
    }
}

struct GzipTests {
    @Test func roundTripsAndRefusesWhatIsNotGzip() throws {
        let text = Array(String(repeating: "{\"digest\":\"sha256:0123456789abcdef\",\"size\":42},", count: 5000).utf8)
        let packed = try Gzip.compress(text)
        #expect(Gzip.isCompressed(packed))
        #expect(packed.count < text.count / 5)
        #expect(try Gzip.decompress(packed, limit: text.count) == text)
        #expect(throws: TarError.self) { try Gzip.decompress(packed, limit: text.count - 1) }
        #expect(throws: TarError.self) { try Gzip.decompress(Array("not gzip".utf8), limit: 100) }
    }
}
