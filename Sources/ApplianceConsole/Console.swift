import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache
import NIOCore
import NIOPosix
import OCICore
import OCIRegistryServer
import OCIStore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The appliance's web console under `/ui/` on the registry's port: sign-in with the appliance's
/// users (sessions in an `HttpOnly; Secure; SameSite=Strict` cookie, a CSRF token on every form,
/// the failed-login limit of the registry), an overview, the repositories (paginated,
/// searchable), each repository's tags and each image's details with its pull commands.
/// Server-rendered HTML; the only script is the copy button's.
public struct Console: SideResponder {
    public struct Settings: Sendable {
        /// Cookies marked `Secure` (the appliance serves TLS, or sits behind a TLS proxy).
        public var secureCookies: Bool
        /// Seconds a session may sit idle.
        public var idleTimeout: Int
        public var version: String
        /// The data directory (free disk).
        public var dataDirectory: String
        /// The serving certificate's expiry, when known.
        public var certificateExpiry: Date?
        /// The largest upload the import page takes.
        public var maxUploadBytes: Int64
        public init(
            secureCookies: Bool, idleTimeout: Int = 1800, version: String, dataDirectory: String,
            certificateExpiry: Date?, maxUploadBytes: Int64 = 64 << 30
        ) {
            self.maxUploadBytes = maxUploadBytes
            self.secureCookies = secureCookies
            self.idleTimeout = idleTimeout
            self.version = version
            self.dataDirectory = dataDirectory
            self.certificateExpiry = certificateExpiry
        }
    }

    /// What an import through the page did: lines to show, and the images made visible.
    public struct ImportOutcome: Sendable {
        public var lines: [String]
        /// Repository and tag (or digest) of each image made visible.
        public var images: [(repository: String, reference: String)]
        public init(lines: [String], images: [(repository: String, reference: String)]) {
            self.lines = lines
            self.images = images
        }
    }

    /// A refused import, in lines fit to show (never a server path).
    public struct ImportRefusal: Error, Sendable {
        public var lines: [String]
        public init(lines: [String]) { self.lines = lines }
    }

    /// Imports a bundle read from a file descriptor as it arrives, named by the uploaded file's
    /// name: blocking, run on the console's own import thread.
    /// `confirm` must be asked before anything becomes visible: it blocks until the request is
    /// known whole and says whether to commit.
    public typealias ImportAction =
        @Sendable (_ fileDescriptor: Int32, _ name: String, _ confirm: () -> Bool) throws -> ImportOutcome

    let content: RegistryContent
    let authenticator: Authenticator?
    let settings: Settings
    let importAction: ImportAction?
    let adminActions: AdminActions?
    /// Imports run one at a time, on a thread of their own: never on the pools serving requests.
    let importPool: NIOThreadPool
    let sessions: ConsoleSessions
    let library: MustacheLibrary
    let storedBytes: StoredBytes
    let loginToken = LoginToken()
    let logger: Logger
    /// One upload at a time: each holds the import thread until it is verified.
    let uploads = UploadGate()
    /// The thread that hands an upload's bytes to the importer (never the pools serving pulls).
    let uploadPool: NIOThreadPool
    static let pageSize = 100
    static let cookie = "ferry_session"

    public init(
        content: RegistryContent, authenticator: Authenticator?, settings: Settings, importAction: ImportAction? = nil,
        adminActions: AdminActions? = nil, logger: Logger = Logger(label: "ferry-appliance.console")
    ) throws {
        self.logger = logger
        uploadPool = NIOThreadPool(numberOfThreads: 1)
        uploadPool.start()
        self.importAction = importAction
        self.adminActions = adminActions
        importPool = NIOThreadPool(numberOfThreads: 1)
        importPool.start()
        self.content = content
        self.authenticator = authenticator
        self.settings = settings
        sessions = ConsoleSessions(idleTimeout: settings.idleTimeout)
        MustacheContentTypes.register(ScalarHTML(), named: ConsoleTemplates.contentType)
        var library = MustacheLibrary()
        for (name, text) in ConsoleTemplates.all { try library.register(text, named: name) }
        self.library = library
        storedBytes = StoredBytes(root: content.storage.blobs.root)
    }

