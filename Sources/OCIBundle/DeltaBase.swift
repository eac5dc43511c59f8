import OCICore

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

    /// Reads each file (see ``SiteRecord``). An inventory's signature, when it has one, must hold;
    /// with `trustedKeys`, every inventory must be signed by one of them.
    public static func load(_ paths: [String], trustedKeys: [PublicKey] = []) throws(SiteRecordError) -> DeltaBase {
        var delta = DeltaBase()
        for path in paths {
            let record = try SiteRecord.read(path)
            switch record {
            case .inventory(let inventory, let digest):
                try Self.check(inventory, path: path, trustedKeys: trustedKeys)
                delta.base.inventories.append(digest)
            case .bundle(_, let id):
                delta.base.bundles.append(id)
            }
            delta.held.merge(record.blobs) { a, _ in a }
        }
        return delta
    }

    static func check(_ inventory: SiteInventory, path: String, trustedKeys: [PublicKey]) throws(SiteRecordError) {
        switch inventory.signatureVerdict(trustedKeys: trustedKeys) {
        case nil:
            if !trustedKeys.isEmpty { throw .signature(path, "not signed, and a site key was given") }
        case .valid: break
        case .untrusted(let keyID): throw .signature(path, "signed by \(keyID), which is not a trusted site key")
        case .tampered(let keyID): throw .signature(path, "does not match (changed since \(keyID) signed it)")
        case .mismatch: throw .signature(path, "does not match (changed since it was signed)")
        case .keyIDMismatch(let keyID): throw .signature(path, "names key \(keyID), which is not its key's")
        case .malformed: throw .signature(path, "malformed")
        }
    }

    /// Whether the site holds this blob, so a delta leaves it out: same digest, same size.
    public func holds(_ blob: Descriptor) -> Bool { held[blob.digest] == blob.size }
}
