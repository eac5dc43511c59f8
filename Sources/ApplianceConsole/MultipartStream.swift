#if canImport(Glibc)
    import Glibc
#endif

/// A `multipart/form-data` body parsed as it arrives (RFC 7578): parts' names and file names, and
/// their bytes in pieces, never a part held whole. Part headers are bounded (16 KiB).
struct MultipartStream {
    enum Event: Equatable {
        case part(name: String, filename: String?)
        case data([UInt8])
        case partEnd
    }

    struct Malformed: Error, Equatable {
        var why: String
    }

    enum State { case preamble, headers, body, done }

    private let delimiter: [UInt8]
    private var buffer: [UInt8]
    private(set) var state = State.preamble

    /// The boundary from a `Content-Type: multipart/form-data; boundary=...` header.
    static func boundary(contentType: String) -> String? {
        guard contentType.lowercased().hasPrefix("multipart/form-data") else { return nil }
        for parameter in contentType.split(separator: ";").dropFirst() {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, pair[0].trimmingCharacters(in: .whitespaces).lowercased() == "boundary" else {
                continue
            }
            var value = pair[1].trimmingCharacters(in: .whitespaces)
            if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                value = String(value.dropFirst().dropLast())
            }
            return value.isEmpty || value.count > 70 ? nil : value
        }
        return nil
    }

    init(boundary: String) {
        delimiter = Array("\r\n--\(boundary)".utf8)
        // The first boundary may open the body: as if a line break came before it.
        buffer = Array("\r\n".utf8)
    }

    /// Feeds the next piece of the body; returns what it completes.
    mutating func feed(_ bytes: some Collection<UInt8>) throws(Malformed) -> [Event] {
        buffer.append(contentsOf: bytes)
        var events: [Event] = []
        while true {
            switch state {
            case .preamble:
                guard let found = find(delimiter, from: 0) else {
                    // Keep only what could still begin a delimiter.
                    if buffer.count > delimiter.count { buffer.removeFirst(buffer.count - delimiter.count) }
                    return events
                }
                guard buffer.count >= found + delimiter.count + 2 else { return events }
                let after = Array(buffer[(found + delimiter.count)..<(found + delimiter.count + 2)])
                if after == Array("--".utf8) {
                    state = .done
                    return events
                }
                guard after == Array("\r\n".utf8) else {
                    throw Malformed(why: "a boundary not followed by a line break")
                }
                buffer.removeFirst(found + delimiter.count + 2)
                state = .headers
            case .headers:
                guard let end = find(Array("\r\n\r\n".utf8), from: 0) else {
                    if buffer.count > 16 * 1024 { throw Malformed(why: "part headers longer than 16 KiB") }
                    return events
                }
                guard end <= 16 * 1024 else { throw Malformed(why: "part headers longer than 16 KiB") }
                let text = String(decoding: buffer[..<end], as: UTF8.self)
                buffer.removeFirst(end + 4)
                let (name, filename) = try Self.disposition(text)
                events.append(.part(name: name, filename: filename))
                state = .body
            case .body:
                if let found = find(delimiter, from: 0) {
                    if found > 0 { events.append(.data(Array(buffer[..<found]))) }
                    events.append(.partEnd)
                    buffer.removeFirst(found)
                    state = .preamble
                    continue
                }
                // Everything but a possible start of the delimiter is the part's.
                let keep = delimiter.count - 1
                if buffer.count > keep {
                    events.append(.data(Array(buffer[..<(buffer.count - keep)])))
                    buffer.removeFirst(buffer.count - keep)
                }
                return events
            case .done:
                return events
            }
        }
    }

    /// The body ended: it must have ended with the closing boundary.
    func finish() throws(Malformed) {
        guard state == .done else { throw Malformed(why: "the body ended before its closing boundary") }
    }

    /// Where `needle` first occurs in the buffer at or after `start` (memchr for its first byte,
    /// then a compare: the body of a large upload is scanned at memory speed).
    private func find(_ needle: [UInt8], from start: Int) -> Int? {
        guard let first = needle.first, buffer.count - start >= needle.count else { return nil }
        return buffer.withUnsafeBufferPointer { haystack -> Int? in
            guard let base = haystack.baseAddress else { return nil }
            var i = start
            let last = haystack.count - needle.count
            while i <= last {
                guard let hit = memchr(base + i, Int32(first), last - i + 1) else { return nil }
                let at = base.distance(to: hit.assumingMemoryBound(to: UInt8.self))
                let same = needle.withUnsafeBufferPointer { pattern -> Bool in
                    guard let start = pattern.baseAddress else { return false }
                    return memcmp(base + at, start, needle.count) == 0
                }
                if same {
                    return at
                }
                i = at + 1
            }
            return nil
        }
    }

    /// `Content-Disposition: form-data; name="bundle"; filename="site.tar"` → ("bundle", "site.tar").
    static func disposition(_ headers: String) throws(Malformed) -> (String, String?) {
        for line in headers.split(separator: "\r\n") {
            let parts = line.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "content-disposition" else { continue }
            var name: String?
            var filename: String?
            for parameter in parts[1].split(separator: ";").dropFirst() {
                let pair = parameter.split(separator: "=", maxSplits: 1)
                guard pair.count == 2 else { continue }
                var value = pair[1].trimmingCharacters(in: .whitespaces)
                if value.hasPrefix("\""), value.hasSuffix("\""), value.count >= 2 {
                    value = String(value.dropFirst().dropLast())
                }
                switch pair[0].trimmingCharacters(in: .whitespaces).lowercased() {
                case "name": name = value
                case "filename": filename = value
                default: break
                }
            }
            guard let name else { break }
            return (name, filename)
        }
        throw Malformed(why: "a part without a form-data name")
    }
}