    public func takes(_ request: Request) -> Bool {
        let path = request.uri.path
        if path == "/ui" || path.hasPrefix("/ui/") { return true }
        // A browser at the root goes to the console; registry clients never ask for HTML there.
        return path == "/" && request.method == .get && (request.headers[.accept] ?? "").contains("text/html")
    }

    /// Who is asking: the session's user as the user files say now, or anonymous (when the
    /// policy lets anonymous users pull), or nobody.
    struct Viewer {
        var session: ConsoleSessions.Session?
        var identity: Identity?
        var signedIn: Bool { session?.user != nil && identity != nil }
        func canPull(_ repository: String) -> Bool { identity?.actions(on: repository).contains(.pull) == true }
    }

    public func respond(to request: Request, context: RegistryRequestContext, remote: String) async throws -> (
        Response, String?
    ) {
        let path = request.uri.path
        if path == "/" || path == "/ui" { return (Self.redirect("/ui/"), nil) }
        let cookies = ConsoleForms.cookies(request.headers[.cookie])
        var viewer = Viewer()
        if let id = cookies[Self.cookie], let session = sessions.find(id) {
            viewer.session = session
            if let user = session.user, let authenticator {
                // The user as the files say now: removed, or given a new password since signing
                // in, ends the session.
                if let identity = authenticator.currentIdentity(name: user),
                    authenticator.credentialStamp(name: user) == session.stamp
                {
                    viewer.identity = identity
                } else {
                    sessions.end(id)
                    viewer.session = nil
                }
            } else if session.user != nil {
                viewer.identity = Self.openIdentity
            }
        }
        if viewer.identity == nil {
            // Open mode (no access control) or anonymous pulls allowed: read-only browsing.
            if authenticator == nil {
                viewer.identity = Self.openIdentity
            } else if let anonymous = authenticator?.anonymous, anonymous.grant != nil {
                viewer.identity = anonymous
            }
        }
        do {
            let response = try await route(path, request, viewer: viewer, remote: remote)
            return (response, viewer.signedIn ? viewer.session?.user : nil)
        } catch let page as ConsolePage {
            return (render(page, viewer: viewer), viewer.session?.user)
        } catch {
            // The cause stays in the server's log: it may name paths under the data directory.
            context.logger.error("console \(request.method) \(path): \(error)")
            return (
                render(
                    .init(
                        status: .internalServerError, heading: "Something went wrong",
                        text: "The error is in the appliance's log."), viewer: viewer),
                viewer.session?.user
            )
        }
    }

    /// No access control (in-process tests only): pages may be read, nothing administered.
    static let openIdentity = Identity(name: nil, grant: Grant(role: .pull))

    func route(_ path: String, _ request: Request, viewer: Viewer, remote: String) async throws -> Response {
        switch (request.method, path) {
        case (.get, "/ui/static/console.css"):
            return Self.asset(ConsoleTemplates.stylesheet, type: "text/css; charset=utf-8")
        case (.get, "/ui/static/console.js"):
            return Self.asset(ConsoleTemplates.script, type: "text/javascript; charset=utf-8")
        case (.get, "/ui/login"):
            return loginPage(
                viewer: viewer, nonce: ConsoleForms.cookies(request.headers[.cookie])[LoginToken.cookie],
                next: request.uri.queryParameters.get("next").map { String($0) }, error: nil, name: "")
        case (.post, "/ui/login"):
            return try await signIn(request, viewer: viewer, remote: remote)
        case (.post, "/ui/logout"):
            _ = try await form(request, viewer: viewer)
            if let id = viewer.session?.id { sessions.end(id) }
            var response = Self.redirect("/ui/login")
            response.headers[.setCookie] = expiredCookie
            return response
        default:
            break
        }
        guard viewer.identity != nil else {
            let target = request.uri.description
            return Self.redirect("/ui/login?next=\(ConsoleForms.encode(target))")
        }
        switch (request.method, path) {
        case (.get, "/ui/"): return try await overview(viewer: viewer)
        case (.get, "/ui/repositories"): return try await repositories(request, viewer: viewer)
        case (.get, "/ui/repository"): return try await repository(request, viewer: viewer)
        case (.get, "/ui/image"): return try await image(request, viewer: viewer)
        case (.get, "/ui/import"):
            try requireAdmin(viewer)
            var values = base(viewer: viewer, title: "Import")
            values["csrf"] = viewer.session?.csrf ?? ""
            return html("import", values)
        case (.post, "/ui/import"):
            try requireAdmin(viewer)
            return try await upload(request, viewer: viewer)
        case (_, let admin) where admin == "/ui/admin" || admin.hasPrefix("/ui/admin/"):
            return try await self.admin(request, path: admin, viewer: viewer)
        default:
            throw ConsolePage(status: .notFound, heading: "Not found", text: "There is no such page.")
        }
    }

