import Foundation

/// `upstream_proxy.py` in front of a plain-HTTP registry: flaky responses, basic auth and
/// cross-origin blob redirects, with a log of every request.
final class UpstreamProxy: @unchecked Sendable {
    let port: Int
    let cdnPort: Int
    let directory: String
    let process: BackgroundProcess
    var host: String { "127.0.0.1:\(port)" }

    init(backend: RegistryFixture, options: [String]) throws {
        directory = try Shell.temporaryDirectory("ferry-proxy")
        port = Shell.freePort()
        cdnPort = Shell.freePort()
        process = try BackgroundProcess(
            [
                "python3", "\(Shell.supportDirectory)/upstream_proxy.py", "--port", "\(port)", "--cdn-port",
                "\(cdnPort)", "--backend", backend.host,
            ] + options, logPath: "\(directory)/proxy.log")
        try Shell.waitForPort(port)
        try Shell.waitForPort(cdnPort)
    }

    var requests: [String] { process.log.split(separator: "\n").map(String.init) }

    func stop() {
        process.stop()
        Shell.remove(directory)
    }

    deinit { stop() }
}
