/// Work that concurrent callers asking for the same key share, kept inside an actor: the first
/// caller starts it, later ones join it, and all get its outcome. It is cancelled only when every
/// caller waiting for it was (one request going away, say a client of the pull-through cache that
/// hung up, does not fail the others). Once it ended, the next caller starts it again. Token
/// requests per scope, the discovery of each registry's endpoint and the appliance's password
/// checks go through it.
public struct SharedWork<Key: Hashable & Sendable, Value: Sendable>: Sendable {
    public typealias Work = Task<Value, any Error>

    private struct Running {
        var task: Work
        var waiting = 1
        var cancelled = 0
    }
    private var running: [Key: Running] = [:]

    public init() {}

    /// Joins the work for `key`, starting `work` when none runs. `started`: this caller began it,
    /// and calls ``ended(_:_:)`` once it has the outcome.
    public mutating func join(_ key: Key, _ work: @escaping @Sendable () async throws -> Value) -> (
        task: Work, started: Bool
    ) {
        if var joined = running[key] {
            joined.waiting += 1
            running[key] = joined
            return (joined.task, false)
        }
        let task = Work { try await work() }
        running[key] = Running(task: task)
        return (task, true)
    }

    /// A caller waiting for `task` was cancelled: once every one was, so is the work.
    public mutating func cancelled(_ key: Key, _ task: Work) {
        guard var joined = running[key], joined.task == task else { return }
        joined.cancelled += 1
        running[key] = joined
        if joined.cancelled == joined.waiting { task.cancel() }
    }

    /// The work `task` for `key` ended: the next caller starts it again.
    public mutating func ended(_ key: Key, _ task: Work) {
        if running[key]?.task == task { running[key] = nil }
    }

}

/// Waits for the outcome of shared work (``SharedWork``), telling `cancelled` (on the caller's
/// actor) when the waiting task is cancelled; the outcome comes at once when that cancels the work.
public func sharedOutcome<Value: Sendable>(
    of task: Task<Value, any Error>, cancelled: @escaping @Sendable () async -> Void
) async throws -> Value {
    try await withTaskCancellationHandler {
        try await task.value
    } onCancel: {
        Task { await cancelled() }
    }
}
