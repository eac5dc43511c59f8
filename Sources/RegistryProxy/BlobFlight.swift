import NIOCore
import NIOPosix
import OCICore
import OCIRegistryClient
import OCIRegistryServer
import OCIStore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One upstream download of a blob into the cache, which any number of clients read while it
/// runs: each follows the file as it grows. The last byte is released only once the whole blob
/// matched its digest, so a client never receives a complete body of content that did not.
final class BlobFlight: Sendable {
    struct State {
        var size: Int64?
        /// The cache's temporary file, open for reading (closed when the flight is gone).
        var file: Int32 = -1
        var written: Int64 = 0
        /// Counts restarts (a download retried from its first byte).
        var generation = 0
        var outcome: Result<Void, DistributionError>?
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    let digest: Digest
    private let state = Mutex(State())

    init(digest: Digest) { self.digest = digest }

    deinit {
        let fd = state.withLock { $0.file }
        if fd >= 0 { close(fd) }
    }

    // MARK: The download's side

    /// The size is known and the file exists: readers may start.
    func started(size: Int64, file: Int32) {
        update {
            $0.size = size; $0.file = file
        }
    }
    func advanced(by count: Int) { update { $0.written += Int64(count) } }
    func restarted() {
        update {
            $0.written = 0; $0.generation += 1
        }
    }
    /// The first outcome stands.
    func finished(_ outcome: Result<Void, DistributionError>) {
        update { if $0.outcome == nil { $0.outcome = outcome } }
    }

    var hasFailed: Bool {
        state.withLock { state in
            if case .failure = state.outcome { return true }
            return false
        }
    }

    private func update(_ change: (inout State) -> Void) {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            change(&state)
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: The readers' side

    /// Waits until `ready` holds (checked after every change).
    private func wait<T>(_ ready: @escaping (State) -> T?) async -> T {
        while true {
            var found: T?
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let now = state.withLock { state -> Bool in
                    if let value = ready(state) {
                        found = value
                        return true
                    }
                    state.waiters.append(continuation)
                    return false
                }
                if now { continuation.resume() }
            }
            if let found { return found }
        }
    }

    /// The blob's size, once the upstream told it (or the download's failure).
    func size() async throws(DistributionError) -> Int64 {
        let answer = await wait { state -> Result<Int64, DistributionError>? in
            if case .failure(let error) = state.outcome { return .failure(error) }
            if let size = state.size { return .success(size) }
            return nil
        }
        return try answer.get()
    }

    /// Streams `range` to `body` as the bytes arrive, in chunks read on the files pool.
    func read(_ range: ClosedRange<Int64>, _ body: (ByteBuffer) async throws -> Void) async throws {
        var offset = range.lowerBound
        var generation: Int?
        let restarted = DistributionError(
            status: 502, code: .unknown, message: "upstream transfer restarted", detail: digest.description)
        while offset <= range.upperBound {
            let at = offset
            let started = generation
            let (available, fd, current) = try await wait { state -> Result<(Int64, Int32, Int), DistributionError>? in
                guard let size = state.size else { return nil }
                switch state.outcome {
                case .failure(let error): return .failure(error)
                case .success: return .success((size, state.file, state.generation))
                case nil:
                    // The download started over after this client received bytes of the first attempt.
                    if let started, started != state.generation { return .failure(restarted) }
                    // Everything but the range's last byte may go before the digest is checked, so
                    // no client gets a complete answer of content that does not match.
                    let available = min(state.written, range.upperBound)
                    return available > at ? .success((available, state.file, state.generation)) : nil
                }
            }.get()
            generation = current
            let count = Int(min(Int64(BlobFileReader.chunk), available - offset, range.upperBound - offset + 1))
            let buffer = try await BlockingPools.files.runIfActive {
                try BlobFileReader.pread(fd, count: count, at: at)
            }
            offset += Int64(buffer.readableBytes)
            try await body(buffer)
        }
    }
}

/// Where the registry client writes a flight's download: the cache's file, then the flight is told.
final class FlightSink: BlobSink, @unchecked Sendable {
    let ingest: CacheIngest
    let flight: BlobFlight

    init(ingest: CacheIngest, flight: BlobFlight) {
        self.ingest = ingest
        self.flight = flight
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        try ingest.write(bytes)
        flight.advanced(by: bytes.count)
    }

    func reset() throws {
        guard ingest.count > 0 else { return }
        try ingest.reset()
        flight.restarted()
    }
}