    /// Admin pages: refused (403) to anyone else, signed in or not.
    func requireAdmin(_ viewer: Viewer) throws {
        guard viewer.signedIn, viewer.identity?.isAdmin == true else {
            throw ConsolePage(status: .forbidden, heading: "Not allowed", text: "This page is for administrators.")
        }
    }

    // MARK: Sign-in

    /// The sign-in form. Its CSRF token is bound to a random nonce in a cookie of its own (an HMAC
    /// of it under a key of this process): no state is kept for visitors who have not signed in, so
    /// asking for the page any number of times fills nothing.
    func loginPage(
        viewer: Viewer, nonce given: String?, next: String?, error: String?, name: String,
        status: HTTPResponse.Status = .ok
    ) -> Response {
        let nonce = given.flatMap { LoginToken.isNonce($0) ? $0 : nil } ?? ConsoleSessions.token()
        var values = base(viewer: viewer, title: "Sign in")
        values["session"] = nil as Any?
        values["csrf"] = loginToken.token(for: nonce)
        values["next"] = Self.safeNext(next)
        values["error"] = error
        values["name"] = name
        var response = html("login", values, status: status)
        if given != nonce {
            response.headers[.setCookie] =
                "\(LoginToken.cookie)=\(nonce); Path=/ui/login; HttpOnly; SameSite=Strict\(settings.secureCookies ? "; Secure" : "")"
        }
        return response
    }

    func signIn(_ request: Request, viewer: Viewer, remote: String) async throws -> Response {
        let nonce = ConsoleForms.cookies(request.headers[.cookie])[LoginToken.cookie]
        let fields = try await formFields(request)
        guard let nonce, LoginToken.isNonce(nonce), let given = fields["csrf"],
            Self.constantTimeEqual(given, loginToken.token(for: nonce))
        else {
            throw ConsolePage(
                status: .forbidden, heading: "Form refused",
                text: "The form has expired or did not come from this console. Reload the page and try again.")
        }
        let name = fields["user"] ?? ""
        let next = Self.safeNext(fields["next"])
        guard let authenticator else { return Self.redirect(next) }
        let header = "Basic " + Data("\(name):\(fields["password"] ?? "")".utf8).base64EncodedString()
        let identity: Identity?
        do {
            identity = try await authenticator.authenticate(basic: header, remote: remote)
        } catch {
            return loginPage(
                viewer: viewer, nonce: nonce, next: next, error: "Too many failed sign-ins: try again in a minute.",
                name: name, status: .tooManyRequests)
        }
        guard let identity, let user = identity.name else {
            return loginPage(
                viewer: viewer, nonce: nonce, next: next, error: "Wrong user or password.", name: name,
                status: .unauthorized)
        }
        if let id = viewer.session?.id { sessions.end(id) }
        let session = sessions.start(user: user, stamp: authenticator.credentialStamp(name: user))
        var response = Self.redirect(next)
        response.headers[.setCookie] = cookie(session.id)
        return response
    }

    /// A POSTed form of this session: refused unless it carries the session's CSRF token.
    func form(_ request: Request, viewer: Viewer) async throws -> [String: String] {
        let fields = try await formFields(request)
        guard let session = viewer.session, let token = fields["csrf"],
            Self.constantTimeEqual(token, session.csrf)
        else {
            throw ConsolePage(
                status: .forbidden, heading: "Form refused",
                text: "The form has expired or did not come from this console. Reload the page and try again.")
        }
        return fields
    }

