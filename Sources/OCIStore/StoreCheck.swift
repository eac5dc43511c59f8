import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// What `ferry-appliance check` found: every stored blob re-hashed, every visible manifest's
/// references looked up.
public struct CheckReport: Codable, Sendable, Equatable {
    public struct Problem: Codable, Sendable, Equatable, CustomStringConvertible {
        public enum Kind: String, Codable, Sendable {
            /// A blob file whose bytes do not hash to its name.
            case corruptBlob
            /// A manifest, or a blob a manifest references, the store holds no file for.
            case missingContent
            /// An image manifest references a blob its repository does not link.
            case unlinkedBlob
            /// A tag points at a manifest its repository does not hold.
            case danglingTag
        }
        public var kind: Kind
        public var digest: String
        public var repository: String?
        public var detail: String

        public var description: String {
            "\(kind.rawValue): \(repository.map { "\($0)@" } ?? "")\(digest): \(detail)"
        }
    }

    public var blobsChecked = 0
    public var bytesChecked: Int64 = 0
    public var manifestsChecked = 0
    public var problems: [Problem] = []
    /// With repair: corrupt blob files removed, and the images (`repository:tag`) that need a re-import.
    public var removed: [String] = []
    public var needReimport: [String] = []
}

extension RegistryStore {
    /// Re-hashes every blob file and checks every visible manifest's references (like zot's scrub).
    /// `repair` removes corrupt blob files and lists the images that now need a re-import.
    public func check(repair: Bool) throws -> CheckReport {
        var report = CheckReport()
        var corrupt: [Digest] = []
        for algorithm in DigestAlgorithm.allCases {
            let directory = "\(blobs.root)/blobs/\(algorithm.rawValue)"
            for name in FileSystem.list(directory) {
                guard let digest = try? Digest(algorithm: algorithm, encoded: name) else { continue }
                let path = blobs.path(of: digest)
                let found: Digest
                do {
                    found = try BlobStore.hash(file: path, algorithm: algorithm)
                } catch {
                    continue  // removed meanwhile (gc)
                }
                report.blobsChecked += 1
                report.bytesChecked += FileSystem.size(of: path) ?? 0
                if found != digest {
                    corrupt.append(digest)
                    report.problems.append(
                        .init(kind: .corruptBlob, digest: digest.description, detail: "its bytes hash to \(found)"))
                }
            }
        }
        try pool.withConnection { db in
            try db.reading {
                try db.query(
                    """
                    SELECT r.name, m.digest, m.media_type FROM manifests m JOIN repositories r ON r.id = m.repository
                    ORDER BY r.name, m.digest
                    """
                ) { row in
                    report.manifestsChecked += 1
                    guard let name = row.text(0), let digest = try? Digest(row.text(1) ?? "") else { return }
                    if FileSystem.size(of: blobs.path(of: digest)) == nil {
                        report.problems.append(
                            .init(
                                kind: .missingContent, digest: digest.description, repository: name,
                                detail: "the manifest's file is missing"))
                    }
                }
                // Image manifests: every config and layer linked and present (index children may be
                // absent on purpose: a partial bundle carries only some platforms).
                try db.query(
                    """
                    SELECT r.name, m.digest, c.child,
                        EXISTS (SELECT 1 FROM blob_links l WHERE l.repository = m.repository AND l.digest = c.child)
                    FROM manifests m JOIN repositories r ON r.id = m.repository
                    JOIN manifest_children c ON c.manifest = m.digest
                    WHERE m.media_type NOT IN (?, ?) ORDER BY r.name, m.digest, c.child
                    """, [.text(MediaType.ociIndex), .text(MediaType.dockerManifestList)]
                ) { row in
                    guard let name = row.text(0), let child = try? Digest(row.text(2) ?? "") else { return }
                    let manifest = row.text(1) ?? ""
                    if row.integer(3) == 0 {
                        report.problems.append(
                            .init(
                                kind: .unlinkedBlob, digest: child.description, repository: name,
                                detail: "referenced by \(manifest) but not linked to the repository"))
                    } else if FileSystem.size(of: blobs.path(of: child)) == nil {
                        report.problems.append(
                            .init(
                                kind: .missingContent, digest: child.description, repository: name,
                                detail: "referenced by \(manifest); its file is missing"))
                    }
                }
                try db.query(
                    """
                    SELECT r.name, t.name, t.digest FROM tags t JOIN repositories r ON r.id = t.repository
                    WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.repository = t.repository AND m.digest = t.digest)
                    """
                ) { row in
                    report.problems.append(
                        .init(
                            kind: .danglingTag, digest: row.text(2) ?? "", repository: row.text(0),
                            detail: "tag \(row.text(1) ?? "") points at a manifest the repository does not hold"))
                }
            }
        }
        if repair && !corrupt.isEmpty {
            var images: Set<String> = []
            try pool.withConnection { db in
                for digest in corrupt {
                    unlink(blobs.path(of: digest))
                    report.removed.append(digest.description)
                    // The tags whose image reaches it: directly, through a manifest, or through an index.
                    try db.query(
                        """
                        WITH RECURSIVE holders(digest) AS (
                            SELECT ?1 UNION SELECT c.manifest FROM manifest_children c JOIN holders h ON c.child = h.digest)
                        SELECT r.name, t.name FROM tags t JOIN repositories r ON r.id = t.repository
                        WHERE t.digest IN (SELECT digest FROM holders)
                        """, [.text(digest.description)]
                    ) { row in images.insert("\(row.text(0) ?? ""):\(row.text(1) ?? "")") }
                }
            }
            report.needReimport = images.sorted()
        }
        return report
    }
}
