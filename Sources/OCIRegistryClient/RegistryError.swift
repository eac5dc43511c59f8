import Foundation
import OCICore

/// What can go wrong talking to a registry. Each case names the registry and what was asked for,
/// and knows whether trying again may help.
public enum RegistryError: Error, CustomStringConvertible {
    case unauthorized(registry: String, scope: String?, detail: String)
    case notFound(registry: String, what: String, detail: String)
    case status(registry: String, url: String, status: Int, detail: String, retryAfter: Double?)
    case connection(registry: String, url: String, underlying: String)
    /// The registry cannot be reached at all (its name does not resolve, no connection within the
    /// connect timeout): final, since trying again at once will not change that.
    case unreachable(registry: String, url: String, reason: String)
    /// A retryable error that was tried `attempts` times.
    indirect case gaveUp(RegistryError, attempts: Int)
    case tls(registry: String, url: String, underlying: String)
    case tooManyRedirects(url: String)
    case invalidManifest(what: String, underlying: ManifestError)
    case manifestDigestMismatch(what: String, expected: Digest, found: Digest)
    case corruptBlob(registry: String, repository: String, underlying: BlobVerificationError)
    case tokenRequest(realm: String, detail: String)
    case sink(String)

    public var description: String {
        switch self {
        case .unauthorized(let registry, let scope, let detail):
            "\(registry): authentication required or refused\(scope.map { " for \($0)" } ?? "")\(detail.isEmpty ? "" : ": \(detail)")"
                + " (log in with docker/podman, or pass --creds)"
        case .notFound(let registry, let what, let detail):
            "\(registry): \(what) not found\(detail.isEmpty ? "" : " (\(detail))")"
        case .status(let registry, let url, let status, let detail, _):
            "\(registry): HTTP \(status) for \(url)\(detail.isEmpty ? "" : ": \(detail)")"
        case .connection(let registry, let url, let underlying):
            "\(registry): cannot reach \(url): \(underlying)"
        case .unreachable(let registry, let url, let reason): "\(registry): cannot reach \(url): \(reason)"
        case .gaveUp(let error, let attempts): "\(error) (gave up after \(attempts) attempts)"
        case .tls(let registry, let url, let underlying) where underlying.contains("wrong version number"):
            // What a plain HTTP server's answer to a TLS hello reads as.
            "\(registry): TLS failed for \(url): \(underlying) (a registry without TLS? --insecure-registry"
                + " \(registry) uses plain HTTP)"
        case .tls(let registry, let url, let underlying) where underlying.contains("EOF during handshake"):
            "\(registry): TLS failed for \(url): \(underlying) (the server closed the connection: busy, or not"
                + " a TLS server?)"
        case .tls(let registry, let url, let underlying):
            "\(registry): TLS failed for \(url): \(underlying) (trust its CA with --ca-file or"
                + " /etc/containers/certs.d/\(registry)/ca.crt; --insecure-registry \(registry) skips verification)"
        case .tooManyRedirects(let url): "too many redirects fetching \(url)"
        case .invalidManifest(let what, let underlying): "\(what): \(underlying)"
        case .manifestDigestMismatch(let what, let expected, let found):
            "\(what): manifest digest is \(found), expected \(expected)"
        case .corruptBlob(let registry, let repository, let underlying):
            "\(registry)/\(repository): corrupt blob: \(underlying)"
        case .tokenRequest(let realm, let detail): "token request to \(realm) failed: \(detail)"
        case .sink(let detail): detail
        }
    }

    /// Connection errors, 5xx and 429 are worth another try; the rest are final.
    public var isRetryable: Bool {
        switch self {
        case .connection: true
        case .status(_, _, let status, _, _): status >= 500 || status == 429 || status == 408
        default: false
        }
    }

    /// Content that did not match its digest (as opposed to a registry that failed to answer).
    public var isVerificationFailure: Bool {
        switch self {
        case .corruptBlob, .manifestDigestMismatch: true
        case .gaveUp(let error, _): error.isVerificationFailure
        default: false
        }
    }

    var retryAfter: Double? {
        if case .status(_, _, _, _, let retryAfter) = self { return retryAfter }
        return nil
    }
}

/// The OCI error envelope (`../shared/specs/oci-distribution/spec.md`, "Error Codes").
struct ErrorEnvelope: Decodable {
    struct Entry: Decodable {
        var code: String?
        var message: String?
    }
    var errors: [Entry]?

    /// A one-line summary of an error body, or an empty string when it carries none.
    static func summary(of body: [UInt8]) -> String {
        guard let envelope = try? JSONDecoder().decode(ErrorEnvelope.self, from: Data(body)),
            let errors = envelope.errors, !errors.isEmpty
        else { return "" }
        return errors.map { [$0.code, $0.message].compactMap { $0 }.joined(separator: ": ") }
            .joined(separator: "; ")
    }
}
