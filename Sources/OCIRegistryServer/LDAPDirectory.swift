import Foundation
import NIOCore
import NIOSSL

/// Sign-in against an LDAP directory (`auth.ldap` in appliance.yml), as Harbor's `ldap_auth`:
/// bind as the search account, find the user by `uidAttribute` under `baseDN` (with `filter`),
/// find the groups naming the user, bind as the user with the password given; the groups map to a
/// role and repository prefixes. A user no group maps is refused unless `defaultRole` is set.
public struct LDAPDirectory: Sendable {
    public struct GroupGrant: Sendable, Equatable {
        /// A group's DN, or its `cn` (compared without regard to case).
        public var group: String
        public var grant: Grant

        public init(group: String, grant: Grant) {
            self.group = group
            self.grant = grant
        }
    }

    public struct Settings: Sendable {
        public var url: URL
        /// PEM CA certificates trusted for `ldaps://` (default: the system's).
        public var caFile: String?
        public var bindDN: String?
        public var bindPassword: String?
        public var baseDN: String
        public var uidAttribute = "uid"
        public var filter: LDAPFilter?
        /// `sub` (2, the default) or `one` (1).
        public var scope = 2
        public var groupBaseDN: String?
        public var groupFilter: LDAPFilter = .equal("objectClass", "groupOfNames")
        public var groupMemberAttribute = "member"
        public var groups: [GroupGrant] = []
        public var defaultGrant: Grant?
        public var timeout: TimeAmount = .seconds(5)

        public init(url: URL, baseDN: String) {
            self.url = url
            self.baseDN = baseDN
        }
    }

    /// What a sign-in came to.
    public enum Outcome: Sendable, Equatable {
        case signedIn(Grant, dn: String)
        /// No such user, or a wrong password.
        case wrongCredentials
        /// The password was right but no group maps to a role (and no default role is set).
        case noRole(dn: String, groups: [String])
    }

    public let settings: Settings
    let tls: TLSConfiguration?

    public init(_ settings: Settings) throws {
        self.settings = settings
        if settings.url.scheme == "ldaps" {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile = settings.caFile {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
            }
            self.tls = tls
        } else {
            guard settings.url.scheme == "ldap" else { throw LDAPError.badURL(settings.url.absoluteString) }
            tls = nil
        }
    }

    /// Checks `name` and `password` against the directory. Throws when the directory cannot
    /// be asked (down, refusing the search account, answering nonsense).
    public func signIn(name: String, password: String) async throws -> Outcome {
        // An empty password would be an unauthenticated bind, which directories accept.
        guard !password.isEmpty, !name.isEmpty else { return .wrongCredentials }
        let settings = self.settings
        return try await LDAPConnection.with(url: settings.url, tls: tls, timeout: settings.timeout) { connection in
            if let bindDN = settings.bindDN,
                try await !connection.bind(dn: bindDN, password: settings.bindPassword ?? "")
            {
                throw LDAPError.refused(operation: "bind as \(bindDN)", code: 49, message: "invalid credentials")
            }
            let userFilter = LDAPFilter.and(
                (settings.filter.map { [$0] } ?? []) + [.equal(settings.uidAttribute, name)])
            let users = try await connection.search(
                base: settings.baseDN, scope: settings.scope, filter: userFilter, attributes: [settings.uidAttribute],
                limit: 2)
            // The directory matches names without regard to case or extra spaces; the name signed in
            // with must be the entry's own, so `Alice` and `alice ` are not other doors to `alice`
            // (each with its own failed-login allowance) nor a way around a local `admin`.
            guard users.count == 1, let user = users.first,
                user.attributes[settings.uidAttribute.lowercased()]?.contains(name) == true
            else { return .wrongCredentials }
            let groups = try await connection.search(
                base: settings.groupBaseDN ?? settings.baseDN, scope: 2,
                filter: .and([settings.groupFilter, .equal(settings.groupMemberAttribute, user.dn)]),
                attributes: ["cn"], limit: 1000)
            guard try await connection.bind(dn: user.dn, password: password) else { return .wrongCredentials }
            let names = groups.map(\.dn) + groups.flatMap { $0.attributes["cn"] ?? [] }
            guard let grant = Self.grant(for: names, settings: settings) else {
                return .noRole(dn: user.dn, groups: groups.map(\.dn))
            }
            return .signedIn(grant, dn: user.dn)
        }
    }

    /// The strongest role among the groups mapped (their repository prefixes together), else the
    /// default.
    static func grant(for groups: [String], settings: Settings) -> Grant? {
        let lowered = Set(groups.map { $0.lowercased() })
        let matched = settings.groups.filter { lowered.contains($0.group.lowercased()) }.map(\.grant)
        guard let strongest = matched.map(\.role).max() else { return settings.defaultGrant }
        let same = matched.filter { $0.role == strongest }
        if same.contains(where: { ($0.repositories ?? []).isEmpty }) { return Grant(role: strongest) }
        return Grant(role: strongest, repositories: Array(Set(same.flatMap { $0.repositories ?? [] })).sorted())
    }
}
