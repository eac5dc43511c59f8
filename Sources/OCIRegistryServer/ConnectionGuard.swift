import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import Synchronization

/// Limits that keep slow, idle and numerous clients from holding the server (`http` in appliance.yml).
public struct ConnectionLimits: Sendable, Equatable {
    /// From accepting a connection to a complete request head: the TLS handshake and the headers,
    /// however slowly they trickle in.
    public var headerTimeout: TimeAmount
    /// Between a response and the next request's head on a kept-alive connection.
    public var idleTimeout: TimeAmount
    /// Connections open at once; one more is closed as soon as it is accepted.
    public var maxConnections: Int

    public init(
        headerTimeout: TimeAmount = .seconds(30), idleTimeout: TimeAmount = .seconds(60), maxConnections: Int = 4096
    ) {
        self.headerTimeout = headerTimeout
        self.idleTimeout = idleTimeout
        self.maxConnections = maxConnections
    }
}

/// Counts the server's open connections.
final class ConnectionCounter: Sendable {
    private let count = Mutex(0)

    /// Takes a place; false when the server is full.
    func enter(limit: Int) -> Bool {
        count.withLock { count in
            guard count < limit else { return false }
            count += 1
            return true
        }
    }

    func leave() { count.withLock { $0 -= 1 } }
}

/// One per connection, after HTTP decoding: closes the connection when no complete request head
/// arrived within the header timeout (from accept: covers a TLS handshake that never ends and
/// headers sent a byte at a time) or the idle timeout (after a response), and refuses a
/// connection beyond the cap.
final class ConnectionGuard: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    let limits: ConnectionLimits
    let counter: ConnectionCounter
    private var counted = false
    private var timer: Scheduled<Void>?

    init(limits: ConnectionLimits, counter: ConnectionCounter) {
        self.limits = limits
        self.counter = counter
    }

    func handlerAdded(context: ChannelHandlerContext) {
        guard counter.enter(limit: limits.maxConnections) else {
            context.close(promise: nil)
            return
        }
        counted = true
        arm(context, after: limits.headerTimeout)
        // HTTP/1.0 needs its version, which the HTTP types Hummingbird works in do not carry:
        // look at it right after NIO's decoder.
        let pipeline = context.pipeline.syncOperations
        if let decoder = try? pipeline.context(handlerType: ByteToMessageHandler<HTTPRequestDecoder>.self) {
            try? pipeline.addHandler(HTTP10ConnectionClose(), position: .after(decoder.handler))
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if counted {
            counted = false
            counter.leave()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head = unwrapInboundIn(data) {
            timer?.cancel()
            timer = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { arm(context, after: limits.idleTimeout) }
        context.write(data, promise: promise)
    }

    private func arm(_ context: ChannelHandlerContext, after delay: TimeAmount) {
        timer?.cancel()
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: delay) { loopBound.value.close(promise: nil) }
    }
}

/// An HTTP/1.0 request closes its connection after the response unless it asks for keep-alive
/// (RFC 9112, 9.3): such a request is marked `Connection: close`, so the server closes instead of
/// waiting for a next request the client will never send (`ab` waits for the close).
final class HTTP10ConnectionClose: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .head(var head) = unwrapInboundIn(data), head.version.major == 1, head.version.minor == 0,
            !head.headers[canonicalForm: "connection"].contains(where: { $0.lowercased() == "keep-alive" })
        else {
            context.fireChannelRead(data)
            return
        }
        head.headers.replaceOrAdd(name: "connection", value: "close")
        context.fireChannelRead(wrapInboundOut(.head(head)))
    }
}
