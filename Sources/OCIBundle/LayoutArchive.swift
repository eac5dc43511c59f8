import Foundation
import OCICore
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// An OCI image layout in a tar written by another tool: `skopeo copy ... oci-archive:`, `ctr
/// export`, Docker 25+'s `docker save`. It has no bundle manifest and may put `index.json` after
/// its blobs, so it is read twice: ``describe(path:repository:)`` reads its structure and small
/// documents (never a layer's bytes), and describes it as an unsigned bundle manifest; the bundle
/// reader then verifies and stores every blob against that description in a second pass, with the
/// same checks as a Ferry bundle (every digest, the image graph) and the same flat memory.
public enum LayoutArchive {
    /// What the first pass found: the bundle manifest the archive would have, and for each entry of
    /// its `index.json`, in order, the full reference the image is imported under.
    public struct Description: Sendable {
        public var manifest: BundleManifest
        public var names: [String]
        /// A docker-archive: the archive's files that are blobs (layer tars, configs) by path.
        public var aliases: [String: Digest]?
        /// Documents the archive implies but does not hold (a docker-archive's image manifests),
        /// listed in `manifest` and stored like blobs.
        public var documents: [(BundleManifest.Blob, [UInt8])] = []
        /// The `index.json` the archive implies, when it holds none.
        public var index: [UInt8]?
    }

    /// The reference an image of `index.json` is imported under, from the first of:
    /// containerd's `io.containerd.image.name` (ctr, Hauler), with the tag of the ref name when that
    /// differs (Hauler names an image's cosign signature `REPO:sha256-HEX.sig` under the image's
    /// containerd name); `org.opencontainers.image.base.name` (Zarf); a ref name that is a full
    /// reference; a tag-only ref name as a tag of `repository` (skopeo's `oci-archive:FILE:1.0`);
    /// the digest in `repository`.
    public static func imageName(_ descriptor: Descriptor, repository: String?) throws(LayoutArchiveError) -> String {
        let annotations = descriptor.annotations ?? [:]
        func full(_ key: String) -> Reference? {
            guard let name = annotations[key], name.contains("/") else { return nil }
            return try? Reference(name)
        }
        let refName = annotations[AnnotationKey.refName].flatMap { $0.isEmpty ? nil : $0 }
        // The tag a ref name carries: all of a tag-only name, else what follows the last colon
        // after the last slash.
        let refTag = refName.flatMap { name -> String? in
            let last = name.split(separator: "/", omittingEmptySubsequences: false).last ?? ""
            guard !name.contains("@") else { return nil }
            return name.contains("/") ? last.split(separator: ":").dropFirst().last.map(String.init) : name
        }
        if let containerd = full(AnnotationKey.containerdImageName) {
            if let refTag, refTag != containerd.tag?.value, (try? Tag(refTag)) != nil {
                return "\(containerd.name):\(refTag)"
            }
            return annotations[AnnotationKey.containerdImageName] ?? containerd.description
        }
        let baseName = "org.opencontainers.image.base.name"
        if full(baseName) != nil, let base = annotations[baseName] { return base }
        if full(AnnotationKey.refName) != nil, let refName { return refName }
        guard let refName else {
            guard let repository else { throw .unnamed(descriptor.digest) }
            return "\(repository)@\(descriptor.digest)"
        }
        guard let repository else { throw .shortName(refName) }
        let name = "\(repository):\(refName)"
        guard (try? Reference(name)) != nil else { throw .badName(refName) }
        return name
    }

