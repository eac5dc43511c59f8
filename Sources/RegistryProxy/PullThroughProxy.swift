import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOPosix
import OCICore
import OCIRegistryClient
import OCIRegistryServer
import OCIStore
import Synchronization

/// A pull-through cache, as the distribution registry's proxy mode: what the store lacks is
/// fetched from an upstream registry on first request, verified against its digest while it
/// streams to the client and into the cache, and served from the cache after that.
///
/// - Tags are checked upstream (HEAD) once their TTL passed; while the upstream cannot be reached,
///   the tag last seen is served.
/// - Several clients asking for one blob at once share one upstream download (a ``BlobFlight``).
/// - A blob fetched for one repository is served for another only after the upstream confirmed
///   that repository has it.
/// - The cache is bounded (``PullThroughCache/maxBytes``); least recently used entries go first.
public final class PullThroughProxy: PullThrough {
    public let routes: ProxyRoutes
    let cache: PullThroughCache
    let client: RegistryClient
    let logger: Logger
    /// The HTTP client `client` runs on, when this proxy made it (shut down by ``shutdown()``).
    let http: HTTPClient?
    private let flights = Mutex<[String: BlobFlight]>([:])
    private let evicting = Mutex(false)

    public init(
        routes: ProxyRoutes, cache: PullThroughCache, client: RegistryClient, logger: Logger, http: HTTPClient? = nil
    ) {
        self.http = http
        self.routes = routes
        self.cache = cache
        self.client = client
        self.logger = logger
    }

    static func now() -> Int64 { Int64(Date().timeIntervalSince1970) }

    public func cacheName(_ repository: RepositoryName, namespace: String?) -> RepositoryName? {
        routes.route(repository, namespace: namespace)?.key
    }

    // MARK: Manifests

    public func manifest(_ reference: ManifestReference, in repository: RepositoryName, namespace: String?)
        async throws -> PulledManifest?
    {
        guard let route = routes.route(repository, namespace: namespace) else { return nil }
        let location = RegistryLocation(registry: route.upstream.registry, repository: route.remote)
        let now = Self.now()
        switch reference {
        case .digest(let digest):
            if let cached = try await cachedManifest(digest, route, now: now) { return cached }
            return try await fetchManifest(digest, route, location, now: now)
        case .tag(let tag):
            let cache = self.cache
            let known = try await BlockingPools.reads.runIfActive { try cache.tag(tag, in: route.key) }
            if let known, now - known.checked < Int64(route.upstream.ttl),
                let cached = try await cachedManifest(known.digest, route, now: now)
            {
                return cached
            }
            let current: Digest?
            do {
                current = try await client.manifestDigest(location, reference: .tag(tag))
            } catch {
                // Served as last seen while the upstream cannot answer.
                if let known, let cached = try await cachedManifest(known.digest, route, now: now) {
                    logger.warning(
                        "pull-through: \(route.upstream.registry)/\(route.remote):\(tag) served as last seen (\(known.digest)): upstream failed: \(error)"
                    )
                    return cached
                }
                throw unavailable(error, route, missing: .manifestUnknown(reference.description))
            }
            guard let current else { throw DistributionError.manifestUnknown(reference.description) }
            let pulled: PulledManifest
            if let cached = try await cachedManifest(current, route, now: now) {
                pulled = cached
            } else {
                pulled = try await fetchManifest(current, route, location, now: now)
            }
            try await BlockingPools.commits.runIfActive {
                try cache.setTag(tag, in: route.key, to: current, checked: now)
            }
            return pulled
        }
    }

    private func cachedManifest(_ digest: Digest, _ route: ProxyRoutes.Route, now: Int64) async throws
        -> PulledManifest?
    {
        let cache = self.cache
        let bytes = try await BlockingPools.reads.runIfActive { try cache.manifest(digest, in: route.key, now: now) }
        return bytes.map { PulledManifest(digest: digest, bytes: $0) }
    }

    private func fetchManifest(
        _ digest: Digest, _ route: ProxyRoutes.Route, _ location: RegistryLocation, now: Int64
    ) async throws -> PulledManifest {
        let document: ManifestDocument
        do {
            // The client checks the bytes against the digest asked for.
            document = try await client.fetchManifest(
                registry: location.registry, repository: location.repository, reference: .digest(digest))
        } catch {
            throw unavailable(error, route, missing: .manifestUnknown(digest.description))
        }
        let cache = self.cache
        try await BlockingPools.commits.runIfActive {
            try cache.putManifest(document.bytes, digest: digest, in: route.key, now: now)
        }
        do {
            try await evict()
        } catch {
            logger.warning("pull-through: aging out the cache failed: \(error)")
        }
        return PulledManifest(digest: digest, bytes: document.bytes)
    }

