import Foundation
import Synchronization
import Testing

@testable import OCIRegistryClient

/// ``SharedWork`` as its two users hold it: inside an actor.
private actor Shared {
    private var work = SharedWork<String, Int>()

    func value(_ body: @escaping @Sendable () async throws -> Int) async throws -> Int {
        let (task, started) = work.join("key", body)
        defer { if started { work.ended("key", task) } }
        return try await sharedOutcome(of: task) { await self.cancelled(task) }
    }

    private func cancelled(_ task: Task<Int, any Error>) { work.cancelled("key", task) }
}

struct SharedWorkTests {
    @Test func concurrentCallersShareOneRunAndOneCancelledCallerDoesNotStopIt() async throws {
        let shared = Shared()
        let runs = Atomic<Int>(0)
        let body: @Sendable () async throws -> Int = {
            runs.add(1, ordering: .relaxed)
            try await Task.sleep(for: .milliseconds(300))
            return 7
        }
        let first = Task { try await shared.value(body) }
        try await Task.sleep(for: .milliseconds(50))
        let second = Task { try await shared.value(body) }
        try await Task.sleep(for: .milliseconds(50))
        first.cancel()
        #expect(try await second.value == 7)
        #expect(runs.load(ordering: .relaxed) == 1)
        // Once it ended, the next caller runs it again.
        #expect(try await shared.value(body) == 7)
        #expect(runs.load(ordering: .relaxed) == 2)
    }

    @Test func theWorkStopsWhenEveryCallerWasCancelled() async throws {
        let shared = Shared()
        let body: @Sendable () async throws -> Int = {
            try await Task.sleep(for: .seconds(30))
            return 1
        }
        let started = ContinuousClock.now
        let callers = (0..<3).map { _ in Task { try await shared.value(body) } }
        try await Task.sleep(for: .milliseconds(100))
        for caller in callers { caller.cancel() }
        for caller in callers {
            await #expect(throws: CancellationError.self) { try await caller.value }
        }
        #expect(ContinuousClock.now - started < .seconds(10))
    }
}
