import ArgumentParser
import Foundation
import Logging
import OCIRegistryServer
import OCIStore

/// `ferry-appliance serve`.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the store over HTTPS with the OCI Distribution API (pull side).",
        discussion: """
            With no certificate given, the appliance makes a CA once (DATA/tls/ca.crt, its key \\
            0600) and a server certificate signed by it for this host's name, FQDN and addresses, \\
            localhost, 127.0.0.1, ::1 and every --san. The certificate is remade at start when \\
            those names change or it expires within 30 days. Give clients the CA: \\
            `ferry-appliance client-config HOST:PORT` prints what each one needs.

            Images imported while the server runs are served at once. SIGTERM or SIGINT stops \\
            accepting connections and finishes requests in flight. /healthz answers 200 when the \\
            store is readable.

            Examples:
              ferry-appliance serve --data-dir /srv/ferry --listen :5000 --san registry.plant.example
              ferry-appliance serve --tls-cert /etc/pki/ferry.crt --tls-key /etc/pki/ferry.key
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

    func run() async throws {
        try await reportingApplianceErrors {
            let (configuration, _) = try store.configuration()
            let dataDirectory = store.resolved(configuration)
            let listen = try ListenAddress(self.listen ?? configuration.listen ?? ApplianceConfiguration.defaultListen)
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
            let server = RegistryServer(
                content: RegistryContent(store: registry), host: listen.host, port: listen.port, transport: transport,
                accessLog: log, readOnly: readOnly || configuration.readOnly == true, logger: logger)
            let scheme = plainHTTP ? "http" : "https"
            let description = summary
            try await server.run { port in
                FileHandle.standardError.write(
                    Data(
                        "ferry-appliance: serving \(dataDirectory) on \(scheme)://\(listen.host):\(port) (\(description))\n"
                            .utf8))
            }
        }
    }
}

/// `ferry-appliance ca`.
struct CACommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca",
        abstract: "Print the appliance's CA certificate (PEM), making the CA first if there is none.",
        discussion: "Example: ferry-appliance ca --data-dir /srv/ferry > ferry-ca.crt")

    @OptionGroup var store: StoreOptions

    func run() async throws {
        try await reportingApplianceErrors {
            let pem = try ApplianceCertificates(dataDirectory: store.resolved).authorityPEM()
            FileHandle.standardOutput.write(Data(pem.utf8))
        }
    }
}
