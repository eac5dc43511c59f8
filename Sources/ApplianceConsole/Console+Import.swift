import Dispatch
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import NIOPosix
import OCIRegistryServer
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

extension Console {
    /// An upload from the import page: the multipart body parsed as it arrives, the session's CSRF
    /// token checked before the first byte of the file, and the file's bytes passed through a
    /// socket pair to the importer, which verifies and stores them in one pass (the upload is never
    /// held in memory, nor written anywhere first). Nothing becomes visible until the whole request
    /// is known good: a refused, broken, oversized or abandoned upload changes nothing. One upload
    /// at a time; one slower than 64 KiB/s after its first minute is dropped.
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
        guard uploads.enter() else {
            throw ConsolePage(
                status: .conflict, heading: "Busy", text: "Another bundle is being imported. Try again when it is done."
            )
        }
        defer { uploads.leave() }
        var parser = MultipartStream(boundary: boundary)
        var part: String?
        var token: [UInt8] = []
        var tokenChecked = false
        var received: Int64 = 0
        let started = ContinuousClock.now
        var transfer: ImportTransfer?
        // Whatever happens before the verdict, the importer is told no.
        defer { transfer?.refuse() }
        // The file's bytes go on in pieces of 1 MiB (one hand-over to the writing thread each).
        var pending: [UInt8] = []
        pending.reserveCapacity(Self.uploadPiece)
        var failure: ConsolePage?
        body: for try await chunk in request.body {
            received += Int64(chunk.readableBytes)
            if received > settings.maxUploadBytes {
                failure = tooLarge
                break
            }
            let elapsed = (ContinuousClock.now - started).components.seconds
            if elapsed > 60 && received / elapsed < 64 * 1024 {
                failure = ConsolePage(
                    status: .requestTimeout, heading: "Too slow", text: "The upload was slower than 64 KiB/s.")
                break
            }
            let events: [MultipartStream.Event]
            do {
                events = try parser.feed(chunk.readableBytesView)
            } catch {
                failure = ConsolePage(
                    status: .badRequest, heading: "Broken upload", text: "The form data is malformed: \(error.why).")
                break
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
                        break body
                    }
                    guard transfer == nil else {
                        failure = ConsolePage(
                            status: .badRequest, heading: "Broken upload", text: "Only one file at a time.")
                        break body
                    }
                    transfer = try ImportTransfer(
                        name: Self.uploadName(filename), importPool: importPool, writerPool: uploadPool,
                        action: importAction)
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
        // The whole request arrived intact: the importer may commit.
        running.approve()
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

/// At most one upload at a time.
final class UploadGate: Sendable {
    private let busy = Mutex(false)
    func enter() -> Bool { busy.withLock { if $0 { return false } else { $0 = true; return true } } }
    func leave() { busy.withLock { $0 = false } }
}

/// One upload on its way to the importer: a socket pair (a write to a reader that has stopped
/// fails with EPIPE instead of raising SIGPIPE), written from the console's upload thread, read by
/// the importer on the import thread, which asks for the request's verdict before it commits.
final class ImportTransfer: Sendable {
    let name: String
    private let writeEnd: Mutex<Int32>
    private let verdict = Verdict()
    private let writerPool: NIOThreadPool
    private let task: Task<Console.ImportOutcome, any Error>

    init(name: String, importPool: NIOThreadPool, writerPool: NIOThreadPool, action: @escaping Console.ImportAction)
        throws
    {
        self.name = name
        self.writerPool = writerPool
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw ConsolePage(
                status: .internalServerError, heading: "Cannot import", text: "No socket pair for the import.")
        }
        writeEnd = Mutex(fds[1])
        let readEnd = fds[0]
        let verdict = self.verdict
        task = Task {
            do {
                return try await importPool.runIfActive {
                    defer { close(readEnd) }
                    return try action(readEnd, name) { verdict.wait() }
                }
            } catch {
                // The pool did not run it (shut down): the read end is still open.
                if !(error is Console.ImportRefusal) { close(readEnd) }
                throw error
            }
        }
    }

    /// Passes bytes on (blocking writes, on the upload thread); after the importer stopped reading
    /// (it refused the bundle early), the rest is dropped.
    func send(_ bytes: [UInt8]) async throws {
        guard let fd = writeEnd.withLock({ $0 >= 0 ? $0 : nil }) else { return }
        let delivered = try await writerPool.runIfActive { () -> Bool in
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

    /// The end of the file: the importer reads to its end.
    func finishSending() {
        writeEnd.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// The request arrived whole: the importer may commit what it verified.
    func approve() { verdict.decide(true) }

    /// The request failed: whatever the importer verified is not committed.
    func refuse() {
        finishSending()
        verdict.decide(false)
    }

    func result() async throws -> Console.ImportOutcome {
        finishSending()
        return try await task.value
    }
}

/// The request's word on an upload, given once; the importer waits for it before committing.
final class Verdict: Sendable {
    private let value = Mutex<Bool?>(nil)
    private let given = DispatchSemaphore(value: 0)

    func decide(_ commit: Bool) {
        let first = value.withLock { current -> Bool in
            guard current == nil else { return false }
            current = commit
            return true
        }
        if first { given.signal() }
    }

    /// Blocks until decided (on the import thread).
    func wait() -> Bool {
        given.wait()
        given.signal()  // a second wait returns at once
        return value.withLock { $0 } == true
    }
}
