import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import OCICore
import OCIStore
import Testing

@testable import OCIRegistryServer

/// The token flow in process: challenges carry the scope a client needs (also after a token
/// expired, and for the source of a mount), empty Basic credentials are anonymous.
struct AccessTests {
    func withServer(
        _ body: @Sendable @escaping (any TestClientProtocol, Authenticator, RegistryStore) async throws -> Void
    ) async throws {
        let root = NSTemporaryDirectory() + "ferry-access-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try RegistryStore(root: root)
        try UserDatabase(dataDirectory: root).add(
            name: "ci", password: "ci-password", grant: Grant(role: .push))
        let authenticator = try Authenticator(
            dataDirectory: root, policy: AccessPolicy(), logger: Logger(label: "test"))
        let application = Application(
            responder: RegistryResponder(
                content: RegistryContent(storage: store), accessLog: nil, authenticator: authenticator))
        try await application.test(.router) { client in try await body(client, authenticator, store) }
    }

    static func basic(_ user: String, _ password: String) -> String {
        "Basic " + Data("\(user):\(password)".utf8).base64EncodedString()
    }

    static func token(_ client: any TestClientProtocol, scope: String) async throws -> String {
        let reply = try await client.execute(
            uri: "/token?service=ferry-appliance&scope=\(scope)", method: .get,
            headers: [.authorization: basic("ci", "ci-password")])
        let json = try JSONSerialization.jsonObject(with: Data(buffer: reply.body)) as? [String: Any]
        return try #require(json?["token"] as? String)
    }

    @Test func challengesNameTheScopeNeeded() async throws {
        try await withServer { client, authenticator, _ in
            // An expired token: the challenge names the scope, so the client asks for the right one.
            let expired =
                authenticator.issueToken(
                    for: Identity(name: "ci", grant: Grant(role: .push)), scopes: ["repository:a/b:pull"],
                    now: Int(Date().timeIntervalSince1970) - 3600)["token"] as? String
            let stale = try await client.execute(
                uri: "/v2/a/b/manifests/1", method: .get, headers: [.authorization: "Bearer \(expired ?? "")"])
            #expect(stale.status == .unauthorized)
            #expect(stale.headers[.wwwAuthenticate]?.contains(#"scope="repository:a/b:pull""#) == true)

            // A mount's first challenge asks for the source too (clients that retry once need it).
            let first = try await client.execute(
                uri: "/v2/a/b/blobs/uploads/?mount=sha256:\(String(repeating: "1", count: 64))&from=c/d",
                method: .post)
            #expect(first.status == .unauthorized)
            #expect(
                first.headers[.wwwAuthenticate]?.contains(#"scope="repository:a/b:pull,push repository:c/d:pull""#)
                    == true)
            // Several scopes in one parameter, joined by `+` as Go clients send them: both granted.
            let both = try await Self.token(client, scope: "repository:a/b:pull,push+repository:c/d:pull")
            let claims = try #require(authenticator.verify(token: both))
            #expect(Set(claims.access.map(\.name)) == ["a/b", "c/d"])
            // A name that is no repository name gets nothing.
            let odd = try await Self.token(client, scope: "repository:a/b:pull,push%20repository:Bad..Name:pull")
            #expect(try #require(authenticator.verify(token: odd)).access.map(\.name) == ["a/b"])
            // A token without the source (never asked, or refused): a plain upload session, not a 401 loop.
            let pushOnly = try await Self.token(client, scope: "repository:a/b:pull,push")
            let session = try await client.execute(
                uri: "/v2/a/b/blobs/uploads/?mount=sha256:\(String(repeating: "1", count: 64))&from=c/d",
                method: .post, headers: [.authorization: "Bearer \(pushOnly)"])
            #expect(session.status == .accepted)

            // Empty Basic credentials at the token endpoint are anonymous, not a failed login: with
            // anonymous none, no token at all (however often asked: never a 429).
            for _ in 0..<6 {
                let anonymous = try await client.execute(
                    uri: "/token?service=ferry-appliance&scope=repository:a/b:pull", method: .get,
                    headers: [.authorization: Self.basic("", "")])
                #expect(anonymous.status == .unauthorized)
            }
        }
    }

