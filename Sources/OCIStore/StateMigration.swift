import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// Moves the metadata of an earlier release (`state.json`: repositories with their tags,
/// manifests and blob links, rewritten whole on every change) into the database, once, in one
/// transaction; the file is then kept as `state.json.migrated`.
enum StateMigration {
    struct LegacyRepository: Decodable {
        var tags: [String: Digest] = [:]
        var manifests: Set<Digest> = []
        var blobs: Set<Digest> = []
    }

    struct LegacyState: Decodable {
        var repositories: [String: LegacyRepository] = [:]
    }

    static func migrate(_ path: String, into store: RegistryStore) throws {
        let bytes = try FileSystem.readSmallFile(path, limit: 1 << 30)
        let state: LegacyState
        do {
            state = try JSONDecoder().decode(LegacyState.self, from: Data(bytes))
        } catch {
            throw StoreError.corrupt(path: path, "cannot migrate it: \(error)")
        }
        try store.pool.withConnection { db in
            try db.writing {
                for (name, legacy) in state.repositories.sorted(by: { $0.key < $1.key }) {
                    let repository: RepositoryName
                    do {
                        repository = try RepositoryName(name)
                    } catch {
                        throw StoreError.corrupt(path: path, "repository \(name): \(error)")
                    }
                    let id = try RegistryStore.repositoryID(db, repository)
                    for digest in legacy.blobs.sorted() {
                        try db.run(
                            "INSERT OR IGNORE INTO blob_links(repository, digest) VALUES (?, ?)",
                            [.integer(id), .text(digest.description)])
                    }
                    // What was visible stays visible as it was: the rows are copied, not re-checked.
                    for digest in legacy.manifests.sorted() {
                        let document: ManifestDocument
                        do {
                            let bytes = try store.blobs.read(digest, limit: ManifestDocument.maximumSize)
                            document = try ManifestDocument(bytes: bytes, algorithm: digest.algorithm)
                        } catch {
                            throw StoreError.corrupt(path: path, "manifest \(digest) of \(name): \(error)")
                        }
                        try RegistryStore.add(document, repository: id, db)
                    }
                    for (tag, digest) in legacy.tags.sorted(by: { $0.key < $1.key }) {
                        guard let tag = try? Tag(tag) else { continue }
                        try RegistryStore.setTag(tag, to: digest, repository: id, db)
                    }
                }
            }
        }
        // Another process may have migrated it at the same time (the inserts above are idempotent).
        if rename(path, "\(path).migrated") != 0 && errno != ENOENT {
            throw StoreError.io("rename \(path)", errno: errno)
        }
        FileSystem.syncDirectory((path as NSString).deletingLastPathComponent)
    }
}
