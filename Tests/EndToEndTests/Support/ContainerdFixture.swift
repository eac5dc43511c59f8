import Foundation

/// A containerd of the test's own (root, state and socket in a temporary directory), driven with `ctr`.
final class ContainerdFixture: @unchecked Sendable {
    let directory: String
    let process: BackgroundProcess
    var socket: String { "\(directory)/containerd.sock" }

    init() throws {
        directory = try Shell.temporaryDirectory("ferry-containerd")
        let config = """
            version = 2
            root = "\(directory)/root"
            state = "\(directory)/state"
            disabled_plugins = ["io.containerd.grpc.v1.cri"]
            [grpc]
              address = "\(directory)/containerd.sock"
            [ttrpc]
              address = "\(directory)/containerd.sock.ttrpc"
            [debug]
              address = ""
            [metrics]
              address = ""

            """
        try config.write(toFile: "\(directory)/config.toml", atomically: true, encoding: .utf8)
        process = try BackgroundProcess(
            ["containerd", "--config", "\(directory)/config.toml"], logPath: "\(directory)/containerd.log")
        let deadline = Date().addingTimeInterval(20)
        while (try? ctr(["version"])) == nil {
            guard Date() < deadline, process.isRunning else {
                throw Shell.Failure(command: "containerd", status: -1, output: process.log)
            }
            usleep(100_000)
        }
    }

    @discardableResult
    func ctr(_ arguments: [String]) throws -> String {
        try Shell.run(["ctr", "--address", socket] + arguments).stdout
    }

    func stop() {
        process.stop()
        // Snapshots may be mounted under root; unmount before removing.
        _ = try? Shell.run(
            ["sh", "-c", "grep -o '\(directory)[^ ]*' /proc/mounts | sort -r | xargs -r umount"], check: false)
        Shell.remove(directory)
    }

    deinit { stop() }
}
