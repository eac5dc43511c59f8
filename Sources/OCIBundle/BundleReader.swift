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
    /// sha256 of `ferry-bundle.json` as read: names a bundle (what an import records).
    public var manifestDigest: Digest?
    /// For each image name in `index.json`: its top digest and every manifest and blob it reaches
    /// that the bundle carries (for an importer; not part of the JSON report).
    public var imageContents: [String: ImageContents] = [:]

    public struct ImageContents: Sendable, Hashable {
        public var top: Descriptor
        public var manifests: Set<Digest>
        public var blobs: Set<Digest>
    }

    enum CodingKeys: String, CodingKey {
        case bundle, ok, manifest, signature, trusted, blobCount, blobBytes, problems, unreferencedBlobs
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
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(bundle, forKey: .bundle)
        try c.encode(ok, forKey: .ok)
        try c.encodeIfPresent(manifest, forKey: .manifest)
        try c.encodeIfPresent(signature, forKey: .signature)
        try c.encodeIfPresent(trusted, forKey: .trusted)
        try c.encode(blobCount, forKey: .blobCount)
        try c.encode(blobBytes, forKey: .blobBytes)
        try c.encode(problems, forKey: .problems)
        try c.encode(unreferencedBlobs, forKey: .unreferencedBlobs)
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
    func prepare(_ manifest: BundleManifest) throws
    func begin(_ blob: BundleManifest.Blob) throws
    func write(_ bytes: UnsafeRawBufferPointer) throws
    func commit() throws
    func abort()
}

extension BundleBlobSink {
    public func prepare(_ manifest: BundleManifest) throws {}
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

