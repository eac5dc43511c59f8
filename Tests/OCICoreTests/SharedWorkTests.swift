import Foundation
import OCICore
import Synchronization
import Testing

/// ``SharedWork`` as its two users hold it: inside an actor. `joined` counts the callers that
/// reached the wait, so a test knows when they all share the work (no timing involved: the test
/// suite runs beside end-to-end tests that keep both cores busy).
private actor Shared {
    private var work = SharedWork<String, Int>()
    private(set) var joined = 0

    func value(_ body: @escaping @Sendable () async throws -> Int) async throws -> Int {
        let (task, started) = work.join("key", body)
        defer { if started { work.ended("key", task) } }
        joined += 1
        return try await sharedOutcome(of: task) { await self.cancelled(task) }
    }

    private func cancelled(_ task: Task<Int, any Error>) { work.cancelled("key", task) }

    func waitUntilJoined(_ count: Int) async throws {
        while joined < count { try await Task.sleep(for: .milliseconds(5)) }
    }
}

/// Work that runs until released (or, failing that, for two minutes: a test that waits on it then
/// fails instead of hanging).
private final class Gate: Sendable {
    let released = Atomic<Bool>(false)
    let runs = Atomic<Int>(0)

    func body(_ result: Int) -> @Sendable () async throws -> Int {
        { [self] in
            runs.add(1, ordering: .relaxed)
            let deadline = ContinuousClock.now + .seconds(120)
            while !released.load(ordering: .relaxed) && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(5))
            }
            return result
        }
    }
}

struct SharedWorkTests {
    @Test func concurrentCallersShareOneRunAndOneCancelledCallerDoesNotStopIt() async throws {
        let shared = Shared()
        let gate = Gate()
        let first = Task { try await shared.value(gate.body(7)) }
        let second = Task { try await shared.value(gate.body(7)) }
        try await shared.waitUntilJoined(2)
        first.cancel()
        gate.released.store(true, ordering: .relaxed)
        #expect(try await second.value == 7)
        #expect(gate.runs.load(ordering: .relaxed) == 1)
        // Once it ended, the next caller runs it again.
        #expect(try await shared.value(gate.body(8)) == 8)
        #expect(gate.runs.load(ordering: .relaxed) == 2)
    }

    /// Only work that was cancelled ends in CancellationError here: left alone, it returns 1.
    @Test func theWorkStopsWhenEveryCallerWasCancelled() async throws {
        let shared = Shared()
        let gate = Gate()
        let callers = (0..<3).map { _ in Task { try await shared.value(gate.body(1)) } }
        try await shared.waitUntilJoined(3)
        for caller in callers { caller.cancel() }
        for caller in callers {
            await #expect(throws: CancellationError.self) { try await caller.value }
        }
        #expect(gate.runs.load(ordering: .relaxed) == 1)
    }
}