    /// The fields of a POSTed form (at most 64 KiB).
    func formFields(_ request: Request) async throws -> [String: String] {
        let type = request.headers[.contentType] ?? ""
        guard type.hasPrefix("application/x-www-form-urlencoded") else {
            throw ConsolePage(status: .unsupportedMediaType, heading: "Not a form", text: "Expected a form.")
        }
        var body = try await request.body.collect(upTo: 64 * 1024)
        guard let text = body.readString(length: body.readableBytes), let fields = ConsoleForms.fields(text) else {
            throw ConsolePage(status: .badRequest, heading: "Not a form", text: "The form could not be read.")
        }
        return fields
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// Only a console page of this site: `/ui/...`, never `//host` or a scheme.
    static func safeNext(_ next: String?) -> String {
        guard let next, next.hasPrefix("/ui/"), !next.contains("//"), !next.contains("\\") else { return "/ui/" }
        return next
    }

    func cookie(_ id: String) -> String {
        "\(Self.cookie)=\(id); Path=/ui; HttpOnly; SameSite=Strict\(settings.secureCookies ? "; Secure" : "")"
    }

    var expiredCookie: String {
        "\(Self.cookie)=; Path=/ui; Max-Age=0; HttpOnly; SameSite=Strict\(settings.secureCookies ? "; Secure" : "")"
    }

    // MARK: Pages

    /// Health, version and certificate for everyone; the store's size and the last imports only
    /// for admins (they name repositories a limited user may not see).
    func overview(viewer: Viewer) async throws -> Response {
        var values = base(viewer: viewer, title: "Overview")
        values["health"] = "ok"
        if let expiry = settings.certificateExpiry {
            let days = Int(expiry.timeIntervalSinceNow / 86400)
            values["certificate"] = "expires \(Self.day(expiry)) (in \(days) days)"
        } else {
            values["certificate"] = "not served over TLS here"
        }
        guard viewer.identity?.isAdmin == true else { return html("overview", values) }
        let storage = content.storage
        values["admin"] = true
        values["repositories"] = try await content.read { try $0.repositoryCount() }
        values["images"] = try await content.read { try $0.tagCount() }
        let (free, total) = Self.disk(settings.dataDirectory)
        values["free"] = Self.bytes(free)
        values["total"] = Self.bytes(total)
        values["stored"] = storedBytes.current().map(Self.bytes) ?? "being counted"
        let records = try await BlockingPools.reads.runIfActive { storage.latestImportRecords(limit: 10) }
        values["imports"] = records.compactMap { bytes -> [String: Any]? in
            guard let record = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any] else {
                return nil
            }
            let images = (record["images"] as? [[String: Any]])?.count ?? 0
            return [
                "time": record["time"] as? String ?? "", "signer": record["signer"] as? String ?? "unsigned",
                "bundle": ((record["bundle"] as? String) ?? "").split(separator: "/").last.map(String.init) ?? "",
                "images": images,
            ]
        }
        return html("overview", values)
    }

    func repositories(_ request: Request, viewer: Viewer) async throws -> Response {
        let query = (request.uri.queryParameters.get("q") ?? "").trimmingCharacters(in: .whitespaces).lowercased()
        let after = request.uri.queryParameters.get("after").flatMap { try? RepositoryName($0) }
        // A page of names this viewer may pull, matching the search, read in batches from the
        // cursor on: no page reads the whole catalog unless a rare search makes it.
        let (names, more) = try await content.read { storage -> ([RepositoryName], Bool) in
            var found: [RepositoryName] = []
            var cursor = after
            // The search runs in the database: a served name, or a source registry's name
            // (`registry.local:5000` is served as `registry.local_5000`).
            let texts = query.isEmpty ? [] : Array(Set([query, Reference.servedHost(query)]))
            while true {
                let batch = try storage.repositories(containingAny: texts, after: cursor, limit: 1000)
                for name in batch where viewer.canPull(name.value) {
                    if found.count == Self.pageSize { return (found, true) }
                    found.append(name)
                }
                guard batch.count == 1000, let last = batch.last else { return (found, false) }
                cursor = last
            }
        }
        var values = base(viewer: viewer, title: "Repositories")
        values["query"] = query
        values["queryLink"] = ConsoleForms.encode(query)
        values["names"] = names.map { name -> [String: Any] in
            ["name": name.value, "link": ConsoleForms.encode(name.value), "source": Self.source(of: name) ?? ""]
        }
        values["next"] = more ? names.last.map { ConsoleForms.encode($0.value) } : nil
        return html("repositories", values)
    }

    /// The original name a repository mirrors: `registry.local_5000/team/app` → `registry.local:5000/team/app`.
    static func source(of name: RepositoryName) -> String? {
        guard let registry = Reference.sourceRegistry(ofServed: name.value), let slash = name.value.firstIndex(of: "/")
        else { return nil }
        return registry + name.value[slash...]
    }