    // MARK: Blobs

    public func blob(_ digest: Digest, in repository: RepositoryName, namespace: String?, head: Bool) async throws
        -> PulledBlob?
    {
        guard let route = routes.route(repository, namespace: namespace) else { return nil }
        let location = RegistryLocation(registry: route.upstream.registry, repository: route.remote)
        let cache = self.cache
        let now = Self.now()
        if let size = try await BlockingPools.reads.runIfActive({ try cache.linked(digest, in: route.key, now: now) }) {
            return Self.file(cache.blobs.path(of: digest), size: size)
        }
        let stored = cache.storedSize(digest)
        if head || stored != nil {
            let size = try await upstreamSize(digest, route, location)
            if head { return PulledBlob(size: size) { _, _ in } }
            // Fetched before for another repository; the upstream confirmed this one has it too.
            if stored == size {
                try await BlockingPools.commits.runIfActive { try cache.link(digest, to: route.key, now: now) }
                return Self.file(cache.blobs.path(of: digest), size: size)
            }
        }
        let flight = join(digest, route, location)
        let size = try await flight.size()
        return PulledBlob(size: size) { range, body in try await flight.read(range, body) }
    }

    /// The blob's size upstream (a HEAD in the route's repository there).
    private func upstreamSize(_ digest: Digest, _ route: ProxyRoutes.Route, _ location: RegistryLocation) async throws
        -> Int64
    {
        let size: Int64?
        do {
            size = try await client.blobSize(digest, in: location)
        } catch {
            throw unavailable(error, route, missing: .blobUnknown(digest.description))
        }
        guard let size else { throw DistributionError.blobUnknown(digest.description) }
        return size
    }

    /// The download of `digest` for the route's repository: the one running, or a new one.
    private func join(_ digest: Digest, _ route: ProxyRoutes.Route, _ location: RegistryLocation) -> BlobFlight {
        let key = "\(route.key)@\(digest)"
        let (flight, isNew) = flights.withLock { flights -> (BlobFlight, Bool) in
            if let running = flights[key], !running.hasFailed { return (running, false) }
            let flight = BlobFlight(digest: digest)
            flights[key] = flight
            return (flight, true)
        }
        guard isNew else { return flight }
        // Not the requesting client's task: the download completes (and is cached) even if that
        // client goes away, for the others reading it.
        Task.detached { [self] in
            await download(flight, route, location)
            flights.withLock { if $0[key] === flight { $0[key] = nil } }
        }
        return flight
    }

    private func download(_ flight: BlobFlight, _ route: ProxyRoutes.Route, _ location: RegistryLocation) async {
        let digest = flight.digest
        let cache = self.cache
        var ingest: CacheIngest?
        do {
            let size = try await upstreamSize(digest, route, location)
            let (writer, fd) = try await BlockingPools.files.runIfActive { () -> (CacheIngest, Int32) in
                let writer = try cache.makeIngest(for: digest, size: size)
                let fd = open(writer.path, O_RDONLY | O_CLOEXEC)
                guard fd >= 0 else { throw StoreError.io("open \(writer.path)", errno: errno) }
                return (writer, fd)
            }
            ingest = writer
            flight.started(size: size, file: fd)
            let descriptor = Descriptor(mediaType: "application/octet-stream", digest: digest, size: size)
            do {
                try await client.fetchBlob(
                    descriptor, repository: location.repository, registry: location.registry,
                    into: FlightSink(ingest: writer, flight: flight))
            } catch {
                throw unavailable(error, route, missing: .blobUnknown(digest.description))
            }
            try await BlockingPools.commits.runIfActive {
                try writer.commit()
                try cache.link(digest, to: route.key, now: Self.now())
            }
            flight.finished(.success(()))
            logger.info("pull-through: cached \(route.upstream.registry)/\(route.remote)@\(digest) (\(size) bytes)")
        } catch {
            ingest?.cancel()
            let failure =
                error as? DistributionError
                ?? DistributionError(status: 500, code: .unknown, message: "internal error", detail: nil)
            if !(error is DistributionError) { logger.error("pull-through: \(digest): \(error)") }
            flight.finished(.failure(failure))
            return
        }
        do {
            try await evict()
        } catch {
            logger.warning("pull-through: aging out the cache failed: \(error)")
        }
    }

