import ApplianceConsole
import ArgumentParser
import Foundation
import Logging
import OCIBundle
import OCICore
import OCIRegistryServer
import OCIStore
import RegistryProxy

/// `ferry-appliance serve`.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the store over HTTPS with the OCI Distribution API: pulls, and pushes from CI.",
        discussion: """
            With no certificate given, the appliance makes a CA once (DATA/tls/ca.crt, its key \
            0600) and a server certificate signed by it for this host's name, FQDN and addresses, \
            localhost, 127.0.0.1, ::1 and every --san. The certificate is remade at start when \
            those names change or it expires within 30 days. Give clients the CA: \
            `ferry-appliance client-config HOST:PORT` prints what each one needs.

            Access: every request needs credentials unless --anonymous pull (or auth.anonymous in \
            the configuration); add users with `ferry-appliance user add`. docker, podman, skopeo \
            and containerd log in through the token flow; Basic credentials work too. CI pushes \
            with a push-role user; --read-only refuses every push and delete.

            Images imported while the server runs are served at once. SIGTERM or SIGINT stops \
            accepting connections and finishes requests in flight. /healthz answers 200 when the \
            store is readable.

            Pull-through cache: --proxy URL fetches what the store lacks from that registry on \
            first request (verified while it streams, cached in DATA/proxy), served as \
            PREFIX/NAME (docker.io/library/nginx) and as NAME; tags are checked again after \
            --proxy-ttl. Everyone who may pull through the appliance sees what --proxy-creds \
            see upstream. Several upstreams: proxy.upstreams in the configuration.

            Examples:
              ferry-appliance serve --data-dir /srv/ferry --listen :5000 --san registry.plant.example
              ferry-appliance serve --anonymous pull --read-only
              ferry-appliance serve --tls-cert /etc/pki/ferry.crt --tls-key /etc/pki/ferry.key
              ferry-appliance serve --proxy https://registry-1.docker.io --proxy-max-bytes 200GiB
            """
    )

    @OptionGroup var store: StoreOptions

    @Option(help: "Address to listen on: HOST:PORT, :PORT or [IPV6]:PORT (default 0.0.0.0:5000).")
    var listen: String?

    @Option(
        name: .customLong("tls-cert"),
        help: "Your own certificate chain (PEM, leaf first) instead of the generated one.")
    var tlsCertificate: String?

    @Option(name: .customLong("tls-key"), help: "The private key (PEM) for --tls-cert.")
    var tlsKey: String?

    @Option(name: .customLong("san"), help: "Another name or address for the generated certificate (repeatable).")
    var subjectAlternativeNames: [String] = []

    @Flag(name: .customLong("plain-http"), help: "Serve plain HTTP (behind a TLS-terminating proxy only).")
    var plainHTTP = false

    @Option(name: .customLong("access-log"), help: "Access log: a file, - for standard error, or off (default -).")
    var accessLog: String?

    @Flag(name: .customLong("read-only"), help: "Refuse every push and delete (405 UNSUPPORTED); imports still work.")
    var readOnly = false

    @Option(help: "What clients without credentials may do: none (default) or pull.")
    var anonymous: String?

    @Option(help: "An htpasswd file (bcrypt entries, as `htpasswd -B` writes) whose users get auth.htpasswdRole.")
    var htpasswd: String?

    @Flag(name: .customLong("no-console"), help: "Do not serve the web console under /ui/.")
    var noConsole = false

    @Option(
        name: .customLong("proxy"),
        help: ArgumentHelp(
            "A pull-through cache of this registry (https://HOST[:PORT]): what the store lacks is fetched from it.",
            valueName: "url"))
    var proxy: String?

    @Option(
        name: .customLong("proxy-creds"),
        help: ArgumentHelp("USER:PASSWORD for --proxy (or passwordFile in appliance.yml).", valueName: "user:password"))
    var proxyCredentials: String?

    @Option(
        name: .customLong("proxy-ttl"),
        help: ArgumentHelp(
            "How long a tag is served before it is checked upstream again: 30s, 10m, 1h (default 10m).",
            valueName: "duration"))
    var proxyTTL: String?

    @Option(
        name: .customLong("proxy-ca"), help: ArgumentHelp("Another CA (PEM) to trust for --proxy.", valueName: "file"))
    var proxyCA: String?

    @Option(
        name: .customLong("proxy-max-bytes"),
        help: ArgumentHelp(
            "The cache's size: 500GiB, 20G, 200GB (powers of 1000), bytes; least recently used entries go first (default: no limit).",
            valueName: "size"))
    var proxyMaxBytes: String?

    func run() async throws {
        try await reportingApplianceErrors {
            let (configuration, configPath) = try store.configuration()
            let dataDirectory = store.resolved(configuration)
            let listen = try ListenAddress(self.listen ?? configuration.listen ?? ApplianceConfiguration.defaultListen)
            // Checked before anything is made on disk (certificates, the access log).
            let policy = try Self.policy(configuration.auth, anonymous: anonymous, htpasswd: htpasswd, path: configPath)
            let registry = try RegistryStore(root: dataDirectory)
            let transport: RegistryServer.Transport
            let certificate = tlsCertificate ?? configuration.tls?.cert
            let key = tlsKey ?? configuration.tls?.key
            var summary: String
            if plainHTTP {
                transport = .plainHTTP
                summary = "plain HTTP"
            } else if certificate != nil || key != nil {
                guard let certificate, let key else {
                    throw ValidationError("--tls-cert and --tls-key go together")
                }
                transport = .tls(certificateChain: certificate, privateKey: key)
                summary = "TLS with \(certificate)"
            } else {
                let certificates = ApplianceCertificates(dataDirectory: dataDirectory)
                let names = SubjectNames.thisHost(extra: subjectAlternativeNames + (configuration.tls?.san ?? []))
                let outcome = try certificates.ensureServerCertificate(for: names)
                transport = .tls(
                    certificateChain: certificates.serverCertificatePath, privateKey: certificates.serverKeyPath)
                summary =
                    "TLS, CA \(certificates.authorityCertificatePath), server certificate \(outcome) for \(names)"
            }
            let logDestination = accessLog ?? configuration.accessLog ?? "-"
            let log = logDestination == "off" ? nil : try AccessLog(path: logDestination)
            LoggingSystem.bootstrap { label in
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = .info
                return handler
            }
            let logger = Logger(label: "ferry-appliance")
            let authenticator = try Authenticator(dataDirectory: dataDirectory, policy: policy, logger: logger)
            var server = RegistryServer(
                content: RegistryContent(storage: registry), host: listen.host, port: listen.port, transport: transport,
                accessLog: log, readOnly: readOnly || configuration.readOnly == true, authenticator: authenticator,
                limits: UploadLimits(
                    maxUploadBytes: configuration.storage?.maxUploadBytes ?? UploadLimits().maxUploadBytes,
                    maxUploadsPerUser: configuration.storage?.maxUploadsPerUser ?? UploadLimits().maxUploadsPerUser,
                    minFreeBytes: configuration.storage?.minFreeBytes ?? UploadLimits().minFreeBytes),
                trustedProxies: Set(configuration.http?.trustedProxies ?? []),
                connections: ConnectionLimits(
                    headerTimeout: .seconds(Int64(configuration.http?.headerTimeout ?? 30)),
                    idleTimeout: .seconds(Int64(configuration.http?.idleTimeout ?? 60)),
                    maxConnections: configuration.http?.maxConnections ?? 4096),
                logger: logger)
            if !noConsole && configuration.console != false {
                var expiry: Date?
                if case .tls(let chain, _) = transport { expiry = ApplianceCertificates.expiry(ofPEMFile: chain) }
                server.side = try Console(
                    content: server.content, authenticator: authenticator,
                    settings: .init(
                        secureCookies: !plainHTTP || !(configuration.http?.trustedProxies ?? []).isEmpty,
                        version: FerryVersion.string, dataDirectory: dataDirectory, certificateExpiry: expiry,
                        maxUploadBytes: configuration.storage?.maxUploadBytes ?? UploadLimits().maxUploadBytes),
                    importAction: try Self.importAction(
                        registry, configuration: configuration, path: configPath, logger: logger),
                    adminActions: try Self.adminActions(
                        registry, configuration: configuration, dataDirectory: dataDirectory,
                        ownCA: certificate == nil && !plainHTTP))
            }
            let pullThrough = try Self.pullThrough(
                self, configuration.proxy, dataDirectory: dataDirectory, path: configPath, logger: logger)
            server.pullThrough = pullThrough
            if let pullThrough {
                summary +=
                    "; pull-through cache of "
                    + pullThrough.routes.upstreams.map {
                        "\($0.registry) as \($0.prefix)/NAME\($0.isDefault ? " and as NAME" : "")"
                    }
                    .joined(separator: ", ")
            }
            let scheme = plainHTTP ? "http" : "https"
            let description = summary
            do {
                try await server.run { port in
                    FileHandle.standardError.write(
                        Data(
                            "ferry-appliance: serving \(dataDirectory) on \(scheme)://\(listen.host):\(port) (\(description))\n"
                                .utf8))
                }
            } catch {
                await pullThrough?.shutdown()
                throw error
            }
            await pullThrough?.shutdown()
        }
    }
}

