import Foundation
import OCIBundle
import OCICore
import OCITar

/// Writes a bundle of many small images straight to a tar (no blob files on disk): `images`
/// images, each an index of `manifestsPerImage` image manifests. Every manifest shares one config
/// and has a layer of its own that the bundle manifest lists but the tar does not carry, so the
/// bundle has `images × manifestsPerImage` missing blobs.
enum LargeBundle {
    static func write(to path: String, images: Int, manifestsPerImage: Int) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Shell.Failure(command: "open \(path)", status: errno, output: "") }
        defer { close(fd) }
        let config = Array(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#.utf8)
        let configDigest = Digest.of(config)
        var listed: [BundleManifest.Blob] = [
            .init(digest: configDigest, size: Int64(config.count), mediaType: MediaType.ociConfig)
        ]
        var carried: [(Digest, [UInt8])] = [(configDigest, config)]
        var entries: [BundleWriter.Entry] = []
        var bundleImages: [BundleManifest.Image] = []
        for image in 0..<images {
            var children: [String] = []
            for number in 0..<manifestsPerImage {
                // A layer of its own: listed, never carried.
                let layer = Digest.of(Array("layer \(image) \(number)".utf8))
                listed.append(.init(digest: layer, size: 1024, mediaType: MediaType.ociLayer))
                let manifest = Array(
                    """
                    {"schemaVersion":2,"mediaType":"\(MediaType.ociManifest)",\
                    "config":{"mediaType":"\(MediaType.ociConfig)","digest":"\(configDigest)","size":\(config.count)},\
                    "layers":[{"mediaType":"\(MediaType.ociLayer)","digest":"\(layer)","size":1024}]}
                    """.utf8)
                let digest = Digest.of(manifest)
                listed.append(.init(digest: digest, size: Int64(manifest.count), mediaType: MediaType.ociManifest))
                carried.append((digest, manifest))
                children.append(
                    #"{"mediaType":"\#(MediaType.ociManifest)","digest":"\#(digest)","size":\#(manifest.count),"#
                        + #""platform":{"architecture":"amd64","os":"linux","variant":"v\#(number)"}}"#)
            }
            let index = Array(
                #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociIndex)","manifests":[\#(children.joined(separator: ","))]}"#
                    .utf8)
            let digest = Digest.of(index)
            listed.append(.init(digest: digest, size: Int64(index.count), mediaType: MediaType.ociIndex))
            carried.append((digest, index))
            let reference = try Reference("registry.local:5000/scale/r\(image):1")
            entries.append(
                .init(
                    reference: reference,
                    descriptor: Descriptor(mediaType: MediaType.ociIndex, digest: digest, size: Int64(index.count))))
            bundleImages.append(
                .init(
                    reference: "registry.local:5000/scale/r\(image):1", digest: digest, mediaType: MediaType.ociIndex,
                    platforms: ["linux/amd64"], size: 0))
        }
        let index = try BundleWriter.makeIndex(entries)
        let manifest = BundleManifest(
            tool: .init(name: "ferry", version: "test"), created: BundleManifest.timestamp(0), partial: nil,
            index: .init(digest: Digest.of(index), size: Int64(index.count)), images: bundleImages, blobs: listed)
        let tar = try TarWriter(fileDescriptor: fd, modificationTime: 0)
        try tar.addFile("oci-layout", bytes: Array(#"{"imageLayoutVersion":"1.0.0"}"#.utf8))
        try tar.addFile(BundleManifest.fileName, bytes: try manifest.encoded())
        try tar.addFile("index.json", bytes: index)
        try tar.addDirectory("blobs")
        try tar.addDirectory("blobs/sha256")
        for (digest, bytes) in carried { try tar.addFile(digest.layoutPath, bytes: bytes) }
        try tar.finish()
    }
}
