import Crypto
import Foundation
import OCIStore
import SwiftASN1
import X509

#if canImport(Glibc)
    import Glibc
#endif

/// The names a server certificate must hold.
public struct SubjectNames: Equatable, Sendable, CustomStringConvertible {
    public private(set) var dnsNames: [String]
    public private(set) var ipAddresses: [String]

    /// Sorts and de-duplicates; each name is an IP address (v4 or v6) or a DNS name.
    public init(_ names: [String]) {
        var dns = Set<String>()
        var ips = Set<String>()
        for name in names where !name.isEmpty {
            if let canonical = Self.canonicalAddress(name) {
                ips.insert(canonical)
            } else {
                dns.insert(name.lowercased())
            }
        }
        dnsNames = dns.sorted()
        ipAddresses = ips.sorted()
    }

    /// This host's names: host name, FQDN, every non-loopback address, `localhost`, `127.0.0.1`,
    /// `::1`, and `extra` (`--san`).
    public static func thisHost(extra: [String]) -> SubjectNames {
        var names = ["localhost", "127.0.0.1", "::1"] + extra
        var buffer = [CChar](repeating: 0, count: 256)
        if gethostname(&buffer, buffer.count - 1) == 0 {
            let host = Self.text(buffer)
            names.append(host)
            if let fqdn = canonicalName(of: host) { names.append(fqdn) }
        }
        names += interfaceAddresses()
        return SubjectNames(names)
    }

    public var description: String { (dnsNames + ipAddresses).joined(separator: ", ") }

    var generalNames: [GeneralName] {
        dnsNames.map { GeneralName.dnsName($0) }
            + ipAddresses.compactMap {
                Self.addressBytes($0).map { .ipAddress(ASN1OctetString(contentBytes: $0[...])) }
            }
    }

    init(generalNames: [GeneralName]) {
        var names: [String] = []
        for name in generalNames {
            switch name {
            case .dnsName(let dns): names.append(dns)
            case .ipAddress(let octets): if let text = Self.addressText(Array(octets.bytes)) { names.append(text) }
            default: break
            }
        }
        self.init(names)
    }

    static func canonicalAddress(_ text: String) -> String? { addressBytes(text).flatMap(addressText) }

    static func addressBytes(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    /// A NUL-terminated C string held in an array.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func addressText(_ bytes: [UInt8]) -> String? {
        var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = bytes.count == 4 ? AF_INET : (bytes.count == 16 ? AF_INET6 : -1)
        guard family >= 0 else { return nil }
        let ok = bytes.withUnsafeBytes { raw in inet_ntop(family, raw.baseAddress, &buffer, socklen_t(buffer.count)) }
        return ok == nil ? nil : text(buffer)
    }

    static func canonicalName(of host: String) -> String? {
        var hints = addrinfo()
        hints.ai_flags = AI_CANONNAME
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &result) == 0, let result else { return nil }
        defer { freeaddrinfo(result) }
        guard let name = result.pointee.ai_canonname else { return nil }
        let text = String(cString: name)
        return text.contains(".") ? text : nil
    }

    /// Every address of an interface that is up, except loopback and IPv6 link-local addresses
    /// (those need a zone, which a certificate cannot name).
    static func interfaceAddresses() -> [String] {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let list else { return [] }
        defer { freeifaddrs(list) }
        var addresses: [String] = []
        var cursor: UnsafeMutablePointer<ifaddrs>? = list
        while let entry = cursor {
            defer { cursor = entry.pointee.ifa_next }
            guard let address = entry.pointee.ifa_addr, entry.pointee.ifa_flags & UInt32(IFF_LOOPBACK) == 0,
                entry.pointee.ifa_flags & UInt32(IFF_UP) != 0
            else { continue }
            switch Int32(address.pointee.sa_family) {
            case AF_INET:
                let bytes = address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { pointer in
                    var value = pointer.pointee.sin_addr
                    return withUnsafeBytes(of: &value) { Array($0) }
                }
                if let text = addressText(bytes) { addresses.append(text) }
            case AF_INET6:
                let bytes = address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                    var value = pointer.pointee.sin6_addr
                    return withUnsafeBytes(of: &value) { Array($0) }
                }
                if bytes[0] == 0xfe && bytes[1] & 0xc0 == 0x80 { continue }
                if let text = addressText(bytes) { addresses.append(text) }
            default: continue
            }
        }
        return addresses
    }
}