extension ServeCommand {
    /// The pull-through cache from `--proxy` and the configuration's `proxy`, or nil when neither names an upstream.
    static func pullThrough(
        _ options: ServeCommand, _ settings: ApplianceConfiguration.Proxy?, dataDirectory: String, path: String?,
        logger: Logger
    ) throws -> PullThroughProxy? {
        let ttl = try options.proxyTTL.map { try Self.seconds($0, option: "--proxy-ttl") } ?? settings?.ttl ?? 600
        var upstreams: [PullThroughProxy.UpstreamSettings] = []
        if let url = options.proxy {
            var username: String?
            var password: String?
            if let credentials = options.proxyCredentials {
                guard let colon = credentials.firstIndex(of: ":"), colon != credentials.startIndex else {
                    throw ValidationError("--proxy-creds: expected USER:PASSWORD")
                }
                username = String(credentials[..<colon])
                password = String(credentials[credentials.index(after: colon)...])
            }
            let upstream: ProxyUpstream
            do { upstream = try ProxyUpstream(url: url, isDefault: true, ttl: ttl) } catch {
                throw ConfigurationError.badOption("--proxy", error.description)
            }
            upstreams.append(.init(upstream: upstream, username: username, password: password, caFile: options.proxyCA))
        } else if options.proxyCredentials != nil || options.proxyCA != nil {
            throw ValidationError("--proxy-creds and --proxy-ca go with --proxy")
        }
        for entry in settings?.upstreams ?? [] {
            var password: String?
            if let file = entry.passwordFile {
                guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw ConfigurationError.badValue(
                        path: path, key: "proxy.upstreams.passwordFile",
                        "cannot read \(file): \(SystemError.whyUnreadable(file) ?? "not UTF-8 text")")
                }
                password = text.trimmingCharacters(in: .newlines)
            }
            do {
                upstreams.append(
                    .init(
                        upstream: try ProxyUpstream(
                            url: entry.url, isDefault: entry.default == true && options.proxy == nil,
                            ttl: entry.ttl ?? ttl),
                        username: entry.username, password: password, caFile: entry.caFile))
            } catch {
                throw ConfigurationError.badValue(path: path, key: "proxy.upstreams", error.description)
            }
        }
        guard !upstreams.isEmpty else {
            if options.proxyTTL != nil || options.proxyMaxBytes != nil {
                throw ValidationError("--proxy-ttl and --proxy-max-bytes need an upstream: --proxy or proxy.upstreams")
            }
            return nil
        }
        let maxBytes =
            try options.proxyMaxBytes.map { text in
                guard let bytes = ByteCount.parse(text) else {
                    throw ValidationError("--proxy-max-bytes \(text): expected a size such as 500GiB, 20G or bytes")
                }
                return bytes
            }
            ?? settings?.maxBytes
        if let maxBytes, maxBytes <= 0 {
            throw ConfigurationError.badValue(path: path, key: "proxy.maxBytes", "expected bytes, more than 0")
        }
        return try PullThroughProxy.make(
            upstreams: upstreams, cacheRoot: "\(dataDirectory)/proxy", maxBytes: maxBytes, logger: logger)
    }

    /// `30s`, `10m`, `1h`, `2d` or plain seconds.
    static func seconds(_ text: String, option: String) throws -> Int {
        let units: [Character: Int] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var number = Substring(text)
        var unit = 1
        if let last = text.last, let factor = units[last] {
            number = number.dropLast()
            unit = factor
        }
        let (seconds, overflow) = (Int(number) ?? -1).multipliedReportingOverflow(by: unit)
        guard let value = Int(number), value >= 0, !overflow else {
            throw ValidationError("\(option) \(text): expected a duration such as 30s, 10m or 1h")
        }
        return seconds
    }

    /// The console's admin pages: gc and check on this store, the trusted keys, the CA to hand out
    /// (the appliance's own, unless the operator's certificate is served).
    static func adminActions(
        _ registry: RegistryStore, configuration: ApplianceConfiguration, dataDirectory: String, ownCA: Bool
    ) throws -> Console.AdminActions {
        var keys: [(source: String, keyID: String)] = []
        for path in configuration.import?.trustedKeys ?? [] {
            // Shown by file name only: a page never names paths on this machine.
            let file = (path as NSString).lastPathComponent
            keys += try PublicKey.load(path).map { (file, $0.keyID) }
        }
        let certificates = ApplianceCertificates(dataDirectory: dataDirectory)
        // The CA certificate clients trust, read once (never its key, and never made here).
        let pem = ownCA ? try? String(contentsOfFile: certificates.authorityCertificatePath, encoding: .utf8) : nil
        return Console.AdminActions(
            collectGarbage: { dryRun in try registry.collectGarbage(dryRun: dryRun) },
            check: { try registry.check(repair: false) }, trustedKeys: keys, caPEM: pem, dataDirectory: dataDirectory)
    }

    /// Imports through the console: the importer `import` uses, with the same trusted keys and
    /// image-signature keys from the configuration. A refusal is shown whole; a failure of the
    /// store itself is logged, and the page only says so (it may name paths on this machine).
    static func importAction(
        _ registry: RegistryStore, configuration: ApplianceConfiguration, path: String?, logger: Logger
    ) throws -> Console.ImportAction {
        let keyPaths = configuration.import?.trustedKeys ?? []
        if configuration.import?.requireSignature == true && keyPaths.isEmpty {
            throw ConfigurationError.requireSignatureWithoutKeys(path)
        }
        let importer = Importer(
            store: registry, reader: BundleReader(trustedKeys: try keyPaths.flatMap { try PublicKey.load($0) }),
            imageKeys: try (configuration.import?.requireImageSignatures ?? []).map {
                try ImageSignatureKey(pemFile: $0)
            })
        return { fileDescriptor, name, confirm in
            do {
                let result = try importer.importStream(fileDescriptor: fileDescriptor, name: name, confirm: confirm)
                return Console.ImportOutcome(
                    lines: ImportCommand.describe(result, bundle: name).prefix(1).map { String($0) },
                    images: result.images.map { ($0.repository, $0.tag ?? $0.digest) })
            } catch ImportError.store(let bundle, let why) {
                logger.error("console import of \(bundle): the store failed: \(why)")
                throw Console.ImportRefusal(lines: [
                    "Not imported, nothing changed: the store failed (see the appliance's log)."
                ])
            } catch let error as ImportError {
                throw Console.ImportRefusal(lines: error.description.split(separator: "\n").map(String.init))
            }
        }
    }

    /// The access policy from `auth:` in the configuration, overridden by flags.
    static func policy(
        _ auth: ApplianceConfiguration.Auth?, anonymous: String?, htpasswd: String?, path: String?
    ) throws(ConfigurationError) -> AccessPolicy {
        var policy = AccessPolicy()
        switch anonymous ?? auth?.anonymous ?? "none" {
        case "none": policy.anonymous = nil
        case "pull": policy.anonymous = Grant(role: .pull)
        case let other: throw .badValue(path: path, key: "auth.anonymous", "\(other): expected none or pull")
        }
        policy.htpasswdPath = htpasswd ?? auth?.htpasswd
        // Read again whenever it changes while serving; it must be there to start with.
        if let file = policy.htpasswdPath, let why = SystemError.whyUnreadable(file) {
            if htpasswd != nil { throw .badOption("--htpasswd \(file)", why) }
            throw .badValue(path: path, key: "auth.htpasswd", "\(file): \(why)")
        }
        if let role = auth?.htpasswdRole {
            guard let parsed = Role(rawValue: role) else {
                throw .badValue(path: path, key: "auth.htpasswdRole", "\(role): expected pull, push, delete or admin")
            }
            policy.htpasswdGrant.role = parsed
        }
        policy.htpasswdGrant.repositories = auth?.htpasswdRepositories
        if let lifetime = auth?.tokenLifetime {
            guard lifetime >= 10 else { throw .badValue(path: path, key: "auth.tokenLifetime", "at least 10 seconds") }
            policy.tokenLifetime = lifetime
        }
        if let ldap = auth?.ldap { policy.ldap = try directory(ldap, path: path) }
        return policy
    }

    /// `auth.ldap`, checked: every problem names its key.
    static func directory(_ ldap: ApplianceConfiguration.LDAP, path: String?) throws(ConfigurationError)
        -> LDAPDirectory
    {
        func role(_ text: String, key: String) throws(ConfigurationError) -> Role {
            guard let role = Role(rawValue: text) else {
                throw .badValue(path: path, key: key, "\(text): expected pull, push, delete or admin")
            }
            return role
        }
        func filter(_ text: String?, key: String) throws(ConfigurationError) -> LDAPFilter? {
            guard let text else { return nil }
            do {
                return try LDAPFilter(parsing: text)
            } catch {
                throw .badValue(path: path, key: key, error.description)
            }
        }
        guard let url = URL(string: ldap.url), ["ldap", "ldaps"].contains(url.scheme ?? ""), url.host != nil else {
            throw .badValue(
                path: path, key: "auth.ldap.url", "\(ldap.url): expected ldap://HOST[:PORT] or ldaps://HOST[:PORT]")
        }
        var settings = LDAPDirectory.Settings(url: url, baseDN: ldap.baseDN)
        settings.caFile = ldap.caFile
        settings.bindDN = ldap.bindDN
        if let file = ldap.bindPasswordFile {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                throw .badValue(
                    path: path, key: "auth.ldap.bindPasswordFile",
                    "\(file): \(SystemError.whyUnreadable(file) ?? "not UTF-8 text")")
            }
            settings.bindPassword = text.trimmingCharacters(in: .newlines)
            // An empty password is an anonymous bind, which some directories accept silently.
            guard settings.bindPassword?.isEmpty == false else {
                throw .badValue(path: path, key: "auth.ldap.bindPasswordFile", "\(file) is empty")
            }
        }
        if ldap.bindDN != nil && settings.bindPassword == nil {
            throw .badValue(path: path, key: "auth.ldap.bindPasswordFile", "bindDN needs its password in a file")
        }
        settings.uidAttribute = ldap.uidAttribute ?? "uid"
        settings.filter = try filter(ldap.filter, key: "auth.ldap.filter")
        switch ldap.scope ?? "sub" {
        case "sub": settings.scope = 2
        case "one": settings.scope = 1
        case let other: throw .badValue(path: path, key: "auth.ldap.scope", "\(other): expected sub or one")
        }
        settings.groupBaseDN = ldap.groupBaseDN
        if let groupFilter = try filter(ldap.groupFilter, key: "auth.ldap.groupFilter") {
            settings.groupFilter = groupFilter
        }
        settings.groupMemberAttribute = ldap.groupMemberAttribute ?? "member"
        for (i, entry) in (ldap.groups ?? []).enumerated() {
            settings.groups.append(
                .init(
                    group: entry.group,
                    grant: Grant(
                        role: try role(entry.role, key: "auth.ldap.groups[\(i)].role"), repositories: entry.repositories
                    )))
        }
        if let text = ldap.defaultRole {
            settings.defaultGrant = Grant(
                role: try role(text, key: "auth.ldap.defaultRole"), repositories: ldap.defaultRepositories)
        }
        if let timeout = ldap.timeout {
            guard (1...120).contains(timeout) else {
                throw .badValue(path: path, key: "auth.ldap.timeout", "between 1 and 120 seconds")
            }
            settings.timeout = .seconds(Int64(timeout))
        }
        do {
            return try LDAPDirectory(settings)
        } catch {
            throw .badValue(path: path, key: "auth.ldap.caFile", "\(ldap.caFile ?? ""): \(error)")
        }
    }
}

