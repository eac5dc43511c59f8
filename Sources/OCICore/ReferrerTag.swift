/// The tags by which signatures, attestations, SBOMs and referrer indexes hang off a manifest in
/// its repository: cosign's `sha256-HEX.sig`, `.att`, `.sbom`, and the OCI referrers tag schema's
/// `sha256-HEX`. The one place that spells them: the exporter looks them up, `ferry inspect` and
/// `ferry-appliance images` read them.
public struct ReferrerTag: Sendable, Hashable {
    public enum Kind: String, Sendable, CaseIterable {
        case signature, attestation, sbom, referrers

        var suffix: String {
            switch self {
            case .signature: ".sig"
            case .attestation: ".att"
            case .sbom: ".sbom"
            case .referrers: ""
            }
        }
    }

    public var subject: Digest
    public var kind: Kind

    public init(subject: Digest, kind: Kind) {
        self.subject = subject
        self.kind = kind
    }

    /// The tag itself, e.g. `sha256-HEX.sig`.
    public var tag: String { "\(subject.algorithm.rawValue)-\(subject.encoded)\(kind.suffix)" }

    /// What a tag says it is, if it is one of these.
    public init?(tag: String) {
        guard let dash = tag.firstIndex(of: "-"), let algorithm = DigestAlgorithm(rawValue: String(tag[..<dash]))
        else { return nil }
        let rest = tag[tag.index(after: dash)...]
        let hex = rest.prefix { $0 != "." }
        guard let digest = try? Digest(algorithm: algorithm, encoded: String(hex)),
            let kind = Kind.allCases.first(where: { $0.suffix == rest.dropFirst(hex.count) })
        else { return nil }
        self.init(subject: digest, kind: kind)
    }
}