    /// Ages out least recently used entries beyond the cache's size, sparing blobs in flight.
    private func evict() async throws {
        guard cache.maxBytes != nil else { return }
        // One at a time: two would each remove the excess.
        guard
            evicting.withLock({ running in
                !running
                    ? {
                        running = true; return true
                    }() : false
            })
        else { return }
        defer { evicting.withLock { $0 = false } }
        let busy = Set(flights.withLock { $0.values.map(\.digest) })
        let cache = self.cache
        let removed = try await BlockingPools.commits.runIfActive {
            // Entries read in the last minute may be streaming to a client right now.
            try cache.evict(sparing: busy, usedSince: Self.now() - 60)
        }
        if removed.entries > 0 {
            logger.info("pull-through: aged out \(removed.entries) cached entries (\(removed.bytes) bytes)")
        }
    }

    /// A cached file.
    static func file(_ path: String, size: Int64) -> PulledBlob {
        PulledBlob(size: size) { range, body in try await BlobFileReader.read(path, range, body) }
    }

    /// What the client is told when the upstream failed (the cause goes to the log, never the
    /// upstream's address): `missing` when the upstream says it has no such thing (404, or the 401
    /// Docker Hub answers for a repository that does not exist); 429 as 429; else 502.
    private func unavailable(_ error: any Error, _ route: ProxyRoutes.Route, missing: DistributionError)
        -> DistributionError
    {
        if let error = error as? DistributionError { return error }
        var cause = error as? RegistryError
        if case .gaveUp(let inner, _) = cause { cause = inner }
        switch cause {
        case .notFound, .unauthorized:
            return missing
        case .status(_, _, 429, _, _):
            return DistributionError(
                status: 429, code: .tooManyRequests, message: "the upstream registry limits requests", detail: nil)
        case let cause? where cause.isVerificationFailure:
            logger.error("pull-through: \(route.upstream.registry)/\(route.remote): \(error); not cached")
            return DistributionError(
                status: 502, code: .unknown, message: "upstream content does not match its digest", detail: nil)
        default:
            logger.warning("pull-through: \(route.upstream.registry)/\(route.remote): \(error)")
            return DistributionError(status: 502, code: .unknown, message: "upstream registry unavailable", detail: nil)
        }
    }
}

extension PullThroughProxy {
    /// An upstream as configured: where it is, whether it is the default, and how to sign in.
    public struct UpstreamSettings: Sendable {
        public var upstream: ProxyUpstream
        public var username: String?
        public var password: String?
        public var caFile: String?

        public init(upstream: ProxyUpstream, username: String?, password: String?, caFile: String?) {
            self.upstream = upstream
            self.username = username
            self.password = password
            self.caFile = caFile
        }
    }

    /// A proxy for `upstreams` with its cache under `cacheRoot`, and a registry client of its own
    /// (one quick retry: a client waits while the proxy retries, and a stale tag is served sooner
    /// when the upstream is down). Call ``shutdown()`` when the server stopped.
    public static func make(
        upstreams: [UpstreamSettings], cacheRoot: String, maxBytes: Int64?, logger: Logger
    ) throws -> PullThroughProxy {
        let routes = try ProxyRoutes(upstreams.map(\.upstream))
        var credentials = CredentialStore()
        for settings in upstreams {
            guard let username = settings.username else { continue }
            guard let password = settings.password else {
                throw ProxyConfigurationError.badCredentials(
                    "\(settings.upstream.registry): a username without a password")
            }
            credentials.explicit[settings.upstream.registry] = .basic(username: username, password: password)
        }
        let trust = TrustPolicy(
            caFiles: upstreams.compactMap(\.caFile),
            insecureRegistries: Set(upstreams.filter(\.upstream.plainHTTP).map(\.upstream.registry)))
        try trust.checkCAFiles()
        let http = RegistryClient.makeHTTPClient()
        let client = RegistryClient(
            http: http,
            configuration: .init(
                credentials: credentials, trust: trust, retry: RetryPolicy(maxAttempts: 2, initialDelay: 0.2),
                userAgent: "ferry-appliance/\(FerryVersion.string) (pull-through)"))
        let cache = try PullThroughCache(root: cacheRoot, maxBytes: maxBytes)
        return PullThroughProxy(routes: routes, cache: cache, client: client, logger: logger, http: http)
    }

    public func shutdown() async { try? await http?.shutdown() }
}
