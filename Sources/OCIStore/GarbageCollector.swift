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
    /// How many links or files one write transaction of the sweep handles: writers wait at most
    /// that long for the lock, never for a whole collection.
    static let sweepBatch = 256

    /// Removes blobs nothing references, safe while the server runs and while imports and pushes
    /// are under way, in other processes too:
    /// - the sweep works in short write transactions that re-check each blob's references before
    ///   unlinking its file, and every commit that links a blob (upload, mount, manifest, import)
    ///   checks inside its own transaction that the file is still there;
    /// - a blob whose file is younger than `gracePeriod` seconds is kept: an import writes its
    ///   blobs before it commits, and a push uploads blobs before the manifest that references them;
    /// - a reader streaming a deleted blob keeps its open file to the end.
    /// Manifests are never read: what they reference is in the database. A missing file is
    /// skipped, never an error. Also drops uploads untouched for `uploadExpiry` seconds and
    /// stale ingest files.
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
        // Walks the link's repository's manifests (CROSS JOIN keeps that order): a layer shared by
        // every image of the store must not be looked up through all its referencing manifests.
        let unreferencedLink = """
            NOT EXISTS (SELECT 1 FROM manifests m CROSS JOIN manifest_children c
            WHERE m.repository = l.repository AND c.manifest = m.digest AND c.child = l.digest)
            """
        // 1. Links no manifest of their repository references, once their blob is old enough.
        var doomed: [(repository: Int64, digest: Digest)] = []
        try pool.withConnection { db in
            try db.query("SELECT l.repository, l.digest FROM blob_links l WHERE \(unreferencedLink)") { row in
                if let digest = try? Digest(row.text(1) ?? ""), isOld(digest) {
                    doomed.append((row.integer(0), digest))
                }
            }
        }
        var doomedLinks: [Digest: Int] = [:]
        for link in doomed { doomedLinks[link.digest, default: 0] += 1 }
        if dryRun {
            report.linksRemoved = doomed.count
        } else {
            for batch in stride(from: 0, to: doomed.count, by: Self.sweepBatch) {
                try pool.withConnection { db in
                    try db.writing {
                        for link in doomed[batch..<min(batch + Self.sweepBatch, doomed.count)] {
                            report.linksRemoved += try db.run(
                                "DELETE FROM blob_links AS l WHERE l.repository = ? AND l.digest = ? AND \(unreferencedLink)",
                                [.integer(link.repository), .text(link.digest.description)])
                        }
                    }
                }
            }
            doomedLinks = [:]
        }
        // 2. Blob files nothing references (no link, no manifest row, no child of a held manifest,
        // not held by a volume set still being imported).
        let held = try volumeSetHolds()
        func referenced(_ digest: Digest, _ db: SQLiteConnection) throws -> Bool {
            if held.contains(digest) { return true }
            let text = SQLiteValue.text(digest.description)
            if try db.exists("SELECT 1 FROM manifests WHERE digest = ?", [text]) { return true }
            if try db.exists(
                """
                SELECT 1 FROM manifest_children c WHERE c.child = ?
                AND EXISTS (SELECT 1 FROM manifests m WHERE m.digest = c.manifest)
                """, [text])
            {
                return true
            }
            let links = try db.scalarInteger("SELECT count(*) FROM blob_links WHERE digest = ?", [text]) ?? 0
            return links > doomedLinks[digest, default: 0]
        }
        for algorithm in DigestAlgorithm.allCases {
            let directory = "\(blobs.root)/blobs/\(algorithm.rawValue)"
            let candidates = FileSystem.list(directory).compactMap { try? Digest(algorithm: algorithm, encoded: $0) }
            for batch in stride(from: 0, to: candidates.count, by: Self.sweepBatch) {
                try pool.withConnection { db in
                    let sweep = {
                        for digest in candidates[batch..<min(batch + Self.sweepBatch, candidates.count)] {
                            let keep = try !isOld(digest) || referenced(digest, db)
                            if keep {
                                report.blobsKept += 1
                                continue
                            }
                            let path = self.blobs.path(of: digest)
                            guard let size = FileSystem.size(of: path) else { continue }
                            report.blobsRemoved.append(digest.description)
                            report.bytesRemoved += size
                            if !dryRun { unlink(path) }
                        }
                    }
                    if dryRun { try db.reading(sweep) } else { try db.writing(sweep) }
                }
            }
        }
        if !dryRun {
            try pool.withConnection { db in
                try db.writing {
                    try db.run(
                        """
                        DELETE FROM repositories AS r
                        WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE repository = r.id)
                        AND NOT EXISTS (SELECT 1 FROM blob_links WHERE repository = r.id)
                        AND NOT EXISTS (SELECT 1 FROM tags WHERE repository = r.id)
                        """)
                    try db.run(
                        """
                        DELETE FROM manifest_children AS c
                        WHERE NOT EXISTS (SELECT 1 FROM manifests WHERE digest = c.manifest)
                        """)
                }
            }
            report.uploadsExpired = uploads.expire(olderThan: uploadExpiry)
            blobs.removeStaleIngests(olderThan: gracePeriod)
        }
        report.blobsRemoved.sort()
        return report
    }
}
