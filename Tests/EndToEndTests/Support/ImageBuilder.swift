import Foundation
import OCICore
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// Builds test images in an OCI image layout on disk (layers of random bytes, configs, manifests,
/// indexes) and pushes them to a registry with skopeo.
final class ImageBuilder {
    let layout: String
    private var tags: [(String, Descriptor)] = []

    init(directory: String) throws {
        layout = directory
        try FileManager.default.createDirectory(atPath: "\(layout)/blobs/sha256", withIntermediateDirectories: true)
        try #"{"imageLayoutVersion":"1.0.0"}"#.write(toFile: "\(layout)/oci-layout", atomically: true, encoding: .utf8)
        try writeIndex()
    }

    /// Stores `bytes` as a blob and returns its descriptor.
    @discardableResult
    func addBlob(_ bytes: [UInt8], mediaType: String) throws -> Descriptor {
        let digest = Digest.of(bytes)
        try Data(bytes).write(to: URL(fileURLWithPath: "\(layout)/\(digest.layoutPath)"))
        return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
    }

    /// A layer: an uncompressed tar holding one file of `size` random bytes.
    func addRandomLayer(size: Int) throws -> Descriptor {
        let content = "\(layout)/content.tmp"
        let tarPath = "\(layout)/layer.tmp"
        defer {
            unlink(content)
            unlink(tarPath)
        }
        _ = FileManager.default.createFile(atPath: content, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: content))
        let random = try FileHandle(forReadingFrom: URL(fileURLWithPath: "/dev/urandom"))
        defer { try? random.close() }
        var remaining = size
        while remaining > 0 {
            let chunk = try random.read(upToCount: min(remaining, 1 << 20)) ?? Data()
            handle.write(chunk)
            remaining -= chunk.count
        }
        try handle.close()
        let out = open(tarPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let input = open(content, O_RDONLY)
        defer {
            close(out)
            close(input)
        }
        let tar = try TarWriter(fileDescriptor: out, modificationTime: 0)
        try tar.addFile("data.bin", size: Int64(size), from: input)
        try tar.finish()
        // Hash and move into place.
        var hasher = DigestHasher(.sha256)
        let reader = open(tarPath, O_RDONLY)
        defer { close(reader) }
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        var total: Int64 = 0
        while true {
            let n = buffer.withUnsafeMutableBytes { read(reader, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            buffer.withUnsafeBytes { hasher.update(UnsafeRawBufferPointer(rebasing: $0[0..<n])) }
            total += Int64(n)
        }
        let digest = hasher.finalize()
        try FileManager.default.moveItem(atPath: tarPath, toPath: "\(layout)/\(digest.layoutPath)")
        return Descriptor(mediaType: MediaType.ociLayer, digest: digest, size: total)
    }

    /// An OCI image manifest for `platform` over `layers`.
    func addImage(platform: Platform, layers: [Descriptor], label: String = UUID().uuidString) throws -> Descriptor {
        let config: [String: Any] = [
            "architecture": platform.architecture, "os": platform.os,
            "rootfs": ["type": "layers", "diff_ids": layers.map { $0.digest.description }],
            "config": ["Labels": ["test": label]],
        ].merging(platform.variant.map { ["variant": $0] } ?? [:]) { a, _ in a }
        let configBytes = Array(try JSONSerialization.data(withJSONObject: config, options: [.sortedKeys]))
        let configDescriptor = try addBlob(configBytes, mediaType: MediaType.ociConfig)
        let manifest = ImageManifest(mediaType: MediaType.ociManifest, config: configDescriptor, layers: layers)
        var descriptor = try addBlob(Array(try JSONEncoder().encode(manifest)), mediaType: MediaType.ociManifest)
        descriptor.platform = platform
        return descriptor
    }

    func addIndex(_ manifests: [Descriptor]) throws -> Descriptor {
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: manifests)
        return try addBlob(Array(try JSONEncoder().encode(index)), mediaType: MediaType.ociIndex)
    }

    /// Names `descriptor` in the layout's index.json, so `oci:LAYOUT:name` finds it.
    func tag(_ descriptor: Descriptor, as name: String) throws {
        var d = descriptor
        d.platform = nil
        d.annotations = [AnnotationKey.refName: name]
        tags.removeAll { $0.0 == name }
        tags.append((name, d))
        try writeIndex()
    }

    private func writeIndex() throws {
        let index = ImageIndex(mediaType: MediaType.ociIndex, manifests: tags.map(\.1))
        try JSONEncoder().encode(index).write(to: URL(fileURLWithPath: "\(layout)/index.json"))
    }

    /// Pushes the layout entry `name` to `registry` as `repository:tag` with skopeo.
    func push(
        _ name: String, to registry: RegistryFixture, as target: String, dockerSchema2: Bool = false,
        credentials: String? = nil
    ) throws {
        var arguments = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests"]
        if dockerSchema2 { arguments = ["skopeo", "copy", "--quiet", "--format", "v2s2"] }
        arguments += registry.skopeoFlags("dest", credentials: credentials)
        arguments += ["oci:\(layout):\(name)", "docker://\(registry.host)/\(target)"]
        try Shell.run(arguments)
    }
}
