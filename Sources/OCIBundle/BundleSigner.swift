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
        let partialPath = path + ".partial"
        let fd = open(partialPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw BundleError.io("create \(partialPath)", errno: errno) }
        var closed = false
        var succeeded = false
        defer {
            if !closed { close(fd) }
            if !succeeded { unlink(partialPath) }
        }
        let reader = try TarReader(fileDescriptor: source)
        var hasher = DigestHasher(.sha256)
        var writer: TarWriter?
        var signature: BundleSignature?
        while let entry = try reader.next() {
            let tar =
                try writer
                ?? TarWriter(fileDescriptor: fd, modificationTime: entry.modificationTime) { hasher.update($0) }
            writer = tar
            if entry.path == BundleSignature.fileName { continue }
            if entry.type == .directory {
                try tar.addDirectory(entry.path)
                continue
            }
            if entry.path == BundleManifest.fileName {
                let bytes = try reader.readAll(limit: BundleReader.documentLimit)
                try tar.addFile(entry.path, bytes: bytes)
                let signed = try BundleSignature.sign(manifest: bytes, with: key)
                try tar.addFile(BundleSignature.fileName, bytes: try signed.encoded())
                signature = signed
                continue
            }
            try tar.beginFile(entry.path, size: entry.size)
            while let block = try reader.nextBlock() { try tar.writeData(block) }
        }
        guard let tar = writer, let signature else { throw BundleError.invalid([]) }
        try tar.finish()
        guard fsync(fd) == 0 else { throw BundleError.io("fsync \(partialPath)", errno: errno) }
        close(fd)
        closed = true
        guard rename(partialPath, path) == 0 else { throw BundleError.io("rename to \(path)", errno: errno) }
        succeeded = true
        let digest = hasher.finalize()
        try BundleWriter.writeChecksumFile(for: path, digest: digest)
        BundleWriter.syncDirectory(of: path)
        return (signature, digest)
    }
}
