import Foundation

/// The small parsing the console needs: cookies and `application/x-www-form-urlencoded` bodies.
enum ConsoleForms {
    /// `a=1; b=2` → ["a": "1", "b": "2"] (the first of a repeated name wins).
    static func cookies(_ header: String?) -> [String: String] {
        var result: [String: String] = [:]
        for part in (header ?? "").split(separator: ";") {
            let pair = part.split(separator: "=", maxSplits: 1)
            guard pair.count == 2 else { continue }
            let name = pair[0].trimmingCharacters(in: .whitespaces)
            if result[name] == nil { result[name] = pair[1].trimmingCharacters(in: .whitespaces) }
        }
        return result
    }

    /// `a=1&b=x+y%21` → ["a": "1", "b": "x y!"]; nil for text that is not a form.
    static func fields(_ body: String) -> [String: String]? {
        var result: [String: String] = [:]
        for part in body.split(separator: "&") where !part.isEmpty {
            let pair = part.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            guard let name = decode(pair[0]), let value = decode(pair.count > 1 ? pair[1] : "") else { return nil }
            if result[name] == nil { result[name] = value }
        }
        return result
    }

    static func decode(_ text: Substring) -> String? {
        String(text).replacingOccurrences(of: "+", with: " ").removingPercentEncoding
    }

    /// For a link's query: everything but unreserved characters percent-encoded.
    static func encode(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}
