/// A platform as written in an image index (`../shared/specs/oci-image/image-index.md`):
/// `os/architecture[/variant]`, e.g. `linux/arm64/v8`.
public struct Platform: Hashable, Sendable, Codable, CustomStringConvertible {
    public var os: String
    public var architecture: String
    public var variant: String?
    public var osVersion: String?
    public var osFeatures: [String]?

    enum CodingKeys: String, CodingKey {
        case os, architecture, variant
        case osVersion = "os.version"
        case osFeatures = "os.features"
    }

    public init(os: String, architecture: String, variant: String? = nil) {
        self.os = os
        self.architecture = architecture
        self.variant = variant
    }

    /// Parses `os/arch[/variant]`, as `--platform` takes it.
    public init(parsing string: String) throws(PlatformError) {
        let parts = string.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
        guard (2...3).contains(parts.count), parts.allSatisfy({ !$0.isEmpty && !$0.contains(" ") }) else {
            throw PlatformError.malformed(string)
        }
        self.init(
            os: parts[0].lowercased(), architecture: parts[1].lowercased(), variant: parts.count == 3 ? parts[2] : nil)
    }

    public var description: String {
        [os, architecture, variant].compactMap { $0 }.joined(separator: "/")
    }

    /// The platform with containerd's defaults applied, so `linux/arm64` equals `linux/arm64/v8`
    /// and `linux/arm` equals `linux/arm/v7`.
    public var normalized: Platform {
        var p = Platform(os: os.lowercased(), architecture: architecture.lowercased(), variant: variant?.lowercased())
        switch (p.architecture, p.variant) {
        case ("aarch64", _): p.architecture = "arm64"
        case ("x86_64", _), ("x86-64", _): p.architecture = "amd64"
        default: break
        }
        switch (p.architecture, p.variant) {
        case ("arm64", "v8"), ("arm64", "8"): p.variant = nil
        case ("arm", nil), ("arm", "7"): p.variant = "v7"
        case ("amd64", "v1"): p.variant = nil
        default: break
        }
        return p
    }

    /// Whether an index entry with this platform is what `requested` asks for.
    public func matches(_ requested: Platform) -> Bool {
        let a = normalized
        let b = requested.normalized
        return a.os == b.os && a.architecture == b.architecture && a.variant == b.variant
    }
}

public enum PlatformError: Error, Equatable, CustomStringConvertible {
    case malformed(String)
    public var description: String {
        switch self {
        case .malformed(let s): "malformed platform '\(s)': expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8"
        }
    }
}
