import AsyncHTTPClient
import NIOCore
import NIOHTTP1
import NIOPosix
import OCICore

/// Receives one blob response on the event loop and hands its body, in batches of about 1 MiB, to a
/// thread-pool worker that verifies and writes it.
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

    static let batchSize = 1 << 20

    private let sink: any BlobSink
    private let pool: NIOThreadPool
    private let progress: @Sendable (Int64) -> Void
    private var verifier: BlobVerifier
    private var head: HTTPResponseHead?
    private var pending: [ByteBuffer] = []
    private var pendingBytes = 0
    private var inFlight: EventLoopFuture<Void>?
    private var errorBody = ByteBuffer()
    private var eventLoop: (any EventLoop)?
    /// Where a batch is gathered for one write; used by the worker jobs only.
    private var scratch = UnsafeMutableRawBufferPointer.allocate(
        byteCount: BlobStreamDelegate.batchSize + 65536, alignment: 16)

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
        pending.append(buffer)
        pendingBytes += buffer.readableBytes
        guard pendingBytes >= Self.batchSize else { return task.eventLoop.makeSucceededVoidFuture() }
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
        if !pending.isEmpty { submit(on: task.eventLoop) }
        let last = inFlight ?? task.eventLoop.makeSucceededVoidFuture()
        return last.map { .streamed }
    }

    private func submit(on eventLoop: any EventLoop) {
        let batch = pending
        pending = []
        pendingBytes = 0
        let previous = inFlight ?? eventLoop.makeSucceededVoidFuture()
        inFlight = previous.flatMap { [self] in
            pool.runIfActive(eventLoop: eventLoop) { [self] in try process(batch) }
        }
    }

    /// Runs on a pool thread, after the previous batch: verify, then write the batch with one
    /// call (many small writes cost far more than one large one), then report.
    private func process(_ batch: [ByteBuffer]) throws {
        let total = batch.reduce(0) { $0 + $1.readableBytes }
        if scratch.count < total {
            scratch.deallocate()
            scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: total, alignment: 16)
        }
        var offset = 0
        for buffer in batch {
            try buffer.withUnsafeReadableBytes { raw in
                try verifier.update(raw)
                UnsafeMutableRawBufferPointer(rebasing: scratch[offset..<(offset + raw.count)]).copyMemory(from: raw)
                offset += raw.count
            }
        }
        try sink.write(UnsafeRawBufferPointer(rebasing: scratch[0..<total]))
        progress(Int64(total))
    }

    deinit { scratch.deallocate() }

    /// Waits until no batch is being processed (after a failed request).
    func drain() async {
        guard let eventLoop else { return }
        _ = try? await eventLoop.flatSubmit { [self] in inFlight ?? eventLoop.makeSucceededVoidFuture() }.get()
    }

    /// Checks size and digest once everything arrived.
    func finish() throws(BlobVerificationError) { try verifier.finish() }
}
