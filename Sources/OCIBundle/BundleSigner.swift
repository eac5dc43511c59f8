import Foundation
import OCICore
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// Signs an existing bundle: verifies it, then rewrites the tar with `ferry-bundle.sig` after the
/// bundle manifest (replacing any earlier signature). Blobs, `index.json` and the manifest keep
/// their bytes; the new tar replaces the old one atomically, with a new `.sha256` beside it.
public enum BundleSigner {
    public static func sign(bundle path: String, with key: SigningKey) throws -> (
        signature: BundleSignature, tar: Digest
    ) {
        let check = open(path, O_RDONLY | O_CLOEXEC)
        guard check >= 0 else { throw BundleError.io("open \(path)", errno: errno) }
        let report = BundleReader(requireSignature: false).verify(fileDescriptor: check, name: path)
        close(check)
        guard report.ok else { throw BundleError.invalid(report.problems) }

        let source = open(path, O_RDONLY | O_CLOEXEC)
        guard source >= 0 else { throw BundleError.io("open \(path)", errno: errno) }
        defer { close(source) }
        guard let verified = report.manifest else { throw BundleError.invalid([]) }
        let listed = Dictionary(verified.blobs.map { ($0.digest, $0) }, uniquingKeysWith: { a, _ in a })
        let file = try PartialBundleFile(for: path)
        let reader = try TarReader(fileDescriptor: source)
        var writer: TarWriter?
        var signature: BundleSignature?
        while let entry = try reader.next() {
            let tar = try writer ?? file.makeTarWriter(modificationTime: entry.modificationTime)
            writer = tar
            if entry.path == BundleSignature.fileName { continue }
            if entry.type == .directory {
                try tar.addDirectory(entry.path)
                continue
            }
            if entry.path == BundleManifest.fileName {
                let bytes = try reader.readAll(limit: BundleReader.manifestLimit)
                // The file may have changed since it was verified: sign only what was verified.
                guard (try? JSONDecoder().decode(BundleManifest.self, from: Data(bytes))) == verified else {
                    throw BundleError.changedWhileSigning(path)
                }
                try tar.addFile(entry.path, bytes: bytes)
                let signed = try BundleSignature.sign(manifest: bytes, with: key)
                try tar.addFile(BundleSignature.fileName, bytes: try signed.encoded())
                signature = signed
                continue
            }
            try tar.beginFile(entry.path, size: entry.size)
            // Blobs are checked again as they are copied, for the same reason.
            let parts = entry.path.split(separator: "/")
            let blob =
                parts.count == 3
                ? DigestAlgorithm(rawValue: String(parts[1])).flatMap {
                    try? Digest(algorithm: $0, encoded: String(parts[2]))
                }.flatMap { listed[$0] } : nil
            var verifier = blob.map { BlobVerifier(digest: $0.digest, size: $0.size) }
            while let block = try reader.nextBlock() {
                try verifier?.update(block)
                try tar.writeData(block)
            }
            do {
                try verifier?.finish()
            } catch {
                throw BundleError.changedWhileSigning(path)
            }
        }
        guard let tar = writer, let signature else { throw BundleError.invalid([]) }
        try tar.finish()
        return (signature, try file.publish())
    }
}
