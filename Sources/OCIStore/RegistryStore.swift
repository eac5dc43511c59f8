import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// What one repository serves: tags, the manifests it holds and the blobs those reference (a blob
/// is served only from a repository whose manifests reference it, as the distribution registry does).
public struct RepositoryState: Codable, Sendable, Hashable {
    public var tags: [String: Digest] = [:]
    public var manifests: Set<Digest> = []
    public var blobs: Set<Digest> = []
    public init() {}
}

/// Everything clients can see, as one document replaced atomically.
public struct RegistryState: Codable, Sendable, Hashable {
    public var generation = 0
    public var repositories: [String: RepositoryState] = [:]
    public init() {}
}

/// The appliance's registry storage: a durable ``BlobStore`` under `ROOT/blobs`, and what is
/// visible to clients in `ROOT/state.json`.
///
/// Content is written first (blobs, manifests: invisible until referenced); visibility changes
/// only through ``commit(_:)``, which under an exclusive lock reads the state, applies a change and
/// replaces `state.json` with one rename. A bundle's images therefore appear all at once, two
/// writers cannot lose each other's changes, and a process killed at any point leaves either the
/// old state or the new one (plus unreferenced blobs for garbage collection).
public struct RegistryStore: Sendable {
    public let root: String
    public let blobs: BlobStore
    /// Blob uploads in progress (pushes), on the same filesystem so a finished one is renamed into `blobs`.
    public let uploads: UploadStore

    public init(root: String) throws(StoreError) {
        self.root = root
        try FileSystem.makeDirectories(root, mode: 0o750)
        self.blobs = try BlobStore(root: "\(root)/store", durable: true)
        self.uploads = try UploadStore(root: "\(root)/uploads")
        try FileSystem.makeDirectory("\(root)/imports", mode: 0o750)
    }

    public var statePath: String { "\(root)/state.json" }

    /// The state clients see now.
    public func state() throws(StoreError) -> RegistryState {
        guard FileSystem.size(of: statePath) != nil else { return RegistryState() }
        let bytes = try FileSystem.readSmallFile(statePath, limit: 1 << 30)
        do {
            return try JSONDecoder().decode(RegistryState.self, from: Data(bytes))
        } catch {
            throw .corrupt(path: statePath, String(describing: error))
        }
    }

    /// Applies `change` to the current state atomically (exclusive lock, write, fsync, rename).
    @discardableResult
    public func commit(_ change: (inout RegistryState) throws -> Void) throws -> RegistryState {
        let lock = open("\(root)/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lock >= 0 else { throw StoreError.io("open \(root)/lock", errno: errno) }
        defer { close(lock) }
        guard flock(lock, LOCK_EX) == 0 else { throw StoreError.io("lock \(root)/lock", errno: errno) }
        var state = try self.state()
        let before = state
        try change(&state)
        if state == before { return state }
        state.generation = before.generation + 1
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = try encoder.encode(state)
        try FileSystem.replace(statePath, with: Array(bytes), mode: 0o640)
        return state
    }

    /// Appends a record of an import (JSON, one file per import).
    public func record<Record: Encodable>(_ record: Record, as name: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]
        try FileSystem.replace("\(root)/imports/\(name).json", with: Array(try encoder.encode(record)), mode: 0o640)
    }

    /// Whether an import with this name was recorded.
    public func hasRecord(_ name: String) -> Bool { FileSystem.size(of: "\(root)/imports/\(name).json") != nil }
}
