import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import OCICore
import OCIStore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The running hash of each upload this process has received bytes for, so finishing an upload
/// needs no second read of its data. Lost on restart (the file is hashed again then).
final class UploadTracker: Sendable {
    final class Progress: @unchecked Sendable {
        var hasher = DigestHasher(.sha256)
        var size: Int64 = 0
    }

    private let entries = Mutex<[String: Progress]>([:])
    private let busy = Mutex<Set<String>>([])
    /// Open sessions per user (anonymous as ""), as started by this process.
    private let owners = Mutex<[String: Set<String>]>([:])

    /// Records a new session for `user` unless they hold `limit` already (sessions that have
    /// finished, been cancelled or expired — `isOpen` false — no longer count).
    func open(_ id: String, for user: String, limit: Int, isOpen: (String) -> Bool) -> Bool {
        owners.withLock { owners in
            var held = (owners[user] ?? []).filter(isOpen)
            guard held.count < limit else {
                owners[user] = held
                return false
            }
            held.insert(id)
            owners[user] = held
            return true
        }
    }

    /// The progress of `id` if its hash covers exactly `size` bytes; else a fresh one when `size` is 0.
    func progress(_ id: String, size: Int64) -> Progress? {
        entries.withLock { entries in
            if let progress = entries[id], progress.size == size { return progress }
            guard size == 0 else {
                entries[id] = nil
                return nil
            }
            let progress = Progress()
            entries[id] = progress
            return progress
        }
    }

    func forget(_ id: String) { _ = entries.withLock { $0.removeValue(forKey: id) } }

    /// One request at a time per upload: a second one gets false.
    func claim(_ id: String) -> Bool { busy.withLock { $0.insert(id).inserted } }
    func release(_ id: String) { _ = busy.withLock { $0.remove(id) } }
}

extension RegistryResponder {
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let uploadUUID = HTTPField.Name("Docker-Upload-UUID")!
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let ociSubject = HTTPField.Name("OCI-Subject")!
    // swift-format-ignore: NeverForceUnwrap
    // A literal token: valid by construction.
    static let ociTag = HTTPField.Name("OCI-Tag")!
    static let uploadBatch = 1 << 20

    // MARK: Uploads

    /// `POST /v2/<name>/blobs/uploads/`: a cross-repository mount (`?mount=&from=`), a monolithic
    /// upload (`?digest=` with the body), or a session for PATCH/PUT.
    func startUpload(_ name: RepositoryName, _ request: Request, caller: Caller) async throws -> Response {
        let query = request.uri.queryParameters
        let store = content.storage
        if let mount = query.get("mount"), let from = query.get("from"), let digest = try? Digest(mount),
            let source = try? RepositoryName(from), caller.allows(.pull, on: source.value),
            try await content.commit({ try $0.mountBlob(digest, from: source, to: name) })
        {
            return Response(
                status: .created,
                headers: [.location: "/v2/\(name)/blobs/\(digest)", Self.contentDigest: digest.description])
        }
        let uploadsRoot = store.uploads.root
        try await onFilesPool { [limits] in try limits.checkSpace(at: uploadsRoot, adding: 0) }
        let id = try await onFilesPool { try store.uploads.create(repository: name.value) }
        let opened = try await onFilesPool { [uploads, limits] in
            uploads.open(id, for: caller.name ?? "", limit: limits.maxUploadsPerUser) {
                store.uploads.status($0) != nil
            }
        }
        guard opened else {
            try await onFilesPool { store.uploads.remove(id) }
            throw DistributionError(
                status: 429, code: .tooManyRequests,
                message: "too many open uploads (\(limits.maxUploadsPerUser)); finish or cancel some first",
                detail: name.value)
        }
        if let digestString = query.get("digest") {
            guard let digest = try? Digest(digestString) else {
                store.uploads.remove(id)
                throw DistributionError.digestInvalid(digestString)
            }
            return try await finishUpload(name, id, digest: digest, body: request.body)
        }
        return Response(
            status: .accepted,
            headers: [
                .location: "/v2/\(name)/blobs/uploads/\(id)", .range: "0-0", Self.uploadUUID: id,
                .contentLength: "0",
            ])
    }

