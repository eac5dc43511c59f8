import Foundation
import OCIRegistryServer
import OCIStore
import Testing

@testable import ApplianceConsole

struct MultipartStreamTests {
    static let body = Array(
        ("preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc123\r\n"
            + "--XyZ\r\nContent-Disposition: form-data; name=\"bundle\"; filename=\"site.tar\"\r\n"
            + "Content-Type: application/x-tar\r\n\r\n" + "\r\n--Xy not yet\r\n--XyQ"
            + String(repeating: "T", count: 300)
            + "\r\n--XyZ--\r\nepilogue").utf8)

    /// Whatever way the body is cut into pieces, the parts and their bytes come out the same.
    @Test(arguments: [1, 2, 3, 7, 64, 1000])
    func partsSurviveAnySplit(pieceSize: Int) throws {
        var stream = MultipartStream(boundary: "XyZ")
        var events: [MultipartStream.Event] = []
        var index = 0
        while index < Self.body.count {
            events += try stream.feed(Self.body[index..<min(index + pieceSize, Self.body.count)])
            index += pieceSize
        }
        try stream.finish()
        var parts: [(String, String?, [UInt8])] = []
        for event in events {
            switch event {
            case .part(let name, let filename): parts.append((name, filename, []))
            case .data(let bytes): parts[parts.count - 1].2 += bytes
            case .partEnd: break
            }
        }
        #expect(parts.map(\.0) == ["csrf", "bundle"])
        #expect(parts[1].1 == "site.tar")
        #expect(String(decoding: parts[0].2, as: UTF8.self) == "abc123")
        #expect(
            String(decoding: parts[1].2, as: UTF8.self)
                == "\r\n--Xy not yet\r\n--XyQ" + String(repeating: "T", count: 300))
    }

    @Test func aBodyCutShortOrMalformedIsRefused() throws {
        var cut = MultipartStream(boundary: "XyZ")
        _ = try cut.feed(Self.body.prefix(150))
        #expect(throws: MultipartStream.Malformed.self) { try cut.finish() }
        var nameless = MultipartStream(boundary: "b")
        #expect(throws: MultipartStream.Malformed.self) {
            _ = try nameless.feed(Array("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--".utf8))
        }
        #expect(MultipartStream.boundary(contentType: "multipart/form-data; boundary=\"a b\"") == "a b")
        #expect(MultipartStream.boundary(contentType: "application/json") == nil)
    }
}

struct ConsoleEscapingTests {
    /// A quote followed by a combining mark is one grapheme; it must still be escaped, in a page
    /// template and in the layout around it.
    @Test func quotesWithCombiningMarksAreEscapedEverywhere() throws {
        let root = NSTemporaryDirectory() + "/ferry-escape-\(UUID())"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let console = try Console(
            content: RegistryContent(storage: try RegistryStore(root: root)),
            authenticator: nil,
            settings: .init(secureCookies: true, version: "1", dataDirectory: "/", certificateExpiry: nil))
        let hostile = "\"\u{301} autofocus onfocus=alert(1) x=\"<b>"
        let page =
            console.library.render(
                ["title": hostile, "version": "1", "query": hostile, "queryLink": "", "names": [[String: Any]]()],
                withTemplate: "repositories") ?? ""
        let raw = "\"\u{301} autofocus"
        let escaped = "&quot;\u{301} autofocus"
        let unescaped = page.contains(raw)
        let quoted = page.contains(escaped)
        #expect(!unescaped)
        #expect(quoted)
        #expect(!page.contains("<b>"))
    }
}
