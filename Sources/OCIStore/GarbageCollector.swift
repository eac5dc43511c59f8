import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// What a garbage collection removed (or, in a dry run, would remove).
public struct GarbageReport: Codable, Sendable, Equatable {
    public var dryRun: Bool
    /// Blob files deleted from the store, and their bytes.
    public var blobsRemoved: [String] = []
    public var bytesRemoved: Int64 = 0
    /// Repository links to blobs no manifest of that repository references.
    public var linksRemoved = 0
    public var uploadsExpired = 0
    public var blobsKept = 0
}

extension RegistryStore {
    /// Removes blobs no manifest references, safe while the server runs and while an import or a
    /// push is under way:
    /// - it holds the state lock, so no manifest, tag or import becomes visible meanwhile (a push or
    ///   import that commits after it re-checks its blobs inside the lock);
    /// - a blob or link younger than `gracePeriod` seconds is kept: an import writes its blobs
    ///   before it commits, and a push uploads blobs before the manifest that references them;
    /// - a reader streaming a deleted blob keeps its open file to the end.
    /// Also drops uploads untouched for `uploadExpiry` seconds and stale ingest files.
    public func collectGarbage(dryRun: Bool, gracePeriod: Int = 3600, uploadExpiry: Int = 86400) throws
        -> GarbageReport
    {
        var report = GarbageReport(dryRun: dryRun)
        let cutoff = time(nil) - gracePeriod
        func isOld(_ digest: Digest) -> Bool {
            var info = stat()
            guard stat(blobs.path(of: digest), &info) == 0 else { return true }
            return info.st_mtim.tv_sec < cutoff
        }
        try commit { state in
            // Mark: every manifest of every repository and what it references.
            var marked = Set<Digest>()
            var linked = Set<Digest>()
            for (name, repository) in state.repositories {
                var referenced = Set<Digest>()
                for manifest in repository.manifests {
                    referenced.insert(manifest)
                    let bytes = try blobs.read(manifest, limit: ManifestDocument.maximumSize)
                    let document: ManifestDocument
                    do {
                        document = try ManifestDocument(bytes: bytes, algorithm: manifest.algorithm)
                    } catch {
                        throw StoreError.corrupt(path: blobs.path(of: manifest), "manifest in \(name): \(error)")
                    }
                    for child in document.children { referenced.insert(child.digest) }
                }
                marked.formUnion(referenced)
                // Unlink blobs this repository's manifests do not reference (once they are old enough).
                var kept = repository.blobs
                for digest in repository.blobs where !referenced.contains(digest) && isOld(digest) {
                    kept.remove(digest)
                    report.linksRemoved += 1
                }
                linked.formUnion(kept)
                if !dryRun { state.repositories[name]?.blobs = kept }
                if !dryRun && kept.isEmpty && repository.manifests.isEmpty { state.repositories[name] = nil }
            }
            // Sweep: blob files neither marked nor linked, and old enough.
            for algorithm in DigestAlgorithm.allCases {
                let directory = "\(blobs.root)/blobs/\(algorithm.rawValue)"
                for name in FileSystem.list(directory) {
                    guard let digest = try? Digest(algorithm: algorithm, encoded: name) else { continue }
                    if marked.contains(digest) || linked.contains(digest) || !isOld(digest) {
                        report.blobsKept += 1
                        continue
                    }
                    report.blobsRemoved.append(digest.description)
                    report.bytesRemoved += FileSystem.size(of: "\(directory)/\(name)") ?? 0
                    if !dryRun { unlink("\(directory)/\(name)") }
                }
            }
        }
        if !dryRun {
            report.uploadsExpired = uploads.expire(olderThan: uploadExpiry)
            blobs.removeStaleIngests(olderThan: gracePeriod)
        }
        report.blobsRemoved.sort()
        return report
    }
}
