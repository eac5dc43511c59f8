import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import OCICore

extension RegistryClient {
    /// Errors of the connection itself (TLS, channel, socket), as opposed to the consumer's own.
    static func isTransport(_ error: any Error) -> Bool {
        error is NIOSSLError || error is ChannelError || error is IOError
    }

    /// GETs a file from an HTTP(S) server that is not a registry (a Helm chart repository's
    /// `index.yaml` and chart archives) under the rules registries get: TLS trust per host
    /// (`--ca-file`, `certs.d`), plain HTTP only for a host given as insecure, the host's
    /// credentials (Basic, sent after the server's 401 asks for them), redirects that drop them
    /// across origins, and retries of connection errors, 5xx and 429.
    ///
    /// `consume` gets each 2xx response and must read its body; it runs again on a retry.
    public func fetchResource<T>(url: String, consume: (HTTPClientResponse) async throws -> T) async throws -> T {
        let host = Self.hostPort(of: url)
        let origin = Self.origin(of: url)
        let endpoint: Endpoint
        if url.hasPrefix("https://") {
            endpoint = Endpoint(baseURL: origin, tls: try trust.configuration(for: host))
        } else if url.hasPrefix("http://") && configuration.trust.isInsecure(host) {
            endpoint = Endpoint(baseURL: origin, tls: nil)
        } else {
            throw RegistryError.unreachable(
                registry: host, url: url,
                reason: url.hasPrefix("http://")
                    ? "plain HTTP is refused unless the host is given as insecure (--insecure-registry \(host))"
                    : "only https:// (and http:// for insecure hosts) URLs can be fetched")
        }
        // Only credentials given for this host: a password given without a host never goes to a
        // server an index or a chart named.
        let credential = configuration.credentials.hostCredential(host)
        return try await configuration.retry.run { _ in
            var authorization: String? = nil
            while true {
                let (response, finalURL) = try await execute(
                    .GET, url: url, registry: host, endpoint: endpoint, headers: [:], authorization: authorization)
                let status = Int(response.status.code)
                if status == 401, authorization == nil, let basic = credential?.basicHeader,
                    Self.origin(of: finalURL) == origin
                {
                    _ = try? await response.body.collect(upTo: 64 * 1024)
                    authorization = basic
                    continue
                }
                guard (200..<300).contains(status) else {
                    let body =
                        (try? await response.body.collect(upTo: 64 * 1024)).map { Array($0.readableBytesView) } ?? []
                    throw statusError(
                        status: status, headers: response.headers, body: body, registry: host, scope: nil, what: url,
                        url: finalURL)
                }
                do {
                    return try await consume(response)
                } catch let error as RegistryError {
                    throw error
                } catch is CancellationError {
                    throw CancellationError()
                } catch let error as HTTPClientError {
                    // The body broke off: worth another try.
                    throw RegistryError.connection(registry: host, url: url, underlying: "\(error)")
                } catch  where Self.isTransport(error) {
                    throw RegistryError.connection(registry: host, url: url, underlying: "\(error)")
                }
            }
        }
    }
}