    /// First pass over the archive at `path` (a seekable file; a pipe cannot be read twice).
    public static func describe(path: String, repository: String?) throws(LayoutArchiveError) -> Description {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .unreadable(path, String(cString: strerror(errno))) }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { throw .notAFile(path) }
        var index: [UInt8]?
        var dockerManifest: [UInt8]?
        var sizes: [(digest: Digest, size: Int64)] = []
        // What each small manifest or index is (not its bytes): media type, children, platforms.
        var documents: [Digest: Shape] = [:]
        // Memory stays bounded however the archive is made (a few MB of zstd can hold millions
        // of entries): what is kept per entry, and the JSON read whole, have limits.
        var entries = 0
        var kept = 0
        var links: [String: String] = [:]
        // For a docker-archive: every other file's size, and the small JSON files (its configs).
        var files: [String: Int64] = [:]
        var jsonFiles: [String: [UInt8]] = [:]
        let zarfImages = "images/"
        var impliedIndex: [UInt8]?
        var aliases: [String: Digest] = [:]
        var storageAliases: [String: Digest] = [:]
        var storageTags: [(repository: String, tag: String, digest: Digest)] = []
        do {
            let tar = try TarReader(fileDescriptor: fd)
            while let entry = try tar.next() {
                var name = entry.path
                while name.hasPrefix("./") { name.removeFirst(2) }
                entries += 1
                guard entries <= Self.entryLimit, kept <= Self.documentBudget else {
                    throw LayoutArchiveError.tooLarge(path)
                }
                // docker save writes a layer it already saved as a link to the first copy.
                if entry.type == .symlink || entry.type == .hardlink, let target = entry.linkTarget {
                    links[name] = entry.type == .hardlink ? target : Self.resolve(target, from: name)
                    continue
                }
                guard entry.type == .regular else { continue }
                // A Zarf package keeps its images as an OCI layout under images/.
                if name.hasPrefix(zarfImages) {
                    let inner = String(name.dropFirst(zarfImages.count))
                    if inner == "index.json" {
                        impliedIndex = try tar.readAll(limit: BundleReader.documentLimit)
                        continue
                    }
                    if let digest = Self.blobDigest(inner) {
                        aliases[name] = digest
                        name = inner
                    }
                }
                // A registry's storage directory (mindthegap, oc-mirror): blobs/sha256/XX/HEX/data,
                // and repositories/NAME/_manifests/tags/TAG/current/link naming each tag's digest.
                if let root = name.range(of: "docker/registry/v2/") {
                    let inner = name[root.upperBound...]
                    if let digest = Self.storageBlobDigest(inner) {
                        storageAliases[name] = digest
                        name = digest.layoutPath
                    } else {
                        if let tag = Self.storageTag(inner), entry.size < 1024,
                            let link = String(bytes: try tar.readAll(limit: 1024), encoding: .utf8),
                            let digest = try? Digest(link.trimmingCharacters(in: .whitespacesAndNewlines))
                        {
                            storageTags.append((tag.repository, tag.tag, digest))
                        }
                        continue
                    }
                }
                switch name {
                case "index.json": index = try tar.readAll(limit: BundleReader.documentLimit)
                case BundleWriter.dockerManifestName:
                    dockerManifest = try tar.readAll(limit: BundleReader.documentLimit)
                default:
                    guard let digest = Self.blobDigest(name) else {
                        // The verifying pass names what does not belong to a layout.
                        files[name] = entry.size
                        if name.hasSuffix(".json") && entry.size <= ManifestDocument.maximumSize {
                            jsonFiles[name] = try tar.readAll(limit: ManifestDocument.maximumSize)
                            kept += Int(entry.size)
                        }
                        continue
                    }
                    sizes.append((digest, entry.size))
                    // Small blobs may be manifests: parse them to learn the graph and media types.
                    if entry.size <= ManifestDocument.maximumSize {
                        let bytes = try tar.readAll(limit: ManifestDocument.maximumSize)
                        if bytes.first == UInt8(ascii: "{"),
                            let document = try? ManifestDocument(bytes: bytes, algorithm: digest.algorithm),
                            document.digest == digest
                        {
                            documents[digest] = Shape(document)
                            kept += 64 * (document.children.count + 1)
                        }
                    }
                }
            }
        } catch {
            throw .unreadable(path, String(describing: error))
        }
        if index == nil && impliedIndex == nil && !storageTags.isEmpty {
            // The index a registry's tags make.
            let sizeOf = Dictionary(sizes.map { ($0.digest, $0.size) }, uniquingKeysWith: { a, _ in a })
            let tags = storageTags.sorted { ($0.repository, $0.tag) < ($1.repository, $1.tag) }
            var entries: [(name: String, descriptor: Descriptor)] = []
            for tag in tags {
                guard let size = sizeOf[tag.digest] else {
                    throw .missingEntry(path, "the manifest of \(tag.repository):\(tag.tag)")
                }
                let mediaType = documents[tag.digest]?.mediaType ?? MediaType.ociManifest
                entries.append(
                    ("\(tag.repository):\(tag.tag)", Descriptor(mediaType: mediaType, digest: tag.digest, size: size)))
            }
            // A storage path holds no registry host: `alpine` reads as Docker Hub's, as docker reads it.
            impliedIndex = try encodedIndex(entries, key: AnnotationKey.containerdImageName) {
                (try? Reference($0))?.description ?? $0
            }
            aliases = storageAliases
        }
        let implied = index == nil && impliedIndex != nil
        guard let index = index ?? impliedIndex else {
            guard let dockerManifest else { throw .noIndex(path) }
            return try describeDockerArchive(
                path: path, manifest: dockerManifest, files: files, links: links, jsonFiles: jsonFiles,
                repository: repository)
        }
        let top: ImageIndex
        do {
            top = try JSONDecoder().decode(ImageIndex.self, from: Data(index))
        } catch {
            throw .badIndex(path, String(describing: error))
        }
        // Media types from the graph: each descriptor says what its target is.
        var mediaTypes: [Digest: String] = [:]
        for descriptor in top.manifests { mediaTypes[descriptor.digest] = descriptor.mediaType }
        for (digest, document) in documents {
            mediaTypes[digest] = mediaTypes[digest] ?? document.mediaType
            for child in document.children { mediaTypes[child.digest] = mediaTypes[child.digest] ?? child.mediaType }
        }
        // An index some of whose platforms are absent (`ctr export` takes one by default) is carried
        // partially: the platforms present are the ones it holds.
        var present: Set<String> = []
        var absent = false
        for document in documents.values where document.isIndex {
            for child in document.children where MediaType.isManifestOrIndex(child.mediaType) {
                if documents[child.digest] != nil {
                    if let platform = child.platform { present.insert(platform.description) }
                } else {
                    absent = true
                }
            }
        }
        var names: [String] = []
        var named: [String: Digest] = [:]
        for descriptor in top.manifests {
            let name = try imageName(descriptor, repository: repository)
            if let other = named[name], other != descriptor.digest { throw .duplicateName(name) }
            named[name] = descriptor.digest
            names.append(name)
        }
        let blobs = sizes.map {
            BundleManifest.Blob(digest: $0.digest, size: $0.size, mediaType: mediaTypes[$0.digest])
        }
        let images = zip(top.manifests, names).map { descriptor, name in
            BundleManifest.Image(
                reference: name, digest: descriptor.digest, mediaType: descriptor.mediaType,
                platforms: [], size: descriptor.size)
        }
        let manifest = BundleManifest(
            tool: .init(name: "oci-layout", version: "1.0.0"), created: "unknown",
            partial: absent ? .init(platforms: present.sorted()) : nil,
            index: .init(digest: Digest.of(index), size: Int64(index.count)), images: images, blobs: blobs,
            dockerManifest: dockerManifest.map { .init(digest: Digest.of($0), size: Int64($0.count)) })
        guard implied else { return Description(manifest: manifest, names: names) }
        // A layout under images/ (Zarf), or a registry's storage: blobs are read by their paths,
        // index.json is the one read here or made from the tags.
        return Description(manifest: manifest, names: names, aliases: aliases, index: index)
    }

    /// The digest a registry storage path `blobs/ALGORITHM/XX/HEX/data` names.
    static func storageBlobDigest(_ path: Substring) -> Digest? {
        let parts = path.split(separator: "/")
        guard parts.count == 5, parts[0] == "blobs", parts[4] == "data",
            let algorithm = DigestAlgorithm(rawValue: String(parts[1])), parts[3].hasPrefix(parts[2])
        else { return nil }
        return try? Digest(algorithm: algorithm, encoded: String(parts[3]))
    }

    /// The repository and tag a registry storage path `repositories/NAME/_manifests/tags/TAG/current/link` names.
    static func storageTag(_ path: Substring) -> (repository: String, tag: String)? {
        guard path.hasPrefix("repositories/"), path.hasSuffix("/current/link"),
            let marker = path.range(of: "/_manifests/tags/")
        else { return nil }
        let repository = path[path.index(path.startIndex, offsetBy: "repositories/".count)..<marker.lowerBound]
        let tag = path[marker.upperBound...].dropLast("/current/link".count)
        guard !repository.isEmpty, !tag.isEmpty, !tag.contains("/") else { return nil }
        return (String(repository), String(tag))
    }

    /// Entries a first pass takes, and bytes of small documents it keeps, before it refuses the
    /// archive as too large to describe.
    static let entryLimit = 4_000_000
    static let documentBudget = 512 << 20

    /// What the first pass keeps of a small manifest or index.
    struct Shape {
        var mediaType: String
        var children: [Descriptor]
        var isIndex: Bool
        init(_ document: ManifestDocument) {
            mediaType = document.mediaType
            children = document.children
            isIndex = document.isIndex
        }
    }

    /// A symlink's target as an archive path, from the link's own directory.
    static func resolve(_ target: String, from link: String) -> String {
        var parts = link.split(separator: "/").dropLast().map(String.init)
        for part in target.split(separator: "/") {
            if part == ".." { _ = parts.popLast() } else if part != "." { parts.append(String(part)) }
        }
        return parts.joined(separator: "/")
    }

    /// The digest a layout path `blobs/ALGORITHM/HEX` names.
    static func blobDigest(_ path: String) -> Digest? {
        let parts = path.split(separator: "/")
        guard parts.count == 3, parts[0] == "blobs", let algorithm = DigestAlgorithm(rawValue: String(parts[1])) else {
            return nil
        }
        return try? Digest(algorithm: algorithm, encoded: String(parts[2]))
    }

    /// A docker-archive (`docker save` before Docker 25, `podman save`): `manifest.json` names each
    /// image's config file, tags and layer files, and the config's `rootfs.diff_ids` give the
    /// layers' digests (they are uncompressed tars). The image manifest is the OCI manifest of
    /// exactly those bytes (uncompressed layers are standard in OCI, not in Docker's schema 2):
    /// config and layers keep their digests, and the image ID (the config's digest) is what
    /// `docker images` showed; a registry that served the image with compressed layers had another
    /// manifest digest, which cannot be rebuilt from an archive that holds the layers uncompressed.
    static func describeDockerArchive(
        path: String, manifest dockerManifest: [UInt8], files: [String: Int64], links: [String: String] = [:],
        jsonFiles: [String: [UInt8]], repository: String?
    ) throws(LayoutArchiveError) -> Description {
        struct Item: Decodable {
            var Config: String
            var RepoTags: [String]?
            var Layers: [String]
        }
        struct Config: Decodable {
            struct RootFS: Decodable { var diff_ids: [Digest] }
            var rootfs: RootFS
        }
        let items: [Item]
        do {
            items = try JSONDecoder().decode([Item].self, from: Data(dockerManifest))
        } catch {
            throw .badArchive(path, "manifest.json: \(error)")
        }
        var aliases: [String: Digest] = [:]
        var blobs: [BundleManifest.Blob] = []
        var listed: Set<Digest> = []
        var documents: [(BundleManifest.Blob, [UInt8])] = []
        var entries: [(name: String, descriptor: Descriptor)] = []
        func alias(_ named: String, _ digest: Digest, mediaType: String) throws(LayoutArchiveError) {
            let file = links[named] ?? named
            guard let size = files[file] else { throw .missingEntry(path, named) }
            if let known = aliases[file] {
                guard known == digest else { throw .badArchive(path, "\(file) is named with two digests") }
                return
            }
            aliases[file] = digest
            if listed.insert(digest).inserted { blobs.append(.init(digest: digest, size: size, mediaType: mediaType)) }
        }
        for item in items {
            guard let configBytes = jsonFiles[item.Config] else { throw .missingEntry(path, item.Config) }
            let configDigest = Digest.of(configBytes)
            let diffIDs: [Digest]
            do {
                diffIDs = try JSONDecoder().decode(Config.self, from: Data(configBytes)).rootfs.diff_ids
            } catch {
                throw .badArchive(path, "\(item.Config): \(error)")
            }
            guard diffIDs.count == item.Layers.count else {
                throw .badArchive(
                    path, "\(item.Config) lists \(diffIDs.count) layers, manifest.json \(item.Layers.count)")
            }
            try alias(item.Config, configDigest, mediaType: MediaType.ociConfig)
            for (file, digest) in zip(item.Layers, diffIDs) { try alias(file, digest, mediaType: MediaType.ociLayer) }
            let image = ImageManifest(
                mediaType: MediaType.ociManifest,
                config: Descriptor(
                    mediaType: MediaType.ociConfig, digest: configDigest, size: Int64(configBytes.count)),
                layers: zip(item.Layers, diffIDs).map { file, digest in
                    Descriptor(mediaType: MediaType.ociLayer, digest: digest, size: files[file] ?? 0)
                })
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            let bytes: [UInt8]
            do {
                bytes = Array(try encoder.encode(image))
            } catch {
                throw .badArchive(path, "\(error)")
            }
            let descriptor = Descriptor(
                mediaType: MediaType.ociManifest, digest: Digest.of(bytes), size: Int64(bytes.count))
            if listed.insert(descriptor.digest).inserted {
                let blob = BundleManifest.Blob(
                    digest: descriptor.digest, size: descriptor.size, mediaType: descriptor.mediaType)
                documents.append((blob, bytes))
            }
            var names = item.RepoTags ?? []
            if names.isEmpty {
                guard let repository else { throw .unnamed(descriptor.digest) }
                names = ["\(repository)@\(descriptor.digest)"]
            }
            for name in names {
                guard (try? Reference(name)) != nil else { throw .badName(name) }
                entries.append((name, descriptor))
            }
        }
        let index = try encodedIndex(entries)
        let manifest = BundleManifest(
            tool: .init(name: "docker-archive", version: "1"), created: "unknown", partial: nil,
            index: .init(digest: Digest.of(index), size: Int64(index.count)),
            images: entries.map {
                .init(
                    reference: $0.name, digest: $0.descriptor.digest, mediaType: $0.descriptor.mediaType, platforms: [],
                    size: $0.descriptor.size)
            },
            blobs: documents.map(\.0) + blobs,
            dockerManifest: .init(digest: Digest.of(dockerManifest), size: Int64(dockerManifest.count)))
        return Description(
            manifest: manifest, names: entries.map(\.name), aliases: aliases, documents: documents, index: index)
    }

    private static func encodedIndex(
        _ entries: [(name: String, descriptor: Descriptor)], key: String = AnnotationKey.refName,
        spelled: (String) -> String = { $0 }
    ) throws(LayoutArchiveError) -> [UInt8] {
        let manifests = entries.map { entry -> Descriptor in
            var descriptor = entry.descriptor
            descriptor.annotations = [key: spelled(entry.name)]
            return descriptor
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        do {
            return Array(try encoder.encode(ImageIndex(mediaType: MediaType.ociIndex, manifests: manifests)))
        } catch {
            throw .badIndex("index.json", "\(error)")
        }
    }

    /// Whether the tar at `path` is a Ferry bundle (its bundle manifest among the first entries)
    /// rather than another tool's layout. Reads a few headers only.
    public static func isFerryBundle(path: String) -> Bool {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return true }  // let the reader report it
        defer { close(fd) }
        guard let tar = try? TarReader(fileDescriptor: fd) else { return true }
        for _ in 0..<3 {
            guard let entry = try? tar.next() else { return true }
            var name = entry.path
            while name.hasPrefix("./") { name.removeFirst(2) }
            if name == BundleManifest.fileName { return true }
        }
        return false
    }
}

