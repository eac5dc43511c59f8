import ArgumentParser
import AsyncHTTPClient
import Foundation
import OCICore
import OCIRegistryClient

/// How `ferry` reaches registries: credentials and TLS trust (shared by export and push).
struct RegistryOptions: ParsableArguments {
    @Option(name: .customLong("creds"), help: "Registry credentials, [HOST=]USER:PASSWORD (repeatable).")
    var credentials: [String] = []

    @Option(name: .customLong("ca-file"), help: "Trust this CA certificate (PEM) for every registry (repeatable).")
    var caFiles: [String] = []

    @Option(
        name: .customLong("certs-dir"),
        help: "Look for HOST:PORT/*.crt here instead of /etc/containers/certs.d and /etc/docker/certs.d (repeatable).")
    var certsDirectories: [String] = []

    @Option(
        name: .customLong("insecure-registry"),
        help: "Do not verify TLS for this HOST:PORT, and fall back to plain HTTP (repeatable).")
    var insecureRegistries: [String] = []

    @Option(
        name: .customLong("auth"),
        help: """
            image-syncer's auth.json: {"HOST": {"username": ..., "password": ..., "insecure": true}} \
            (credentials per host, insecure hosts).
            """)
    var authFile: String?

    @Option(
        name: .customLong("connect-timeout"),
        help: "Seconds to wait for a connection to a registry before giving up on it (default 10).")
    var connectTimeout: Int = 10

    /// The credential store: files, then --auth, then --creds.
    func credentialStore() throws -> CredentialStore {
        var store = try CredentialStore.load()
        // image-syncer's keys: a host, or a host/namespace prefix.
        for (key, entry) in try syncerAuth().sorted(by: { $0.key < $1.key }) {
            guard let username = entry.username, let password = entry.password else { continue }
            store.addEntry(
                key: key, credential: .basic(username: username, password: password), source: authFile ?? "--auth")
        }
        for argument in credentials { try store.addExplicit(argument) }
        return store
    }

    /// The hosts --auth marks insecure (a namespace key marks its host).
    func insecureFromAuth() throws -> Set<String> {
        Set(
            try syncerAuth().filter { $0.value.insecure == true }.keys.map {
                let key = CredentialStore.normalizeKey($0)
                return String(key.split(separator: "/").first ?? Substring(key))
            })
    }

    struct SyncerAuth: Decodable {
        var username: String?
        var password: String?
        var insecure: Bool?
    }

    /// The hosts of --auth (image-syncer's auth.json), with their credentials and insecure flags.
    func syncerAuth() throws -> [String: SyncerAuth] {
        guard let authFile else { return [:] }
        guard let data = FileManager.default.contents(atPath: authFile) else {
            throw CredentialError.unreadable(authFile, SystemError.unreadable(authFile))
        }
        do {
            return try JSONDecoder().decode([String: SyncerAuth].self, from: data)
        } catch {
            throw CredentialError.malformed(authFile, "expected {\"HOST\": {\"username\", \"password\", \"insecure\"}}")
        }
    }

    /// Runs `body` with a registry client over a new HTTP client, shut down afterwards whatever happens.
    func withClient<Result: Sendable>(
        credentials: CredentialStore, _ body: (RegistryClient) async throws -> Result
    ) async throws -> Result {
        let trust = TrustPolicy(
            caFiles: caFiles,
            certsDirectories: certsDirectories.isEmpty ? TrustPolicy.defaultCertsDirectories : certsDirectories,
            insecureRegistries: Set(insecureRegistries).union(try insecureFromAuth()))
        try trust.checkCAFiles()
        let http = RegistryClient.makeHTTPClient(connectTimeout: max(1, connectTimeout))
        let client = RegistryClient(
            http: http,
            configuration: .init(
                credentials: credentials, trust: trust, userAgent: "ferry/\(FerryVersion.string)",
                connectTimeout: max(1, connectTimeout)))
        let result: Result
        do {
            result = try await body(client)
        } catch {
            try? await http.shutdown()
            throw error
        }
        try await http.shutdown()
        return result
    }
}