    /// PATCH (append a chunk), PUT (finish), GET (status) and DELETE (cancel) on an upload session.
    func continueUpload(_ name: RepositoryName, _ id: String, _ request: Request) async throws -> Response {
        let store = content.storage
        guard let status = try await onFilesPool({ store.uploads.status(id) }), status.repository == name.value else {
            throw DistributionError(status: 404, code: .blobUploadUnknown, message: "blob upload unknown", detail: id)
        }
        switch request.method {
        case .get:
            return Response(status: .noContent, headers: uploadHeaders(name, id, size: status.size))
        case .delete:
            uploads.forget(id)
            try await onFilesPool { store.uploads.remove(id) }
            return Response(status: .noContent, headers: [.contentLength: "0"])
        case .patch:
            if let refused = outOfOrder(request, name, id, size: status.size) { return refused }
            guard uploads.claim(id) else {
                throw DistributionError(
                    status: 409, code: .blobUploadInvalid, message: "another request is writing this upload", detail: id
                )
            }
            defer { uploads.release(id) }
            let size = try await append(request.body, to: id, from: status.size)
            // A Content-Range whose end is not where the body ended: the chunk is taken back.
            if let range = request.headers[.contentRange], let end = Self.rangeEnd(range), end != size - 1 {
                let path = store.uploads.dataPath(id)
                let previous = status.size
                try await onFilesPool {
                    guard truncate(path, off_t(previous)) == 0 else {
                        throw StoreError.io("truncate upload", errno: errno)
                    }
                }
                uploads.forget(id)
                var response = Self.errorResponse(
                    DistributionError(
                        status: 416, code: .blobUploadInvalid, message: "Content-Range does not match the body",
                        detail: "Content-Range \(range), body ended at byte \(size - 1)"), for: request)
                response.headers.append(
                    contentsOf: uploadHeaders(name, id, size: previous).filter { $0.name != .contentLength })
                return response
            }
            return Response(status: .accepted, headers: uploadHeaders(name, id, size: size))
        case .put:
            guard let digestString = request.uri.queryParameters.get("digest") else {
                throw DistributionError(
                    status: 400, code: .digestInvalid, message: "the digest query parameter is required", detail: id)
            }
            guard let digest = try? Digest(digestString) else { throw DistributionError.digestInvalid(digestString) }
            // A last chunk given with the PUT must follow on too; the upload stays as it was.
            if let refused = outOfOrder(request, name, id, size: status.size) { return refused }
            guard uploads.claim(id) else {
                throw DistributionError(
                    status: 409, code: .blobUploadInvalid, message: "another request is writing this upload", detail: id
                )
            }
            defer { uploads.release(id) }
            return try await finishUpload(name, id, digest: digest, body: request.body, from: status.size)
        default:
            throw DistributionError.unsupported("\(request.method.rawValue) on an upload")
        }
    }

    /// 416 with the upload's current Range when a `Content-Range` does not start where the upload ends.
    func outOfOrder(_ request: Request, _ name: RepositoryName, _ id: String, size: Int64) -> Response? {
        guard let range = request.headers[.contentRange] else { return nil }
        if let start = Self.rangeStart(range), start == size { return nil }
        var headers = uploadHeaders(name, id, size: size)
        headers[.contentLength] = nil
        let error = DistributionError(
            status: 416, code: .blobUploadInvalid, message: "chunk out of order",
            detail: "Content-Range \(range), upload holds \(size) bytes")
        var response = Self.errorResponse(error, for: request)
        response.headers.append(contentsOf: headers)
        return response
    }

    func uploadHeaders(_ name: RepositoryName, _ id: String, size: Int64) -> HTTPFields {
        [
            .location: "/v2/\(name)/blobs/uploads/\(id)", .range: "0-\(max(size - 1, 0))", Self.uploadUUID: id,
            .contentLength: "0",
        ]
    }