/// The appliance's own certificate authority and server certificate, kept in `DATA/tls/`:
/// `ca.crt`, `ca.key` (0600), `server.crt`, `server.key` (0600). The CA is made once; the server
/// certificate is remade when its names change, when it expires within 30 days, or when it was not
/// signed by the CA on disk. Keys are ECDSA P-256; certificates are SHA-256 signed.
public struct ApplianceCertificates: Sendable {
    public let directory: String
    public var authorityCertificatePath: String { "\(directory)/ca.crt" }
    var authorityKeyPath: String { "\(directory)/ca.key" }
    public var serverCertificatePath: String { "\(directory)/server.crt" }
    public var serverKeyPath: String { "\(directory)/server.key" }

    static let authorityLifetime: TimeInterval = 10 * 365 * 86400
    static let serverLifetime: TimeInterval = 397 * 86400
    static let renewalWindow: TimeInterval = 30 * 86400

    public init(dataDirectory: String) { directory = "\(dataDirectory)/tls" }

    public enum Outcome: Equatable, Sendable, CustomStringConvertible {
        case current
        case created
        case renewed(String)
        public var description: String {
            switch self {
            case .current: "current"
            case .created: "created"
            case .renewed(let why): "renewed (\(why))"
            }
        }
    }

    /// The CA certificate in PEM, making the CA first if there is none.
    @discardableResult
    public func authorityPEM(now: Date = Date()) throws -> String {
        _ = try authority(now: now)
        return try String(contentsOfFile: authorityCertificatePath, encoding: .utf8)
    }

    /// Makes sure a server certificate for `names`, signed by the appliance CA, is on disk. Holds
    /// the directory's lock throughout, so a `ca` or another `serve` starting at the same moment
    /// neither makes a second CA nor writes a key that does not match the certificate.
    /// When the first certificate of a PEM file stops being valid; nil if the file holds none.
    public static func expiry(ofPEMFile path: String) -> Date? {
        guard let pem = try? String(contentsOfFile: path, encoding: .utf8),
            let certificate = try? Certificate(pemEncoded: pem)
        else { return nil }
        return certificate.notValidAfter
    }

    public func ensureServerCertificate(for names: SubjectNames, now: Date = Date()) throws -> Outcome {
        try locked { try ensureServerCertificateLocked(for: names, now: now) }
    }

