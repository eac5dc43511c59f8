import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Slow, idle and numerous clients cannot hold the appliance: header and idle timeouts, a cap on
/// connections, with the settings from appliance.yml.
@Suite(.serialized)
struct ConnectionLimitTests {
    /// A TCP connection to 127.0.0.1:port (blocking, with a receive timeout).
    static func connect(_ port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        return fd
    }

    /// Seconds until the server closes the connection (a read returns 0), at most 10.
    static func secondsUntilClosed(_ fd: Int32) -> Double {
        let started = Date()
        var byte: UInt8 = 0
        while read(fd, &byte, 1) > 0 {}
        return Date().timeIntervalSince(started)
    }

    @Test func slowIdleAndSurplusConnectionsAreClosed() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        try "http:\n  headerTimeout: 2\n  idleTimeout: 2\n  maxConnections: 6\n".write(
            toFile: "\(work)/appliance.yml", atomically: true, encoding: .utf8)
        let appliance = try ApplianceFixture(
            dataDirectory: "\(work)/data", anonymous: "pull", extraArguments: ["--config", "\(work)/appliance.yml"])
        defer { appliance.stop() }
        let port = Int(appliance.host.split(separator: ":")[1]) ?? 0

        // Nothing sent (not even a TLS hello): closed after the header timeout.
        let silent = Self.connect(port)
        let waited = Self.secondsUntilClosed(silent)
        close(silent)
        #expect(waited > 1 && waited < 5, "closed after \(waited) s")

        // Headers a byte at a time over TLS: cut off, though bytes keep coming.
        let trickle = Process()
        trickle.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        trickle.arguments = ["s_client", "-quiet", "-connect", appliance.host, "-CAfile", appliance.caCertificate]
        let input = Pipe()
        trickle.standardInput = input
        trickle.standardOutput = FileHandle.nullDevice
        trickle.standardError = FileHandle.nullDevice
        try trickle.run()
        let started = Date()
        for byte in Array("GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8)
            + Array(repeating: UInt8(ascii: "a"), count: 40)
        {
            guard trickle.isRunning, Date().timeIntervalSince(started) < 12 else { break }
            try? input.fileHandleForWriting.write(contentsOf: [byte])
            usleep(200_000)
        }
        let cutOff = Date().timeIntervalSince(started)
        if trickle.isRunning { trickle.terminate() }
        trickle.waitUntilExit()
        #expect(cutOff < 8, "a trickling client was held \(cutOff) s")

        // Six open connections fill the server; a seventh is closed at once, not served.
        let held = (0..<6).map { _ in Self.connect(port) }
        usleep(300_000)
        let surplus = Self.connect(port)
        #expect(Self.secondsUntilClosed(surplus) < 1)
        close(surplus)
        // The held ones time out; then a real client is served again.
        for fd in held { close(fd) }
        usleep(500_000)
        #expect(try appliance.curl("/v2/").status == 200)
    }

    /// An HTTP/1.0 request without keep-alive gets its response and then the connection closes
    /// (`ab` waited for that close forever); HTTP/1.1 and 1.0 with keep-alive stay open.
    @Test func http10ClosesAfterTheResponse() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/data", anonymous: "pull")
        defer { appliance.stop() }
        /// Sends `request` over TLS and keeps the client's side open: whether the server closed
        /// within 3 s, and what it answered.
        func send(_ request: String) throws -> (closed: Bool, output: String) {
            let client = Process()
            client.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            client.arguments = [
                "s_client", "-quiet", "-connect", appliance.host, "-CAfile", appliance.caCertificate,
            ]
            let input = Pipe()
            // A file, not a pipe: a kept-alive connection's client is killed, and a pipe's reader
            // would wait for the server's idle timeout.
            let answer = "\(work)/answer-\(UUID().uuidString)"
            _ = FileManager.default.createFile(atPath: answer, contents: nil)
            let output = try FileHandle(forWritingTo: URL(fileURLWithPath: answer))
            defer { try? output.close() }
            client.standardInput = input
            client.standardOutput = output
            client.standardError = FileHandle.nullDevice
            try client.run()
            try input.fileHandleForWriting.write(contentsOf: Array(request.utf8))
            let deadline = Date().addingTimeInterval(3)
            while client.isRunning && Date() < deadline { usleep(50_000) }
            let closed = !client.isRunning
            // s_client sits out SIGTERM while its connection is open.
            if !closed { kill(client.processIdentifier, SIGKILL) }
            client.waitUntilExit()
            try input.fileHandleForWriting.close()
            return (closed, try String(contentsOfFile: answer, encoding: .utf8))
        }
        let plain = try send("GET /v2/ HTTP/1.0\r\nHost: x\r\n\r\n")
        #expect(plain.closed, "an HTTP/1.0 connection was left open")
        #expect(plain.output.hasPrefix("HTTP/1.1 200"), "\(plain.output)")
        let keepAlive = try send("GET /v2/ HTTP/1.0\r\nHost: x\r\nConnection: keep-alive\r\n\r\n")
        #expect(!keepAlive.closed)
        #expect(keepAlive.output.hasPrefix("HTTP/1.1 200"), "\(keepAlive.output)")
        let http11 = try send("GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(!http11.closed)
        #expect(http11.output.hasPrefix("HTTP/1.1 200"), "\(http11.output)")
    }
}
