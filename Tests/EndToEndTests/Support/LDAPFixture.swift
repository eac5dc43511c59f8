import Foundation

/// Debian's `slapd` on 127.0.0.1 with a directory of the test's: `ldap://` and `ldaps://` (a test
/// CA) on ports of their own, the suffix `dc=ferry,dc=test`, entries loaded with `ldapadd`. It accepts
/// a bind with a DN and an empty password as anonymous (as Active Directory does), which a client
/// must not take for a signed-in user.
final class LDAPFixture: @unchecked Sendable {
    static let suffix = "dc=ferry,dc=test"
    static let rootDN = "cn=admin,dc=ferry,dc=test"
    static let rootPassword = "root-secret"

    let directory: String
    let port: Int
    let securePort: Int
    let tls: TestCA
    let process: BackgroundProcess
    var url: String { "ldap://127.0.0.1:\(port)" }
    var secureURL: String { "ldaps://127.0.0.1:\(securePort)" }

    init() throws {
        directory = try Shell.temporaryDirectory("ferry-ldap")
        port = Shell.freePort()
        securePort = Shell.freePort()
        tls = try TestCA(directory: "\(directory)/tls")
        try FileManager.default.createDirectory(atPath: "\(directory)/db", withIntermediateDirectories: true)
        try """
        include /etc/ldap/schema/core.schema
        include /etc/ldap/schema/cosine.schema
        include /etc/ldap/schema/inetorgperson.schema
        modulepath /usr/lib/ldap
        moduleload back_mdb
        pidfile \(directory)/slapd.pid
        allow bind_anon_dn
        TLSCACertificateFile \(tls.caCertificate)
        TLSCertificateFile \(tls.serverCertificate)
        TLSCertificateKeyFile \(tls.serverKey)
        database mdb
        maxsize 16777216
        suffix "\(Self.suffix)"
        rootdn "\(Self.rootDN)"
        rootpw \(Self.rootPassword)
        directory \(directory)/db

        """.write(toFile: "\(directory)/slapd.conf", atomically: true, encoding: .utf8)
        process = try BackgroundProcess(
            [
                "/usr/sbin/slapd", "-d", "0", "-f", "\(directory)/slapd.conf", "-h",
                "ldap://127.0.0.1:\(port)/ ldaps://127.0.0.1:\(securePort)/",
            ], logPath: "\(directory)/slapd.log")
        do {
            try Shell.waitForPort(port)
            try Shell.waitForPort(securePort)
        } catch {
            throw Shell.Failure(command: "slapd", status: -1, output: process.log)
        }
    }

    /// Loads LDIF with `ldapadd`, bound as the root DN.
    func add(_ ldif: String) throws {
        try Shell.run(
            ["ldapadd", "-x", "-H", url, "-D", Self.rootDN, "-w", Self.rootPassword], input: Data(ldif.utf8))
    }

    func stop() {
        process.stop()
        Shell.remove(directory)
    }

    deinit { stop() }
}
