import ArgumentParser
import Foundation
import OCIBundle
import OCICore
import OCITar

/// What a delta export is made against: what the site holds, from site inventories and from
/// bundles imported there (a bundle file or its `ferry-bundle.json`). Blobs the base holds with
/// the same size are not carried.
public struct DeltaBase: Sendable {
    public var base: BundleManifest.Base
    /// Digest → size of every blob the site holds.
    public var held: [Digest: Int64]

    public init(base: BundleManifest.Base = .init(inventories: [], bundles: []), held: [Digest: Int64] = [:]) {
        self.base = base
        self.held = held
    }

    /// Reads each `--against` file: an inventory (JSON with the inventory media type), a bundle
    /// manifest (`ferry-bundle.json`), or a bundle (read up to its index, not its blobs).
    public static func load(_ paths: [String]) throws -> DeltaBase {
        var delta = DeltaBase()
        for path in paths {
            guard let handle = FileHandle(forReadingAtPath: path) else {
                throw ValidationError("--against \(path): cannot read it")
            }
            let start = (try? handle.read(upToCount: 64)) ?? Data()
            try? handle.close()
            let isJSON = start.first(where: { ![0x20, 0x0a, 0x0d, 0x09].contains($0) }) == UInt8(ascii: "{")
            let data = isJSON ? FileManager.default.contents(atPath: path) : nil
            // Only an inventory is ever compressed.
            if Gzip.isCompressed(Array(start.prefix(2)))
                || data.flatMap({ try? JSONDecoder().decode(MediaTypeProbe.self, from: $0) })?.mediaType
                    == SiteInventory.mediaType
            {
                let (inventory, digest) = try SiteInventory.read(path: path)
                delta.base.inventories.append(digest)
                for blob in inventory.blobs { delta.held[blob.digest] = blob.size }
            } else if let data {
                let manifest: BundleManifest
                do {
                    manifest = try BundleManifest.decode(Array(data))
                } catch {
                    throw ValidationError(
                        "--against \(path): neither a site inventory nor a bundle manifest (\(error))")
                }
                delta.add(manifest, id: Digest.of(data))
            } else {
                let report = try BundleReader(requireSignature: false).verify(path: path, stopAfterHeader: true)
                guard let manifest = report.manifest, let id = report.manifestDigest else {
                    let why = report.problems.first.map(\.description) ?? "no bundle manifest"
                    throw ValidationError("--against \(path): not a bundle, inventory or bundle manifest (\(why))")
                }
                delta.add(manifest, id: id)
            }
        }
        return delta
    }

    /// Whether the site holds this blob, so a delta leaves it out: same digest, same size.
    public func holds(_ blob: Descriptor) -> Bool { held[blob.digest] == blob.size }

    mutating func add(_ manifest: BundleManifest, id: Digest) {
        base.bundles.append(id)
        for blob in manifest.blobs + (manifest.external ?? []) { held[blob.digest] = blob.size }
    }

    private struct MediaTypeProbe: Decodable { var mediaType: String? }
}
