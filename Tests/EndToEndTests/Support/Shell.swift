import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs external programs for the tests: the real registry, skopeo, ctr, openssl and ferry itself.
enum Shell {
    struct Failure: Error, CustomStringConvertible {
        var command: String
        var status: Int32
        var output: String
        var description: String { "`\(command)` exited \(status):\n\(output)" }
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    /// Runs `arguments` to completion; returns status and output.
    @discardableResult
    static func run(
        _ arguments: [String], environment: [String: String] = [:], input: Data? = nil, check: Bool = true
    ) throws -> Result {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        let inPipe = Pipe()
        process.standardInput = input == nil ? FileHandle.nullDevice : inPipe
        try process.run()
        if let input {
            inPipe.fileHandleForWriting.write(input)
            try inPipe.fileHandleForWriting.close()
        }
        // Read both pipes concurrently so neither fills up.
        let errData = LockedData()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData.set(err.fileHandleForReading.readDataToEndOfFile())
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        let result = Result(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData.get(), as: UTF8.self))
        if check && result.status != 0 {
            throw Failure(
                command: arguments.joined(separator: " "), status: result.status, output: result.stdout + result.stderr)
        }
        return result
    }

    /// A fresh temporary directory; the caller removes it with `remove`.
    static func temporaryDirectory(_ name: String = "ferry-test") throws -> String {
        let path = NSTemporaryDirectory() + "\(name)-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    static func remove(_ path: String) { try? FileManager.default.removeItem(atPath: path) }

    /// Whether a directory exists and holds nothing.
    static func isEmptyDirectory(_ path: String) -> Bool {
        (try? FileManager.default.contentsOfDirectory(atPath: path))?.isEmpty == true
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = 0
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
        }
        _ = withUnsafeMutablePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        return Int(UInt16(bigEndian: addr.sin_port))
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`.
    static func waitForPort(_ port: Int, timeout: TimeInterval = 15) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = in_port_t(UInt16(port).bigEndian)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            let ok = withUnsafePointer(to: &addr) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            close(fd)
            if ok == 0 { return }
            usleep(50_000)
        }
        throw Failure(command: "wait for 127.0.0.1:\(port)", status: -1, output: "nothing listening")
    }

    /// Where `swift build` put the package's executables.
    static var buildDirectory: String {
        if let dir = ProcessInfo.processInfo.environment["FERRY_BUILD_DIR"] { return dir }
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().path
        return "\(root)/.build/debug"
    }

    static var ferry: String { "\(buildDirectory)/ferry" }

    static var supportDirectory: String { URL(fileURLWithPath: #filePath).deletingLastPathComponent().path }
}

final class LockedData: @unchecked Sendable {
    private var data = Data()
    private let lock = NSLock()
    func set(_ d: Data) { lock.withLock { data = d } }
    func get() -> Data { lock.withLock { data } }
}

/// A process started in the background and stopped (SIGTERM, then SIGKILL) by the test that
/// started it.
final class BackgroundProcess: @unchecked Sendable {
    let process = Process()
    let logPath: String

    /// `standardInput`: a pipe the test writes to (default: /dev/null).
    init(_ arguments: [String], logPath: String, environment: [String: String] = [:], standardInput: Pipe? = nil)
        throws
    {
        self.logPath = logPath
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env.merge(environment) { $1 }
        process.environment = env
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardOutput = log
        process.standardError = log
        process.standardInput = standardInput ?? FileHandle.nullDevice
        try process.run()
    }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    var isRunning: Bool { process.isRunning }

    func signal(_ signal: Int32) { kill(process.processIdentifier, signal) }

    func stop() {
        guard process.isRunning else { return }
        process.terminate()
        for _ in 0..<100 where process.isRunning { usleep(50_000) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    deinit { stop() }
}

extension Shell {
    struct Measured {
        var status: Int32
        /// The process's peak resident set, in bytes.
        var peakResidentBytes: Int
        var stdout: String
        var stderr: String
    }

    /// Runs `arguments` under GNU time and reports the peak memory of that process alone. (The
    /// kernel carries a spawning process's peak into its child's across exec, so wait4 in this
    /// process would report the test runner's memory; time forks from a small process.)
    static func measure(_ arguments: [String]) throws -> Measured {
        let directory = try temporaryDirectory("ferry-measure")
        defer { remove(directory) }
        let result = try run(["/usr/bin/time", "-f", "%M", "-o", "\(directory)/peak"] + arguments, check: false)
        let text = try String(contentsOfFile: "\(directory)/peak", encoding: .utf8)
        guard let kib = text.split(separator: "\n").last.flatMap({ Int($0.trimmingCharacters(in: .whitespaces)) })
        else {
            throw Failure(
                command: arguments.joined(separator: " "), status: result.status, output: "time wrote: \(text)")
        }
        return Measured(
            status: result.status, peakResidentBytes: kib * 1024, stdout: result.stdout, stderr: result.stderr)
    }
}