/// `ferry-appliance ca`.
struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Print the appliance's CA certificate (PEM), making the CA first if there is none.",
        discussion: """
            With --server-certificate it also makes (or renews, as serve would) the server \
            certificate for this host and the configured and given --san names, so an installer \
            can set everything up before the first start.

            Example: ferry-appliance ca --data-dir /srv/ferry > ferry-ca.crt
            """)

    @OptionGroup var store: StoreOptions

    @Flag(name: .customLong("server-certificate"), help: "Also make the server certificate now.")
    var serverCertificate = false

    @Option(name: .customLong("san"), help: "Another name or address for the server certificate (repeatable).")
    var subjectAlternativeNames: [String] = []

    func run() async throws {
        try await reportingApplianceErrors {
            let (configuration, _) = try store.configuration()
            let certificates = ApplianceCertificates(dataDirectory: store.resolved(configuration))
            let pem = try certificates.authorityPEM()
            if serverCertificate {
                let names = SubjectNames.thisHost(extra: subjectAlternativeNames + (configuration.tls?.san ?? []))
                let outcome = try certificates.ensureServerCertificate(for: names)
                FileHandle.standardError.write(
                    Data("ferry-appliance: server certificate \(outcome) for \(names)\n".utf8))
            }
            FileHandle.standardOutput.write(Data(pem.utf8))
        }
    }
}
