import Foundation
import OCICore
import Testing

/// Access control with real clients: the Docker token flow (skopeo, podman login, containerd),
/// Basic auth, roles and repository prefixes, htpasswd users, and the failed-login limit.
@Suite(.serialized)
struct ApplianceAccessTests {
    @Test func rolesPrefixesAndTheTokenFlowHoldForSkopeoPodmanAndContainerd() throws {
        let registry = try RegistryFixture(tls: true)
        defer { registry.stop() }
        let seeded = try SeededRegistry.make(registry)
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        // A legacy htpasswd user (bcrypt, as `htpasswd -B` writes), given pull by the configuration.
        let htpasswd = try Shell.run(["htpasswd", "-Bbn", "legacy", "legacy-password"]).stdout
        try htpasswd.write(toFile: "\(work)/htpasswd", atomically: true, encoding: .utf8)
        try "auth:\n  htpasswd: \(work)/htpasswd\n  htpasswdRole: pull\n".write(
            toFile: "\(work)/appliance.yml", atomically: true, encoding: .utf8)
        let appliance = try ApplianceFixture(
            dataDirectory: "\(work)/data", anonymous: "none", extraArguments: ["--config", "\(work)/appliance.yml"])
        defer { appliance.stop() }
        try appliance.addUser("ci", password: "ci-password", role: "push", repositories: ["apps"])
        try appliance.addUser("reader", password: "reader-password", role: "pull")
        try appliance.addUser("ops", password: "ops-password", role: "delete")
        let certs = try appliance.certDirectory()
        let source = "docker://\(registry.host)/test/multi:1.0"
        func push(_ target: String, _ credentials: String?) throws -> Int32 {
            try Shell.run(
                ["skopeo", "copy", "-q", "--all", "--preserve-digests", "--dest-cert-dir", certs]
                    + registry.skopeoFlags("src") + (credentials.map { ["--dest-creds", $0] } ?? [])
                    + [source, "docker://\(appliance.host)/\(target)"], check: false
            ).status
        }
        func inspect(_ target: String, _ credentials: String?) throws -> Shell.Result {
            try Shell.run(
                ["skopeo", "inspect", "--raw", "--cert-dir", certs] + (credentials.map { ["--creds", $0] } ?? [])
                    + ["docker://\(appliance.host)/\(target)"], check: false)
        }
        #expect(try push("apps/multi:1", nil) != 0, "no credentials, no push")
        #expect(try push("apps/multi:1", "ci:wrong-password") != 0)
        #expect(try push("apps/multi:1", "ci:ci-password") == 0)
        #expect(try push("other/multi:1", "ci:ci-password") != 0, "ci may push under apps only")
        #expect(try push("apps/multi:2", "reader:reader-password") != 0, "pull-only")
        #expect(try inspect("apps/multi:1", nil).status != 0, "no anonymous pulls by default")
        for credentials in ["reader:reader-password", "legacy:legacy-password", "ci:ci-password"] {
            let pulled = try inspect("apps/multi:1", credentials)
            #expect(pulled.status == 0, "\(credentials): \(pulled.stderr)")
            #expect(Digest.of(Array(pulled.stdout.utf8)) == seeded.images["test/multi:1.0"])
        }
        let deleteAs = { (credentials: String) throws -> Int32 in
            try Shell.run(
                [
                    "skopeo", "delete", "--cert-dir", certs, "--creds", credentials,
                    "docker://\(appliance.host)/apps/multi:1",
                ], check: false
            ).status
        }
        #expect(try deleteAs("reader:reader-password") != 0)
        #expect(try deleteAs("ci:ci-password") != 0, "push does not include delete")
        #expect(try push("apps/multi:1", "ci:ci-password") == 0)

        // skopeo login (token flow) into an auth file, then a pull with it.
        let skopeoAuth = "\(work)/skopeo-auth.json"
        try Shell.run(
            [
                "skopeo", "login", "--authfile", skopeoAuth, "--cert-dir", certs, "-u", "reader", "--password-stdin",
                appliance.host,
            ], input: Data("reader-password".utf8))
        let viaLogin = try Shell.run(
            [
                "skopeo", "inspect", "--raw", "--authfile", skopeoAuth, "--cert-dir", certs,
                "docker://\(appliance.host)/apps/multi:1",
            ])
        #expect(Digest.of(Array(viaLogin.stdout.utf8)) == seeded.images["test/multi:1.0"])

        // podman: login (token flow), then pull.
        let podman = [
            "podman", "--storage-driver", "vfs", "--root", "\(work)/podman", "--runroot", "\(work)/podman-run",
        ]
        let authFile = "\(work)/podman-auth.json"
        try Shell.run(
            podman + [
                "login", "--authfile", authFile, "--cert-dir", certs, "-u", "reader", "--password-stdin",
                appliance.host,
            ], input: Data("reader-password".utf8))
        try Shell.run(
            podman + ["pull", "-q", "--authfile", authFile, "--cert-dir", certs, "\(appliance.host)/apps/multi:1"])
        _ = try? Shell.run(podman + ["system", "reset", "-f"], check: false)

        // containerd: credentials with ctr, CA from hosts.toml.
        let hosts = "\(work)/certs.d/\(appliance.host)"
        try FileManager.default.createDirectory(atPath: hosts, withIntermediateDirectories: true)
        try """
        server = "https://\(appliance.host)"
        [host."https://\(appliance.host)"]
          capabilities = ["pull", "resolve"]
          ca = "\(appliance.caCertificate)"
        """.write(toFile: "\(hosts)/hosts.toml", atomically: true, encoding: .utf8)
        let containerd = try ContainerdFixture()
        defer { containerd.stop() }
        try containerd.ctr(
            [
                "images", "pull", "--hosts-dir", "\(work)/certs.d", "--user", "reader:reader-password",
                "\(appliance.host)/apps/multi:1",
            ])

        // ops may delete.
        #expect(try deleteAs("ops:ops-password") == 0)
        #expect(try inspect("apps/multi:1", "reader:reader-password").status != 0)

        // Basic auth straight on /v2/; a 401 carries the Bearer challenge.
        #expect(try appliance.curl("/v2/", user: "reader:reader-password").status == 200)
        let refused = try appliance.curl("/v2/")
        #expect(refused.status == 401)
        #expect(
            refused.headers["www-authenticate"]
                == "Bearer realm=\"https://\(appliance.host)/token\",service=\"ferry-appliance\"")
        let challenged = try appliance.curl("/v2/apps/multi/manifests/1")
        #expect(challenged.headers["www-authenticate"]?.contains("scope=\"repository:apps/multi:pull\"") == true)

