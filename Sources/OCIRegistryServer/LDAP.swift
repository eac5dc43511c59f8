import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization

/// The few LDAPv3 operations a sign-in needs (RFC 4511): simple bind, search, unbind, in BER with
/// definite lengths, over TCP or TLS (`ldaps://`).

/// One BER element: a tag and either bytes or elements.
indirect enum BER: Equatable, Sendable {
    case primitive(tag: UInt8, [UInt8])
    case constructed(tag: UInt8, [BER])

    static func integer(_ value: Int, tag: UInt8 = 0x02) -> BER {
        var bytes: [UInt8] = []
        var remaining = value
        repeat {
            bytes.insert(UInt8(truncatingIfNeeded: remaining), at: 0)
            remaining >>= 8
        } while remaining > 0 && remaining != -1
        if value >= 0, let first = bytes.first, first & 0x80 != 0 { bytes.insert(0, at: 0) }
        return .primitive(tag: tag, bytes)
    }

    static func string(_ text: String, tag: UInt8 = 0x04) -> BER { .primitive(tag: tag, Array(text.utf8)) }

    var tag: UInt8 {
        switch self {
        case .primitive(let tag, _), .constructed(let tag, _): tag
        }
    }

    var encoded: [UInt8] {
        let content: [UInt8]
        switch self {
        case .primitive(_, let bytes): content = bytes
        case .constructed(_, let children): content = children.flatMap(\.encoded)
        }
        return [tag] + Self.length(content.count) + content
    }

    static func length(_ count: Int) -> [UInt8] {
        guard count >= 0x80 else { return [UInt8(count)] }
        var bytes: [UInt8] = []
        var remaining = count
        while remaining > 0 {
            bytes.insert(UInt8(remaining & 0xff), at: 0)
            remaining >>= 8
        }
        return [0x80 | UInt8(bytes.count)] + bytes
    }

    /// The total length of the element at the start of `bytes`, once its header is there.
    static func frameLength(_ bytes: ByteBufferView) -> Int? {
        guard bytes.count >= 2 else { return nil }
        let first = bytes[bytes.startIndex + 1]
        if first & 0x80 == 0 { return 2 + Int(first) }
        let count = Int(first & 0x7f)
        guard count >= 1, count <= 4, bytes.count >= 2 + count else { return count == 0 || count > 4 ? -1 : nil }
        var length = 0
        for i in 0..<count { length = length << 8 | Int(bytes[bytes.startIndex + 2 + i]) }
        return 2 + count + length
    }

    /// Parses one element (and nothing after it).
    static func parse(_ bytes: [UInt8]) throws(LDAPError) -> BER {
        var index = 0
        let element = try parse(bytes, at: &index, depth: 0)
        guard index == bytes.count else { throw .protocolError("trailing bytes") }
        return element
    }

    private static func parse(_ bytes: [UInt8], at index: inout Int, depth: Int) throws(LDAPError) -> BER {
        guard depth < 32, index + 2 <= bytes.count else { throw .protocolError("truncated element") }
        let tag = bytes[index]
        var length = Int(bytes[index + 1])
        index += 2
        if length & 0x80 != 0 {
            let count = length & 0x7f
            guard count >= 1, count <= 4, index + count <= bytes.count else { throw .protocolError("bad length") }
            length = 0
            for _ in 0..<count {
                length = length << 8 | Int(bytes[index])
                index += 1
            }
        }
        guard index + length <= bytes.count else { throw .protocolError("truncated element") }
        let end = index + length
        defer { index = end }
        guard tag & 0x20 != 0 else { return .primitive(tag: tag, Array(bytes[index..<end])) }
        var children: [BER] = []
        var position = index
        while position < end { children.append(try parse(bytes, at: &position, depth: depth + 1)) }
        return .constructed(tag: tag, children)
    }

    var children: [BER] {
        if case .constructed(_, let children) = self { return children }
        return []
    }

    var bytes: [UInt8] {
        if case .primitive(_, let bytes) = self { return bytes }
        return []
    }

    var text: String { String(decoding: bytes, as: UTF8.self) }

    var intValue: Int {
        bytes.reduce(bytes.first.map { $0 & 0x80 != 0 ? -1 : 0 } ?? 0) { $0 << 8 | Int($1) }
    }
}