    func repositoryName(_ request: Request, _ key: String, viewer: Viewer) throws -> RepositoryName {
        guard let text = request.uri.queryParameters.get(key), let name = try? RepositoryName(String(text)),
            viewer.canPull(name.value)
        else {
            // Unknown and forbidden read the same: the page does not tell which names exist.
            throw ConsolePage(status: .notFound, heading: "Not found", text: "There is no such repository.")
        }
        return name
    }

    func repository(_ request: Request, viewer: Viewer) async throws -> Response {
        let name = try repositoryName(request, "name", viewer: viewer)
        let after = request.uri.queryParameters.get("after").map { String($0) }
        let storage = content.storage
        let (tags, more) = try await content.read { storage -> ([(Tag, Digest)], Bool) in
            guard try storage.contains(repository: name) else { return ([], false) }
            let page = try storage.tags(in: name, after: after, limit: Self.pageSize + 1)
            return (
                try page.prefix(Self.pageSize).compactMap { tag in
                    try storage.resolve(.tag(tag), in: name).map { (tag, $0) }
                }, page.count > Self.pageSize
            )
        }
        if tags.isEmpty, after == nil, try await !content.read({ try $0.contains(repository: name) }) {
            throw ConsolePage(status: .notFound, heading: "Not found", text: "There is no such repository.")
        }
        var rows: [[String: Any]] = []
        for (tag, digest) in tags {
            let summary = try await summarize(digest, in: name)
            let badges = ReferrerTag(tag: tag.value) == nil ? try storage.carried(digest, in: name) : []
            rows.append([
                "tag": tag.value, "digest": digest.description, "kind": summary.kind, "mediaType": summary.mediaType,
                "platforms": summary.platforms,
                "size": Self.bytes(summary.size), "created": summary.created ?? "", "badges": badges,
                "repositoryLink": ConsoleForms.encode(name.value),
            ])
        }
        var values = base(viewer: viewer, title: name.value)
        values["name"] = name.value
        values["source"] = Self.source(of: name)
        values["repositoryLink"] = ConsoleForms.encode(name.value)
        values["tags"] = rows
        values["next"] = more ? tags.last.map { ConsoleForms.encode($0.0.value) } : nil
        return html("repository", values)
    }

    struct Summary {
        var kind: String
        var mediaType: String = ""
        var platforms: String
        var size: Int64
        var created: String?
    }

    /// What the repository page shows of a manifest: its kind, platforms, size and creation time.
    func summarize(_ digest: Digest, in repository: RepositoryName) async throws -> Summary {
        let stored = try await content.manifest(digest)
        let document = try ManifestDocument(bytes: stored.bytes)
        var summary: Summary
        switch document.content {
        case .index(let index):
            let platforms = index.manifests.compactMap { $0.platform?.description }
            summary = Summary(
                kind: index.artifactType ?? "index", platforms: platforms.joined(separator: ", "),
                size: index.manifests.reduce(Int64(stored.bytes.count)) { $0 + $1.size }, created: nil)
        case .manifest(let manifest):
            let config = try await configSummary(manifest)
            let size = manifest.layers.reduce(manifest.config.size + Int64(stored.bytes.count)) { $0 + $1.size }
            let kind = Self.kind(manifest)
            summary = Summary(kind: kind, platforms: config?.platform ?? "", size: size, created: config?.created)
        }
        summary.mediaType = document.mediaType
        return summary
    }

    static func kind(_ manifest: ImageManifest) -> String {
        if let type = manifest.artifactType { return type }
        switch manifest.config.mediaType {
        case MediaType.ociConfig, MediaType.dockerConfig: return "image"
        case MediaType.helmConfig: return "Helm chart"
        default: return manifest.config.mediaType
        }
    }

    struct ConfigSummary {
        var platform: String?
        var created: String?
        var entrypoint: String?
        var command: String?
        var user: String?
        var env: [String]
        var labels: [String]
    }

