import Foundation
import OCIBundle
import OCICore
import Testing

/// The reader against bundles written by ``BundleWriter`` from synthetic content.
struct BundleReaderTests {
    /// A bundle of one image (manifest, config, layer) written to a temporary directory.
    struct Fixture {
        let directory: String
        let bundle: String
        let layer: Digest

        init(signingKey: SigningKey? = nil) throws {
            directory = NSTemporaryDirectory() + "ferry-reader-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            var blobs: [Digest: [UInt8]] = [:]
            func add(_ bytes: [UInt8], _ mediaType: String) -> Descriptor {
                let digest = Digest.of(bytes)
                blobs[digest] = bytes
                return Descriptor(mediaType: mediaType, digest: digest, size: Int64(bytes.count))
            }
            let layerBytes = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let layer = add(layerBytes, MediaType.ociLayer)
            let config = add(Array(#"{"architecture":"amd64","os":"linux"}"#.utf8), MediaType.ociConfig)
            let manifestBytes = Array(
                try JSONEncoder().encode(
                    ImageManifest(mediaType: MediaType.ociManifest, config: config, layers: [layer])))
            let manifest = add(manifestBytes, MediaType.ociManifest)
            let reference = try Reference("registry.local:5000/team/app:1.0")
            let index = try BundleWriter.makeIndex([.init(reference: reference, descriptor: manifest)])
            let bundleManifest = BundleManifest(
                tool: .init(name: "ferry", version: "test"), created: BundleManifest.timestamp(0), partial: nil,
                index: .init(digest: Digest.of(index), size: Int64(index.count)),
                images: [
                    .init(
                        reference: "registry.local:5000/team/app:1.0", digest: manifest.digest,
                        mediaType: MediaType.ociManifest, platforms: ["linux/amd64"], size: 0)
                ],
                blobs: [manifest, config, layer].map {
                    .init(digest: $0.digest, size: $0.size, mediaType: $0.mediaType)
                })
            for (digest, bytes) in blobs {
                try Data(bytes).write(to: URL(fileURLWithPath: "\(directory)/\(digest.encoded)"))
            }
            bundle = "\(directory)/bundle.tar"
            let signature = try signingKey.map {
                try BundleSignature.sign(manifest: try bundleManifest.encoded(), with: $0)
            }
            try BundleWriter().write(
                to: bundle, manifest: bundleManifest, index: index, modificationTime: 0, signature: signature,
                blobs: { [directory] in "\(directory)/\($0.encoded)" })
            self.layer = layer.digest
        }

        func verify(_ reader: BundleReader = BundleReader(), sink: (any BundleBlobSink)? = nil) -> VerificationReport {
            let fd = open(bundle, O_RDONLY)
            defer { close(fd) }
            return reader.verify(fileDescriptor: fd, name: bundle, sink: sink)
        }

        func remove() { try? FileManager.default.removeItem(atPath: directory) }
    }

    final class RecordingSink: BundleBlobSink {
        var committed: [Digest] = []
        var aborted: [Digest] = []
        var bytes = 0
        var current: Digest?
        func begin(_ blob: BundleManifest.Blob) throws { current = blob.digest }
        func write(_ bytes: UnsafeRawBufferPointer) throws { self.bytes += bytes.count }
        func commit() throws { current.map { committed.append($0) } }
        func abort() { current.map { aborted.append($0) } }
    }

    @Test func goodBundleVerifiesAndEveryBlobReachesTheSink() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let sink = RecordingSink()
        let report = fixture.verify(sink: sink)
        #expect(report.ok, "\(report.problems)")
        #expect(report.blobCount == 3)
        #expect(sink.committed.count == 3)
        #expect(sink.aborted.isEmpty)
        #expect(Int64(sink.bytes) == report.blobBytes)
        #expect(report.unreferencedBlobs.isEmpty)
    }