    /// `Content-Range: START-END` (the OCI chunk form) or `bytes START-END/…`: END.
    static func rangeEnd(_ header: String) -> Int64? {
        var text = Substring(header.trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("bytes ") { text = text.dropFirst(6) }
        guard let dash = text.firstIndex(of: "-") else { return nil }
        let end = text[text.index(after: dash)...].prefix { $0 != "/" }
        return Int64(end)
    }

    /// `Content-Range: START-END` (the OCI chunk form) or `bytes START-END/…`: START.
    static func rangeStart(_ header: String) -> Int64? {
        var text = Substring(header.trimmingCharacters(in: .whitespaces))
        if text.hasPrefix("bytes ") { text = text.dropFirst(6) }
        guard let dash = text.firstIndex(of: "-") else { return nil }
        return Int64(text[..<dash])
    }

    /// Appends a request body to an upload's data in 1 MiB batches written and hashed on the
    /// thread pool; returns the upload's new size.
    func append(_ body: RequestBody, to id: String, from offset: Int64) async throws -> Int64 {
        let path = content.storage.uploads.dataPath(id)
        let progress = uploads.progress(id, size: offset)
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw StoreError.io("open \(path)", errno: errno) }
        defer { close(fd) }
        var size = offset
        var batch = ByteBuffer()
        let limits = self.limits
        func flush() async throws {
            let chunk = batch
            let at = size
            batch = ByteBuffer()
            guard at + Int64(chunk.readableBytes) <= limits.maxUploadBytes else {
                throw DistributionError(
                    status: 413, code: .sizeInvalid,
                    message: "upload larger than \(limits.maxUploadBytes) bytes (storage.maxUploadBytes)", detail: id)
            }
            try await onFilesPool {
                try limits.checkSpace(at: path, adding: Int64(chunk.readableBytes))
                try chunk.withUnsafeReadableBytes { bytes in
                    guard let base = bytes.baseAddress else { return }
                    var done = 0
                    while done < bytes.count {
                        let n = pwrite(fd, base + done, bytes.count - done, off_t(at) + off_t(done))
                        if n < 0 && errno == EINTR { continue }
                        guard n > 0 else { throw StoreError.io("write \(path)", errno: errno) }
                        done += n
                    }
                    progress?.hasher.update(bytes)
                }
            }
            size += Int64(chunk.readableBytes)
            progress?.size = size
        }
        do {
            for try await chunk in body {
                batch.writeImmutableBuffer(chunk)
                if batch.readableBytes >= Self.uploadBatch { try await flush() }
            }
            if batch.readableBytes > 0 { try await flush() }
        } catch {
            uploads.forget(id)
            // Over the size limit it can never finish: its bytes go now, not after a day.
            if let error = error as? DistributionError, error.code == .sizeInvalid {
                let store = content.storage
                try? await onFilesPool { store.uploads.remove(id) }
            }
            throw error
        }
        return size
    }

    /// Appends the body, checks the digest, moves the blob into the store and links it to the repository.
    func finishUpload(
        _ name: RepositoryName, _ id: String, digest: Digest, body: RequestBody, from offset: Int64 = 0
    ) async throws -> Response {
        let store = content.storage
        let size = try await append(body, to: id, from: offset)
        let path = store.uploads.dataPath(id)
        let found: Digest
        if digest.algorithm == .sha256, let progress = uploads.progress(id, size: size) {
            found = progress.hasher.finalize()
        } else {
            found = try await onFilesPool { try BlobStore.hash(file: path, algorithm: digest.algorithm) }
        }
        uploads.forget(id)
        guard found == digest else {
            try await onFilesPool { store.uploads.remove(id) }
            throw DistributionError(
                status: 400, code: .digestInvalid, message: "provided digest did not match uploaded content",
                detail: "expected \(digest), found \(found)")
        }
        try await onFilesPool {
            try store.blobs.adopt(path, as: digest, size: size)
            store.uploads.remove(id)
        }
        // The link re-checks, inside its transaction, that gc has not taken the file meanwhile.
        do {
            try await commit { try $0.linkBlob(digest, to: name) }
        } catch let error as RegistryRuleError {
            throw DistributionError(
                status: 400, code: .blobUploadInvalid, message: "upload again: \(error)", detail: digest.description)
        }
        return Response(
            status: .created,
            headers: [
                .location: "/v2/\(name)/blobs/\(digest)", Self.contentDigest: digest.description, .contentLength: "0",
            ])
    }

    // MARK: Manifests

