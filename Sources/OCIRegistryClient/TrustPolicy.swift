import Foundation
import NIOSSL

/// How to trust a registry's TLS certificate, as docker and skopeo do it.
///
/// The system trust store always, plus: every `--ca-file`; for `HOST:PORT`, each `*.crt` in
/// `CERTS_DIR/HOST:PORT/` for every certs directory (default `/etc/containers/certs.d` and
/// `/etc/docker/certs.d`), and a client certificate pair (`*.cert` with its `*.key`) found there.
/// Hosts listed as insecure skip verification and may fall back to plain HTTP.
///
/// Certificates are parsed here, once, and handed to TLS as parsed certificates: NIOSSL reads a
/// trust file again for every TLS context, and AsyncHTTPClient makes a context for each new
/// connection (its context cache misses on configurations that compare unequal byte for byte), so
/// each connection paid for parsing the system bundle's 140-odd certificates on one shared queue.
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
        if let system = Self.systemRoots { tls.trustRoots = .certificates(system) }
        var roots: [NIOSSLAdditionalTrustRoots] = try caFiles.map { .certificates(try Self.certificates(in: $0)) }
        for directory in certsDirectories {
            let hostDirectory = "\(directory)/\(host)"
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: hostDirectory) else { continue }
            for name in names.sorted() {
                let path = "\(hostDirectory)/\(name)"
                if name.hasSuffix(".crt") {
                    roots.append(.certificates(try Self.certificates(in: path)))
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

    /// The system trust store, parsed on first use: the bundle file NIOSSL itself would load on
    /// Linux (Debian's, else Fedora's). Nil where there is none, and NIOSSL's default applies.
    static let systemRoots: [NIOSSLCertificate]? = {
        let bundles = ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"]
        guard let path = bundles.first(where: { FileManager.default.isReadableFile(atPath: $0) }),
            let certificates = try? NIOSSLCertificate.fromPEMFile(path), !certificates.isEmpty
        else { return nil }
        return certificates
    }()

    static func certificates(in path: String) throws -> [NIOSSLCertificate] {
        do {
            let certificates = try NIOSSLCertificate.fromPEMFile(path)
            guard !certificates.isEmpty else {
                throw TrustError.unreadableCertificate(path: path, reason: "no certificate in it")
            }
            return certificates
        } catch let error as TrustError {
            throw error
        } catch {
            throw TrustError.unreadableCertificate(
                path: path,
                reason: FileManager.default.isReadableFile(atPath: path) ? "not a PEM certificate" : "cannot be read")
        }
    }
}

public enum TrustError: Error, Equatable, CustomStringConvertible {
    case missingClientKey(certificate: String, key: String)
    case unreadableCertificate(path: String, reason: String)
    public var description: String {
        switch self {
        case .missingClientKey(let certificate, let key): "client certificate \(certificate) has no key \(key)"
        case .unreadableCertificate(let path, let reason): "CA certificate \(path): \(reason)"
        }
    }
}
