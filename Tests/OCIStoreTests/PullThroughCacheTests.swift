import Foundation
import OCICore
import OCIStore
import Testing

/// The pull-through cache's own rules: links per repository, tags with their check time, and
/// least-recently-used aging within `maxBytes`.
struct PullThroughCacheTests {
    func temporaryRoot() -> String {
        NSTemporaryDirectory() + "ferry-cache-\(UInt64.random(in: 0...UInt64.max))"
    }

    func store(_ cache: PullThroughCache, _ bytes: [UInt8], in repository: RepositoryName, now: Int64) throws -> Digest
    {
        let digest = Digest.of(bytes)
        let ingest = try cache.makeIngest(for: digest, size: Int64(bytes.count))
        try bytes.withUnsafeBytes { try ingest.write($0) }
        try ingest.commit()
        try cache.link(digest, to: repository, now: now)
        return digest
    }

    @Test func servesOnlyWhereLinkedAndAgesOutTheLeastRecentlyUsed() throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = try PullThroughCache(root: root, maxBytes: 2500)
        let app = try RepositoryName("docker.io/team/app")
        let other = try RepositoryName("docker.io/team/other")
        let first = try store(cache, Array(repeating: 1, count: 1000), in: app, now: 100)
        let second = try store(cache, Array(repeating: 2, count: 1000), in: app, now: 200)
        #expect(try cache.linked(first, in: app, now: 300) == 1000)
        // Fetched for one repository: not served from another until linked there.
        #expect(try cache.linked(first, in: other, now: 300) == nil)
        #expect(cache.storedSize(first) == 1000)

        // A third entry goes over the limit: the least recently used one (second: first was read at 300) goes.
        let third = try store(cache, Array(repeating: 3, count: 1000), in: other, now: 400)
        let removed = try cache.evict()
        #expect(removed.entries == 1 && removed.bytes == 1000)
        #expect(cache.storedSize(second) == nil)
        #expect(try cache.linked(second, in: app, now: 500) == nil)
        #expect(try cache.linked(first, in: app, now: 500) == 1000)
        #expect(try cache.totalBytes() == 2000)
        // Entries in use are spared even over the limit.
        _ = try store(cache, Array(repeating: 4, count: 1000), in: other, now: 600)
        try cache.evict(sparing: [first, third])
        #expect(cache.storedSize(first) == 1000 && cache.storedSize(third) == 1000)
    }

    @Test func tagsKeepTheirCheckTimeAndIngestsCheckTheirSize() throws {
        let root = temporaryRoot()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let cache = try PullThroughCache(root: root, maxBytes: nil)
        let app = try RepositoryName("docker.io/team/app")
        let tag = try Tag("1.0")
        #expect(try cache.tag(tag, in: app) == nil)
        let digest = Digest.of(Array("x".utf8))
        try cache.setTag(tag, in: app, to: digest, checked: 42)
        #expect(try cache.tag(tag, in: app) == PullThroughCache.CachedTag(digest: digest, checked: 42))
        // Short content is never made visible; its temporary file goes.
        let ingest = try cache.makeIngest(for: digest, size: 10)
        try Array("abc".utf8).withUnsafeBytes { try ingest.write($0) }
        #expect(throws: StoreError.self) { try ingest.commit() }
        ingest.cancel()
        #expect(cache.storedSize(digest) == nil)
        #expect(try FileManager.default.contentsOfDirectory(atPath: "\(root)/ingest") == [])
    }
}
