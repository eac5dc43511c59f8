import Foundation
import OCICore
import OCITar

/// A file that says what a site holds or was sent: a site inventory (JSON, or gzip-compressed),
/// a bundle manifest (`ferry-bundle.json`), or a bundle (read up to its first blob). The one
/// place that tells these apart; `--against`, `ferry diff` and `ferry inspect` all read through it.
public enum SiteRecord: Sendable {
    case inventory(SiteInventory, digest: Digest)
    /// A bundle's manifest; `id` is its digest (what an import records).
    case bundle(BundleManifest, id: Digest)

    /// Reads `path`, looking at its first bytes before reading more (a bundle may be gigabytes).
    public static func read(_ path: String) throws(SiteRecordError) -> SiteRecord {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .unreadable(path) }
        let start = Array((try? handle.read(upToCount: 64)) ?? Data())
        try? handle.close()
        if Gzip.isCompressed(start) { return try inventory(path) }  // only an inventory is ever compressed
        let isJSON = start.first(where: { ![0x20, 0x0a, 0x0d, 0x09].contains($0) }) == UInt8(ascii: "{")
        guard isJSON else {
            let report: VerificationReport
            do {
                report = try BundleReader(requireSignature: false).verify(path: path, stopAfterHeader: true)
            } catch {
                throw .unreadable(path)
            }
            guard let manifest = report.manifest, let id = report.manifestDigest else {
                throw .notARecord(path, report.problems.first.map(\.description) ?? "no bundle manifest")
            }
            return .bundle(manifest, id: id)
        }
        guard FileSystemProbe.size(path) <= 1 << 30,
            let data = FileManager.default.contents(atPath: path)
        else { throw .notARecord(path, "JSON larger than a bundle manifest may be") }
        if (try? JSONDecoder().decode(MediaTypeProbe.self, from: data))?.mediaType == SiteInventory.mediaType {
            return try inventory(path)
        }
        do {
            return .bundle(try BundleManifest.decode(Array(data)), id: Digest.of(data))
        } catch {
            throw .notARecord(path, "JSON that is neither a site inventory nor a bundle manifest: \(error)")
        }
    }

    private static func inventory(_ path: String) throws(SiteRecordError) -> SiteRecord {
        do {
            let (inventory, digest) = try SiteInventory.read(path: path)
            return .inventory(inventory, digest: digest)
        } catch {
            throw .inventory(error)
        }
    }

    /// Every blob the record says the site holds (or the bundle carries or relies on), with its size.
    public var blobs: [Digest: Int64] {
        var sizes: [Digest: Int64] = [:]
        switch self {
        case .inventory(let inventory, _):
            sizes.reserveCapacity(inventory.blobs.count)
            for blob in inventory.blobs { sizes[blob.digest] = blob.size }
        case .bundle(let manifest, _):
            for blob in manifest.blobs + (manifest.external ?? []) { sizes[blob.digest] = blob.size }
        }
        return sizes
    }

    private struct MediaTypeProbe: Decodable { var mediaType: String? }
}

private enum FileSystemProbe {
    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path)[.size]) as? NSNumber)?.intValue ?? 0
    }
}

public enum SiteRecordError: Error, CustomStringConvertible, Equatable {
    case unreadable(String)
    case notARecord(String, String)
    case inventory(InventoryError)
    /// An inventory whose signature does not hold, or is not by a key the caller trusts.
    case signature(String, String)

    public var description: String {
        switch self {
        case .unreadable(let path): "\(path): cannot read it"
        case .notARecord(let path, let why): "\(path): not a site inventory, bundle or bundle manifest (\(why))"
        case .inventory(let error): error.description
        case .signature(let path, let why): "\(path): inventory signature: \(why)"
        }
    }
}
