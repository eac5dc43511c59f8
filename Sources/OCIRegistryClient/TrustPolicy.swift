import Foundation
import NIOSSL

/// How to trust a registry's TLS certificate, as docker and skopeo do it.
///
/// The system trust store always, plus: every `--ca-file`; for `HOST:PORT`, each `*.crt` in
/// `CERTS_DIR/HOST:PORT/` for every certs directory (default `/etc/containers/certs.d` and
/// `/etc/docker/certs.d`), and a client certificate pair (`*.cert` with its `*.key`) found there.
/// Hosts listed as insecure skip verification and may fall back to plain HTTP.
public struct TrustPolicy: Sendable {
    public var caFiles: [String]
    public var certsDirectories: [String]
    public var insecureRegistries: Set<String>

    public static let defaultCertsDirectories = ["/etc/containers/certs.d", "/etc/docker/certs.d"]

    public init(
        caFiles: [String] = [], certsDirectories: [String] = Self.defaultCertsDirectories,
        insecureRegistries: Set<String> = []
    ) {
        self.caFiles = caFiles
        self.certsDirectories = certsDirectories
        self.insecureRegistries = insecureRegistries
    }

    public func isInsecure(_ registry: String) -> Bool { insecureRegistries.contains(registry) }

    /// The TLS configuration for `host` (host[:port] as addressed).
    public func tlsConfiguration(for host: String) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if isInsecure(host) {
            tls.certificateVerification = .none
            return tls
        }
        var roots: [NIOSSLAdditionalTrustRoots] = caFiles.map { .file($0) }
        for directory in certsDirectories {
            let hostDirectory = "\(directory)/\(host)"
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: hostDirectory) else { continue }
            for name in names.sorted() {
                let path = "\(hostDirectory)/\(name)"
                if name.hasSuffix(".crt") {
                    roots.append(.file(path))
                } else if name.hasSuffix(".cert") {
                    let key = "\(hostDirectory)/\(name.dropLast(5)).key"
                    guard FileManager.default.fileExists(atPath: key) else {
                        throw TrustError.missingClientKey(certificate: path, key: key)
                    }
                    tls.certificateChain = try NIOSSLCertificate.fromPEMFile(path).map { .certificate($0) }
                    tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
                }
            }
        }
        tls.additionalTrustRoots = roots
        return tls
    }
}

public enum TrustError: Error, CustomStringConvertible {
    case missingClientKey(certificate: String, key: String)
    public var description: String {
        switch self {
        case .missingClientKey(let certificate, let key): "client certificate \(certificate) has no key \(key)"
        }
    }
}
