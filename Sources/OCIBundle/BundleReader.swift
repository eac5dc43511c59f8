import Foundation
import OCICore
import OCITar

/// One thing wrong with a bundle: where (tar entry, image, digest), what was expected and found.
public struct VerificationProblem: Codable, Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Codable, Sendable {
        case structure, layout, manifest, index, blob, graph, signature
        /// The receiving side (an import's store, a push's registry) failed; the bundle may be fine.
        case sink
    }
    public var kind: Kind
    public var message: String
    public var entry: String?
    public var image: String?
    public var digest: String?
    public var expected: String?
    public var found: String?

    public init(
        _ kind: Kind, _ message: String, entry: String? = nil, image: String? = nil, digest: String? = nil,
        expected: String? = nil, found: String? = nil
    ) {
        self.kind = kind
        self.message = message
        self.entry = entry
        self.image = image
        self.digest = digest
        self.expected = expected
        self.found = found
    }

    public var description: String {
        var parts: [String] = []
        if let entry { parts.append("entry \(entry)") }
        if let image { parts.append("image \(image)") }
        if let digest, entry?.hasSuffix(digest.split(separator: ":").last.map(String.init) ?? "\u{0}") != true {
            parts.append(digest)
        }
        var text = (parts.isEmpty ? "" : parts.joined(separator: ", ") + ": ") + message
        if let expected { text += "; expected \(expected)" }
        if let found { text += ", found \(found)" }
        return text
    }
}

/// The result of reading a bundle: what it holds, who signed it, and every problem found.
public struct VerificationReport: Codable, Sendable {
    public var bundle: String
    public var ok: Bool { problems.isEmpty }
    public var manifest: BundleManifest?
    public var signature: BundleSignature?
    /// Whether the signature verified against a trusted key (nil when no keys were given).
    public var trusted: Bool?
    public var blobCount: Int = 0
    public var blobBytes: Int64 = 0
    public var problems: [VerificationProblem] = []
    /// Blobs present and verified that nothing in `index.json` reaches.
    public var unreferencedBlobs: [String] = []
    /// sha256 of `ferry-bundle.json` as read: names a bundle (what an import records), or the set
    /// a volume belongs to.
    public var manifestDigest: Digest?
    /// For a volume of a set: which one it is (checked against the signed bundle manifest).
    public var volume: VolumeHeader?
    /// A header-only read's `index.json` and docker `manifest.json`, as read (checked against the
    /// bundle manifest only by a full read).
    public var headerDocuments: (index: [UInt8], dockerManifest: [UInt8]?)?
    /// For each image name in `index.json`: its top digest and every manifest and blob it reaches
    /// that the bundle carries (for an importer; not part of the JSON report).
    public var imageContents: [String: ImageContents] = [:]

    public struct ImageContents: Sendable, Hashable {
        public var top: Descriptor
        public var manifests: Set<Digest>
        /// Every config and layer reached: carried, or (a delta's) `external`.
        public var blobs: Set<Digest>
        /// The blobs of `blobs` a delta relies on the site to hold.
        public var external: Set<Digest> = []
        /// The blobs of `blobs` a volume leaves to the other volumes of its set.
        public var elsewhere: Set<Digest> = []
    }

    enum CodingKeys: String, CodingKey {
        case bundle, ok, manifest, signature, trusted, blobCount, blobBytes, problems, unreferencedBlobs, volume
    }

    public init(bundle: String) { self.bundle = bundle }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        bundle = try c.decode(String.self, forKey: .bundle)
        manifest = try c.decodeIfPresent(BundleManifest.self, forKey: .manifest)
        signature = try c.decodeIfPresent(BundleSignature.self, forKey: .signature)
        trusted = try c.decodeIfPresent(Bool.self, forKey: .trusted)
        blobCount = try c.decode(Int.self, forKey: .blobCount)
        blobBytes = try c.decode(Int64.self, forKey: .blobBytes)
        problems = try c.decode([VerificationProblem].self, forKey: .problems)
        unreferencedBlobs = try c.decode([String].self, forKey: .unreferencedBlobs)
        volume = try c.decodeIfPresent(VolumeHeader.self, forKey: .volume)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bundle, forKey: .bundle)
        try c.encode(ok, forKey: .ok)
        try c.encodeIfPresent(manifest.map(ManifestHeader.init), forKey: .manifest)
        try c.encodeIfPresent(signature, forKey: .signature)
        try c.encodeIfPresent(trusted, forKey: .trusted)
        try c.encode(blobCount, forKey: .blobCount)
        try c.encode(blobBytes, forKey: .blobBytes)
        try c.encode(problems, forKey: .problems)
        try c.encode(unreferencedBlobs, forKey: .unreferencedBlobs)
        try c.encodeIfPresent(volume, forKey: .volume)
    }
}