    /// Read-through to `docker.io/…` serves pulls, never a push: a blob HEAD inside a push session
    /// answers for the repository as named.
    @Test func readThroughNeverAppliesInsideAPush() async throws {
        try await withServer { client, _, store in
            let blob = Array("a layer pushed long ago".utf8)
            try store.blobs.put(blob, as: Digest.of(blob))
            try store.linkBlob(Digest.of(blob), to: try RepositoryName("docker.io/library/x"))
            let path = "/v2/library/x/blobs/\(Digest.of(blob))"
            // (A pull's token also holds the source name the challenge sends the client back for.)
            let pulling = try await Self.token(
                client, scope: "repository:library/x:pull%20repository:docker.io/library/x:pull")
            let pull = try await client.execute(
                uri: path, method: .head, headers: [.authorization: "Bearer \(pulling)"])
            #expect(pull.status == .ok, "a pull reads through")
            let pushing = try await Self.token(client, scope: "repository:library/x:pull,push")
            let push = try await client.execute(
                uri: path, method: .head, headers: [.authorization: "Bearer \(pushing)"])
            #expect(push.status == .notFound, "a push sees library/x as it is")
        }
    }

    /// Before a caller is known, a challenge names the repository as requested: it never tells a
    /// stranger that a repository exists under its source registry's name.
    @Test func challengesDoNotRevealWhichRepositoriesExist() async throws {
        let root = NSTemporaryDirectory() + "ferry-oracle-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try RegistryStore(root: root)
        let config = Array("{}".utf8)
        try store.blobs.put(config, as: Digest.of(config))
        let secret = try RepositoryName("secret/s")
        try store.linkBlob(Digest.of(config), to: secret)
        let manifest = try ManifestDocument(
            bytes: Array(
                #"{"schemaVersion":2,"mediaType":"\#(MediaType.ociManifest)","config":{"mediaType":"\#(MediaType.ociConfig)","digest":"\#(Digest.of(config))","size":2},"layers":[]}"#
                    .utf8))
        try store.putManifest(manifest, in: secret, tags: [try Tag("1")])
        let authenticator = try Authenticator(
            dataDirectory: root, policy: AccessPolicy(), logger: Logger(label: "test"))
        let application = Application(
            responder: RegistryResponder(
                content: RegistryContent(storage: store), accessLog: nil, authenticator: authenticator))
        try await application.test(.router) { client in
            for (path, scope) in [
                ("/v2/s/tags/list?ns=secret", "repository:s:pull"), ("/v2/q/tags/list?ns=secret", "repository:q:pull"),
            ] {
                let reply = try await client.execute(uri: path, method: .get)
                #expect(reply.status == .unauthorized)
                #expect(reply.headers[.wwwAuthenticate]?.contains(#"scope="\#(scope)""#) == true, "\(path)")
            }
        }
    }

    /// A deleted user, or one whose role was lowered, loses a cached credential check at once.
    @Test func changesToUsersApplyAtOnceDespiteTheCredentialCache() async throws {
        let root = NSTemporaryDirectory() + "ferry-users-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let users = UserDatabase(dataDirectory: root)
        try users.add(name: "ci", password: "ci-password", grant: Grant(role: .push))
        let authenticator = try Authenticator(
            dataDirectory: root, policy: AccessPolicy(), logger: Logger(label: "test"))
        let header = Self.basic("ci", "ci-password")
        #expect(try await authenticator.authenticate(basic: header, remote: "127.0.0.1")?.grant?.role == .push)
        // The same second as the check: the file's size and inode change even if its time does not.
        try users.add(name: "ci", password: "ci-password", grant: Grant(role: .pull))
        #expect(try await authenticator.authenticate(basic: header, remote: "127.0.0.1")?.grant?.role == .pull)
        #expect(try users.remove(name: "ci"))
        #expect(try await authenticator.authenticate(basic: header, remote: "127.0.0.1") == nil)
    }