    /// Reads the bundle at `path`, or standard input for `-` (blocking; run it off the event loop).
    public func verify(path: String, sink: (any BundleBlobSink)? = nil, stopAfterHeader: Bool = false)
        throws(BundleError) -> VerificationReport
    {
        let fd = path == "-" ? STDIN_FILENO : open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .io("open \(path)", errno: errno) }
        defer { if path != "-" { close(fd) } }
        return verify(
            fileDescriptor: fd, name: path == "-" ? "(stdin)" : path, sink: sink, stopAfterHeader: stopAfterHeader)
    }

    /// Reads the whole bundle from `fileDescriptor`. `name` is what reports call it.
    public func verify(
        fileDescriptor: Int32, name: String, sink: (any BundleBlobSink)? = nil, stopAfterHeader: Bool = false
    ) -> VerificationReport {
        var state = ReadState(report: VerificationReport(bundle: name))
        do {
            let tar = try TarReader(fileDescriptor: fileDescriptor)
            if let compression = tar.compression {
                state.problem(
                    .structure,
                    "bundle is a \(compression)-compressed tar; a Ferry bundle is a plain tar (decompress it first)")
                return state.report
            }
            while let entry = try tar.next() {
                if try !read(entry, from: tar, into: &state, sink: sink) {
                    // What follows cannot be checked; completeness problems would only be noise.
                    return state.report
                }
                if stopAfterHeader && state.indexBytes != nil { return finishHeaderOnly(state) }
            }
        } catch let error as TarError {
            state.problem(.structure, error.description)
            return state.report
        } catch let error as SinkFailure {
            state.problem(.sink, String(describing: error.underlying))
            return state.report
        } catch {
            state.problem(.structure, String(describing: error))
            return state.report
        }
        finish(&state)
        return state.report
    }

    struct ReadState {
        var report: VerificationReport
        var layoutSeen = false
        var manifestBytes: [UInt8]?
        var indexBytes: [UInt8]?
        var names: Set<String> = []
        var listed: [Digest: BundleManifest.Blob] = [:]
        var present: [Digest: Int64] = [:]
        var documents: [Digest: ManifestDocument] = [:]
        var signatureChecked = false

        mutating func problem(
            _ kind: VerificationProblem.Kind, _ message: String, entry: String? = nil, image: String? = nil,
            digest: String? = nil, expected: String? = nil, found: String? = nil
        ) {
            report.problems.append(
                VerificationProblem(
                    kind, message, entry: entry, image: image, digest: digest, expected: expected, found: found))
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
        guard entry.type == .regular || entry.type == .directory else {
            state.problem(
                .structure,
                "\(entry.type) not allowed in a bundle"
                    + (entry.linkTarget.map { " (-> \($0))" } ?? ""), entry: entry.path)
            return true
        }
        guard state.names.insert(bare).inserted else {
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
            let bytes = try tar.readAll(limit: Self.documentLimit)
            state.manifestBytes = bytes
            state.report.manifestDigest = Digest.of(bytes)
            do {
                let manifest = try JSONDecoder().decode(BundleManifest.self, from: Data(bytes))
                guard manifest.formatVersion == BundleManifest.currentFormatVersion else {
                    state.problem(
                        .manifest, "unsupported bundle format", entry: bare,
                        expected: "\(BundleManifest.currentFormatVersion)", found: "\(manifest.formatVersion)")
                    return false
                }
                state.report.manifest = manifest
                for blob in manifest.blobs {
                    if state.listed.updateValue(blob, forKey: blob.digest) != nil {
                        state.problem(.manifest, "blob listed twice", entry: bare, digest: blob.digest.description)
                    }
                }
            } catch {
                state.problem(.manifest, "bundle manifest does not parse: \(error)", entry: bare)
                return false
            }
        case BundleSignature.fileName:
            let bytes = try tar.readAll(limit: 64 * 1024)
            guard let signature = try? JSONDecoder().decode(BundleSignature.self, from: Data(bytes)) else {
                state.problem(.signature, "signature file does not parse", entry: bare)
                return true
            }
            state.report.signature = signature
        case "index.json":
            state.indexBytes = try tar.readAll(limit: Self.documentLimit)
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
        guard state.report.manifest != nil else {
            state.problem(.structure, "blob before the bundle manifest: cannot verify in one pass", entry: entry.path)
            return false
        }
        // The signature is judged before the first blob, so a sink (an import) never receives the
        // content of a bundle that is not signed by a trusted key.
        if !state.signatureChecked {
            state.signatureChecked = true
            checkSignature(&state)
            if requireSignature && state.report.trusted != true { return false }
            if let sink, let manifest = state.report.manifest {
                do {
                    try sink.prepare(manifest)
                } catch {
                    throw SinkFailure(underlying: error)
                }
            }
        }
        guard let listed = state.listed[digest] else {
            state.problem(
                .blob, "blob not listed in the bundle manifest", entry: entry.path, digest: digest.description)
            return true
        }
        guard entry.size == listed.size else {
            state.problem(
                .blob, "size differs from the bundle manifest", entry: entry.path, digest: digest.description,
                expected: "\(listed.size) bytes", found: "\(entry.size) bytes")
            return true
        }
        let keep =
            entry.size <= ManifestDocument.maximumSize
            && MediaType.isManifestOrIndex(listed.mediaType)
        var verifier = BlobVerifier(digest: digest, size: listed.size)
        var kept: [UInt8] = []
        do {
            try sink?.begin(listed)
        } catch {
            throw SinkFailure(underlying: error)
        }
        do {
            while let block = try tar.nextBlock() {
                try verifier.update(block)
                if keep { kept.append(contentsOf: block) }
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
                    .blob, "content does not match its digest", entry: entry.path, digest: digest.description,
                    expected: expected.description, found: found.description)
            default:
                state.problem(.blob, error.description, entry: entry.path, digest: digest.description)
            }
            return true
        } catch {
            sink?.abort()
            throw error
        }
        do {
            try sink?.commit()
        } catch {
            throw SinkFailure(underlying: error)
        }
        state.present[digest] = listed.size
        state.report.blobCount += 1
        state.report.blobBytes += listed.size
        if keep,
            let document = try? ManifestDocument(bytes: kept, declaredMediaType: listed.mediaType, algorithm: algorithm)
        {
            state.documents[digest] = document
        }
        return true
    }

    private func finishHeaderOnly(_ state: ReadState) -> VerificationReport {
        var state = state
        if !state.signatureChecked { checkSignature(&state) }
        return state.report
    }

    /// Checks after the last entry: completeness, index.json, the graph, the signature.
    private func finish(_ state: inout ReadState) {
        if !state.layoutSeen { state.problem(.layout, "missing", entry: "oci-layout") }
        guard let manifest = state.report.manifest else {
            if state.manifestBytes == nil { state.problem(.manifest, "missing", entry: BundleManifest.fileName) }
            return
        }
        for blob in manifest.blobs
        where state.present[blob.digest] == nil
            && !state.report.problems.contains(where: {
                $0.digest == blob.digest.description
            })
        {
            state.problem(
                .blob, "listed in the bundle manifest but missing from the tar", entry: blob.digest.layoutPath,
                digest: blob.digest.description)
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
        // Images named in the bundle manifest and index.json agree.
        var indexNames: [String: Digest] = [:]
        for descriptor in index.manifests {
            if let name = descriptor.annotations?[AnnotationKey.refName] { indexNames[name] = descriptor.digest }
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
        // The graph: everything index.json reaches is present.
        let partialPlatforms = try? manifest.partial.map { try $0.platforms.map { try Platform(parsing: $0) } }
        let filter = PlatformFilter(partialPlatforms ?? nil ?? [])
        // One walk per image: what it reaches that the bundle carries (for an importer), which image
        // a digest belongs to (to name it in problems), and what is referenced but absent.
        var reached: Set<Digest> = []
        var owners: [String: String] = [:]
        for descriptor in index.manifests {
            let image = descriptor.annotations?[AnnotationKey.refName] ?? descriptor.digest.description
            var contents = VerificationReport.ImageContents(top: descriptor, manifests: [], blobs: [])
            var stack = [descriptor]
            var seen: Set<Digest> = []
            while let next = stack.popLast() {
                guard seen.insert(next.digest).inserted else { continue }
                if owners[next.digest.description] == nil { owners[next.digest.description] = image }
                guard state.present[next.digest] != nil else {
                    // Non-distributable layers may be absent; a blob that failed already has its problem.
                    if !MediaType.isNondistributable(next.mediaType)
                        && !state.report.problems.contains(where: { $0.digest == next.digest.description })
                    {
                        state.problem(
                            .graph, "\(next.mediaType) referenced but not in the bundle", image: image,
                            digest: next.digest.description)
                    }
                    continue
                }
                reached.insert(next.digest)
                if let document = state.documents[next.digest] {
                    contents.manifests.insert(next.digest)
                    // A partial bundle leaves other platforms out on purpose (selectedChildren).
                    stack += filter.selectedChildren(of: document)
                    stack += document.children.filter { MediaType.isNondistributable($0.mediaType) }
                } else {
                    contents.blobs.insert(next.digest)
                }
            }
            state.report.imageContents[image] = contents
        }
        for i in state.report.problems.indices where state.report.problems[i].image == nil {
            if let digest = state.report.problems[i].digest { state.report.problems[i].image = owners[digest] }
        }
        let imageNames = Set(manifest.images.map(\.reference))
        for name in indexNames.keys.sorted() where !imageNames.contains(name) {
            state.problem(.index, "image in index.json is not in the bundle manifest", image: name)
        }
        state.report.unreferencedBlobs = state.present.keys.filter { !reached.contains($0) }.map(\.description).sorted()
        if !state.signatureChecked { checkSignature(&state) }
    }

    private func checkSignature(_ state: inout ReadState) {
        guard let signature = state.report.signature else {
            if requireSignature { state.problem(.signature, "bundle is not signed", entry: BundleSignature.fileName) }
            return
        }
        guard let manifestBytes = state.manifestBytes, signature.algorithm == "ed25519",
            let signatureBytes = Data(base64Encoded: signature.signature).map(Array.init)
        else {
            state.problem(.signature, "malformed signature", entry: BundleSignature.fileName)
            return
        }
        guard !trustedKeys.isEmpty else {
            // No trust anchors: still check the signature against the key it carries, and that the
            // key ID it shows is that key's (so a report never names a signer falsely).
            guard let raw = Data(base64Encoded: signature.publicKey).map(Array.init), raw.count == 32,
                PublicKey(raw: raw).keyID == signature.keyID
            else {
                state.problem(
                    .signature, "signature names a key ID that is not its key's", entry: BundleSignature.fileName,
                    found: signature.keyID)
                return
            }
            if !PublicKey(raw: raw).verify(signature: signatureBytes, of: manifestBytes) {
                state.problem(
                    .signature, "signature does not match the bundle manifest", entry: BundleSignature.fileName)
            }
            return
        }
        guard let key = trustedKeys.first(where: { $0.keyID == signature.keyID }) else {
            state.report.trusted = false
            state.problem(
                .signature, "signed by a key that is not trusted", entry: BundleSignature.fileName,
                found: signature.keyID)
            return
        }
        if key.verify(signature: signatureBytes, of: manifestBytes) {
            state.report.trusted = true
        } else {
            state.report.trusted = false
            state.problem(
                .signature, "signature does not match the bundle manifest (tampered)", entry: BundleSignature.fileName,
                found: signature.keyID)
        }
    }
}