    func ensureServerCertificateLocked(for names: SubjectNames, now: Date) throws -> Outcome {
        let (authority, authorityKey) = try loadOrCreateAuthority(now: now)
        let existing = try? Certificate(pemEncoded: String(contentsOfFile: serverCertificatePath, encoding: .utf8))
        let outcome: Outcome
        if let existing, FileManager.default.fileExists(atPath: serverKeyPath) {
            let held = SubjectNames(
                generalNames: (try existing.extensions.subjectAlternativeNames).map { Array($0) } ?? [])
            let issuedBy = try existing.extensions.authorityKeyIdentifier?.keyIdentifier
            let authorityIdentifier = try authority.extensions.subjectKeyIdentifier?.keyIdentifier
            if held != names {
                outcome = .renewed("names changed: \(held) → \(names)")
            } else if existing.notValidAfter.timeIntervalSince(now) < Self.renewalWindow {
                outcome = .renewed("expires \(existing.notValidAfter)")
            } else if existing.issuer != authority.subject || issuedBy != authorityIdentifier {
                outcome = .renewed("not issued by the CA in \(directory)")
            } else {
                return .current
            }
        } else {
            outcome = .created
        }
        let authorityIdentifier = try authority.extensions.subjectKeyIdentifier?.keyIdentifier
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        let subject = try DistinguishedName {
            OrganizationName("Ferry appliance")
            CommonName(names.dnsNames.first ?? names.ipAddresses.first ?? "ferry-appliance")
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.notCertificateAuthority)
            Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
            try ExtendedKeyUsage([.serverAuth])
            SubjectKeyIdentifier(hash: publicKey)
            AuthorityKeyIdentifier(keyIdentifier: authorityIdentifier)
            SubjectAlternativeNames(names.generalNames)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Self.serverLifetime),
            issuer: authority.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: extensions, issuerPrivateKey: .init(authorityKey))
        try Self.writeFile(serverKeyPath, key.pemRepresentation, mode: 0o600)
        try Self.writeFile(serverCertificatePath, try certificate.serializeAsPEM().pemString, mode: 0o644)
        return outcome
    }

    /// The CA, made under the directory's lock when there is none (another process may be making it).
    func authority(now: Date) throws -> (Certificate, P256.Signing.PrivateKey) {
        if FileManager.default.fileExists(atPath: authorityCertificatePath),
            FileManager.default.fileExists(atPath: authorityKeyPath)
        {
            return try loadOrCreateAuthority(now: now)
        }
        return try locked { try loadOrCreateAuthority(now: now) }
    }

    /// Runs `body` holding an exclusive lock on `tls/lock` (flock: released if the process dies).
    func locked<Value>(_ body: () throws -> Value) throws -> Value {
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = "\(directory)/lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw CertificateError.write(path: path, String(cString: strerror(errno))) }
        defer { close(fd) }
        while flock(fd, LOCK_EX) != 0 {
            guard errno == EINTR else { throw CertificateError.write(path: path, String(cString: strerror(errno))) }
        }
        return try body()
    }

    func loadOrCreateAuthority(now: Date) throws -> (Certificate, P256.Signing.PrivateKey) {
        if let pem = try? String(contentsOfFile: authorityCertificatePath, encoding: .utf8),
            let keyPEM = try? String(contentsOfFile: authorityKeyPath, encoding: .utf8)
        {
            do {
                return (try Certificate(pemEncoded: pem), try P256.Signing.PrivateKey(pemRepresentation: keyPEM))
            } catch {
                throw CertificateError.unreadable(path: directory, "\(error)")
            }
        }
        try FileManager.default.createDirectory(
            atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let key = P256.Signing.PrivateKey()
        let publicKey = Certificate.PublicKey(key.publicKey)
        var hostName = [CChar](repeating: 0, count: 256)
        _ = gethostname(&hostName, hostName.count - 1)
        let name = try DistinguishedName {
            OrganizationName("Ferry appliance")
            CommonName("Ferry appliance CA (\(SubjectNames.text(hostName)))")
        }
        let extensions = try Certificate.Extensions {
            Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
            Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            SubjectKeyIdentifier(hash: publicKey)
        }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Self.authorityLifetime),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256, extensions: extensions,
            issuerPrivateKey: .init(key))
        // Key first: a CA certificate without its key on disk would be unusable.
        try Self.writeFile(authorityKeyPath, key.pemRepresentation, mode: 0o600)
        try Self.writeFile(authorityCertificatePath, try certificate.serializeAsPEM().pemString, mode: 0o644)
        return (certificate, key)
    }

    /// Writes through a temporary file created with `mode`, fsyncs, then renames: readers never see
    /// half a key (also used for the user database and the token secret).
    static func writeFile(_ path: String, _ text: String, mode: mode_t) throws {
        try writeFile(path, bytes: Array((text.hasSuffix("\n") ? text : text + "\n").utf8), mode: mode)
    }

    static func writeFile(_ path: String, bytes: [UInt8], mode: mode_t) throws {
        do {
            try FileSystem.replace(path, with: bytes, mode: mode)
        } catch {
            throw CertificateError.write(path: path, error.description)
        }
    }
}

public enum CertificateError: Error, CustomStringConvertible {
    case unreadable(path: String, String)
    case write(path: String, String)

    public var description: String {
        switch self {
        case .unreadable(let path, let why): "cannot read the appliance CA in \(path): \(why)"
        case .write(let path, let why): "cannot write \(path): \(why)"
        }
    }
}
