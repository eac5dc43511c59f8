import Foundation
import NIOSSL
import Testing

@testable import OCIRegistryClient

struct TrustPolicyTests {
    let directory: String = {
        let path = NSTemporaryDirectory() + "trust-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Test func aCAFileThatIsNotACertificateIsNamed() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let junk = "\(directory)/junk.crt"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: junk))
        for (file, reason) in [(junk, "not a PEM certificate"), ("\(directory)/missing.crt", "cannot be read")] {
            let policy = TrustPolicy(caFiles: [file], certsDirectories: [])
            #expect(throws: TrustError.unreadableCertificate(path: file, reason: reason)) {
                _ = try policy.tlsConfiguration(for: "registry.example:5000")
            }
        }
    }

    /// Certificates reach TLS parsed, once: NIOSSL would read a `.file` trust root again for every
    /// connection.
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/ssl/certs/ca-certificates.crt")))
    func trustRootsAreHandedOverParsed() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let host = "registry.example:5000"
        try FileManager.default.createDirectory(atPath: "\(directory)/\(host)", withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: "/etc/ssl/certs/ca-certificates.crt", toPath: "\(directory)/\(host)/ca.crt")
        let tls = try TrustPolicy(certsDirectories: [directory]).tlsConfiguration(for: host)
        guard case .certificates(let system) = tls.trustRoots else {
            Issue.record("system trust store not parsed: \(String(describing: tls.trustRoots))")
            return
        }
        #expect(!system.isEmpty)
        #expect(tls.additionalTrustRoots.count == 1)
        if case .certificates(let extra) = tls.additionalTrustRoots.first {
            #expect(extra.count == system.count)
        } else {
            Issue.record("certs.d CA not parsed")
        }
        let insecure = try TrustPolicy(insecureRegistries: [host]).tlsConfiguration(for: host)
        #expect(insecure.certificateVerification == .none)
    }
}
