import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import OCICore

/// Receives one blob response on the event loop and hands its body, in batches of 512 KiB, to a
/// thread-pool worker that verifies it and gives it to the sink (which may keep the batch itself:
/// ``BlobSink/write(buffer:)``).
///
/// AsyncHTTPClient's async body sequence reads one network chunk per consumer demand, two thread
/// hops per 16 KiB; this keeps the event loop reading while the previous batch is hashed and
/// written, and applies backpressure when more than one batch waits. Event-loop state (`pending`,
/// `inFlight`, `head`) is touched only on the event loop; the verifier and sink only by the chained
/// worker jobs, one at a time.
///
/// A transfer that continues an interrupted one starts with the verifier of what arrived before
/// (`resumeAt` bytes, hashed and written) and asks for the rest with a `Range` request: a `206`
/// must start where it was asked to, a `200` (a server without ranges) has its first `resumeAt`
/// bytes dropped.
final class BlobStreamDelegate: HTTPClientResponseDelegate, @unchecked Sendable {
    enum Outcome: Sendable {
        /// A 2xx body, streamed into the sink and verified.
        case streamed
        /// Any other answer, with up to 64 KiB of its body.
        case other(HTTPResponseHead, [UInt8])
    }
    typealias Response = EventLoopFuture<Outcome>

    static let batchSize = 512 << 10

    private let sink: any BlobSink
    private let pool: NIOThreadPool
    private let progress: @Sendable (Int64) -> Void
    /// What arrived so far, hashed (read after the outcome's future completed and ``drain()``).
    private(set) var verifier: BlobVerifier
    private let resumeAt: Int64
    /// Bytes still to drop from the start of a whole body answering a range request.
    private var skip: Int64 = 0
    private var head: HTTPResponseHead?
    /// Received bytes not yet handed to the worker, copied out of NIO's read buffers (a slice of
    /// a read buffer would otherwise pin the whole allocation behind it).
    private var pending = ByteBuffer()
    private var inFlight: EventLoopFuture<Void>?
    private var errorBody = ByteBuffer()
    private var eventLoop: (any EventLoop)?

    init(
        verifier: BlobVerifier, sink: any BlobSink, pool: NIOThreadPool,
        progress: @escaping @Sendable (Int64) -> Void
    ) {
        self.sink = sink
        self.pool = pool
        self.progress = progress
        self.verifier = verifier
        resumeAt = verifier.count
    }

    /// Bytes verified and written so far, with those of the transfers this one continues (read
    /// after the outcome's future completed).
    var count: Int64 { verifier.count }

    private var isSuccess: Bool { head.map { (200..<300).contains($0.status.code) } ?? false }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        self.eventLoop = task.eventLoop
        if resumeAt > 0 && isSuccess {
            if head.status == .partialContent {
                let range = head.headers.first(name: "Content-Range") ?? ""
                guard Self.rangeStart(range) == resumeAt else {
                    return task.eventLoop.makeFailedFuture(UnexpectedRange(asked: resumeAt, answer: range))
                }
            } else {
                skip = resumeAt
            }
        }
        return task.eventLoop.makeSucceededVoidFuture()
    }

    /// The first byte of a `Content-Range: bytes FIRST-LAST/SIZE` answer.
    static func rangeStart(_ value: String) -> Int64? {
        guard value.hasPrefix("bytes "), let dash = value.firstIndex(of: "-") else { return nil }
        return Int64(value[value.index(value.startIndex, offsetBy: 6)..<dash])
    }

    func didReceiveBodyPart(task: HTTPClient.Task<Response>, _ buffer: ByteBuffer) -> EventLoopFuture<Void> {
        guard isSuccess else {
            if errorBody.readableBytes < 64 * 1024 {
                var copy = buffer
                errorBody.writeBuffer(&copy)
            }
            return task.eventLoop.makeSucceededVoidFuture()
        }
        var buffer = buffer
        if skip > 0 {
            let dropped = Int(min(skip, Int64(buffer.readableBytes)))
            buffer.moveReaderIndex(forwardBy: dropped)
            skip -= Int64(dropped)
            if buffer.readableBytes == 0 { return task.eventLoop.makeSucceededVoidFuture() }
        }
        if pending.capacity == 0 { pending.reserveCapacity(Self.batchSize + buffer.readableBytes) }
        pending.writeBuffer(&buffer)
        guard pending.readableBytes >= Self.batchSize else { return task.eventLoop.makeSucceededVoidFuture() }
        // Keep reading while one batch is processed; wait when the one before it is still running.
        let previous = inFlight ?? task.eventLoop.makeSucceededVoidFuture()
        submit(on: task.eventLoop)
        return previous
    }

    /// A transfer cut off: what arrived is still hashed and written, so a retry continues from
    /// there.
    func didReceiveError(task: HTTPClient.Task<Response>, _ error: any Error) {
        if isSuccess && pending.readableBytes > 0 { submit(on: task.eventLoop) }
    }

    func didFinishRequest(task: HTTPClient.Task<Response>) throws -> Response {
        guard let head else { return task.eventLoop.makeFailedFuture(HTTPClientError.remoteConnectionClosed) }
        guard isSuccess else {
            return task.eventLoop.makeSucceededFuture(.other(head, Array(errorBody.readableBytesView)))
        }
        if pending.readableBytes > 0 { submit(on: task.eventLoop) }
        let last = inFlight ?? task.eventLoop.makeSucceededVoidFuture()
        return last.map { .streamed }
    }

    private func submit(on eventLoop: any EventLoop) {
        let batch = pending
        pending = ByteBuffer()
        let previous = inFlight ?? eventLoop.makeSucceededVoidFuture()
        inFlight = previous.flatMap { [self] in
            pool.runIfActive(eventLoop: eventLoop) { [self] in try process(batch) }
        }
    }

    /// Runs on a pool thread, after the previous batch: verify, write (one call per batch: many
    /// small writes cost far more than one large one), report.
    private func process(_ batch: ByteBuffer) throws {
        do {
            try batch.withUnsafeReadableBytes { try verifier.update($0) }
            do {
                try sink.write(buffer: batch)
            } catch {
                throw SinkFailure(underlying: error)
            }
        } catch {
            batchFailure = error
            throw error
        }
        progress(Int64(batch.readableBytes))
    }

    /// The failure of a batch (content that did not verify, a sink that refused it). The request
    /// may have failed for another reason first (the connection dropped before the next body part
    /// would have reported it); this one decides what the attempt's bytes are worth.
    private var batchFailure: (any Error)?

    /// Waits until no batch is being processed (after a failed request), and returns the failure
    /// of a batch, if one failed.
    func drain() async -> (any Error)? {
        guard let eventLoop else { return nil }
        _ = try? await eventLoop.flatSubmit { [self] in inFlight ?? eventLoop.makeSucceededVoidFuture() }.get()
        return batchFailure
    }
}

/// A range request answered from another place than asked.
struct UnexpectedRange: Error, CustomStringConvertible {
    var asked: Int64
    var answer: String
    var description: String { "asked for the blob from byte \(asked), got Content-Range '\(answer)'" }
}

/// The sink refused bytes (a full disk, say): not the network's fault, so not worth a retry.
struct SinkFailure: Error {
    var underlying: any Error
}