    /// Requests with the same credentials at once (a cluster's nodes pulling with one secret) share
    /// one bcrypt check instead of each running one.
    @Test func concurrentRequestsWithTheSameCredentialsShareOnePasswordCheck() async throws {
        let root = NSTemporaryDirectory() + "ferry-users-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        try UserDatabase(dataDirectory: root).add(name: "ci", password: "ci-password", grant: Grant(role: .push))
        let authenticator = try Authenticator(
            dataDirectory: root, policy: AccessPolicy(), logger: Logger(label: "test"))
        let header = Self.basic("ci", "ci-password")
        let roles = try await withThrowingTaskGroup(of: Role?.self) { group in
            for _ in 0..<20 {
                group.addTask { try await authenticator.authenticate(basic: header, remote: "127.0.0.1")?.grant?.role }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(roles.count == 20 && roles.allSatisfy { $0 == .push })
        // One check, or two when a request missed the cache just before the first check's outcome
        // was cached and joined no running check.
        #expect(authenticator.passwordChecks.load(ordering: .relaxed) <= 2)
    }

    /// Basic credentials: the scheme in any case, blanks around them, a password with colons; what
    /// is not Basic or not base64 of `name:password` is no credential.
    @Test func basicCredentialsAreReadAsTheSchemeDefines() {
        let encoded = Data("ci:pass:word é".utf8).base64EncodedString()
        for header in ["Basic \(encoded)", "basic \(encoded)", "BASIC  \(encoded) ", "bAsIc \t\(encoded)\t"] {
            let decoded = Authenticator.decodeBasic(header)
            #expect(decoded?.0 == "ci" && decoded?.1 == "pass:word é", "\(header)")
        }
        #expect(
            Authenticator.decodeBasic("Basic \(Data(":".utf8).base64EncodedString())").map { [$0.0, $0.1] } == ["", ""])
        for header in [
            "Bearer \(encoded)", "Basic", "Basic ", "Basicx\(encoded)", "Basic !!!",
            "Basic \(Data("no-colon".utf8).base64EncodedString())",
            "Basic \(Data([0x66, 0x3A, 0xFF]).base64EncodedString())",
        ] {
            #expect(Authenticator.decodeBasic(header) == nil, "\(header)")
        }
    }

    /// The access log cannot be forged through a user name, names who was refused, and an unknown
    /// user costs the time a known one does (no user enumeration by timing).
    @Test func logsEscapeNamesAndUnknownUsersCostWhatKnownOnesDo() async throws {
        let root = NSTemporaryDirectory() + "ferry-log-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try RegistryStore(root: root)
        try UserDatabase(dataDirectory: root).add(
            name: "reader", password: "reader-password", grant: Grant(role: .pull))
        let authenticator = try Authenticator(
            dataDirectory: root, policy: AccessPolicy(), logger: Logger(label: "test"))
        let log = "\(root)/access.log"
        let application = Application(
            responder: RegistryResponder(
                content: RegistryContent(storage: store), accessLog: try AccessLog(path: log),
                authenticator: authenticator))
        try await application.test(.router) { client in
            func timed(_ user: String, _ password: String) async throws -> Duration {
                let started = ContinuousClock.now
                let reply = try await client.execute(
                    uri: "/v2/", method: .get, headers: [.authorization: Self.basic(user, password)])
                #expect(reply.status == .unauthorized)
                return ContinuousClock.now - started
            }
            // Both are refused. The check's own cost, measured on this thread (request timings in
            // process depend on how busy the test run keeps Swift's threads): the fastest of three.
            _ = try await timed("reader", "wrong")
            _ = try await timed("nobody-warm", "wrong")
            func cost(_ name: String) -> Duration {
                (0..<3).map { attempt in
                    let started = ContinuousClock.now
                    _ = authenticator.verify(name: name, password: "wrong-\(attempt)")
                    return ContinuousClock.now - started
                }.min() ?? .zero
            }
            let known = cost("reader")
            let unknown = cost("nobody-at-all")
            #expect(unknown > known / 4, "known \(known), unknown \(unknown)")
            _ = try await timed("evil\nFORGED 200", "x")
            let denied = try await client.execute(
                uri: "/v2/apps/x/blobs/uploads/", method: .post,
                headers: [.authorization: Self.basic("reader", "reader-password")])
            #expect(denied.status == .forbidden)
        }
        let lines = try String(contentsOfFile: log, encoding: .utf8).split(separator: "\n")
        #expect(!lines.contains { $0.hasPrefix("FORGED") }, "\(lines)")
        #expect(AccessLog.escaped("evil\nFORGED\u{7f}") == "evil\\x0aFORGED\\x7f")
        #expect(lines.contains { $0.contains(" reader \"POST /v2/apps/x/blobs/uploads/") && $0.contains(" 403 ") })
    }

    /// 20,000 unknown names from one address: the failure table stays bounded, a known pair is still
    /// blocked after five failures, and the log gets ten lines a minute from that address, not 20,000.
    @Test func failedLoginsStayBoundedAndQuiet() {
        var table = FailedLogins(limit: 1000)
        var logged = 0
        for i in 0..<20_000 {
            let outcome = table.record("user\(i)@10.0.0.9", remote: "10.0.0.9", now: 1000)
            if outcome.log != .none { logged += 1 }
        }
        #expect(table.entries.count <= 1000)
        #expect(logged == FailedLogins.linesPerAddressPerMinute)
        for _ in 0..<4 { #expect(!table.record("ci@10.0.0.1", remote: "10.0.0.1", now: 1000).blocked) }
        #expect(table.record("ci@10.0.0.1", remote: "10.0.0.1", now: 1001).blocked)
        #expect(table.blockedUntil("ci@10.0.0.1") == 1001 + Authenticator.failureWindow)
        // A minute later the address logs again.
        #expect(table.record("other@10.0.0.9", remote: "10.0.0.9", now: 1100).log == .line)
    }
}
