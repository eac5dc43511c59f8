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
    }

    /// The reference an image of `index.json` is imported under: containerd's full name
    /// (`io.containerd.image.name`), else `org.opencontainers.image.ref.name` when it is a full
    /// reference, else that name as a tag of `repository` (skopeo's `oci-archive:FILE:1.0`).
    public static func imageName(_ descriptor: Descriptor, repository: String?) throws(LayoutArchiveError) -> String {
        let annotations = descriptor.annotations ?? [:]
        if let name = annotations[AnnotationKey.containerdImageName], (try? Reference(name)) != nil { return name }
        guard let refName = annotations[AnnotationKey.refName], !refName.isEmpty else {
            guard let repository else { throw .unnamed(descriptor.digest) }
            return "\(repository)@\(descriptor.digest)"
        }
        if let repository {
            let name = refName.contains("/") || refName.contains("@") ? refName : "\(repository):\(refName)"
            guard (try? Reference(name)) != nil else { throw .badName(refName) }
            return name
        }
        guard refName.contains("/"), (try? Reference(refName)) != nil else { throw .shortName(refName) }
        return refName
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
        var documents: [Digest: ManifestDocument] = [:]
        do {
            let tar = try TarReader(fileDescriptor: fd)
            while let entry = try tar.next() {
                var name = entry.path
                while name.hasPrefix("./") { name.removeFirst(2) }
                guard entry.type == .regular else { continue }
                switch name {
                case "index.json": index = try tar.readAll(limit: BundleReader.documentLimit)
                case BundleWriter.dockerManifestName:
                    dockerManifest = try tar.readAll(limit: BundleReader.documentLimit)
                default:
                    let parts = name.split(separator: "/")
                    guard parts.count == 3, parts[0] == "blobs",
                        let algorithm = DigestAlgorithm(rawValue: String(parts[1])),
                        let digest = try? Digest(algorithm: algorithm, encoded: String(parts[2]))
                    else { continue }  // the verifying pass names what does not belong
                    sizes.append((digest, entry.size))
                    // Small blobs may be manifests: parse them to learn the graph and media types.
                    if entry.size <= ManifestDocument.maximumSize {
                        let bytes = try tar.readAll(limit: ManifestDocument.maximumSize)
                        if bytes.first == UInt8(ascii: "{"),
                            let document = try? ManifestDocument(bytes: bytes, algorithm: algorithm),
                            document.digest == digest
                        {
                            documents[digest] = document
                        }
                    }
                }
            }
        } catch {
            throw .unreadable(path, String(describing: error))
        }
        guard let index else { throw .noIndex(path) }
        let top: ImageIndex
        do {
            top = try JSONDecoder().decode(ImageIndex.self, from: Data(index))
        } catch {
            throw .badIndex(path, String(describing: error))
        }
        // Media types from the graph: each descriptor says what its target is.
        var mediaTypes: [Digest: String] = [:]
        for descriptor in top.manifests { mediaTypes[descriptor.digest] = descriptor.mediaType }
        for document in documents.values {
            mediaTypes[document.digest] = mediaTypes[document.digest] ?? document.mediaType
            for child in document.children { mediaTypes[child.digest] = mediaTypes[child.digest] ?? child.mediaType }
        }
        // An index some of whose platforms are absent (`ctr export` takes one by default) is carried
        // partially: the platforms present are the ones it holds.
        var present: Set<String> = []
        var absent = false
        for document in documents.values {
            guard case .index(let list) = document.content else { continue }
            for child in list.manifests where MediaType.isManifestOrIndex(child.mediaType) {
                if documents[child.digest] != nil {
                    if let platform = child.platform { present.insert(platform.description) }
                } else {
                    absent = true
                }
            }
        }
        var names: [String] = []
        for descriptor in top.manifests { names.append(try imageName(descriptor, repository: repository)) }
        let blobs = sizes.map {
            BundleManifest.Blob(digest: $0.digest, size: $0.size, mediaType: mediaTypes[$0.digest])
        }
        let images = zip(top.manifests, names).map { descriptor, name in
            BundleManifest.Image(
                reference: name, digest: descriptor.digest, mediaType: descriptor.mediaType,
                platforms: [], size: descriptor.size)
        }
        let manifest = BundleManifest(
            tool: .init(name: "oci-layout", version: "1.0.0"), created: BundleManifest.timestamp(0),
            partial: absent ? .init(platforms: present.sorted()) : nil,
            index: .init(digest: Digest.of(index), size: Int64(index.count)), images: images, blobs: blobs,
            dockerManifest: dockerManifest.map { .init(digest: Digest.of($0), size: Int64($0.count)) })
        return Description(manifest: manifest, names: names)
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
        case .shortName(let name):
            "image named \"\(name)\" in index.json is not a full reference; give --name REPOSITORY to import it "
                + "as REPOSITORY:\(name)"
        case .badName(let name): "image named \"\(name)\" in index.json does not make a valid reference"
        case .unnamed(let digest):
            "image \(digest) in index.json has no name; give --name REPOSITORY to import it by digest"
        }
    }
}
