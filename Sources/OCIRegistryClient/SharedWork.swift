/// Work that concurrent callers asking for the same key share, kept inside an actor: the first
/// caller starts it, the others wait for its outcome; once it ended (done or failed) the next
/// caller starts it again. Token requests per scope and the discovery of each registry's endpoint
/// go through it.
struct SharedWork<Key: Hashable & Sendable, Value: Sendable> {
    private var running: [Key: Task<Value, any Error>] = [:]

    /// The outcome of the work for `key`: the one running, or `work` started now. `finished` runs
    /// (on the actor, once) when the caller that started it has the outcome.
    mutating func task(for key: Key, _ work: @escaping @Sendable () async throws -> Value) -> (
        task: Task<Value, any Error>, started: Bool
    ) {
        if let task = running[key] { return (task, false) }
        let task = Task { try await work() }
        running[key] = task
        return (task, true)
    }

    /// The work for `key` ended; the next caller starts it again.
    mutating func ended(_ key: Key) { running[key] = nil }
}
