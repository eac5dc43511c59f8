import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOSSL
import OCICore

/// Serves a registry store over HTTPS (or plain HTTP when asked) until SIGTERM or SIGINT, then
/// finishes the requests in flight and stops.
public struct RegistryServer: Sendable {
    public enum Transport: Sendable {
        /// TLS 1.2 and 1.3 with this certificate chain (PEM file, leaf first) and private key (PEM file).
        case tls(certificateChain: String, privateKey: String)
        case plainHTTP
    }

    public let content: RegistryContent
    public let host: String
    public let port: Int
    public let transport: Transport
    public let accessLog: AccessLog?
    public let readOnly: Bool
    public let authenticator: Authenticator?
    public let limits: UploadLimits
    public let trustedProxies: Set<String>
    public let connections: ConnectionLimits
    public let logger: Logger
    /// The web console under `/ui/`, when served.
    public var side: (any SideResponder)?
    /// A pull-through cache for what the store lacks, when configured.
    public var pullThrough: (any PullThrough)?

    public init(
        content: RegistryContent, host: String, port: Int, transport: Transport, accessLog: AccessLog?,
        readOnly: Bool = false, authenticator: Authenticator?, limits: UploadLimits = UploadLimits(),
        trustedProxies: Set<String> = [], connections: ConnectionLimits = ConnectionLimits(), logger: Logger
    ) {
        self.connections = connections
        self.limits = limits
        self.trustedProxies = trustedProxies
        self.readOnly = readOnly
        self.authenticator = authenticator
        self.content = content
        self.host = host
        self.port = port
        self.transport = transport
        self.accessLog = accessLog
        self.logger = logger
    }

    /// Seconds after which an upload nobody touched is removed.
    public static let uploadExpiry = 86400

    /// The TLS settings for a certificate chain and key in PEM files.
    public static func tlsConfiguration(certificateChain: String, privateKey: String) throws -> TLSConfiguration {
        try ServerError.checkReadable(certificateChain, what: "certificate chain")
        try ServerError.checkReadable(privateKey, what: "private key")
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(certificateChain) } catch {
            throw ServerError.unusableTLSFile(certificateChain, "not a PEM certificate chain")
        }
        guard !chain.isEmpty else { throw ServerError.noCertificate(certificateChain) }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: privateKey, format: .pem) } catch {
            throw ServerError.unusableTLSFile(privateKey, "not a PEM private key (or one protected by a passphrase)")
        }
        var configuration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))
        configuration.minimumTLSVersion = .tlsv12
        configuration.maximumTLSVersion = .tlsv13
        // TLS 1.2: forward-secret AEAD suites only, no CBC (TLS 1.3's suites are all AEAD).
        configuration.cipherSuiteValues = [
            .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            .TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384, .TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
        ]
        return configuration
    }

    /// Runs until a shutdown signal; `onRunning` receives the bound port (useful with port 0).
    public func run(onRunning: @escaping @Sendable (Int) async -> Void = { _ in }) async throws {
        var scheme = "https"
        if case .plainHTTP = transport { scheme = "http" }
        let responder = RegistryResponder(
            content: content, accessLog: accessLog, readOnly: readOnly, authenticator: authenticator,
            realmScheme: scheme, limits: limits, trustedProxies: trustedProxies, side: side,
            pullThrough: pullThrough)
        let server: HTTPServerBuilder
        let counter = ConnectionCounter()
        let limits = connections
        let http1 = HTTP1Channel.Configuration(
            additionalChannelHandlers: [ConnectionGuard(limits: limits, counter: counter)])
        switch transport {
        case .tls(let chain, let key):
            server = try .tls(
                .http1(configuration: http1),
                tlsConfiguration: Self.tlsConfiguration(certificateChain: chain, privateKey: key))
        case .plainHTTP:
            server = .http1(configuration: http1)
        }
        let port = self.port
        let application = Application(
            responder: responder, server: server,
            configuration: ApplicationConfiguration(
                address: .hostname(host, port: port), serverName: "ferry-appliance", backlog: 1024),
            onServerRunning: { channel in await onRunning(channel.localAddress?.port ?? port) },
            logger: logger)
        // Abandoned uploads expire: checked at start and every hour while serving.
        let uploads = content.storage.uploads
        let logger = self.logger
        let expiry = Task.detached {
            while !Task.isCancelled {
                let removed = uploads.expire(olderThan: Self.uploadExpiry)
                if removed > 0 { logger.info("removed \(removed) upload(s) untouched for a day") }
                try? await Task.sleep(for: .seconds(3600))
            }
        }
        defer { expiry.cancel() }
        do {
            try await application.runService()
        } catch let error as IOError where error.errnoCode != 0 {
            // Binding is the only socket call that fails the server itself.
            throw ServerError.cannotListen(host: host, port: port, reason: SystemError.words(error.errnoCode))
        } catch is SocketAddressError.UnknownHost {
            throw ServerError.cannotListen(host: host, port: port, reason: "the name does not resolve to an address")
        } catch let error as SocketAddressError {
            throw ServerError.cannotListen(host: host, port: port, reason: "\(error)")
        }
    }
}

public enum ServerError: Error, CustomStringConvertible {
    case noCertificate(String)
    case unusableTLSFile(String, String)
    case cannotListen(host: String, port: Int, reason: String)

    public var description: String {
        switch self {
        case .noCertificate(let path): "\(path): no PEM certificate in the file"
        case .unusableTLSFile(let path, let reason): "\(path): \(reason)"
        case .cannotListen(let host, let port, let reason):
            "cannot listen on \(host.contains(":") ? "[\(host)]" : host):\(port): \(reason)"
        }
    }

    /// A TLS file must be there and readable; said with the file's name and the system's reason.
    static func checkReadable(_ path: String, what: String) throws {
        if let why = SystemError.whyUnreadable(path) { throw unusableTLSFile(path, "cannot read the \(what): \(why)") }
    }
}
