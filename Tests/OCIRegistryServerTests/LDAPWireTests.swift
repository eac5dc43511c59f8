import Foundation
import Testing

@testable import OCIRegistryServer

/// The pure parts of directory sign-in: BER encoding and parsing, search filters, group mapping.
struct LDAPWireTests {
    @Test func berRoundTripsAndEncodesIntegersAndLengths() throws {
        #expect(BER.integer(3).encoded == [0x02, 0x01, 0x03])
        #expect(BER.integer(128).encoded == [0x02, 0x02, 0x00, 0x80])
        #expect(BER.integer(0).encoded == [0x02, 0x01, 0x00])
        #expect(BER.length(300) == [0x82, 0x01, 0x2c])
        let message = BER.constructed(
            tag: 0x30,
            [
                .integer(7),
                .constructed(
                    tag: 0x60, [.integer(3), .string("cn=x"), .string(String(repeating: "p", count: 200), tag: 0x80)]),
            ])
        let parsed = try BER.parse(message.encoded)
        #expect(parsed == message)
        #expect(parsed.children[0].intValue == 7)
        #expect(throws: LDAPError.self) { try BER.parse([0x30, 0x05, 0x02, 0x01]) }
        #expect(throws: LDAPError.self) { try BER.parse([0x04, 0x85, 1, 1, 1, 1, 1]) }
    }

    @Test func filtersParseAsRFC4515Says() throws {
        #expect(try LDAPFilter(parsing: "(uid=dana)") == .equal("uid", "dana"))
        #expect(try LDAPFilter(parsing: "(mail=*)") == .present("mail"))
        #expect(
            try LDAPFilter(parsing: "(&(objectClass=person)(!(uid=guest))(|(cn=a*b*c)(cn=*z)))")
                == .and([
                    .equal("objectClass", "person"), .not(.equal("uid", "guest")),
                    .or([
                        .substrings("cn", initial: "a", any: ["b"], final: "c"),
                        .substrings("cn", initial: nil, any: [], final: "z"),
                    ]),
                ]))
        #expect(try LDAPFilter(parsing: #"(cn=a\2ab)"#) == .equal("cn", "a*b"))
        for bad in ["uid=dana", "(uid=dana", "(=x)", "(!(a=b)(c=d))", "(uid=x)(y=z)", #"(cn=\zz)"#] {
            #expect(throws: LDAPError.self, "\(bad)") { try LDAPFilter(parsing: bad) }
        }
        // A value with filter syntax in it is one octet string on the wire, never parsed.
        let ber = LDAPFilter.equal("uid", "*)(uid=admin").ber
        #expect(ber == .constructed(tag: 0xa3, [.string("uid"), .string("*)(uid=admin")]))
    }

    @Test func groupsMapToTheStrongestRole() throws {
        var settings = LDAPDirectory.Settings(url: try #require(URL(string: "ldap://127.0.0.1")), baseDN: "dc=x")
        settings.groups = [
            .init(group: "ci", grant: Grant(role: .push, repositories: ["apps"])),
            .init(group: "cn=Ops,ou=groups,dc=x", grant: Grant(role: .push, repositories: ["ops"])),
            .init(group: "readers", grant: Grant(role: .pull)),
        ]
        #expect(LDAPDirectory.grant(for: ["readers"], settings: settings) == Grant(role: .pull))
        #expect(
            LDAPDirectory.grant(for: ["CI", "cn=ops,ou=groups,dc=x", "readers"], settings: settings)
                == Grant(role: .push, repositories: ["apps", "ops"]))
        #expect(LDAPDirectory.grant(for: ["other"], settings: settings) == nil)
        settings.defaultGrant = Grant(role: .pull, repositories: ["public"])
        #expect(LDAPDirectory.grant(for: [], settings: settings) == Grant(role: .pull, repositories: ["public"]))
    }
}
