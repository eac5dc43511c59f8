import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import OCICore
import OCIRegistryServer
import OCIStore

extension Console {
    /// What the admin pages need from the appliance beyond the store: gc and check (bulk work,
    /// run on the console's own thread), the trusted bundle keys, the CA to hand out.
    public struct AdminActions: Sendable {
        public var collectGarbage: @Sendable (_ dryRun: Bool) throws -> GarbageReport
        public var check: @Sendable () throws -> CheckReport
        /// Each trusted bundle key: where it is configured, and its key ID.
        public var trustedKeys: [(source: String, keyID: String)]
        /// The CA certificate clients trust (PEM), when this appliance has one.
        public var caPEM: String?
        public var dataDirectory: String

        public init(
            collectGarbage: @escaping @Sendable (Bool) throws -> GarbageReport,
            check: @escaping @Sendable () throws -> CheckReport, trustedKeys: [(source: String, keyID: String)],
            caPEM: String?, dataDirectory: String
        ) {
            self.collectGarbage = collectGarbage
            self.check = check
            self.trustedKeys = trustedKeys
            self.caPEM = caPEM
            self.dataDirectory = dataDirectory
        }
    }

    func admin(_ request: Request, path: String, viewer: Viewer) async throws -> Response {
        try requireAdmin(viewer)
        guard let actions = adminActions else {
            throw ConsolePage(status: .notFound, heading: "Not found", text: "There is no such page.")
        }
        switch (request.method, path) {
        case (.get, "/ui/admin"): return try await adminPage(viewer: viewer, actions: actions, notice: nil)
        case (.post, "/ui/admin/users"): return try await changeUsers(request, viewer: viewer, actions: actions)
        case (.post, "/ui/admin/gc"):
            let fields = try await form(request, viewer: viewer)
            let dryRun = fields["run"] != "yes"
            let report = try await importPool.runIfActive { try actions.collectGarbage(dryRun) }
            var lines = [
                dryRun
                    ? "A collection would remove \(report.blobsRemoved.count) blob(s), \(Self.bytes(report.bytesRemoved)); nothing was removed."
                    : "Removed \(report.blobsRemoved.count) blob(s), \(Self.bytes(report.bytesRemoved)).",
                "\(report.blobsKept) blob(s) kept, \(report.linksRemoved) link(s) and \(report.uploadsExpired) abandoned upload(s) \(dryRun ? "would go" : "removed").",
            ]
            if dryRun && !report.blobsRemoved.isEmpty { lines.append("Run it for real from the admin page.") }
            return result(
                viewer: viewer, heading: dryRun ? "Garbage collection (dry run)" : "Garbage collection", lines: lines)
        case (.post, "/ui/admin/check"):
            _ = try await form(request, viewer: viewer)
            let report = try await importPool.runIfActive { try actions.check() }
            var lines = [
                "\(report.blobsChecked) blob(s) re-hashed (\(Self.bytes(report.bytesChecked))), \(report.manifestsChecked) manifest(s) checked: "
                    + (report.problems.isEmpty ? "no problem." : "\(report.problems.count) problem(s).")
            ]
            lines += report.problems.prefix(200).map(\.description)
            if !report.problems.isEmpty {
                lines.append(
                    "`ferry-appliance check --repair` removes corrupt blobs and lists the images to import again.")
            }
            return result(
                viewer: viewer, heading: "Store check", lines: lines, status: report.problems.isEmpty ? .ok : .conflict)
        case (.get, "/ui/admin/clients"):
            guard let pem = actions.caPEM else {
                throw ConsolePage(
                    status: .notFound, heading: "No CA",
                    text: "This appliance serves a certificate of the operator's own.")
            }
            let address = request.head.authority ?? "APPLIANCE:PORT"
            let repositories = try await content.read { try $0.repositories(after: nil, limit: 100_000) }
            let upstreams = ClientConfiguration.upstreams(in: repositories.map(\.value))
            var values = base(viewer: viewer, title: "Client configuration")
            values["address"] = address
            values["clients"] = ClientConfiguration.clients.map { client -> [String: Any] in
                [
                    "client": client,
                    "text": ClientConfiguration.snippet(
                        for: client, address: address, caPEM: pem, upstreams: upstreams),
                ]
            }
            return html("clients", values)
        case (.get, "/ui/admin/ca.crt"):
            guard let pem = actions.caPEM else {
                throw ConsolePage(
                    status: .notFound, heading: "No CA",
                    text: "This appliance serves a certificate of the operator's own.")
            }
            var headers = HTTPFields()
            headers[.contentType] = "application/x-pem-file"
            headers[.contentDisposition] = "attachment; filename=\"ferry-appliance-ca.crt\""
            Self.secure(&headers)
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: pem)))
        default:
            throw ConsolePage(status: .notFound, heading: "Not found", text: "There is no such page.")
        }
    }

    func adminPage(viewer: Viewer, actions: AdminActions, notice: String?, error: String? = nil) async throws
        -> Response
    {
        let database = UserDatabase(dataDirectory: actions.dataDirectory)
        let users = try await BlockingPools.reads.runIfActive { try database.load() }
        var values = base(viewer: viewer, title: "Administration")
        values["csrf"] = viewer.session?.csrf ?? ""
        values["notice"] = notice
        values["error"] = error
        let me = viewer.session?.user
        values["users"] = users.values.sorted { $0.name < $1.name }.map { user -> [String: Any] in
            [
                "name": user.name, "role": user.grant.role.rawValue,
                "prefixes": (user.grant.repositories ?? []).joined(separator: " "),
                "scope": user.grant.repositories.map { $0.joined(separator: ", ") } ?? "every repository",
                "roles": Role.allCases.map { ["value": $0.rawValue, "selected": $0 == user.grant.role] },
                "self": user.name == me, "csrf": viewer.session?.csrf ?? "",
            ]
        }
        values["roles"] = Role.allCases.map { ["value": $0.rawValue, "selected": $0 == .pull] }
        values["keys"] = actions.trustedKeys.map { ["source": $0.source, "keyID": $0.keyID] }
        values["hasCA"] = actions.caPEM != nil
        return html("admin", values, status: error == nil ? .ok : .badRequest)
    }

    /// Adds, changes or removes a user (users.json; serve and the token service read it again at
    /// once). An admin may not remove or demote themself here: the console would lock them out.
    func changeUsers(_ request: Request, viewer: Viewer, actions: AdminActions) async throws -> Response {
        let fields = try await form(request, viewer: viewer)
        let database = UserDatabase(dataDirectory: actions.dataDirectory)
        let name = (fields["name"] ?? "").trimmingCharacters(in: .whitespaces)
        let me = viewer.session?.user
        let prefixes = (fields["prefixes"] ?? "").split(whereSeparator: { $0 == " " || $0 == "," }).map(String.init)
        func fail(_ text: String) async throws -> Response {
            try await adminPage(viewer: viewer, actions: actions, notice: nil, error: text)
        }
        do {
            switch fields["action"] {
            case "add", "update":
                guard let role = Role(rawValue: fields["role"] ?? "") else { return try await fail("Choose a role.") }
                if name == me && role != .admin {
                    return try await fail("You cannot take your own admin role away here.")
                }
                let grant = Grant(role: role, repositories: prefixes.isEmpty ? nil : prefixes)
                let password = fields["password"] ?? ""
                if fields["action"] == "add" || !password.isEmpty {
                    try await BlockingPools.crypto.runIfActive {
                        try database.add(name: name, password: password, grant: grant)
                    }
                } else {
                    guard try await BlockingPools.reads.runIfActive({ try database.update(name: name, grant: grant) })
                    else {
                        return try await fail("There is no user \(name).")
                    }
                }
                return try await adminPage(viewer: viewer, actions: actions, notice: "User \(name) saved.")
            case "remove":
                if name == me { return try await fail("You cannot remove yourself here.") }
                let removed = try await BlockingPools.reads.runIfActive { try database.remove(name: name) }
                return try await adminPage(
                    viewer: viewer, actions: actions, notice: removed ? "User \(name) removed." : nil,
                    error: removed ? nil : "There is no user \(name).")
            default:
                return try await fail("Unknown action.")
            }
        } catch let error as AccessError {
            switch error {
            case .badUserName, .weakPassword: return try await fail(error.description)
            default:
                // The cause names the user file's path: it goes to the log only.
                logger.error("console: users: \(error)")
                return try await fail("The user file could not be changed (see the appliance's log).")
            }
        }
    }

    func result(viewer: Viewer, heading: String, lines: [String], status: HTTPResponse.Status = .ok) -> Response {
        var values = base(viewer: viewer, title: heading)
        values["heading"] = heading
        values["lines"] = lines.map { ["text": $0, "class": "message"] }
        values["back"] = "/ui/admin"
        return html("result", values, status: status)
    }
}
