import Foundation
import OCICore
import OCITar

/// What an appliance holds, carried back to the connected side so the next export is a delta
/// (`ferry-appliance inventory`, `ferry export --against`): every blob a repository serves (with
/// its size), every repository's tags and manifests, and the bundles imported.
public struct SiteInventory: Codable, Sendable, Equatable {
    public static let mediaType = "application/vnd.ferry.inventory.v1+json"
    public static let currentFormatVersion = 1

    public struct Repository: Codable, Sendable, Equatable {
        public var name: String
        public var tags: [String: Digest]
        public var manifests: [Digest]
        public init(name: String, tags: [String: Digest], manifests: [Digest]) {
            self.name = name
            self.tags = tags
            self.manifests = manifests
        }
    }

    public var mediaType: String
    public var formatVersion: Int
    /// The appliance's host name, as it names itself.
    public var appliance: String
    /// RFC 3339, UTC.
    public var created: String
    /// Every blob the site can be relied on to hold (manifests included), in digest order.
    public var blobs: [BundleManifest.FileDigest]
    public var repositories: [Repository]
    /// Ids (bundle manifest digests, hex) of the bundles imported.
    public var bundles: [String]
    /// The appliance's signature over this inventory as encoded without it (`--sign-key`).
    public var signature: BundleSignature?

    public init(
        appliance: String, created: String, blobs: [BundleManifest.FileDigest], repositories: [Repository],
        bundles: [String]
    ) {
        self.mediaType = Self.mediaType
        self.formatVersion = Self.currentFormatVersion
        self.appliance = appliance
        self.created = created
        self.blobs = blobs
        self.repositories = repositories
        self.bundles = bundles
    }

    /// Canonical JSON (sorted keys, one line): the same holdings give the same bytes and digest.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array(try encoder.encode(self)) + [0x0a]
    }

    /// This inventory signed with `key`: the signature covers the canonical encoding without it.
    public func signed(with key: SigningKey) throws -> SiteInventory {
        var signed = self
        signed.signature = nil
        signed.signature = try BundleSignature.sign(manifest: try signed.encoded(), with: key)
        return signed
    }

    /// The signature's verdict (nil when unsigned): against `trustedKeys`, or when none are
    /// given, against the key it carries.
    public func signatureVerdict(trustedKeys: [PublicKey]) -> SignatureVerdict? {
        guard let signature else { return nil }
        var unsigned = self
        unsigned.signature = nil
        guard let bytes = try? unsigned.encoded() else { return .malformed }
        return signature.verdict(over: bytes, trustedKeys: trustedKeys)
    }

    /// Reads an inventory file, gzip-compressed or not; its digest (sha256 of the JSON, so the same
    /// either way) names the base of a delta.
    public static func read(path: String) throws(InventoryError) -> (inventory: SiteInventory, digest: Digest) {
        // Look before reading: callers try this on bundles too, which may be gigabytes.
        guard let handle = FileHandle(forReadingAtPath: path) else { throw .unreadable(path) }
        let start = Array((try? handle.read(upToCount: 64)) ?? Data())
        let size = (try? handle.seekToEnd()) ?? 0
        try? handle.close()
        let isJSON = start.first(where: { ![0x20, 0x0a, 0x0d, 0x09].contains($0) }) == UInt8(ascii: "{")
        guard Gzip.isCompressed(start) || isJSON else { throw .notAnInventory(path, "neither JSON nor gzip") }
        guard size <= 1 << 30 else { throw .notAnInventory(path, "larger than 1 GiB") }
        guard let read = FileManager.default.contents(atPath: path) else { throw .unreadable(path) }
        var data = read
        if Gzip.isCompressed(Array(read.prefix(2))) {
            do {
                data = Data(try Gzip.decompress(Array(read), limit: 1 << 30))
            } catch {
                throw .notAnInventory(path, "gzip: \(error)")
            }
        }
        guard data.count <= 1 << 30 else { throw .notAnInventory(path, "larger than 1 GiB") }
        let inventory: SiteInventory
        do {
            inventory = try JSONDecoder().decode(SiteInventory.self, from: data)
        } catch {
            throw .notAnInventory(path, "does not parse: \(error)")
        }
        guard inventory.mediaType == mediaType else {
            throw .notAnInventory(path, "mediaType is \(inventory.mediaType), expected \(mediaType)")
        }
        guard inventory.formatVersion == currentFormatVersion else {
            throw .notAnInventory(path, "unsupported format version \(inventory.formatVersion)")
        }
        return (inventory, Digest.of(data))
    }
}

public enum InventoryError: Error, CustomStringConvertible, Equatable {
    case unreadable(String)
    case notAnInventory(String, String)

    public var description: String {
        switch self {
        case .unreadable(let path): "\(path): cannot read the inventory"
        case .notAnInventory(let path, let why): "\(path): not a Ferry site inventory (\(why))"
        }
    }
}