    /// `PUT /v2/<name>/manifests/<reference>[?tag=…]`: validated, stored byte for byte, tagged.
    func putManifest(_ name: RepositoryName, _ reference: String, _ request: Request) async throws -> Response {
        let bytes: ByteBuffer
        do {
            bytes = try await request.body.collect(upTo: ManifestDocument.maximumSize)
        } catch {
            throw DistributionError(
                status: 413, code: .sizeInvalid, message: "manifest larger than \(ManifestDocument.maximumSize) bytes",
                detail: name.value)
        }
        let raw = Array(buffer: bytes)
        var requested: Digest?
        var tags: [Tag] = []
        for text in request.uri.queryParameters.getAll("tag").map({ String($0) })
            + (reference.contains(":") ? [] : [reference])
        {
            guard let tag = try? Tag(text) else {
                throw DistributionError(status: 400, code: .manifestInvalid, message: "invalid tag", detail: text)
            }
            tags.append(tag)
        }
        if reference.contains(":") { requested = try Self.digest(reference) }
        let document: ManifestDocument
        do {
            document = try ManifestDocument(
                bytes: raw, declaredMediaType: request.headers[.contentType],
                algorithm: requested?.algorithm ?? .sha256)
        } catch {
            throw DistributionError(
                status: 400, code: .manifestInvalid, message: "manifest invalid", detail: "\(error)")
        }
        if let declared = request.headers[.contentType].map(Self.bareMediaType), declared != document.mediaType,
            MediaType.manifests.contains(declared) || MediaType.indexes.contains(declared)
        {
            throw DistributionError(
                status: 400, code: .manifestInvalid, message: "Content-Type differs from the manifest's mediaType",
                detail: "\(declared) vs \(document.mediaType)")
        }
        let digest = document.digest
        if let requested, requested != digest {
            throw DistributionError(
                status: 400, code: .digestInvalid, message: "manifest digest does not match the reference",
                detail: "expected \(requested), found \(digest)")
        }
        // The storage checks that everything it references is in the repository, inside the
        // transaction that adds it (the same rule an import follows).
        let tagsToSet = tags
        do {
            try await commit { try $0.putManifest(document, in: name, tags: tagsToSet) }
        } catch let error as RegistryRuleError {
            throw DistributionError(
                status: 400, code: .manifestBlobUnknown, message: error.description, detail: nil)
        }
        var headers: HTTPFields = [
            .location: "/v2/\(name)/manifests/\(digest)", Self.contentDigest: digest.description, .contentLength: "0",
        ]
        let subject: Descriptor? =
            switch document.content {
            case .manifest(let manifest): manifest.subject
            case .index(let index): index.subject
            }
        if let subject { headers[Self.ociSubject] = subject.digest.description }
        for tag in tags { headers.append(HTTPField(name: Self.ociTag, value: tag.value)) }
        return Response(status: .created, headers: headers)
    }

    /// `DELETE /v2/<name>/manifests/<digest>` removes the manifest and its tags; `…/<tag>` removes the tag only.
    func deleteManifest(_ name: RepositoryName, _ reference: ManifestReference) async throws -> Response {
        let removed = try await commit { storage -> Bool? in
            let done =
                switch reference {
                case .digest(let digest): try storage.deleteManifest(digest, in: name)
                case .tag(let tag): try storage.deleteTag(tag, in: name)
                }
            return done ? true : (try storage.contains(repository: name) ? false : nil)
        }
        guard let removed else { throw DistributionError.nameUnknown(name.value) }
        guard removed else { throw DistributionError.manifestUnknown(reference.description) }
        return Response(status: .accepted, headers: [.contentLength: "0"])
    }

    /// `DELETE /v2/<name>/blobs/<digest>`: unlinks the blob from the repository (gc reclaims the space).
    func deleteBlob(_ name: RepositoryName, _ digest: Digest) async throws -> Response {
        let removed = try await commit { storage -> Bool? in
            try storage.unlinkBlob(digest, from: name) ? true : (try storage.contains(repository: name) ? false : nil)
        }
        guard let removed else { throw DistributionError.nameUnknown(name.value) }
        guard removed else { throw DistributionError.blobUnknown(digest.description) }
        return Response(status: .accepted, headers: [.contentLength: "0"])
    }

    // MARK: Helpers

    /// A change through the storage, on the commits pool.
    func commit<Value: Sendable>(_ change: @escaping @Sendable (any RegistryStorage) throws -> Value) async throws
        -> Value
    {
        try await content.commit(change)
    }

    /// Upload file I/O, on the files pool.
    func onFilesPool<Value: Sendable>(_ work: @escaping @Sendable () throws -> Value) async throws -> Value {
        try await BlockingPools.files.runIfActive(work)
    }

    static func bareMediaType(_ value: String) -> String {
        String(value.split(separator: ";", maxSplits: 1).first ?? "").trimmingCharacters(in: .whitespaces)
    }
}
