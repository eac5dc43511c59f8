import Foundation
import OCIBundle
import OCICore
import Testing

/// `BundleManifest.decode` reads the blob list a slice at a time; it must read exactly what a
/// whole-document decoder reads, and refuse what it would hide.
struct BundleManifestDecodeTests {
    func manifest(blobs count: Int) -> BundleManifest {
        let oddType = "odd \"type\" [,]"
        var blobs: [BundleManifest.Blob] = []
        for n in 0..<count {
            let type: String? = n % 3 == 0 ? nil : n % 3 == 1 ? MediaType.ociLayer : oddType
            blobs.append(.init(digest: Digest.of(Array("\(n)".utf8)), size: Int64(n), mediaType: type))
        }
        let image = BundleManifest.Image(
            reference: "r.local/a:1", digest: Digest.of([2]), mediaType: MediaType.ociIndex,
            platforms: ["linux/amd64"], size: 3)
        return BundleManifest(
            tool: .init(name: "ferry", version: "t ] , [ \" }"), created: BundleManifest.timestamp(0),
            partial: .init(platforms: ["linux/amd64"]), index: .init(digest: Digest.of([1]), size: 1),
            images: [image], blobs: blobs)
    }

    @Test(arguments: [0, 1, 2, 4095, 4096, 4097, 10_000])
    func slicedDecodeEqualsWholeDecode(count: Int) throws {
        let original = manifest(blobs: count)
        let bytes = try original.encoded()
        #expect(try BundleManifest.decode(bytes, sliceSize: 4096) == original)
        #expect(try BundleManifest.decode(bytes, sliceSize: 1) == original)
        #expect(try JSONDecoder().decode(BundleManifest.self, from: Data(bytes)) == original)
    }

    @Test func aSecondBlobListAndABrokenEntryAreRefused() throws {
        let bytes = try manifest(blobs: 3).encoded()
        let text = String(decoding: bytes, as: UTF8.self)
        let twice = text.replacingOccurrences(of: "\"created\"", with: "\"blobs\" : [],\n  \"created\"")
        #expect(throws: (any Error).self) { try BundleManifest.decode(Array(twice.utf8)) }
        let broken = text.replacingOccurrences(of: "\"size\" : 1\n", with: "\"size\" : \"one\"\n")
        #expect(broken != text)
        #expect(throws: (any Error).self) { try BundleManifest.decode(Array(broken.utf8)) }
    }
}