/// The bundle manifest as a report shows it: everything but the blob list, which grows with the
/// bundle (a report stays small for a million blobs; `listedBlobs` counts the list, `blobCount`
/// what was verified, and the list itself is in the bundle's `ferry-bundle.json`).
private struct ManifestHeader: Encodable {
    let manifest: BundleManifest
    enum CodingKeys: String, CodingKey {
        case mediaType, formatVersion, tool, created, partial, index, images, listedBlobs, base, external, volumes
    }
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(manifest.mediaType, forKey: .mediaType)
        try c.encode(manifest.formatVersion, forKey: .formatVersion)
        try c.encode(manifest.tool, forKey: .tool)
        try c.encode(manifest.created, forKey: .created)
        try c.encodeIfPresent(manifest.partial, forKey: .partial)
        try c.encode(manifest.index, forKey: .index)
        try c.encode(manifest.images, forKey: .images)
        try c.encode(manifest.blobs.count, forKey: .listedBlobs)
        try c.encodeIfPresent(manifest.base, forKey: .base)
        try c.encodeIfPresent(manifest.external, forKey: .external)
        try c.encodeIfPresent(manifest.volumes, forKey: .volumes)
    }
}

/// An error thrown by a ``BundleBlobSink``: reported as a `.sink` problem, not as bad content.
struct SinkFailure: Error {
    let underlying: any Error
}

/// Receives each blob as the reader verifies it, so an importer can store while it verifies.
/// `commit` is called only after the blob's size and digest held; otherwise `abort`.
public protocol BundleBlobSink: AnyObject {
    /// Called once, after the bundle manifest was read (and its signature judged) and before the
    /// first blob, so a sink can plan from it without a second read of the bundle (a pipe has none).
    /// `volume` names which volume of a set this is.
    func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws
    func begin(_ blob: BundleManifest.Blob) throws
    func write(_ bytes: UnsafeRawBufferPointer) throws
    func commit() throws
    func abort()
}

extension BundleBlobSink {
    public func prepare(_ manifest: BundleManifest, volume: VolumeHeader?) throws {}
}

/// Reads and verifies a bundle in one streaming pass (file or pipe), with flat memory: tar
/// structure, layout files, the bundle manifest, every blob's size and digest, the image graph and
/// the signature. Blocking; run it off the event loop.
public struct BundleReader: Sendable {
    public var trustedKeys: [PublicKey]
    public var requireSignature: Bool

    public init(trustedKeys: [PublicKey] = [], requireSignature: Bool? = nil) {
        self.trustedKeys = trustedKeys
        self.requireSignature = requireSignature ?? !trustedKeys.isEmpty
    }

    /// Largest small file (bundle manifest, index.json, signature) read whole.
    public static let documentLimit = 64 << 20
    /// Largest bundle manifest: it grows with the blob list (about 190 bytes a blob), so 256 MiB
    /// holds about 1.4 million blobs.
    public static let manifestLimit = 256 << 20

    /// Reads the bundle at `path`, or standard input for `-` (blocking; run it off the event loop).
    public func verify(
        path: String, sink: (any BundleBlobSink)? = nil, stopAfterHeader: Bool = false,
        described: LayoutArchive.Description? = nil
    ) throws(BundleError) -> VerificationReport {
        let fd = path == "-" ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        defer { if path != "-" { close(fd) } }
        return verify(
            fileDescriptor: fd, name: path == "-" ? "(stdin)" : path, sink: sink, stopAfterHeader: stopAfterHeader,
            described: described)
    }

    /// Reads the whole bundle from `fileDescriptor`. `name` is what reports call it. `described`:
    /// another tool's OCI layout, as its first pass described it (``LayoutArchive``), in place of
    /// a bundle manifest; it may be compressed, and its images are named as described.
    public func verify(
        fileDescriptor: Int32, name: String, sink: (any BundleBlobSink)? = nil, stopAfterHeader: Bool = false,
        described: LayoutArchive.Description? = nil
    ) -> VerificationReport {
        var state = ReadState(report: VerificationReport(bundle: name))
        if let described {
            state.imageNames = described.names
            state.aliases = described.aliases
            state.virtualDocuments = described.documents
            if let index = described.index {
                state.indexBytes = index
                state.layoutSeen = true  // a docker-archive has no oci-layout
            }
            state.manifestSeen = true
            state.report.manifestDigest = (try? described.manifest.encoded()).map { Digest.of($0) }
            if !state.adopt(described.manifest, entry: "index.json") { return state.finalReport }
        }
        do {
            let tar = try TarReader(fileDescriptor: fileDescriptor)
            if let compression = tar.compression, described == nil {
                state.problem(
                    .structure,
                    "bundle is a \(compression)-compressed tar; a Ferry bundle is a plain tar (decompress it first)")
                return state.finalReport
            }
            while let entry = try tar.next() {
                if stopAfterHeader && state.indexBytes != nil && entry.type == .regular
                    && (entry.path.hasPrefix("blobs/") || entry.path.hasPrefix("./blobs/"))
                {
                    return finishHeaderOnly(state).finalReport
                }
                if try !read(entry, from: tar, into: &state, sink: sink) {
                    // What follows cannot be checked; completeness problems would only be noise.
                    return state.finalReport
                }
            }
            if stopAfterHeader && state.indexBytes != nil { return finishHeaderOnly(state).finalReport }
        } catch let error as TarError {
            state.problem(.structure, error.description)
            return state.finalReport
        } catch let error as SinkFailure {
            state.problem(.sink, String(describing: error.underlying))
            return state.finalReport
        } catch {
            state.problem(.structure, String(describing: error))
            return state.finalReport
        }
        finish(&state)
        return state.finalReport
    }