    /// An image's config, when it is one (read from the store, at most 1 MiB).
    func configSummary(_ manifest: ImageManifest) async throws -> ConfigSummary? {
        guard [MediaType.ociConfig, MediaType.dockerConfig].contains(manifest.config.mediaType),
            manifest.config.size <= 1 << 20
        else { return nil }
        let blobs = content.storage.blobs
        let digest = manifest.config.digest
        guard let bytes = try? await BlockingPools.reads.runIfActive({ try blobs.read(digest, limit: 1 << 20) }),
            let json = try? JSONSerialization.jsonObject(with: Data(bytes)) as? [String: Any]
        else { return nil }
        let config = json["config"] as? [String: Any] ?? [:]
        var platform: String?
        if let os = json["os"] as? String, let architecture = json["architecture"] as? String {
            platform = "\(os)/\(architecture)" + ((json["variant"] as? String).map { "/\($0)" } ?? "")
        }
        func words(_ key: String) -> String? {
            (config[key] as? [String]).map { $0.joined(separator: " ") }
        }
        let labels = (config["Labels"] as? [String: String] ?? [:]).sorted { $0.key < $1.key }.map {
            "\($0.key)=\($0.value)"
        }
        return ConfigSummary(
            platform: platform, created: json["created"] as? String, entrypoint: words("Entrypoint"),
            command: words("Cmd"), user: (config["User"] as? String).flatMap { $0.isEmpty ? nil : $0 },
            env: config["Env"] as? [String] ?? [], labels: labels)
    }

    func image(_ request: Request, viewer: Viewer) async throws -> Response {
        let name = try repositoryName(request, "repository", viewer: viewer)
        let text = request.uri.queryParameters.get("reference").map { String($0) } ?? ""
        let notFound = ConsolePage(status: .notFound, heading: "Not found", text: "There is no such image.")
        guard let reference = try? ManifestReference(text) else { throw notFound }
        guard let digest = try await content.read({ try $0.resolve(reference, in: name) }) else { throw notFound }
        let stored = try await content.manifest(digest)
        let document = try ManifestDocument(bytes: stored.bytes)
        var tag: String?
        if case .tag(let t) = reference { tag = t.value }
        let host = request.head.authority ?? "APPLIANCE"
        let pinned = tag.map { ":\($0)" } ?? "@\(digest)"
        var values = base(viewer: viewer, title: "\(name.value)\(tag.map { ":\($0)" } ?? "")")
        values["repository"] = name.value
        values["tag"] = tag
        values["digest"] = digest.description
        values["mediaType"] = document.mediaType
        values["artifactType"] = stored.artifactType.flatMap {
            [MediaType.ociConfig, MediaType.dockerConfig].contains($0) ? nil : $0
        }
        values["badges"] = try content.storage.carried(digest, in: name)
        var pulls: [[String: String]] = [
            ["tool": "docker", "command": "docker pull \(host)/\(name.value)\(pinned)"],
            ["tool": "podman", "command": "podman pull \(host)/\(name.value)\(pinned)"],
            [
                "tool": "containerd",
                "command": "ctr images pull --hosts-dir /etc/containerd/certs.d \(host)/\(name.value)\(pinned)",
            ],
        ]
        if let source = Self.source(of: name) {
            pulls.append(["tool": "through the mirror", "command": "podman pull \(source)\(pinned)"])
        }
        if case .manifest(let manifest) = document.content,
            manifest.config.mediaType == MediaType.helmConfig,
            let tag
        {
            pulls.append([
                "tool": "helm",
                "command":
                    "helm pull oci://\(host)/\(name.value) --version \(tag.replacingOccurrences(of: "_", with: "+"))",
            ])
        }
        values["pulls"] = pulls
        let link = ConsoleForms.encode(name.value)
        // Every list is present, empty when it does not apply (the templates test for `empty(...)`).
        values["platforms"] = [[String: Any]]()
        values["layers"] = [[String: Any]]()
        switch document.content {
        case .index(let index):
            values["size"] = Self.bytes(index.manifests.reduce(Int64(stored.bytes.count)) { $0 + $1.size })
            values["platforms"] = index.manifests.map { child -> [String: Any] in
                [
                    "platform": child.platform?.description ?? child.mediaType, "digest": child.digest.description,
                    "size": Self.bytes(child.size), "repositoryLink": link,
                ]
            }
        case .manifest(let manifest):
            values["size"] = Self.bytes(
                manifest.layers.reduce(manifest.config.size + Int64(stored.bytes.count)) { $0 + $1.size })
            values["layers"] = manifest.layers.enumerated().map { number, layer -> [String: Any] in
                [
                    "number": number + 1, "digest": layer.digest.description, "mediaType": layer.mediaType,
                    "size": Self.bytes(layer.size),
                ]
            }
            if let config = try await configSummary(manifest) {
                values["created"] = config.created
                var shown: [String: Any] = ["env": config.env, "labels": config.labels]
                for (key, value) in [
                    ("platform", config.platform), ("entrypoint", config.entrypoint), ("command", config.command),
                    ("user", config.user),
                ] {
                    if let value { shown[key] = value }
                }
                values["config"] = shown
            }
        }
        let referrers = try await content.read { try $0.referrers(of: digest, in: name, artifactType: nil) }
        var referrerRows: [[String: Any]] = []
        for referrer in referrers.prefix(200) {
            let stored = try? await content.manifest(referrer)
            referrerRows.append([
                "digest": referrer.description, "artifactType": stored?.artifactType ?? "", "repositoryLink": link,
            ])
        }
        values["referrers"] = referrerRows
        return html("image", values)
    }