/// A search filter (RFC 4515): `(&(objectClass=person)(!(uid=guest)))`, `(cn=a*b)`, `(mail=*)`.
public indirect enum LDAPFilter: Equatable, Sendable {
    case and([LDAPFilter])
    case or([LDAPFilter])
    case not(LDAPFilter)
    case equal(String, String)
    case present(String)
    /// initial, any, final (`cn=ab*cd*ef`).
    case substrings(String, initial: String?, any: [String], final: String?)

    var ber: BER {
        switch self {
        case .and(let filters): .constructed(tag: 0xa0, filters.map(\.ber))
        case .or(let filters): .constructed(tag: 0xa1, filters.map(\.ber))
        case .not(let filter): .constructed(tag: 0xa2, [filter.ber])
        case .equal(let attribute, let value): .constructed(tag: 0xa3, [.string(attribute), .string(value)])
        case .present(let attribute): .string(attribute, tag: 0x87)
        case .substrings(let attribute, let initial, let any, let final):
            .constructed(
                tag: 0xa4,
                [
                    .string(attribute),
                    .constructed(
                        tag: 0x30,
                        (initial.map { [BER.string($0, tag: 0x80)] } ?? []) + any.map { .string($0, tag: 0x81) }
                            + (final.map { [BER.string($0, tag: 0x82)] } ?? [])),
                ])
        }
    }

    /// Parses the string form; `\XX` escapes a byte in a value.
    public init(parsing text: String) throws(LDAPError) {
        var index = text.startIndex
        self = try Self.parse(text, at: &index)
        guard index == text.endIndex else { throw .badFilter(text) }
    }

    private static func parse(_ text: String, at index: inout String.Index) throws(LDAPError) -> LDAPFilter {
        guard index < text.endIndex, text[index] == "(" else { throw .badFilter(text) }
        index = text.index(after: index)
        guard index < text.endIndex else { throw .badFilter(text) }
        let filter: LDAPFilter
        switch text[index] {
        case "&", "|", "!":
            let kind = text[index]
            index = text.index(after: index)
            var parts: [LDAPFilter] = []
            while index < text.endIndex, text[index] == "(" { parts.append(try parse(text, at: &index)) }
            switch kind {
            case "&": filter = .and(parts)
            case "|": filter = .or(parts)
            default:
                guard parts.count == 1, let only = parts.first else { throw .badFilter(text) }
                filter = .not(only)
            }
        default:
            guard let close = text[index...].firstIndex(of: ")"), let equals = text[index..<close].firstIndex(of: "=")
            else { throw .badFilter(text) }
            let attribute = String(text[index..<equals])
            let raw = String(text[text.index(after: equals)..<close])
            guard !attribute.isEmpty, attribute.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." })
            else { throw .badFilter(text) }
            if raw == "*" {
                filter = .present(attribute)
            } else if raw.contains("*") {
                let pieces = try raw.split(separator: "*", omittingEmptySubsequences: false).map {
                    piece throws(LDAPError) in try unescape(String(piece), in: text)
                }
                filter = .substrings(
                    attribute, initial: pieces.first.flatMap { $0.isEmpty ? nil : $0 },
                    any: pieces.dropFirst().dropLast().filter { !$0.isEmpty },
                    final: pieces.count > 1 ? pieces.last.flatMap { $0.isEmpty ? nil : $0 } : nil)
            } else {
                filter = .equal(attribute, try unescape(raw, in: text))
            }
            index = close
        }
        guard index < text.endIndex, text[index] == ")" else { throw .badFilter(text) }
        index = text.index(after: index)
        return filter
    }

    private static func unescape(_ value: String, in filter: String) throws(LDAPError) -> String {
        guard value.contains("\\") else { return value }
        var bytes: [UInt8] = []
        var utf8 = Array(value.utf8)[...]
        while let byte = utf8.popFirst() {
            guard byte == UInt8(ascii: "\\") else {
                bytes.append(byte)
                continue
            }
            guard utf8.count >= 2, let code = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) else {
                throw .badFilter(filter)
            }
            bytes.append(code)
            utf8 = utf8.dropFirst(2)
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

public enum LDAPError: Error, Equatable, CustomStringConvertible {
    case unreachable(String)
    case protocolError(String)
    case badFilter(String)
    case badURL(String)
    /// An operation the directory refused (other than a wrong password), with its result code.
    case refused(operation: String, code: Int, message: String)

    public var description: String {
        switch self {
        case .unreachable(let why): "directory unreachable: \(why)"
        case .protocolError(let why): "directory answered what is not LDAP: \(why)"
        case .badFilter(let filter): "not an LDAP filter: \(filter)"
        case .badURL(let url): "not an ldap:// or ldaps:// URL: \(url)"
        case .refused(let operation, let code, let message):
            "directory refused the \(operation) (result \(code))\(message.isEmpty ? "" : ": \(message)")"
        }
    }
}

/// Splits the byte stream into whole LDAP messages.
struct BERFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = ByteBuffer
    static let maximumMessage = 4 << 20

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let length = BER.frameLength(buffer.readableBytesView) else { return .needMoreData }
        guard length > 0, length <= Self.maximumMessage else {
            throw LDAPError.protocolError("a message of \(length) bytes")
        }
        guard buffer.readableBytes >= length, let frame = buffer.readSlice(length: length) else {
            return .needMoreData
        }
        context.fireChannelRead(Self.wrapInboundOut(frame))
        return .continue
    }
}