    /// Problems listed one by one; past this many, one more problem says how many were left out,
    /// so a bundle with a million missing blobs gives a readable report in bounded memory.
    public static let problemLimit = 1000

    /// What the reader keeps between entries. Memory is bounded per blob: a listing index, a flag,
    /// and for a manifest the children to follow (never the document).
    struct ReadState {
        var report: VerificationReport
        var layoutSeen = false
        /// Kept only until the signature is judged (ed25519 signs the whole document).
        var manifestBytes: [UInt8]?
        var indexBytes: [UInt8]?
        var dockerManifestBytes: [UInt8]?
        /// Names of entries other than blobs (blobs are told apart by their listing index).
        var names: Set<String> = []
        /// Listing index in `report.manifest.blobs` by digest.
        var listed = ListingIndex([])
        /// Per listing index: carried and verified.
        var present: [Bool] = []
        /// Per listing index: a tar entry for it was seen (a second one is a duplicate).
        var entrySeen: [Bool] = []
        /// Children to follow of each carried manifest or index, flat: the children of listing
        /// index `i` are `edgeTargets[edgeStart[i] ..< edgeStart[i] + edgeCount[i]]` (`edgeStart`
        /// -1: not a document). A target >= 0 is a listing index, -1 - k is `unlisted[k]`.
        var edgeStart: [Int32] = []
        var edgeCount: [Int32] = []
        var edgeTargets: [Int32] = []
        /// Children (and index.json entries) the bundle manifest does not list.
        var unlisted: [(digest: Digest, mediaType: String)] = []
        /// Per listing index: already has a problem (so one fault is reported once).
        var flagged: [Bool] = []
        /// Digests not listed that already have a problem.
        var troubled: Set<Digest> = []
        var omittedProblems = 0
        var manifestSeen = false
        var dockerManifestSeen = false
        /// The sink was prepared (the first blob arrived).
        var prepared = false
        var filter = PlatformFilter.all
        var signatureChecked = false
        /// Another tool's layout: the name of each `index.json` entry, in order.
        var imageNames: [String]?
        /// A docker-archive: its files by path, as the blobs they are; what else it holds (per-layer
        /// `json` and `VERSION`, `repositories`) is not content and is passed over.
        var aliases: [String: Digest]?
        /// Documents the description made, handed to the sink before the first blob.
        var virtualDocuments: [(BundleManifest.Blob, [UInt8])] = []
        /// A volume's number, once its header was read.
        var volume: Int?
        /// The parts this volume carries (by digest: size), and those seen.
        var parts: [Digest: Int64] = [:]
        var partsSeen: Set<Digest> = []

        /// Whether the listed blob at `position` is another volume's (or in parts).
        func isElsewhere(_ position: Int) -> Bool {
            guard let volume, let assigned = report.manifest?.blobs[position].volume else { return false }
            return assigned != volume
        }

        mutating func problem(
            _ kind: VerificationProblem.Kind, _ message: String, entry: String? = nil, image: String? = nil,
            digest: Digest? = nil, expected: String? = nil, found: String? = nil
        ) {
            if let digest {
                if let position = listed.position(of: digest), position < flagged.count {
                    flagged[position] = true
                } else {
                    troubled.insert(digest)
                }
            }
            guard report.problems.count < BundleReader.problemLimit else {
                omittedProblems += 1
                return
            }
            report.problems.append(
                VerificationProblem(
                    kind, message, entry: entry, image: image, digest: digest?.description, expected: expected,
                    found: found))
        }

