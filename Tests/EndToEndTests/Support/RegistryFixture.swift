import Foundation

/// The real distribution registry (Debian's `docker-registry`), started on 127.0.0.1 with a port
/// of its own, over plain HTTP, TLS, TLS with htpasswd basic auth, or token auth.
final class RegistryFixture: @unchecked Sendable {
    enum Auth {
        case none
        case htpasswd(user: String, password: String)
        /// Token auth against a token server (see `TokenServer`).
        case token(TokenServer)
    }

    let directory: String
    let port: Int
    let tls: TestCA?
    let process: BackgroundProcess
    var host: String { "127.0.0.1:\(port)" }
    var storage: String { "\(directory)/data" }

    init(tls: Bool = false, auth: Auth = .none) throws {
        directory = try Shell.temporaryDirectory("ferry-registry")
        port = Shell.freePort()
        self.tls = tls ? try TestCA(directory: "\(directory)/tls") : nil
        var config = """
            version: 0.1
            log:
              level: warn
              accesslog:
                disabled: true
            storage:
              filesystem:
                rootdirectory: \(directory)/data
              delete:
                enabled: true
            http:
              addr: 127.0.0.1:\(port)
              secret: ferry-test-secret

            """
        if let ca = self.tls {
            config += """
                  tls:
                    certificate: \(ca.serverCertificate)
                    key: \(ca.serverKey)

                """
        }
        switch auth {
        case .none: break
        case .htpasswd(let user, let password):
            let result = try Shell.run(["htpasswd", "-Bbn", user, password])
            try result.stdout.write(toFile: "\(directory)/htpasswd", atomically: true, encoding: .utf8)
            config += """
                auth:
                  htpasswd:
                    realm: ferry-test
                    path: \(directory)/htpasswd

                """
        case .token(let server):
            config += """
                auth:
                  token:
                    realm: \(server.realm)
                    service: \(TokenServer.service)
                    issuer: \(TokenServer.issuer)
                    rootcertbundle: \(server.certificate)

                """
        }
        try config.write(toFile: "\(directory)/config.yml", atomically: true, encoding: .utf8)
        process = try BackgroundProcess(
            ["docker-registry", "serve", "\(directory)/config.yml"], logPath: "\(directory)/registry.log")
        do {
            try Shell.waitForPort(port)
        } catch {
            throw Shell.Failure(command: "docker-registry", status: -1, output: process.log)
        }
    }

    /// skopeo flags to reach this registry as a destination or source (`dest` or `src`).
    func skopeoFlags(_ side: String, credentials: String? = nil) -> [String] {
        var flags: [String]
        if let tls {
            let certs = "\(directory)/skopeo-certs"
            try? FileManager.default.createDirectory(atPath: certs, withIntermediateDirectories: true)
            try? FileManager.default.removeItem(atPath: "\(certs)/ca.crt")
            try? FileManager.default.copyItem(atPath: tls.caCertificate, toPath: "\(certs)/ca.crt")
            flags = ["--\(side)-cert-dir", certs]
        } else {
            flags = ["--\(side)-tls-verify=false"]
        }
        if let credentials { flags += ["--\(side)-creds", credentials] }
        return flags
    }

    /// Flags ferry needs to trust this registry.
    var ferryTrustFlags: [String] {
        if let tls { return ["--ca-file", tls.caCertificate] }
        return ["--insecure-registry", host]
    }

    func stop() {
        process.stop()
        Shell.remove(directory)
    }

    deinit { stop() }
}

/// A small Docker token server (`../shared/specs/docker/auth-token.md`) in Python: issues ES256
/// JWTs for one user, with an x5c chain the registry trusts.
final class TokenServer: @unchecked Sendable {
    static let service = "ferry-test-registry"
    static let issuer = "ferry-test-issuer"
    let directory: String
    let port: Int
    let process: BackgroundProcess
    var realm: String { "http://127.0.0.1:\(port)/token" }
    var certificate: String { "\(directory)/token.crt" }

    init(user: String, password: String) throws {
        directory = try Shell.temporaryDirectory("ferry-token")
        port = Shell.freePort()
        process = try BackgroundProcess(
            [
                "python3", "\(Shell.supportDirectory)/token_server.py", "--port", "\(port)", "--cert",
                "\(directory)/token.crt",
                "--user", user, "--password", password, "--issuer", Self.issuer, "--service", Self.service,
            ], logPath: "\(directory)/token.log")
        do {
            try Shell.waitForPort(port)
        } catch {
            throw Shell.Failure(command: "token_server.py", status: -1, output: process.log)
        }
    }

    /// Number of tokens issued so far (the server logs one line per token).
    var tokensIssued: Int { process.log.components(separatedBy: "issued token").count - 1 }

    func stop() {
        process.stop()
        Shell.remove(directory)
    }

    deinit { stop() }
}
