/// Finds the parts of a JSON document without building a tree of it, so a large array can be
/// decoded a slice at a time (see ``BundleManifest/decode(_:)``). The scan only splits; every byte
/// is still checked by the decoder that reads the parts.
enum JSONScan {
    enum Failure: Error, CustomStringConvertible {
        case duplicateKey(String)
        var description: String {
            switch self {
            case .duplicateKey(let key): "the key \"\(key)\" appears twice"
            }
        }
    }

    /// The range, brackets included, of the array that is the value of the top-level member `key`;
    /// nil when there is none (or it is not an array, or the key is written with escapes).
    static func topLevelArray(named key: String, in bytes: UnsafeRawBufferPointer) throws(Failure) -> Range<Int>? {
        let name = Array(key.utf8)
        var found: Range<Int>?
        var seen = false
        var depth = 0
        var i = 0
        while i < bytes.count {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: "\""):
                let start = i + 1
                i = endOfString(bytes, from: start)
                guard depth == 1, i < bytes.count else { break }
                let end = i
                var next = i + 1
                while next < bytes.count, isSpace(bytes[next]) { next += 1 }
                guard next < bytes.count, bytes[next] == UInt8(ascii: ":"),
                    end - start == name.count, name.indices.allSatisfy({ bytes[start + $0] == name[$0] })
                else { break }
                if seen { throw .duplicateKey(key) }
                seen = true
                var value = next + 1
                while value < bytes.count, isSpace(bytes[value]) { value += 1 }
                if value < bytes.count, bytes[value] == UInt8(ascii: "["),
                    let close = matchingClose(bytes, from: value)
                {
                    found = value..<(close + 1)
                    i = close
                }
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            default:
                break
            }
            i += 1
        }
        return found
    }

    /// The elements of the array at `array` (brackets included), as ranges, in order.
    static func elements(of array: Range<Int>, in bytes: UnsafeRawBufferPointer) -> [Range<Int>] {
        var result: [Range<Int>] = []
        var start = array.lowerBound + 1
        let end = array.upperBound - 1
        walk(bytes, from: start, to: end) { i, byte, depth in
            if byte == UInt8(ascii: ","), depth == 0 {
                result.append(start..<i)
                start = i + 1
            }
            return true
        }
        // The last element, or nothing for `[]`; after a comma even a blank one, so a trailing
        // comma reaches the decoder and is refused there.
        if !result.isEmpty || (start..<end).contains(where: { !isSpace(bytes[$0]) }) { result.append(start..<end) }
        return result
    }

    /// The index of the quote that ends the string whose content starts at `start`.
    private static func endOfString(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        var i = start
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\\") {
                i += 2
                continue
            }
            if bytes[i] == UInt8(ascii: "\"") { return i }
            i += 1
        }
        return bytes.count
    }

    private static func matchingClose(_ bytes: UnsafeRawBufferPointer, from open: Int) -> Int? {
        var close: Int?
        walk(bytes, from: open, to: bytes.count) { i, byte, depth in
            guard depth == 0, byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") else { return true }
            close = i
            return false
        }
        return close
    }

    /// Visits each structural byte (outside strings) of `from..<to` with the nesting depth after
    /// it, until `visit` returns false.
    private static func walk(
        _ bytes: UnsafeRawBufferPointer, from: Int, to: Int, _ visit: (Int, UInt8, Int) -> Bool
    ) {
        var depth = 0
        var i = from
        while i < to {
            let byte = bytes[i]
            switch byte {
            case UInt8(ascii: "\""):
                i = endOfString(bytes, from: i + 1)
            case UInt8(ascii: "{"), UInt8(ascii: "["):
                depth += 1
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                depth -= 1
            default:
                break
            }
            if byte != UInt8(ascii: "\""), !visit(i, byte, depth) { return }
            i += 1
        }
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0a || byte == 0x0d || byte == 0x09
    }
}
