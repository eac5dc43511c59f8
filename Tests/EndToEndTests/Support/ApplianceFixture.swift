import Foundation

/// `ferry-appliance serve` on 127.0.0.1 with a port of its own and a data directory of the test's,
/// TLS with the CA it generates (or the certificate given).
final class ApplianceFixture: @unchecked Sendable {
    static var binary: String { "\(Shell.buildDirectory)/ferry-appliance" }

    let dataDirectory: String
    let port: Int
    let process: BackgroundProcess
    var host: String { "127.0.0.1:\(port)" }
    var caCertificate: String { "\(dataDirectory)/tls/ca.crt" }
    var accessLog: String { "\(dataDirectory)/access.log" }

    /// `anonymous`: what clients without credentials may do (`pull` for the pull tests, `none` for access control).
    init(dataDirectory: String, anonymous: String = "pull", extraArguments: [String] = []) throws {
        self.dataDirectory = dataDirectory
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        port = Shell.freePort()
        process = try BackgroundProcess(
            [
                Self.binary, "serve", "--data-dir", dataDirectory, "--listen", "127.0.0.1:\(port)", "--access-log",
                "\(dataDirectory)/access.log", "--anonymous", anonymous,
            ] + extraArguments,
            logPath: "\(dataDirectory)/serve-\(port).log")
        do {
            try Shell.waitForPort(port)
        } catch {
            throw Shell.Failure(command: "ferry-appliance serve", status: -1, output: process.log)
        }
        // The port accepts connections a moment before serve writes its "serving" line (the TLS
        // outcome, the pull-through upstreams): tests that read that line wait for it here.
        for _ in 0..<300 where !process.log.contains("ferry-appliance: serving") && process.isRunning {
            usleep(50_000)
        }
    }

    /// Runs a `ferry-appliance` subcommand on this data directory.
    @discardableResult
    func command(_ arguments: [String], check: Bool = true) throws -> Shell.Result {
        try Shell.run([Self.binary] + arguments + ["--data-dir", dataDirectory], check: check)
    }

    /// A directory in the docker/containers `certs.d/HOST:PORT` layout holding `ca.crt`, for skopeo's and podman's `--cert-dir`.
    func certDirectory(ca: String? = nil) throws -> String {
        let directory = "\(dataDirectory)/client-certs/\(host)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try? FileManager.default.removeItem(atPath: "\(directory)/ca.crt")
        try FileManager.default.copyItem(atPath: ca ?? caCertificate, toPath: "\(directory)/ca.crt")
        return directory
    }

    /// An HTTPS request with curl, verifying the server against the CA: status, headers (lower-cased names), body.
    func curl(
        _ path: String, method: String = "GET", headers: [String] = [], ca: String? = nil, user: String? = nil,
        bodyFile: String? = nil
    ) throws -> HTTPReply {
        try HTTPReply.fetch(
            "https://\(host)\(path)", method: method, headers: headers, ca: ca ?? caCertificate, bodyFile: bodyFile,
            user: user)
    }

    /// Adds a user with `ferry-appliance user add`.
    func addUser(_ name: String, password: String, role: String, repositories: [String] = []) throws {
        try Shell.run(
            [Self.binary, "user", "add", name, "--password-stdin", "--role", role, "--data-dir", dataDirectory]
                + repositories.flatMap { ["--repo", $0] }, input: Data(password.utf8))
    }

    /// SIGTERM, and the exit status.
    @discardableResult
    func stop() -> Int32 {
        guard process.isRunning else { return process.process.terminationStatus }
        process.signal(SIGTERM)
        for _ in 0..<200 where process.isRunning { usleep(25_000) }
        process.stop()
        return process.process.terminationStatus
    }

    deinit { stop() }
}

/// One HTTP exchange made with curl.
struct HTTPReply {
    var status: Int
    var headers: [String: String]
    var body: Data

    var text: String { String(decoding: body, as: UTF8.self) }
    var json: [String: Any] { ((try? JSONSerialization.jsonObject(with: body)) as? [String: Any]) ?? [:] }
    /// The first error code of an OCI error body.
    var errorCode: String? { ((json["errors"] as? [[String: Any]])?.first?["code"]) as? String }

    static func fetch(
        _ url: String, method: String = "GET", headers: [String] = [], ca: String, bodyFile: String? = nil,
        user: String? = nil
    ) throws -> HTTPReply {
        let work = try Shell.temporaryDirectory("ferry-curl")
        defer { Shell.remove(work) }
        var arguments = ["curl", "-sS", "--http1.1", "--cacert", ca, "-D", "\(work)/headers", "-o", "\(work)/body"]
        arguments += method == "HEAD" ? ["-I"] : ["-X", method]
        for header in headers { arguments += ["-H", header] }
        if let bodyFile { arguments += ["--data-binary", "@\(bodyFile)"] }
        if let user { arguments += ["-u", user] }
        // 18 (partial body): the distribution registry's 416 keeps the blob's Content-Length.
        let result = try Shell.run(arguments + [url], check: false)
        guard result.status == 0 || result.status == 18 else {
            throw Shell.Failure(command: "curl \(url)", status: result.status, output: result.stderr)
        }
        let raw = try String(contentsOfFile: "\(work)/headers", encoding: .utf8)
        var status = 0
        var fields: [String: String] = [:]
        for line in raw.split(whereSeparator: { $0 == "\n" || $0 == "\r\n" }) {
            let text = line.trimmingCharacters(in: .whitespacesAndNewlines)
            if text.hasPrefix("HTTP/") {
                status = Int(text.split(separator: " ")[1]) ?? 0
                fields = [:]
            } else if let colon = text.firstIndex(of: ":") {
                fields[text[..<colon].lowercased()] = text[text.index(after: colon)...]
                    .trimmingCharacters(in: .whitespaces)
            }
        }
        // With -I curl writes the headers where the body would go: a HEAD reply has no body.
        let body = method == "HEAD" ? Data() : (try? Data(contentsOf: URL(fileURLWithPath: "\(work)/body"))) ?? Data()
        return HTTPReply(status: status, headers: fields, body: body)
    }
}

extension ApplianceFixture {
    /// Pulls each `REPOSITORY:TAG` of this appliance (all platforms) with a containerd of the
    /// test's own, configured with exactly what `client-config --for containerd` prints; returns
    /// the digest `ctr images ls` shows for each.
    func pullWithContainerd(_ names: [String], work: String) throws -> [String: String] {
        let snippet = try command(["client-config", host, "--for", "containerd"]).stdout
        let hostsDirectory = "\(work)/certs.d"
        try Shell.run(
            ["sh", "-c", snippet.replacingOccurrences(of: "/etc/containerd/certs.d", with: hostsDirectory)])
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        var digests: [String: String] = [:]
        for name in names {
            let reference = "\(host)/\(name)"
            try containerd.ctr(["images", "pull", "--all-platforms", "--hosts-dir", hostsDirectory, reference])
            let listing = try containerd.ctr(["images", "ls"])
            let line = listing.split(separator: "\n").first { $0.hasPrefix(reference + " ") }
            digests[name] = line?.split(separator: " ").first { $0.hasPrefix("sha256:") }.map(String.init)
        }
        return digests
    }
}
