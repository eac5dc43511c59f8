import Foundation
import OCICore
import Testing

/// Sign-in with directory accounts (issue 15, point 5): Debian's slapd over `ldaps://` with a test
/// CA, users and groups loaded with ldapadd, skopeo against the appliance.
@Suite(.serialized)
struct LDAPTests {
    @Test func directoryAccountsSignInWithTheirGroupsRoles() throws {
        let directory = try LDAPFixture()
        defer { directory.stop() }
        let people = "ou=people,\(LDAPFixture.suffix)"
        let groups = "ou=groups,\(LDAPFixture.suffix)"
        func person(_ uid: String, _ password: String) -> String {
            "dn: uid=\(uid),\(people)\nobjectClass: inetOrgPerson\nuid: \(uid)\ncn: \(uid)\nsn: \(uid)\nuserPassword: \(password)"
        }
        // Entries are separated by a blank line.
        try directory.add(
            [
                "dn: \(LDAPFixture.suffix)\nobjectClass: dcObject\nobjectClass: organization\no: ferry\ndc: ferry",
                "dn: \(people)\nobjectClass: organizationalUnit\nou: people",
                "dn: \(groups)\nobjectClass: organizationalUnit\nou: groups",
                person("dana", "dana-pw"), person("erin", "erin-pw"), person("frank", "frank-pw"),
                "dn: cn=ci,\(groups)\nobjectClass: groupOfNames\ncn: ci\nmember: uid=dana,\(people)\n"
                    + "member: uid=frank,\(people)",
                "dn: cn=readers,\(groups)\nobjectClass: groupOfNames\ncn: readers\nmember: uid=frank,\(people)",
            ].joined(separator: "\n\n") + "\n")
        let work = try Shell.temporaryDirectory()
        defer { Shell.remove(work) }
        try "\(LDAPFixture.rootPassword)\n".write(toFile: "\(work)/bind.pw", atomically: true, encoding: .utf8)
        try """
        auth:
          ldap:
            url: \(directory.secureURL)
            caFile: \(directory.tls.caCertificate)
            bindDN: \(LDAPFixture.rootDN)
            bindPasswordFile: \(work)/bind.pw
            baseDN: \(people)
            filter: (objectClass=inetOrgPerson)
            groupBaseDN: \(groups)
            groups:
              - {group: ci, role: push, repositories: [apps]}
              - {group: "cn=readers,\(groups)", role: pull}
            timeout: 3

        """.write(toFile: "\(work)/appliance.yml", atomically: true, encoding: .utf8)
        let appliance = try ApplianceFixture(
            dataDirectory: "\(work)/site", anonymous: "none", extraArguments: ["--config", "\(work)/appliance.yml"])
        defer { appliance.stop() }
        try appliance.addUser("local", password: "local-pw", role: "admin")
        let certs = try appliance.certDirectory()
        let builder = try ImageBuilder(directory: "\(work)/image")
        try builder.tag(
            try builder.addImage(
                platform: Platform(os: "linux", architecture: "amd64"), layers: [try builder.addRandomLayer(size: 4096)]
            ), as: "app")
        func push(_ credentials: String, to name: String) throws -> Shell.Result {
            try Shell.run(
                [
                    "skopeo", "copy", "-q", "--dest-cert-dir", certs, "--dest-creds", credentials,
                    "oci:\(work)/image:app", "docker://\(appliance.host)/\(name)",
                ], check: false)
        }
        func pull(_ credentials: String, _ name: String) throws -> Shell.Result {
            try Shell.run(
                [
                    "skopeo", "inspect", "--raw", "--cert-dir", certs, "--creds", credentials,
                    "docker://\(appliance.host)/\(name)",
                ], check: false)
        }
        func login(_ user: String, _ password: String) throws -> Shell.Result {
            try Shell.run(
                [
                    "skopeo", "login", "--cert-dir", certs, "--authfile", "\(work)/auth.json", "-u", user, "-p",
                    password,
                    appliance.host,
                ], check: false)
        }

        // dana is in ci: push under apps/, not elsewhere.
        #expect(try login("dana", "dana-pw").status == 0)
        let pushed = try push("dana:dana-pw", to: "apps/web:1")
        #expect(pushed.status == 0, "\(pushed.stderr)")
        #expect(try push("dana:dana-pw", to: "other/web:1").status != 0)
        #expect(try pull("dana:dana-pw", "apps/web:1").status == 0)
        // frank is in ci (push, apps) and readers (pull, everything): the stronger role, its prefixes.
        #expect(try pull("frank:frank-pw", "apps/web:1").status == 0)
        #expect(try push("frank:frank-pw", to: "apps/frank:1").status == 0)
        #expect(try push("frank:frank-pw", to: "other/frank:1").status != 0)
        // A wrong password, a user no group maps, a name the directory lacks: refused.
        #expect(try login("dana", "wrong").status != 0)
        #expect(try login("erin", "erin-pw").status != 0)
        #expect(try login("nobody", "x").status != 0)
        // The directory matches names without regard to case: only the entry's own name signs in.
        #expect(try appliance.curl("/v2/", user: "Dana:dana-pw").status == 401)
        #expect(try appliance.curl("/v2/", user: "dana:dana-pw").status == 200)
        #expect(try appliance.curl("/v2/", user: "dana:").status == 401)  // an empty password binds anonymously
        #expect(appliance.process.log.contains("directory user erin"), "\(appliance.process.log)")

        // The web console takes directory accounts too, with their roles.
        let console = try ConsoleClient(appliance: appliance, work: work, user: "dana", password: "dana-pw")
        let listed = try console.curl("/ui/repositories")
        #expect(listed.status == 200 && listed.body.contains("apps/web"), "\(listed.body)")

        // The directory stops: a directory user not checked lately gets 401 with the reason logged;
        // local users keep working.
        let cached = try appliance.curl("/v2/", user: "frank:frank-pw")
        #expect(cached.status == 200)  // checked a moment ago
        directory.process.stop()
        let down = try appliance.curl("/v2/", user: "dana:other-password")
        #expect(down.status == 401)
        #expect(appliance.process.log.contains("directory sign-in of dana not checked"), "\(appliance.process.log)")
        #expect(try pull("local:local-pw", "apps/web:1").status == 0)
        #expect(appliance.process.isRunning)
        // A console session begun while the directory answered goes on.
        #expect(try console.curl("/ui/repositories").body.contains("apps/web"))
    }
}
