import Foundation
import NIOSSL
import Synchronization

/// How to trust a registry's TLS certificate, as docker and skopeo do it.
///
/// The system trust store always, plus: every `--ca-file`; for `HOST:PORT`, each `*.crt` in
/// `CERTS_DIR/HOST:PORT/` for every certs directory (default `/etc/containers/certs.d` and
/// `/etc/docker/certs.d`), and a client certificate pair (`*.cert` with its `*.key`) found there.
/// Hosts listed as insecure skip verification and may fall back to plain HTTP.
///
/// CA files are given to NIOSSL by path: AsyncHTTPClient hashes a request's TLS configuration on
/// every request, and parsed certificates would be encoded again for each hash (12% of the CPU of
/// a 200-image export when the system store went that way). ``checkCAFiles()`` reads them once at
/// the start; a host's `certs.d` certificates are read when its configuration is made.
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

    /// Reads every `--ca-file` once, at the start: one that is missing or not PEM fails the command
    /// there, named, instead of each connection failing its TLS handshake.
    public func checkCAFiles() throws {
        for path in caFiles { _ = try Self.checked(path) }
    }

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
                    roots.append(try Self.checked(path))
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

    /// `path` as a trust root, once it was seen to hold PEM certificates.
    static func checked(_ path: String) throws -> NIOSSLAdditionalTrustRoots {
        do {
            guard try !NIOSSLCertificate.fromPEMFile(path).isEmpty else {
                throw TrustError.unreadableCertificate(path: path, reason: "no certificate in it")
            }
            return .file(path)
        } catch let error as TrustError {
            throw error
        } catch {
            throw TrustError.unreadableCertificate(
                path: path,
                reason: FileManager.default.isReadableFile(atPath: path) ? "not a PEM certificate" : "cannot be read")
        }
    }
}

/// Each host's TLS configuration, made once per client: a CDN a registry redirects every blob to,
/// or a token realm, does not list and parse its `certs.d` directories again for every request.
/// A configuration that fails is not kept (each request names the problem).
final class TrustConfigurations: Sendable {
    private let policy: TrustPolicy
    private let made = Mutex<[String: TLSConfiguration]>([:])

    init(_ policy: TrustPolicy) { self.policy = policy }

    func configuration(for host: String) throws -> TLSConfiguration {
        if let known = made.withLock({ $0[host] }) { return known }
        let configuration = try policy.tlsConfiguration(for: host)
        made.withLock { $0[host] = configuration }
        return configuration
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