extension BundleReader {
    /// Reads a Ferry bundle, or another tool's OCI layout tar (a file), whichever `path` holds:
    /// the latter is described by a first pass, then verified like a bundle. `repository` names
    /// images whose `index.json` name is only a tag.
    public func verifyAny(path: String, sink: (any BundleBlobSink)? = nil, repository: String? = nil) throws
        -> VerificationReport
    {
        guard path != "-", !LayoutArchive.isFerryBundle(path: path) else {
            return try verify(path: path, sink: sink)
        }
        let described = try LayoutArchive.describe(path: path, repository: repository)
        return try verify(path: path, sink: sink, described: described)
    }
}

public enum LayoutArchiveError: Error, CustomStringConvertible, Equatable {
    case unreadable(String, String)
    case notAFile(String)
    case noIndex(String)
    case badIndex(String, String)
    case shortName(String)
    case badName(String)
    case unnamed(Digest)
    case missingEntry(String, String)
    case duplicateName(String)
    case tooLarge(String)
    case badArchive(String, String)

    /// A name to give (`--name`) or a pipe to replace with a file: a usage error, not bad content.
    public var isUsage: Bool {
        switch self {
        case .shortName, .badName, .unnamed, .notAFile: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .unreadable(let path, let why): "\(path): cannot read it as a tar (\(why))"
        case .notAFile(let path):
            "\(path): an archive without a bundle manifest is read twice, so it must be a file (not a pipe)"
        case .noIndex(let path): "\(path): neither a Ferry bundle nor an OCI image layout (no index.json)"
        case .badIndex(let path, let why): "\(path): index.json does not parse (\(why))"
        case .badArchive(let path, let why): "\(path): not a readable docker-archive (\(why))"
        case .tooLarge(let path):
            "\(path): more entries or small documents than a first pass keeps "
                + "(\(LayoutArchive.entryLimit) entries, \(LayoutArchive.documentBudget >> 20) MiB)"
        case .duplicateName(let name):
            "index.json names two different images \(name); which one to serve under it would be a guess"
        case .missingEntry(let path, let file): "\(path): manifest.json names \(file), which the archive does not hold"
        case .shortName(let name):
            "image named \"\(name)\" in index.json is not a full reference; give --name REPOSITORY to import it "
                + "as REPOSITORY:\(name)"
        case .badName(let name): "image named \"\(name)\" in index.json does not make a valid reference"
        case .unnamed(let digest):
            "image \(digest) in index.json has no name; give --name REPOSITORY to import it by digest"
        }
    }
}
