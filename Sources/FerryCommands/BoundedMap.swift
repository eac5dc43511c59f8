/// Runs `transform` over `items` with at most `width` at once, and returns the results in the
/// items' order; `done` sees each result as it arrives (for progress). The first error cancels
/// the rest. The one bounded fan-out an export uses for tags, manifests and referrers.
func boundedMap<Item: Sendable, Result: Sendable>(
    _ items: [Item], width: Int, transform: @escaping @Sendable (Item) async throws -> Result,
    done: (Result) -> Void = { _ in }
) async throws -> [Result] {
    try await withThrowingTaskGroup(of: (Int, Result).self) { group in
        var results = [Result?](repeating: nil, count: items.count)
        var next = 0
        func addNext() {
            guard next < items.count else { return }
            let (i, item) = (next, items[next])
            group.addTask { (i, try await transform(item)) }
            next += 1
        }
        for _ in 0..<min(max(1, width), items.count) { addNext() }
        while let (i, result) = try await group.next() {
            results[i] = result
            done(result)
            addNext()
        }
        return results.compactMap { $0 }
    }
}