/// Set once a deadline passed (read by the task that sees the connection close).
final class ExpiredFlag: Sendable {
    private let state = Mutex(false)
    func set() { state.withLock { $0 = true } }
    var isSet: Bool { state.withLock { $0 } }
}

/// One connection to a directory, used for one sign-in and closed.
struct LDAPConnection {
    struct Entry: Sendable {
        var dn: String
        var attributes: [String: [String]]
    }

    let outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>
    private var iterator: NIOAsyncChannelInboundStream<ByteBuffer>.AsyncIterator
    private var nextID = 1

    init(inbound: NIOAsyncChannelInboundStream<ByteBuffer>, outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>) {
        iterator = inbound.makeAsyncIterator()
        self.outbound = outbound
    }

    /// Runs `body` over a new connection to `url` (ldap:// or ldaps://), closed afterwards.
    static func with<Result: Sendable>(
        url: URL, tls: TLSConfiguration?, timeout: TimeAmount,
        _ body: @escaping @Sendable (inout LDAPConnection) async throws -> Result
    ) async throws -> Result {
        guard let host = url.host, ["ldap", "ldaps"].contains(url.scheme ?? "") else {
            throw LDAPError.badURL(url.absoluteString)
        }
        let secure = url.scheme == "ldaps"
        let port = url.port ?? (secure ? 636 : 389)
        let context = try secure ? NIOSSLContext(configuration: tls ?? .makeClientConfiguration()) : nil
        let channel: NIOAsyncChannel<ByteBuffer, ByteBuffer>
        do {
            channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                .connectTimeout(timeout)
                .connect(host: host, port: port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if let context {
                            // SNI and the name check for a host name; an address is checked as one.
                            let isAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
                            let name = isAddress ? nil : host
                            try channel.pipeline.syncOperations.addHandler(
                                NIOSSLClientHandler(context: context, serverHostname: name))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(BERFrameDecoder()))
                        return try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw LDAPError.unreachable("\(host):\(port): \(error)")
        }
        let underlying = channel.channel
        let timedOut = LDAPError.unreachable("\(host):\(port): no answer in \(timeout.nanoseconds / 1_000_000_000) s")
        let expired = ExpiredFlag()
        return try await channel.executeThenClose { inbound, outbound in
            try await withThrowingTaskGroup(of: Result.self) { group in
                group.addTask {
                    var connection = LDAPConnection(inbound: inbound, outbound: outbound)
                    let result = try await body(&connection)
                    try? await connection.send(.primitive(tag: 0x42, []))  // unbind
                    return result
                }
                group.addTask {
                    try await Task.sleep(nanoseconds: UInt64(timeout.nanoseconds))
                    expired.set()
                    try? await underlying.close()  // ends a read that waits
                    throw timedOut
                }
                do {
                    guard let first = try await group.next() else { throw timedOut }
                    group.cancelAll()
                    return first
                } catch {
                    // The closed connection's error comes first; the deadline is the cause.
                    throw expired.isSet ? timedOut : error
                }
            }
        }
    }

    private mutating func send(_ operation: BER) async throws {
        let message = BER.constructed(tag: 0x30, [.integer(nextID), operation])
        nextID += 1
        try await outbound.write(ByteBuffer(bytes: message.encoded))
    }

    /// The next message's protocol operation (and its message ID's answer only).
    private mutating func receive() async throws -> BER {
        while true {
            guard let frame = try await iterator.next() else {
                throw LDAPError.unreachable("the directory closed the connection")
            }
            let message = try BER.parse(Array(frame.readableBytesView))
            let parts = message.children
            guard message.tag == 0x30, parts.count >= 2 else { throw LDAPError.protocolError("not an LDAPMessage") }
            if parts[0].intValue == 0 {  // an unsolicited notice (a disconnection)
                throw LDAPError.unreachable("the directory ended the session")
            }
            return parts[1]
        }
    }

    /// A simple bind: true when the directory accepted the DN and password, false for wrong
    /// credentials (result 49); other results throw.
    mutating func bind(dn: String, password: String) async throws -> Bool {
        try await send(.constructed(tag: 0x60, [.integer(3), .string(dn), .string(password, tag: 0x80)]))
        let response = try await receive()
        guard response.tag == 0x61 else { throw LDAPError.protocolError("expected a bind response") }
        let (code, message) = Self.result(response)
        if code == 0 { return true }
        if code == 49 { return false }
        throw LDAPError.refused(operation: "bind as \(dn)", code: code, message: message)
    }

    /// A search: every entry found (at most `limit`), with the named attributes.
    mutating func search(base: String, scope: Int, filter: LDAPFilter, attributes: [String], limit: Int) async throws
        -> [Entry]
    {
        try await send(
            .constructed(
                tag: 0x63,
                [
                    .string(base), .integer(scope, tag: 0x0a), .integer(0, tag: 0x0a), .integer(limit), .integer(10),
                    .primitive(tag: 0x01, [0]), filter.ber, .constructed(tag: 0x30, attributes.map { .string($0) }),
                ]))
        var entries: [Entry] = []
        while true {
            let response = try await receive()
            switch response.tag {
            case 0x64:
                let parts = response.children
                guard parts.count >= 2 else { throw LDAPError.protocolError("an entry without attributes") }
                var attributes: [String: [String]] = [:]
                for attribute in parts[1].children where attribute.children.count == 2 {
                    attributes[attribute.children[0].text.lowercased()] = attribute.children[1].children.map(\.text)
                }
                entries.append(Entry(dn: parts[0].text, attributes: attributes))
            case 0x73: continue  // a referral elsewhere: not followed
            case 0x65:
                let (code, message) = Self.result(response)
                // 4: size limit exceeded (more than `limit` entries): what came is enough to tell.
                guard code == 0 || code == 4 || code == 32 else {
                    throw LDAPError.refused(operation: "search under \(base)", code: code, message: message)
                }
                return entries
            default: throw LDAPError.protocolError("unexpected answer to a search")
            }
        }
    }

    static func result(_ response: BER) -> (code: Int, message: String) {
        let parts = response.children
        return (parts.first?.intValue ?? -1, parts.count > 2 ? parts[2].text : "")
    }
}
