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
    private var verifier: BlobVerifier
    private var head: HTTPResponseHead?
    /// Received bytes not yet handed to the worker, copied out of NIO's read buffers (a slice of
    /// a read buffer would otherwise pin the whole allocation behind it).
    private var pending = ByteBuffer()
    private var inFlight: EventLoopFuture<Void>?
    private var errorBody = ByteBuffer()
    private var eventLoop: (any EventLoop)?

    init(descriptor: Descriptor, sink: any BlobSink, pool: NIOThreadPool, progress: @escaping @Sendable (Int64) -> Void)
    {
        self.sink = sink
        self.pool = pool
        self.progress = progress
        self.verifier = BlobVerifier(descriptor)
    }

    /// Bytes verified and written so far (read after the outcome's future completed).
    var count: Int64 { verifier.count }

    private var isSuccess: Bool { head.map { (200..<300).contains($0.status.code) } ?? false }

    func didReceiveHead(task: HTTPClient.Task<Response>, _ head: HTTPResponseHead) -> EventLoopFuture<Void> {
        self.head = head
        self.eventLoop = task.eventLoop
        return task.eventLoop.makeSucceededVoidFuture()
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
        if pending.capacity == 0 { pending.reserveCapacity(Self.batchSize + buffer.readableBytes) }
        pending.writeBuffer(&buffer)
        guard pending.readableBytes >= Self.batchSize else { return task.eventLoop.makeSucceededVoidFuture() }
        // Keep reading while one batch is processed; wait when the one before it is still running.
        let previous = inFlight ?? task.eventLoop.makeSucceededVoidFuture()
        submit(on: task.eventLoop)
        return previous
    }

    func didReceiveError(task: HTTPClient.Task<Response>, _ error: any Error) {}

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
        try batch.withUnsafeReadableBytes { try verifier.update($0) }
        do {
            try sink.write(buffer: batch)
        } catch {
            throw SinkFailure(underlying: error)
        }
        progress(Int64(batch.readableBytes))
    }

    /// Waits until no batch is being processed (after a failed request).
    func drain() async {
        guard let eventLoop else { return }
        _ = try? await eventLoop.flatSubmit { [self] in inFlight ?? eventLoop.makeSucceededVoidFuture() }.get()
    }

    /// Checks size and digest once everything arrived.
    func finish() throws(BlobVerificationError) { try verifier.finish() }
}

/// The sink refused bytes (a full disk, say): not the network's fault, so not worth a retry.
struct SinkFailure: Error {
    var underlying: any Error
}
