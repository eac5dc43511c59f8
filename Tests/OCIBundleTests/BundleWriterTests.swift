import Foundation
import OCIBundle
import OCICore
import Testing

struct BundleWriterTests {
    @Test func indexNamesEveryImageForSkopeoAndContainerd() throws {
        let digest = Digest.of(Array("m".utf8))
        let entries = [
            BundleWriter.Entry(
                reference: try Reference("nginx:1.25@" + digest.description),
                descriptor: Descriptor(mediaType: MediaType.ociIndex, digest: digest, size: 1)),
            BundleWriter.Entry(
                reference: try Reference("quay.io/a/b@" + digest.description),
                descriptor: Descriptor(mediaType: MediaType.dockerManifest, digest: digest, size: 1)),
        ]
        let index = try JSONDecoder().decode(ImageIndex.self, from: Data(try BundleWriter.makeIndex(entries)))
        #expect(index.manifests.count == 2)
        #expect(index.manifests[0].annotations?[AnnotationKey.refName] == "docker.io/library/nginx:1.25")
        #expect(index.manifests[0].annotations?[AnnotationKey.containerdImageName] == "docker.io/library/nginx:1.25")
        #expect(index.manifests[1].annotations?[AnnotationKey.refName] == "quay.io/a/b@" + digest.description)
        #expect(index.manifests[1].mediaType == MediaType.dockerManifest)
    }

    @Test func writesAtomicallyAndDeterministically() throws {
        let dir = NSTemporaryDirectory() + "ferry-bundle-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let blob = Array("blob bytes".utf8)
        let digest = Digest.of(blob)
        try Data(blob).write(to: URL(fileURLWithPath: "\(dir)/\(digest.encoded)"))
        let index = Array(#"{"schemaVersion":2,"manifests":[]}"#.utf8)
        let manifest = BundleManifest(
            tool: .init(name: "ferry", version: "test"), created: BundleManifest.timestamp(0), partial: nil,
            index: .init(digest: Digest.of(index), size: Int64(index.count)), images: [],
            blobs: [.init(digest: digest, size: Int64(blob.count), mediaType: nil)])
        for name in ["a.tar", "b.tar"] {
            try BundleWriter().write(
                to: "\(dir)/\(name)", manifest: manifest, index: index, modificationTime: 0,
                blobs: { "\(dir)/\($0.encoded)" })
        }
        #expect(
            try Data(contentsOf: URL(fileURLWithPath: "\(dir)/a.tar"))
                == Data(contentsOf: URL(fileURLWithPath: "\(dir)/b.tar")))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".partial") }.isEmpty)
        #expect(FileManager.default.fileExists(atPath: "\(dir)/a.tar.sha256"))

        // A cached blob that no longer matches its digest fails the write and leaves nothing.
        try Data("blob bytez".utf8).write(to: URL(fileURLWithPath: "\(dir)/\(digest.encoded)"))
        #expect(throws: BundleError.self) {
            try BundleWriter().write(
                to: "\(dir)/c.tar", manifest: manifest, index: index, modificationTime: 0,
                blobs: { "\(dir)/\($0.encoded)" })
        }
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/c.tar"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(".partial") }.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(dir)/c.tar.sha256"))
    }
}