        /// Records the children the walk follows from the document at listing `position`: a
        /// platform-filtered index its selected children; an image manifest all of them
        /// (non-distributable layers included).
        mutating func follow(_ document: ManifestDocument, at position: Int) {
            var children = filter.selectedChildren(of: document)
            if case .manifest = document.content {
                children += document.children.filter { MediaType.isNondistributable($0.mediaType) }
            }
            edgeStart[position] = Int32(edgeTargets.count)
            edgeCount[position] = Int32(children.count)
            for child in children { edgeTargets.append(node(child.digest, mediaType: child.mediaType)) }
        }

        /// Takes `manifest` as the bundle's description: the listing, and the checks on it. False
        /// when nothing after it can be checked.
        mutating func adopt(_ manifest: BundleManifest, entry bare: String) -> Bool {
            report.manifest = manifest
            listed = ListingIndex(manifest.blobs)
            for (position, blob) in manifest.blobs.enumerated() {
                if listed.insert(position) != nil {
                    problem(.manifest, "blob listed twice", entry: bare, digest: blob.digest)
                }
            }
            present = Array(repeating: false, count: manifest.blobs.count)
            entrySeen = present
            flagged = present
            edgeStart = Array(repeating: -1, count: manifest.blobs.count)
            edgeCount = Array(repeating: 0, count: manifest.blobs.count)
            if let volumes = manifest.volumes, let inconsistency = volumes.problem(with: manifest.blobs) {
                problem(.manifest, "volume plan is inconsistent: \(inconsistency)", entry: bare)
                return false
            }
            if manifest.volumes == nil, manifest.blobs.contains(where: { $0.volume != nil }) {
                problem(
                    .manifest, "blobs assigned to volumes in a bundle that is not a volume set", entry: bare)
                return false
            }
            if let partial = manifest.partial {
                do {
                    filter = PlatformFilter(try partial.platforms.map { try Platform(parsing: $0) })
                } catch {
                    problem(.manifest, "partial platform does not parse: \(error)", entry: bare)
                    return false
                }
            }
            return true
        }

        /// The report, with a last line for the problems not listed.
        func hasProblem(_ node: Int32) -> Bool {
            node >= 0 ? flagged[Int(node)] : troubled.contains(unlisted[Int(-1 - node)].digest)
        }

        /// The walk's node for a digest: its listing index, or a new unlisted entry.
        mutating func node(_ digest: Digest, mediaType: String) -> Int32 {
            if let position = listed.position(of: digest) { return Int32(position) }
            unlisted.append((digest, mediaType))
            return Int32(-unlisted.count)
        }

        var finalReport: VerificationReport {
            var report = report
            if omittedProblems > 0 {
                report.problems.append(
                    VerificationProblem(.structure, "and \(omittedProblems) more problems not listed"))
            }
            return report
        }
    }