        // A token holds only what the user may do of what was asked.
        let token = try appliance.curl(
            "/token?service=ferry-appliance&scope=repository:apps/multi:pull,push", user: "reader:reader-password")
        let jwt = try #require(token.json["token"] as? String)
        let payload = String(jwt.split(separator: ".")[1])
        var base64 = payload.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        let claimBytes = try #require(Data(base64Encoded: base64))
        let claims = try #require((try? JSONSerialization.jsonObject(with: claimBytes)) as? [String: Any])
        let access = try #require(claims["access"] as? [[String: Any]])
        #expect(access.count == 1 && (access.first?["actions"] as? [String]) == ["pull"])
        #expect(claims["sub"] as? String == "reader")

        // Failed logins: logged without the password, then refused for a while with 429.
        var statuses: [Int] = []
        for _ in 0..<6 { statuses.append(try appliance.curl("/v2/", user: "ops:not-the-password").status) }
        #expect(statuses == [401, 401, 401, 401, 401, 429])
        let blocked = try appliance.curl("/v2/", user: "ops:ops-password")
        #expect(blocked.status == 429 && blocked.headers["retry-after"] != nil)
        #expect(try appliance.curl("/v2/", user: "reader:reader-password").status == 200, "other users unaffected")
        let serverLog =
            appliance.process.log + ((try? String(contentsOfFile: appliance.accessLog, encoding: .utf8)) ?? "")
        #expect(serverLog.contains("failed login for user ops from 127.0.0.1"))
        for secret in ["not-the-password", "ops-password", "reader-password", "ci-password", jwt] {
            #expect(!serverLog.contains(secret), "a secret reached the logs")
        }
    }
}
