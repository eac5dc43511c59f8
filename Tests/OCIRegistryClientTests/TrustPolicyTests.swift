import Foundation
import NIOSSL
import Testing

@testable import OCIRegistryClient

struct TrustPolicyTests {
    let directory: String = {
        let path = NSTemporaryDirectory() + "ferry-trust-\(UUID().uuidString)"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        return path
    }()

    @Test func aCAFileThatIsNotACertificateIsNamed() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let junk = "\(directory)/junk.crt"
        try Data("not a certificate\n".utf8).write(to: URL(fileURLWithPath: junk))
        for (file, reason) in [(junk, "not a PEM certificate"), ("\(directory)/missing.crt", "cannot be read")] {
            let policy = TrustPolicy(caFiles: [file], certsDirectories: [])
            #expect(throws: TrustError.unreadableCertificate(path: file, reason: reason)) { try policy.checkCAFiles() }
        }
        // A host's certs.d certificate is read when the host's configuration is made.
        let host = "registry.example:5000"
        try FileManager.default.createDirectory(atPath: "\(directory)/\(host)", withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: junk, toPath: "\(directory)/\(host)/ca.crt")
        #expect(
            throws: TrustError.unreadableCertificate(
                path: "\(directory)/\(host)/ca.crt", reason: "not a PEM certificate")
        ) {
            _ = try TrustPolicy(certsDirectories: [directory]).tlsConfiguration(for: host)
        }
    }

    /// A CA file is checked when the configuration is made, then given by path (cheap to hash:
    /// AsyncHTTPClient hashes the configuration on every request).
    @Test(.enabled(if: FileManager.default.fileExists(atPath: "/etc/ssl/certs/ca-certificates.crt")))
    func caFilesAreCheckedAndGivenByPath() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let host = "registry.example:5000"
        try FileManager.default.createDirectory(atPath: "\(directory)/\(host)", withIntermediateDirectories: true)
        let ca = "\(directory)/\(host)/ca.crt"
        try FileManager.default.copyItem(atPath: "/etc/ssl/certs/ca-certificates.crt", toPath: ca)
        let tls = try TrustPolicy(certsDirectories: [directory]).tlsConfiguration(for: host)
        #expect(tls.trustRoots == nil || tls.trustRoots == .default)
        #expect(tls.additionalTrustRoots == [.file(ca)])
        let insecure = try TrustPolicy(insecureRegistries: [host]).tlsConfiguration(for: host)
        #expect(insecure.certificateVerification == .none)
    }
}
