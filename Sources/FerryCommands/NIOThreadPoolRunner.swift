import NIOPosix

/// Runs blocking work (file reading and writing through libarchive) on NIO's thread pool.
enum NIOThreadPoolRunner {
    static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(body)
    }
}