    // MARK: Rendering

    func base(viewer: Viewer, title: String) -> [String: Any] {
        var values: [String: Any] = ["title": title, "version": settings.version]
        var session: [String: Any] = [:]
        if viewer.identity?.isAdmin == true && viewer.signedIn {
            session["admin"] = true
            values["admin"] = true
        }
        if viewer.signedIn, let user = viewer.session?.user {
            session["user"] = user
            session["role"] = viewer.identity?.grant?.role.rawValue ?? ""
            session["csrf"] = viewer.session?.csrf ?? ""
        }
        if viewer.identity != nil { values["session"] = session }
        return values
    }

    func html(_ template: String, _ values: [String: Any], status: HTTPResponse.Status = .ok) -> Response {
        let text = library.render(values, withTemplate: template) ?? ""
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.cacheControl] = "no-store"
        Self.secure(&headers)
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    func render(_ page: ConsolePage, viewer: Viewer) -> Response {
        var values = base(viewer: viewer, title: page.heading)
        values["heading"] = page.heading
        values["text"] = page.text
        return html("message", values, status: page.status)
    }

    static func secure(_ headers: inout HTTPFields) {
        // swift-format-ignore: NeverForceUnwrap
        // Literal tokens: valid by construction.
        headers[HTTPField.Name("Content-Security-Policy")!] =
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
        // swift-format-ignore: NeverForceUnwrap
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        // swift-format-ignore: NeverForceUnwrap
        headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
    }

    static func asset(_ text: String, type: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = type
        headers[.cacheControl] = "max-age=3600"
        secure(&headers)
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    static func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        headers[.cacheControl] = "no-store"
        return Response(status: .seeOther, headers: headers)
    }

    static func bytes(_ count: Int64) -> String { ByteCount.text(count) }

    static func day(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withFullDate]
        return formatter.string(from: date)
    }

    static func disk(_ path: String) -> (free: Int64, total: Int64) {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return (0, 0) }
        return (Int64(info.f_bavail) * Int64(info.f_frsize), Int64(info.f_blocks) * Int64(info.f_frsize))
    }
}

/// A page that ends a request early: not found, refused, a form that failed its check.
struct ConsolePage: Error {
    var status: HTTPResponse.Status
    var heading: String
    var text: String
}

/// The bytes the blob store holds, counted on a background thread at most every ten minutes
/// (never on a page view).
final class StoredBytes: Sendable {
    private let state = Mutex<(value: Int64?, counted: Int, running: Bool)>((nil, 0, false))
    let root: String
    init(root: String) { self.root = root }

    func current() -> Int64? {
        let now = Int(Date().timeIntervalSince1970)
        let start = state.withLock { state -> Bool in
            guard !state.running, now - state.counted > 600 else { return false }
            state.running = true
            return true
        }
        if start {
            let root = self.root
            BlockingPools.reads.submit { _ in
                var total: Int64 = 0
                for algorithm in DigestAlgorithm.allCases {
                    let directory = "\(root)/blobs/\(algorithm.rawValue)"
                    for name in FileSystem.list(directory) {
                        total += FileSystem.size(of: "\(directory)/\(name)") ?? 0
                    }
                }
                self.state.withLock { $0 = (total, Int(Date().timeIntervalSince1970), false) }
            }
        }
        return state.withLock { $0.value }
    }
}
