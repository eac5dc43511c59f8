import Foundation
import Testing
import X509

@testable import OCIRegistryServer

struct CertificateTests {
    func temporaryDirectory() throws -> String {
        let path = NSTemporaryDirectory() + "ferry-certs-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }

    func names(of path: String) throws -> SubjectNames {
        let certificate = try Certificate(pemEncoded: String(contentsOfFile: path, encoding: .utf8))
        return SubjectNames(generalNames: (try certificate.extensions.subjectAlternativeNames).map { Array($0) } ?? [])
    }

    @Test func makesTheCAOnceAndRenewsTheServerCertificateOnlyWhenDue() throws {
        let data = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: data) }
        let certificates = ApplianceCertificates(dataDirectory: data)
        let names = SubjectNames(["localhost", "127.0.0.1", "::1", "appliance.example"])
        let now = Date()
        #expect(try certificates.ensureServerCertificate(for: names, now: now) == .created)
        let ca = try certificates.authorityPEM()
        for key in ["ca.key", "server.key"] {
            let mode = try FileManager.default.attributesOfItem(atPath: "\(data)/tls/\(key)")[.posixPermissions] as? Int
            #expect(mode == 0o600, "\(key)")
        }
        #expect(try self.names(of: certificates.serverCertificatePath) == names)
        #expect(try certificates.ensureServerCertificate(for: names, now: now) == .current)

        let more = SubjectNames(["localhost", "127.0.0.1", "::1", "appliance.example", "10.0.0.7"])
        guard case .renewed = try certificates.ensureServerCertificate(for: more, now: now) else {
            Issue.record("new names did not renew")
            return
        }
        #expect(try self.names(of: certificates.serverCertificatePath) == more)
        // The server certificate chains to the CA (openssl agrees, with the host name).
        let verify = Process()
        verify.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        verify.arguments = [
            "verify", "-CAfile", certificates.authorityCertificatePath, "-verify_hostname", "appliance.example",
            certificates.serverCertificatePath,
        ]
        verify.standardOutput = FileHandle.nullDevice
        try verify.run()
        verify.waitUntilExit()
        #expect(verify.terminationStatus == 0)
        // 380 days on, inside the 30-day window of a 397-day certificate: renewed; the CA stays.
        guard
            case .renewed = try certificates.ensureServerCertificate(
                for: more, now: now.addingTimeInterval(380 * 86400))
        else {
            Issue.record("near expiry did not renew")
            return
        }
        #expect(try certificates.authorityPEM() == ca)
    }

    @Test func subjectNamesSortAndCanonicalize() {
        let names = SubjectNames(["B.example", "::1", "0:0:0:0:0:0:0:1", "127.0.0.1", "a.example", ""])
        #expect(names.dnsNames == ["a.example", "b.example"])
        #expect(names.ipAddresses == ["127.0.0.1", "::1"])
        let host = SubjectNames.thisHost(extra: ["registry.plant.example"])
        #expect(host.dnsNames.contains("localhost") && host.dnsNames.contains("registry.plant.example"))
        #expect(host.ipAddresses.contains("127.0.0.1") && host.ipAddresses.contains("::1"))
    }
}
