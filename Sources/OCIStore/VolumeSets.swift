import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// Pending volume sets live beside the import records, in `DATA/volume-sets/ID/`: `set.json` (what
/// the set is), `shared.json` (the manifests every volume carries, held once), one `volN.json` per
/// volume stored (the blobs it stored, held from gc until the set is done), and `parts/HEX`, the
/// blobs carried in parts, each part written at its offset as it arrives. Files, not rows: a hold
/// list grows with a volume's blobs and is read whole only by gc and the set's last volume.
extension RegistryStore {
    private struct Holds: Codable {
        var number: Int?
        var holds: [Digest]
    }

    private var volumeSetsRoot: String { "\(root)/volume-sets" }

    private func setDirectory(_ id: String) throws -> String {
        guard id.count == 64, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw StoreError.io("volume set id \(id) is not a sha256", errno: EINVAL)
        }
        return "\(volumeSetsRoot)/\(id)"
    }

    private static func arrivalNumber(_ name: String) -> Int? {
        guard name.hasPrefix("vol"), name.hasSuffix(".json") else { return nil }
        return Int(name.dropFirst(3).dropLast(5))
    }

    public func pendingVolumeSets() throws -> [PendingVolumeSet] {
        var sets: [PendingVolumeSet] = []
        for id in FileSystem.list(volumeSetsRoot).sorted() {
            guard let directory = try? setDirectory(id),
                let bytes = try? FileSystem.readSmallFile("\(directory)/set.json", limit: 16 << 20),
                var set = try? JSONDecoder().decode(PendingVolumeSet.self, from: Data(bytes))
            else { continue }
            set.arrived = FileSystem.list(directory).compactMap(Self.arrivalNumber).sorted()
            sets.append(set)
        }
        return sets
    }

    public func withVolumeSetLock<T>(_ id: String, _ body: () throws -> T) throws -> T {
        _ = try setDirectory(id)
        try FileSystem.makeDirectory(volumeSetsRoot)
        let fd = open("\(volumeSetsRoot)/\(id).lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
        guard fd >= 0 else { throw StoreError.io("open \(volumeSetsRoot)/\(id).lock", errno: errno) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw StoreError.io("lock volume set \(id)", errno: errno) }
        }
        defer { flock(fd, LOCK_UN) }
        return try body()
    }

    public func recordVolume(_ number: Int, of set: PendingVolumeSet, holding blobs: [Digest], shared: [Digest])
        throws
    {
        let directory = try setDirectory(set.id)
        try FileSystem.makeDirectories(directory)
        var header = set
        header.arrived = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if FileSystem.size(of: "\(directory)/shared.json") == nil {
            try FileSystem.replace(
                "\(directory)/shared.json", with: Array(try encoder.encode(Holds(holds: shared))), mode: 0o640)
        }
        if FileSystem.size(of: "\(directory)/set.json") == nil {
            try FileSystem.replace("\(directory)/set.json", with: Array(try encoder.encode(header)), mode: 0o640)
        }
        try FileSystem.replace(
            "\(directory)/vol\(number).json", with: Array(try encoder.encode(Holds(number: number, holds: blobs))),
            mode: 0o640)
    }

    public func volumePartFile(set id: String, blob: Digest) throws -> String {
        let directory = "\(try setDirectory(id))/parts"
        try FileSystem.makeDirectories(directory)
        return "\(directory)/\(blob.algorithm.rawValue)-\(blob.encoded)"
    }

    public func forgetVolumes(holding digests: Set<Digest>, of id: String) throws -> [Int] {
        let directory = try setDirectory(id)
        var forgotten: [Int] = []
        for name in FileSystem.list(directory) {
            guard let number = Self.arrivalNumber(name) else { continue }
            let holds = try readHolds("\(directory)/\(name)")
            if holds.contains(where: digests.contains) {
                unlink("\(directory)/\(name)")
                forgotten.append(number)
            }
        }
        return forgotten.sorted()
    }

    public func finishVolumeSet(_ id: String) throws {
        let directory = try setDirectory(id)
        for name in FileSystem.list("\(directory)/parts") { unlink("\(directory)/parts/\(name)") }
        rmdir("\(directory)/parts")
        for name in FileSystem.list(directory) { unlink("\(directory)/\(name)") }
        rmdir(directory)
        // The lock file stays: one waiting on it must not race one that would create a new one.
    }

    public func volumeSetHolds() throws -> Set<Digest> {
        var holds: Set<Digest> = []
        for id in FileSystem.list(volumeSetsRoot) {
            guard let directory = try? setDirectory(id) else { continue }
            for name in FileSystem.list(directory) where Self.arrivalNumber(name) != nil || name == "shared.json" {
                holds.formUnion(try readHolds("\(directory)/\(name)"))
            }
        }
        return holds
    }

    /// A hold list; one that cannot be read stops gc rather than letting it take what it holds.
    private func readHolds(_ path: String) throws -> [Digest] {
        do {
            let bytes = try FileSystem.readSmallFile(path, limit: 1 << 30)
            return try JSONDecoder().decode(Holds.self, from: Data(bytes)).holds
        } catch {
            throw StoreError.io("read volume set holds \(path): \(error)", errno: EIO)
        }
    }
}
