import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// The bundle manifest: `ferry-bundle.json` at the root of a bundle, written before any blob so a
/// reader can check every blob in one streaming pass.
///
/// It names the digest and size of `index.json` and of every blob, each image with its source
/// reference, and whether the bundle holds only some platforms.
public struct BundleManifest: Codable, Sendable, Hashable {
    public static let fileName = "ferry-bundle.json"
    public static let mediaType = "application/vnd.ferry.bundle.manifest.v1+json"
    public static let currentFormatVersion = 1

    public struct Tool: Codable, Sendable, Hashable {
        public var name: String
        public var version: String
        public init(name: String, version: String) {
            self.name = name
            self.version = version
        }
    }

    public struct Image: Codable, Sendable, Hashable {
        /// The full normalised reference as requested, e.g. `docker.io/library/nginx:1.25`.
        public var reference: String
        /// Digest of the top-level manifest or index.
        public var digest: Digest
        public var mediaType: String
        /// Platforms carried (all of an index, or the selected ones).
        public var platforms: [String]
        /// Bytes of every distinct blob this image needs that the bundle carries, manifests included.
        public var size: Int64

        public init(reference: String, digest: Digest, mediaType: String, platforms: [String], size: Int64) {
            self.reference = reference
            self.digest = digest
            self.mediaType = mediaType
            self.platforms = platforms
            self.size = size
        }
    }

    public struct Blob: Codable, Sendable, Hashable {
        public var digest: Digest
        public var size: Int64
        public var mediaType: String?
        /// In a volume set: the volume carrying this blob whole (from 1), or 0 when it is carried
        /// in parts (``VolumeSet/parts``). Absent: in every volume (manifests and indexes), or not
        /// a volume set.
        public var volume: Int?
        public init(digest: Digest, size: Int64, mediaType: String?, volume: Int? = nil) {
            self.digest = digest
            self.size = size
            self.mediaType = mediaType
            self.volume = volume
        }
    }

    public struct Partial: Codable, Sendable, Hashable {
        /// The platforms the bundle carries; manifests of other platforms are left out on purpose.
        public var platforms: [String]
        public init(platforms: [String]) { self.platforms = platforms }
    }

    public struct FileDigest: Codable, Sendable, Hashable {
        public var digest: Digest
        public var size: Int64
        public init(digest: Digest, size: Int64) {
            self.digest = digest
            self.size = size
        }
    }

    public var mediaType: String
    public var formatVersion: Int
    public var tool: Tool
    /// RFC 3339, UTC; `SOURCE_DATE_EPOCH` when set.
    public var created: String
    public var partial: Partial?
    /// Digest and size of the bundle's `index.json`.
    public var index: FileDigest
    public var images: [Image]
    /// Every blob in the bundle, in the order the tar holds them.
    public var blobs: [Blob]
    /// Digest and size of the bundle's `manifest.json` (the docker-archive index that `docker load`
    /// and `podman load` read), when it has one.
    public var dockerManifest: FileDigest?
    /// For a delta bundle: what it was made against.
    public var base: Base?
    /// For a delta bundle: blobs its images reference that it does not carry, because the base
    /// (the site) holds them. Checked at import before anything becomes visible.
    public var external: [Blob]?
    /// For a volume set: how the bundle is cut into volumes (each volume carries this manifest).
    public var volumes: VolumeSet?

    /// What a delta bundle was made against: site inventories (sha256 of each file) and bundles
    /// (their ids, the sha256 of their `ferry-bundle.json`).
    public struct Base: Codable, Sendable, Hashable {
        public var inventories: [Digest]
        public var bundles: [Digest]
        public init(inventories: [Digest], bundles: [Digest]) {
            self.inventories = inventories
            self.bundles = bundles
        }

        public var description: String {
            (inventories.map { "inventory \($0)" } + bundles.map { "bundle \($0)" }).joined(separator: ", ")
        }
    }

    public init(
        tool: Tool, created: String, partial: Partial?, index: FileDigest, images: [Image], blobs: [Blob],
        dockerManifest: FileDigest? = nil, base: Base? = nil, external: [Blob]? = nil, volumes: VolumeSet? = nil
    ) {
        self.mediaType = Self.mediaType
        self.formatVersion = Self.currentFormatVersion
        self.tool = tool
        self.created = created
        self.partial = partial
        self.index = index
        self.images = images
        self.blobs = blobs
        self.dockerManifest = dockerManifest
        self.base = base
        self.external = external
        self.volumes = volumes
    }