    @Test func corruptBlobIsAbortedNotCommitted() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        // Flip a byte in the middle of the layer's data (the largest entry, near the end).
        let handle = try FileHandle(forUpdating: URL(fileURLWithPath: fixture.bundle))
        let size = try handle.seekToEnd()
        try handle.seek(toOffset: size - 1024 - 150_000)
        let byte = try handle.read(upToCount: 1) ?? Data([0])
        try handle.seek(toOffset: size - 1024 - 150_000)
        handle.write(Data([byte[0] ^ 0x40]))
        try handle.close()
        let sink = RecordingSink()
        let report = fixture.verify(sink: sink)
        #expect(!report.ok)
        #expect(sink.aborted == [fixture.layer])
        #expect(!sink.committed.contains(fixture.layer))
        #expect(report.problems.first?.image == "registry.local:5000/team/app:1.0")
    }

    @Test func signedBundleNeedsTheTrustedKey() throws {
        let key = try SigningKey.generate()
        let fixture = try Fixture(signingKey: key)
        defer { fixture.remove() }
        let trusted = fixture.verify(BundleReader(trustedKeys: [key.publicKey]))
        #expect(trusted.ok)
        #expect(trusted.trusted == true)
        let other = fixture.verify(BundleReader(trustedKeys: [try SigningKey.generate().publicKey]))
        #expect(!other.ok)
        #expect(other.problems.map(\.kind) == [.signature])
    }

    @Test func untrustedBundleGivesTheSinkNothing() throws {
        let fixture = try Fixture()
        defer { fixture.remove() }
        let sink = RecordingSink()
        let report = fixture.verify(BundleReader(trustedKeys: [try SigningKey.generate().publicKey]), sink: sink)
        #expect(!report.ok)
        #expect(report.problems.map(\.message) == ["bundle is not signed"])
        #expect(sink.committed.isEmpty && sink.bytes == 0)
    }

    @Test func aSignatureCannotClaimAnotherKeyID() throws {
        let key = try SigningKey.generate()
        let victim = try SigningKey.generate()
        var forged = try BundleSignature.sign(manifest: [1, 2, 3], with: key)
        forged.keyID = victim.publicKey.keyID
        // Rewrite a signed bundle's signature entry with the forged one via a re-sign of a copy.
        let fixture = try Fixture(signingKey: key)
        defer { fixture.remove() }
        let original = try Data(contentsOf: URL(fileURLWithPath: fixture.bundle))
        let genuineID = Data(key.publicKey.keyID.utf8)
        let forgedID = Data(victim.publicKey.keyID.utf8)
        guard let range = original.range(of: genuineID) else {
            Issue.record("key ID not found in the bundle")
            return
        }
        var tampered = original
        tampered.replaceSubrange(range, with: forgedID)
        try tampered.write(to: URL(fileURLWithPath: fixture.bundle))
        let report = fixture.verify()
        #expect(!report.ok)
        #expect(report.problems.contains { $0.message.contains("key ID that is not its key's") })
    }

    @Test func keysRoundTripThroughPEM() throws {
        let key = try SigningKey.generate()
        let directory = NSTemporaryDirectory() + "ferry-keys-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try key.pem().write(toFile: "\(directory)/k.key", atomically: true, encoding: .utf8)
        try key.publicKey.pem.write(toFile: "\(directory)/k.pub", atomically: true, encoding: .utf8)
        let loaded = try SigningKey(pemFile: "\(directory)/k.key")
        #expect(loaded.publicKey == key.publicKey)
        #expect(try PublicKey.load(directory) == [key.publicKey])
        let message = Array("bundle manifest".utf8)
        let signature = try loaded.sign(message)
        #expect(key.publicKey.verify(signature: signature, of: message))
        #expect(!key.publicKey.verify(signature: signature, of: message + [0]))
        #expect(throws: (any Error).self) { try PublicKey(pemFile: "\(directory)/k.key") }
    }
}
