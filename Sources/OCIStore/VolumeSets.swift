import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// Pending volume sets live beside the import records: `DATA/volume-sets/ID/set.json` (what the
/// set is) and one `volNNN.json` per volume stored (its number and the blobs it holds). Files, not
/// rows: a volume's hold list grows with its blobs and is read whole only by gc and the last volume.
extension RegistryStore {
    private struct Arrival: Codable {
        var number: Int
        var holds: [Digest]
    }

    private var volumeSetsRoot: String { "\(root)/volume-sets" }

    private func setDirectory(_ id: String) throws -> String {
        guard id.count == 64, id.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
            throw StoreError.io("volume set id \(id) is not a sha256", errno: EINVAL)
        }
        return "\(volumeSetsRoot)/\(id)"
    }

    public func pendingVolumeSets() throws -> [PendingVolumeSet] {
        var sets: [PendingVolumeSet] = []
        for id in FileSystem.list(volumeSetsRoot).sorted() {
            guard let directory = try? setDirectory(id),
                let bytes = try? FileSystem.readSmallFile("\(directory)/set.json", limit: 16 << 20),
                var set = try? JSONDecoder().decode(PendingVolumeSet.self, from: Data(bytes))
            else { continue }
            set.arrived = FileSystem.list(directory).compactMap { name in
                guard name.hasPrefix("vol"), name.hasSuffix(".json") else { return nil }
                return Int(name.dropFirst(3).dropLast(5))
            }.sorted()
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

    public func recordVolume(_ number: Int, of set: PendingVolumeSet, holding blobs: [Digest]) throws {
        let directory = try setDirectory(set.id)
        try FileSystem.makeDirectories(directory)
        var header = set
        header.arrived = []
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        if FileSystem.size(of: "\(directory)/set.json") == nil {
            try FileSystem.replace("\(directory)/set.json", with: Array(try encoder.encode(header)), mode: 0o640)
        }
        try FileSystem.replace(
            "\(directory)/vol\(number).json", with: Array(try encoder.encode(Arrival(number: number, holds: blobs))),
            mode: 0o640)
    }

    public func finishVolumeSet(_ id: String) throws {
        let directory = try setDirectory(id)
        for name in FileSystem.list(directory) { unlink("\(directory)/\(name)") }
        rmdir(directory)
        // The lock file stays: one waiting on it must not race one that would create a new one.
    }

    public func volumeSetHolds() throws -> Set<Digest> {
        var holds: Set<Digest> = []
        for id in FileSystem.list(volumeSetsRoot) {
            guard let directory = try? setDirectory(id) else { continue }
            for name in FileSystem.list(directory) where name.hasPrefix("vol") && name.hasSuffix(".json") {
                guard let bytes = try? FileSystem.readSmallFile("\(directory)/\(name)", limit: 256 << 20),
                    let arrival = try? JSONDecoder().decode(Arrival.self, from: Data(bytes))
                else { continue }
                holds.formUnion(arrival.holds)
            }
        }
        return holds
    }
}