    enum CodingKeys: String, CodingKey {
        case mediaType, formatVersion, tool, created, partial, index, images, blobs, dockerManifest, base, external
        case volumes
    }

    /// Decodes a bundle manifest; one without `blobs` (as a verify report shows it) has none.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        mediaType = try c.decode(String.self, forKey: .mediaType)
        formatVersion = try c.decode(Int.self, forKey: .formatVersion)
        tool = try c.decode(Tool.self, forKey: .tool)
        created = try c.decode(String.self, forKey: .created)
        partial = try c.decodeIfPresent(Partial.self, forKey: .partial)
        index = try c.decode(FileDigest.self, forKey: .index)
        images = try c.decode([Image].self, forKey: .images)
        blobs = try c.decodeIfPresent([Blob].self, forKey: .blobs) ?? []
        dockerManifest = try c.decodeIfPresent(FileDigest.self, forKey: .dockerManifest)
        base = try c.decodeIfPresent(Base.self, forKey: .base)
        external = try c.decodeIfPresent([Blob].self, forKey: .external)
        volumes = try c.decodeIfPresent(VolumeSet.self, forKey: .volumes)
    }

    /// Canonical JSON (sorted keys, no escaped slashes): the same manifest always gives the same bytes.
    public func encoded() throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes, .prettyPrinted]
        return Array(try encoder.encode(self)) + [0x0a]
    }

    /// Formats seconds since the epoch as RFC 3339 UTC (`2023-11-14T22:13:20Z`), without ICU.
    public static func timestamp(_ seconds: Int64) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2))Z"
    }
}

extension BundleManifest {
    /// Makes every blob's media type share one string per distinct type: a bundle of 100k blobs
    /// has a handful of types, and a decoded string each would cost as much as the digests.
    public mutating func internMediaTypes() {
        var seen: [String: String] = [:]
        for i in blobs.indices {
            guard let type = blobs[i].mediaType else { continue }
            if let shared = seen[type] {
                blobs[i].mediaType = shared
            } else {
                seen[type] = type
            }
        }
    }
}

extension BundleManifest {
    /// Decodes a bundle manifest with memory that grows with its blob list, not several times it:
    /// the list is decoded a slice of `sliceSize` entries at a time (a tree of the whole document
    /// costs about twice its size again), and media types are shared.
    public static func decode(_ bytes: [UInt8], sliceSize: Int = 4096) throws -> BundleManifest {
        try bytes.withUnsafeBytes { buffer in
            let decoder = JSONDecoder()
            guard let blobs = try JSONScan.topLevelArray(named: "blobs", in: buffer) else {
                var manifest = try decoder.decode(BundleManifest.self, from: Data(buffer))
                manifest.internMediaTypes()
                return manifest
            }
            var rest = Data(buffer[..<blobs.lowerBound])
            rest.append(contentsOf: "[]".utf8)
            rest.append(contentsOf: buffer[blobs.upperBound...])
            var manifest = try decoder.decode(BundleManifest.self, from: rest)
            let elements = JSONScan.elements(of: blobs, in: buffer)
            manifest.blobs.reserveCapacity(elements.count)
            var types: [String: String] = [:]
            var start = 0
            while start < elements.count {
                let slice = elements[start..<min(start + sliceSize, elements.count)]
                var part = Data("[".utf8)
                part.reserveCapacity((slice.last?.upperBound ?? 0) - (slice.first?.lowerBound ?? 0) + 2)
                for (n, element) in zip(slice.indices, slice) {
                    if n > slice.startIndex { part.append(UInt8(ascii: ",")) }
                    part.append(contentsOf: buffer[element])
                }
                part.append(UInt8(ascii: "]"))
                for var blob in try decoder.decode([Blob].self, from: part) {
                    if let type = blob.mediaType {
                        if let shared = types[type] { blob.mediaType = shared } else { types[type] = type }
                    }
                    manifest.blobs.append(blob)
                }
                start += sliceSize
            }
            return manifest
        }
    }
}