    /// Handles one entry; false stops reading (the rest cannot be checked).
    private func read(
        _ entry: TarReader.Entry, from tar: TarReader, into state: inout ReadState, sink: (any BundleBlobSink)?
    )
        throws -> Bool
    {
        var path = entry.path
        while path.hasPrefix("./") { path.removeFirst(2) }
        let bare = path.hasSuffix("/") ? String(path.dropLast()) : path
        if path.hasPrefix("/") || bare.split(separator: "/", omittingEmptySubsequences: false).contains("..") {
            state.problem(.structure, "unsafe path (absolute or with ..)", entry: entry.path)
            return false
        }
        if let aliases = state.aliases, bare != BundleWriter.dockerManifestName {
            // A docker-archive: its named files are blobs; the rest is not content. A second copy
            // of a blob already verified (docker save repeats a shared layer) is passed over.
            guard entry.type == .regular, let digest = aliases[bare] else { return true }
            if let position = state.listed.position(of: digest), state.present[position] { return true }
            return try readBlob(entry, path: digest.layoutPath, from: tar, into: &state, sink: sink)
        }
        guard entry.type == .regular || entry.type == .directory else {
            state.problem(
                .structure,
                "\(entry.type) not allowed in a bundle"
                    + (entry.linkTarget.map { " (-> \($0))" } ?? ""), entry: entry.path)
            return true
        }
        guard bare.hasPrefix("blobs/") && entry.type == .regular || state.names.insert(bare).inserted else {
            state.problem(.structure, "duplicate entry", entry: entry.path)
            return true
        }
        let directories = Set(["blobs"] + DigestAlgorithm.allCases.map { "blobs/\($0.rawValue)" })
        if directories.contains(bare) {
            if entry.type != .directory {
                state.problem(.structure, "a file where a directory belongs", entry: entry.path)
            }
            return true
        }
        if entry.type == .directory {
            state.problem(.structure, "directory outside the image layout", entry: entry.path)
            return true
        }
        switch bare {
        case "oci-layout":
            let bytes = try tar.readAll(limit: 4096)
            state.layoutSeen = true
            guard let header = try? JSONDecoder().decode(ImageLayoutHeader.self, from: Data(bytes)),
                header.imageLayoutVersion == "1.0.0"
            else {
                state.problem(
                    .layout, "not an OCI layout header", entry: "oci-layout",
                    expected: #"{"imageLayoutVersion":"1.0.0"}"#)
                return true
            }
        case BundleManifest.fileName:
            guard state.imageNames == nil else {
                state.problem(.structure, "a bundle manifest deep inside another tool's archive", entry: entry.path)
                return false
            }
            let bytes = try tar.readAll(limit: Self.manifestLimit)
            state.manifestBytes = bytes
            state.manifestSeen = true
            state.report.manifestDigest = Digest.of(bytes)
            do {
                let manifest = try BundleManifest.decode(bytes)
                guard manifest.formatVersion == BundleManifest.currentFormatVersion else {
                    state.problem(
                        .manifest, "unsupported bundle format", entry: bare,
                        expected: "\(BundleManifest.currentFormatVersion)", found: "\(manifest.formatVersion)")
                    return false
                }
                if !state.adopt(manifest, entry: bare) { return false }
            } catch {
                state.problem(.manifest, "bundle manifest does not parse: \(error)", entry: bare)
                return false
            }
        case BundleSignature.fileName:
            let bytes = try tar.readAll(limit: 64 * 1024)
            guard !state.signatureChecked else {
                state.problem(
                    .signature, "signature after index.json or the blobs: cannot verify in one pass", entry: bare)
                return false
            }
            guard let signature = try? JSONDecoder().decode(BundleSignature.self, from: Data(bytes)) else {
                state.problem(.signature, "signature file does not parse", entry: bare)
                return true
            }
            state.report.signature = signature
        case BundleWriter.dockerManifestName:
            // Covered by the bundle manifest (and so by its signature) like index.json.
            let bytes = try tar.readAll(limit: Self.documentLimit)
            state.dockerManifestSeen = true
            state.dockerManifestBytes = bytes
            guard let listed = state.report.manifest?.dockerManifest else {
                state.problem(.layout, "not named in the bundle manifest", entry: bare)
                return true
            }
            let digest = Digest.of(bytes, algorithm: listed.digest.algorithm)
            if digest != listed.digest || Int64(bytes.count) != listed.size {
                state.problem(
                    .layout, "does not match the bundle manifest", entry: bare,
                    expected: "\(listed.digest) (\(listed.size) bytes)", found: "\(digest) (\(bytes.count) bytes)")
            }
        case VolumeHeader.fileName:
            let bytes = try tar.readAll(limit: 4096)
            guard let volumes = state.report.manifest?.volumes, let set = state.report.manifestDigest else {
                state.problem(.layout, "a volume header in a bundle that is not a volume set", entry: bare)
                return false
            }
            // The signature first: a header that does not match a tampered manifest says less.
            if !state.signatureChecked {
                judgeSignature(&state)
                if requireSignature && state.report.trusted != true { return false }
            }
            guard let header = try? JSONDecoder().decode(VolumeHeader.self, from: Data(bytes)),
                header.mediaType == VolumeHeader.mediaType
            else {
                state.problem(.layout, "volume header does not parse", entry: bare)
                return false
            }
            guard header.set == set, header.count == volumes.count, (1...volumes.count).contains(header.number) else {
                state.problem(
                    .layout, "volume header does not match the bundle manifest (tampered?)", entry: bare,
                    expected: "a volume of set \(set), 1 to \(volumes.count)",
                    found: "volume \(header.number) of \(header.count) of set \(header.set)")
                return false
            }
            state.report.volume = header
            state.volume = header.number
            for part in volumes.parts where part.volume == header.number { state.parts[part.digest] = part.size }
        case "index.json":
            if state.report.manifest?.volumes != nil && state.volume == nil {
                state.problem(.layout, "missing before index.json in a volume of a set", entry: VolumeHeader.fileName)
                return false
            }
            state.indexBytes = try tar.readAll(limit: Self.documentLimit)
            // A signature comes before index.json or not at all: judge it now, before any blob.
            if state.report.manifest != nil && !state.signatureChecked {
                judgeSignature(&state)
                if requireSignature && state.report.trusted != true { return false }
            }
        default:
            return try readBlob(entry, path: bare, from: tar, into: &state, sink: sink)
        }
        return true
    }

    private func readBlob(
        _ entry: TarReader.Entry, path: String, from tar: TarReader, into state: inout ReadState,
        sink: (any BundleBlobSink)?
    ) throws -> Bool {
        let parts = path.split(separator: "/")
        guard parts.count == 3, parts[0] == "blobs", let algorithm = DigestAlgorithm(rawValue: String(parts[1])) else {
            // Docker's `repositories` beside its layout names images (index.json does too).
            if state.imageNames != nil && path == "repositories" { return true }
            state.problem(.structure, "name outside the image layout", entry: entry.path)
            return true
        }
        let digest: Digest
        do {
            digest = try Digest(algorithm: algorithm, encoded: String(parts[2]))
        } catch {
            state.problem(.structure, "blob name is not a digest: \(error)", entry: entry.path)
            return true
        }
        guard path == digest.layoutPath else {
            state.problem(.structure, "blob name is not written blobs/ALGORITHM/HEX", entry: entry.path)
            return true
        }
        guard let manifest = state.report.manifest else {
            state.problem(
                .structure,
                "blob before the bundle manifest: cannot verify in one pass (another tool's archive is read "
                    + "from a file, not from standard input)", entry: entry.path)
            return false
        }
        // The signature is judged before the first blob, so a sink (an import) never receives the
        // content of a bundle that is not signed by a trusted key.
        if !state.prepared {
            state.prepared = true
            if !state.signatureChecked { judgeSignature(&state) }
            if requireSignature && state.report.trusted != true { return false }
            do {
                try sink?.prepare(manifest, volume: state.report.volume)
            } catch {
                throw SinkFailure(underlying: error)
            }
            try acceptVirtualDocuments(&state, sink: sink)
        }
        // A part whose bytes equal a listed blob's has its name: it is the part unless the blob
        // belongs here too (then the one entry is both).
        let listedHere = state.listed.position(of: digest).flatMap { state.isElsewhere($0) ? nil : $0 }
        guard let position = state.parts[digest] == nil ? state.listed.position(of: digest) : listedHere else {
            if let size = state.parts[digest] {
                guard state.partsSeen.insert(digest).inserted else {
                    state.problem(.structure, "duplicate entry", entry: entry.path)
                    return true
                }
                let part = BundleManifest.Blob(digest: digest, size: size, mediaType: nil)
                if try readContent(entry, of: part, from: tar, into: &state, sink: sink) {
                    state.report.blobCount += 1
                    state.report.blobBytes += size
                } else {
                    state.partsSeen.remove(digest)
                    state.troubled.insert(digest)
                }
                return true
            }
            if !state.names.insert(path).inserted {
                state.problem(.structure, "duplicate entry", entry: entry.path)
            } else {
                state.problem(.blob, "blob not listed in the bundle manifest", entry: entry.path, digest: digest)
            }
            return true
        }
        guard !state.entrySeen[position] else {
            state.problem(.structure, "duplicate entry", entry: entry.path)
            return true
        }
        state.entrySeen[position] = true
        let listed = manifest.blobs[position]
        if state.isElsewhere(position) {
            state.problem(
                .structure, "blob belongs to another volume of the set", entry: entry.path, digest: listed.digest,
                expected: listed.volume == 0 ? "in parts" : "volume \(listed.volume ?? 0)",
                found: "volume \(state.volume ?? 0)")
            return true
        }
        let keep =
            entry.size <= ManifestDocument.maximumSize
            && MediaType.isManifestOrIndex(listed.mediaType)
        var kept: [UInt8] = []
        if keep { kept.reserveCapacity(Int(entry.size)) }
        guard
            try readContent(entry, of: listed, from: tar, into: &state, sink: sink, keep: keep ? { kept += $0 } : nil)
        else { return true }
        state.present[position] = true
        if state.parts[digest] != nil { state.partsSeen.insert(digest) }
        state.report.blobCount += 1
        state.report.blobBytes += listed.size
        if keep,
            let document = try? ManifestDocument(bytes: kept, declaredMediaType: listed.mediaType, algorithm: algorithm)
        {
            state.follow(document, at: position)
        }
        return true
    }

    /// Hands the documents a description made (a docker-archive's manifests) to the sink, as if
    /// they were entries, and follows them: they are exactly the bytes that will be served.
    private func acceptVirtualDocuments(_ state: inout ReadState, sink: (any BundleBlobSink)?) throws {
        for (blob, bytes) in state.virtualDocuments {
            guard let position = state.listed.position(of: blob.digest), !state.present[position] else { continue }
            do {
                try sink?.begin(blob)
                try bytes.withUnsafeBytes { try sink?.write($0) }
                try sink?.commit()
            } catch {
                throw SinkFailure(underlying: error)
            }
            state.present[position] = true
            state.entrySeen[position] = true
            if let document = try? ManifestDocument(
                bytes: bytes, declaredMediaType: blob.mediaType, algorithm: blob.digest.algorithm)
            {
                state.follow(document, at: position)
            }
        }
        state.virtualDocuments = []
    }

    /// Streams one entry's content to the sink, verifying it against `listed`; false (with the
    /// problem recorded and the sink aborted) when it does not match.
    private func readContent(
        _ entry: TarReader.Entry, of listed: BundleManifest.Blob, from tar: TarReader, into state: inout ReadState,
        sink: (any BundleBlobSink)?, keep: ((UnsafeRawBufferPointer) -> Void)? = nil
    ) throws -> Bool {
        guard entry.size == listed.size else {
            state.problem(
                .blob, "size differs from the bundle manifest", entry: entry.path, digest: listed.digest,
                expected: "\(listed.size) bytes", found: "\(entry.size) bytes")
            return false
        }
        var verifier = BlobVerifier(digest: listed.digest, size: listed.size)
        do {
            try sink?.begin(listed)
        } catch {
            throw SinkFailure(underlying: error)
        }
        do {
            while let block = try tar.nextBlock() {
                try verifier.update(block)
                keep?(block)
                do {
                    try sink?.write(block)
                } catch {
                    throw SinkFailure(underlying: error)
                }
            }
            try verifier.finish()
        } catch let error as BlobVerificationError {
            sink?.abort()
            switch error {
            case .digestMismatch(let expected, let found):
                state.problem(
                    .blob, "content does not match its digest", entry: entry.path, digest: listed.digest,
                    expected: expected.description, found: found.description)
            default:
                state.problem(.blob, error.description, entry: entry.path, digest: listed.digest)
            }
            return false
        } catch {
            sink?.abort()
            throw error
        }
        do {
            try sink?.commit()
        } catch {
            throw SinkFailure(underlying: error)
        }
        return true
    }

    private func finishHeaderOnly(_ state: ReadState) -> ReadState {
        var state = state
        state.report.headerDocuments = (state.indexBytes ?? [], state.dockerManifestBytes)
        if !state.signatureChecked { judgeSignature(&state) }
        return state
    }

    /// Checks after the last entry: the signature first (an untrusted bundle is refused before any
    /// other work), then completeness, index.json and the graph. Linear in the entries and edges.
    private func finish(_ state: inout ReadState) {
        if !state.layoutSeen { state.problem(.layout, "missing", entry: "oci-layout") }
        guard let manifest = state.report.manifest else {
            if !state.manifestSeen { state.problem(.manifest, "missing", entry: BundleManifest.fileName) }
            return
        }
        if !state.signatureChecked { judgeSignature(&state) }
        if requireSignature && state.report.trusted != true { return }
        if manifest.volumes != nil && state.volume == nil {
            state.problem(.layout, "missing in a volume of a set", entry: VolumeHeader.fileName)
            return
        }
        for (position, blob) in manifest.blobs.enumerated()
        where !state.present[position] && !state.flagged[position] && !state.isElsewhere(position) {
            state.problem(
                .blob, "listed in the bundle manifest but missing from the tar", entry: blob.digest.layoutPath,
                digest: blob.digest)
        }
        for (digest, _) in state.parts.sorted(by: { $0.key.description < $1.key.description })
        where !state.partsSeen.contains(digest) && !state.troubled.contains(digest) {
            state.problem(
                .blob, "part listed for this volume but missing from the tar", entry: digest.layoutPath, digest: digest)
        }
        if manifest.dockerManifest != nil && !state.dockerManifestSeen {
            state.problem(.layout, "missing", entry: BundleWriter.dockerManifestName)
        }
        guard let indexBytes = state.indexBytes else {
            state.problem(.index, "missing", entry: "index.json")
            return
        }
        let indexDigest = Digest.of(indexBytes, algorithm: manifest.index.digest.algorithm)
        if indexDigest != manifest.index.digest || Int64(indexBytes.count) != manifest.index.size {
            state.problem(
                .index, "does not match the bundle manifest", entry: "index.json",
                expected: "\(manifest.index.digest) (\(manifest.index.size) bytes)",
                found: "\(indexDigest) (\(indexBytes.count) bytes)")
        }
        guard let index = try? JSONDecoder().decode(ImageIndex.self, from: Data(indexBytes)) else {
            state.problem(.index, "does not parse as an OCI index", entry: "index.json")
            return
        }
        state.indexBytes = nil
        // Images named in the bundle manifest and index.json agree.
        var indexNames: [String: Digest] = [:]
        for (i, descriptor) in index.manifests.enumerated() {
            if let name = state.imageNames.map({ i < $0.count ? $0[i] : "" })
                ?? descriptor.annotations?[AnnotationKey.refName]
            {
                indexNames[name] = descriptor.digest
            }
        }
        for image in manifest.images {
            guard let digest = indexNames[image.reference] else {
                state.problem(.index, "image in the bundle manifest is not in index.json", image: image.reference)
                continue
            }
            if digest != image.digest {
                state.problem(
                    .index, "index.json and the bundle manifest disagree", image: image.reference,
                    expected: image.digest.description, found: digest.description)
            }
        }
        // One walk per image: what it reaches that the bundle carries (for an importer), which image
        // a troubled digest belongs to (to name it in problems), and what is referenced but absent.
        var reached = [Bool](repeating: false, count: manifest.blobs.count)
        var unnamed: Set<Digest> = []
        for problem in state.report.problems where problem.image == nil {
            if let text = problem.digest, let digest = try? Digest(text) { unnamed.insert(digest) }
        }
        var owners: [Digest: String] = [:]
        // A delta's images reach blobs the site holds: expected there, not missing here.
        let external = Set((manifest.external ?? []).map(\.digest))
        for (i, descriptor) in index.manifests.enumerated() {
            let image =
                state.imageNames.map { i < $0.count ? $0[i] : "" } ?? descriptor.annotations?[AnnotationKey.refName]
                ?? descriptor.digest.description
            var contents = VerificationReport.ImageContents(top: descriptor, manifests: [], blobs: [])
            var stack = [state.node(descriptor.digest, mediaType: descriptor.mediaType)]
            var seen: Set<Int32> = []
            while let next = stack.popLast() {
                guard seen.insert(next).inserted else { continue }
                let (digest, mediaType) =
                    next >= 0
                    ? (manifest.blobs[Int(next)].digest, manifest.blobs[Int(next)].mediaType ?? "")
                    : state.unlisted[Int(-1 - next)]
                if unnamed.contains(digest) && owners[digest] == nil { owners[digest] = image }
                guard next >= 0 && state.present[Int(next)] else {
                    if next >= 0 && state.isElsewhere(Int(next)) {
                        contents.blobs.insert(digest)
                        contents.elsewhere.insert(digest)
                        continue
                    }
                    if next < 0 && external.contains(digest) {
                        contents.blobs.insert(digest)
                        contents.external.insert(digest)
                        continue
                    }
                    // Non-distributable layers may be absent; a blob that failed already has its problem.
                    if !MediaType.isNondistributable(mediaType) && !state.hasProblem(next) {
                        state.problem(
                            .graph, "\(mediaType) referenced but not in the bundle", image: image, digest: digest)
                    }
                    continue
                }
                let position = Int(next)
                reached[position] = true
                let start = state.edgeStart[position]
                if start >= 0 {
                    contents.manifests.insert(digest)
                    let end = Int(start + state.edgeCount[position])
                    stack += state.edgeTargets[Int(start)..<end]
                } else {
                    contents.blobs.insert(digest)
                }
            }
            state.report.imageContents[image] = contents
        }
        for i in state.report.problems.indices where state.report.problems[i].image == nil {
            if let text = state.report.problems[i].digest, let digest = try? Digest(text) {
                state.report.problems[i].image = owners[digest]
            }
        }
        let imageNames = Set(manifest.images.map(\.reference))
        for name in indexNames.keys.sorted() where !imageNames.contains(name) {
            state.problem(.index, "image in index.json is not in the bundle manifest", image: name)
        }
        state.report.unreferencedBlobs = manifest.blobs.indices
            .filter { state.present[$0] && !reached[$0] }
            .map { manifest.blobs[$0].digest.description }
            .sorted()
    }

    /// Judges the signature once, then lets go of the bundle manifest's bytes (only it needs them).
    private func judgeSignature(_ state: inout ReadState) {
        state.signatureChecked = true
        checkSignature(&state)
        state.manifestBytes = nil
    }

    private func checkSignature(_ state: inout ReadState) {
        guard let signature = state.report.signature else {
            if requireSignature { state.problem(.signature, "bundle is not signed", entry: BundleSignature.fileName) }
            return
        }
        guard let manifestBytes = state.manifestBytes else {
            state.problem(.signature, "malformed signature", entry: BundleSignature.fileName)
            return
        }
        let entry = BundleSignature.fileName
        switch signature.verdict(over: manifestBytes, trustedKeys: trustedKeys) {
        case .valid(let trusted):
            state.report.trusted = trusted
        case .malformed:
            state.problem(.signature, "malformed signature", entry: entry)
        case .keyIDMismatch(let keyID):
            state.problem(.signature, "signature names a key ID that is not its key's", entry: entry, found: keyID)
        case .mismatch:
            state.problem(.signature, "signature does not match the bundle manifest", entry: entry)
        case .untrusted(let keyID):
            state.report.trusted = false
            state.problem(.signature, "signed by a key that is not trusted", entry: entry, found: keyID)
        case .tampered(let keyID):
            state.report.trusted = false
            state.problem(
                .signature, "signature does not match the bundle manifest (tampered)", entry: entry, found: keyID)
        }
    }
}
