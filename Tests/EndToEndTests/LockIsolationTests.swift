import Foundation
import OCICore
import Testing

/// Downloads never wait for the store's write lock (issue 11, point 9): while another process holds
/// it (as gc or an import does) and pushes queue behind it, `serve` answers blob and manifest GETs
/// at once. Server, lock holder and clients are separate processes, so the timing is the server's.
@Suite(.serialized)
struct LockIsolationTests {
    @Test func downloadsGoOnWhileAnotherProcessHoldsTheWriteLock() throws {
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        let appliance = try ApplianceFixture(dataDirectory: "\(work)/data", anonymous: "none")
        defer { appliance.stop() }
        try appliance.addUser("ci", password: "ci-password", role: "push")
        let user = "ci:ci-password"

        // A 4 MiB layer, a config, and a tagged manifest to download.
        let layer = (0..<(4 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ $0 >> 11) }
        let config = Array("{}".utf8)
        for blob in [layer, config] {
            let path = "\(work)/blob"
            try Data(blob).write(to: URL(fileURLWithPath: path))
            let upload = try appliance.curl(
                "/v2/team/app/blobs/uploads/?digest=\(Digest.of(blob))", method: "POST",
                headers: ["Content-Type: application/octet-stream"], user: user, bodyFile: path)
            #expect(upload.status == 201)
        }
        func manifest(_ n: Int) throws -> String {
            let path = "\(work)/manifest-\(n).json"
            try
                (#"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","config":{"mediaType":"\#(MediaType.ociConfig)","digest":"\#(Digest.of(config))","size":2},"#
                + #""layers":[{"mediaType":"\#(MediaType.ociLayer)","digest":"\#(Digest.of(layer))","size":\#(layer.count)}],"annotations":{"n":"\#(n)"}}"#)
                .write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let put = try appliance.curl(
            "/v2/team/app/manifests/v0", method: "PUT", headers: ["Content-Type: \(MediaType.ociManifest)"],
            user: user, bodyFile: try manifest(0))
        #expect(put.status == 201)

        // Another process takes the write lock for five seconds.
        let holder = Process()
        holder.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        holder.arguments = [
            "-c",
            """
            import sqlite3, sys, time
            db = sqlite3.connect(sys.argv[1], isolation_level=None)
            db.execute("BEGIN IMMEDIATE")
            print("held", flush=True)
            time.sleep(5)
            db.execute("COMMIT")
            """,
            "\(work)/data/registry.db",
        ]
        let said = Pipe()
        holder.standardOutput = said
        try holder.run()
        defer { if holder.isRunning { kill(holder.processIdentifier, SIGKILL) } }
        #expect(String(decoding: said.fileHandleForReading.availableData, as: UTF8.self).hasPrefix("held"))
        let lockTaken = Date()

        // Eight pushes queue behind it (more than the commit pool has threads).
        var pushes: [Process] = []
        for n in 1...8 {
            let push = Process()
            push.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            push.arguments = [
                "-sS", "--cacert", appliance.caCertificate, "-u", user, "-o", "/dev/null", "-w", "%{http_code}",
                "-X", "PUT", "-H", "Content-Type: \(MediaType.ociManifest)", "--data-binary", "@\(try manifest(n))",
                "https://\(appliance.host)/v2/team/app/manifests/v\(n)",
            ]
            push.standardOutput = try FileHandle(
                forWritingTo: {
                    let path = URL(fileURLWithPath: "\(work)/push-\(n).status")
                    _ = FileManager.default.createFile(atPath: path.path, contents: nil)
                    return path
                }())
            try push.run()
            pushes.append(push)
        }
        usleep(300_000)

        // Meanwhile every download answers at once, each well under the lock's five seconds.
        for _ in 0..<5 {
            let started = Date()
            let blob = try appliance.curl("/v2/team/app/blobs/\(Digest.of(layer))", user: user)
            let tagged = try appliance.curl("/v2/team/app/manifests/v0", user: user)
            let took = Date().timeIntervalSince(started)
            #expect(blob.status == 200 && blob.body.count == layer.count)
            #expect(tagged.status == 200)
            #expect(took < 2, "a download waited \(took) s while the write lock was held")
        }
        #expect(Date().timeIntervalSince(lockTaken) < 5, "the downloads ran after the lock was released")
        let queued = pushes.allSatisfy { $0.isRunning }
        #expect(queued, "a push finished while the lock was held")

        holder.waitUntilExit()
        for push in pushes { push.waitUntilExit() }
        for n in 1...8 {
            let status = try String(contentsOfFile: "\(work)/push-\(n).status", encoding: .utf8)
            #expect(status == "201", "push \(n) after the lock: \(status)")
        }
    }
}
