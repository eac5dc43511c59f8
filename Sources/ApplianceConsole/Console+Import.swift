import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import OCIRegistryServer

#if canImport(Glibc)
    import Glibc
#endif

extension Console {
    /// An upload from the import page: the multipart body parsed as it arrives, the session's CSRF
    /// token checked before the first byte of the file, and the file's bytes passed through a
    /// socket pair to the importer, which verifies and stores them in one pass (the upload is never
    /// held in memory, nor written anywhere first). A refused or broken upload changes nothing.
    func upload(_ request: Request, viewer: Viewer) async throws -> Response {
        guard let importAction else {
            throw ConsolePage(status: .notFound, heading: "Not found", text: "Imports are not served here.")
        }
        guard let boundary = MultipartStream.boundary(contentType: request.headers[.contentType] ?? "") else {
            throw ConsolePage(
                status: .badRequest, heading: "Not an upload", text: "Expected a file from the import form.")
        }
        let tooLarge = ConsolePage(
            status: .contentTooLarge, heading: "Too large",
            text: "The upload is larger than this appliance takes (\(Self.bytes(settings.maxUploadBytes))).")
        if let length = request.headers[.contentLength].flatMap({ Int64($0) }), length > settings.maxUploadBytes {
            throw tooLarge
        }
        var parser = MultipartStream(boundary: boundary)
        var part: String?
        var token: [UInt8] = []
        var tokenChecked = false
        var received: Int64 = 0
        var transfer: ImportTransfer?
        // The file's bytes go on in pieces of 1 MiB (one hand-over to the writing thread each).
        var pending: [UInt8] = []
        pending.reserveCapacity(Self.uploadPiece)
        defer { transfer?.abandon() }
        var failure: ConsolePage?
        body: for try await chunk in request.body {
            received += Int64(chunk.readableBytes)
            // Past a failure the rest of the body is only read (the client sends it anyway).
            if failure != nil { continue }
            if received > settings.maxUploadBytes {
                failure = tooLarge
                continue
            }
            let events: [MultipartStream.Event]
            do {
                events = try parser.feed(chunk.readableBytesView)
            } catch {
                failure = ConsolePage(
                    status: .badRequest, heading: "Broken upload", text: "The form data is malformed: \(error.why).")
                continue
            }
            for event in events {
                switch event {
                case .part(let name, let filename):
                    part = name
                    guard name == "bundle" else { continue }
                    guard tokenChecked else {
                        failure = ConsolePage(
                            status: .forbidden, heading: "Form refused",
                            text:
                                "The form has expired or did not come from this console. Reload the page and try again."
                        )
                        continue body
                    }
                    guard transfer == nil else {
                        failure = ConsolePage(
                            status: .badRequest, heading: "Broken upload", text: "Only one file at a time.")
                        continue body
                    }
                    transfer = try ImportTransfer(
                        name: Self.uploadName(filename), pool: importPool, action: importAction)
                case .data(let bytes):
                    if part == "csrf" {
                        token += bytes.prefix(max(0, 256 - token.count))
                    } else if part == "bundle", let transfer {
                        pending += bytes
                        if pending.count >= Self.uploadPiece {
                            try await transfer.send(pending)
                            pending.removeAll(keepingCapacity: true)
                        }
                    }
                case .partEnd:
                    if part == "csrf", let session = viewer.session {
                        tokenChecked = Self.constantTimeEqual(String(decoding: token, as: UTF8.self), session.csrf)
                    }
                    if part == "bundle", let transfer {
                        if !pending.isEmpty { try await transfer.send(pending) }
                        pending.removeAll()
                        transfer.finishSending()
                    }
                    part = nil
                }
            }
        }
        if let failure { throw failure }
        do {
            try parser.finish()
        } catch {
            throw ConsolePage(
                status: .badRequest, heading: "Broken upload", text: "The upload ended early: \(error.why).")
        }
        guard let running = transfer else {
            throw ConsolePage(
                status: tokenChecked ? .badRequest : .forbidden, heading: tokenChecked ? "No file" : "Form refused",
                text: tokenChecked
                    ? "Choose a bundle file to upload." : "The form has expired. Reload the page and try again.")
        }
        transfer = nil
        var values = base(viewer: viewer, title: "Import")
        do {
            let outcome = try await running.result()
            values["heading"] = "Imported \(running.name)"
            values["lines"] = outcome.lines.map { ["text": $0, "class": "message"] }
            values["images"] = outcome.images.map { image -> [String: Any] in
                [
                    "name": "\(image.repository)\(image.reference.contains(":") ? "@" : ":")\(image.reference)",
                    "repositoryLink": ConsoleForms.encode(image.repository),
                    "reference": ConsoleForms.encode(image.reference),
                ]
            }
            return html("imported", values)
        } catch let refusal as ImportRefusal {
            values["heading"] = "Refused: \(running.name)"
            values["lines"] = refusal.lines.map { ["text": $0, "class": "error"] }
            values["images"] = [[String: Any]]()
            return html("imported", values, status: .unprocessableContent)
        }
    }

    static let uploadPiece = 1 << 20

    /// The uploaded file's name as the import record and the page show it: its last component,
    /// printable, at most 100 characters.
    static func uploadName(_ filename: String?) -> String {
        let last = (filename ?? "").split(whereSeparator: { $0 == "/" || $0 == "\\" }).last.map(String.init) ?? ""
        let clean = String(last.unicodeScalars.filter { $0.value >= 0x20 && $0.value != 0x7f }.prefix(100))
        return clean.isEmpty ? "upload.tar" : clean
    }
}

/// One upload on its way to the importer: a socket pair (a write to a reader that has stopped
/// fails with EPIPE instead of raising SIGPIPE), the importer running on the import thread.
final class ImportTransfer: @unchecked Sendable {
    let name: String
    private let writeEnd: Int32
    private var open = true
    private let task: Task<Console.ImportOutcome, any Error>

    init(name: String, pool: NIOThreadPool, action: @escaping Console.ImportAction) throws {
        self.name = name
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw ConsolePage(
                status: .internalServerError, heading: "Cannot import", text: "No socket pair for the import.")
        }
        writeEnd = fds[1]
        let readEnd = fds[0]
        task = Task {
            try await pool.runIfActive {
                defer { close(readEnd) }
                return try action(readEnd, name)
            }
        }
    }

    /// Passes bytes on (blocking writes, on a pool thread); after the importer stopped reading
    /// (it refused the bundle early), the rest is dropped.
    func send(_ bytes: [UInt8]) async throws {
        guard open else { return }
        let fd = writeEnd
        let delivered = try await BlockingPools.files.runIfActive { () -> Bool in
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { buffer -> Int in
                    guard let base = buffer.baseAddress else { return 0 }
                    return Glibc.send(fd, base + offset, buffer.count - offset, Int32(MSG_NOSIGNAL))
                }
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }
        if !delivered { finishSending() }
    }

    /// The end of the file: the importer reads to its end and finishes.
    func finishSending() {
        guard open else { return }
        open = false
        close(writeEnd)
    }

    func result() async throws -> Console.ImportOutcome {
        finishSending()
        return try await task.value
    }

    /// A failed upload: the importer gets a truncated file, refuses it, and nothing changes.
    func abandon() {
        finishSending()
    }
}
