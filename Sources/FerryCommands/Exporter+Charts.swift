import AsyncHTTPClient
import Foundation
import HelmCharts
import NIOCore
import NIOPosix
import OCICore
import OCIRegistryClient
import OCIStore

#if canImport(Glibc)
    import Glibc
#endif

extension Exporter {
    /// What to do with the images a chart names (`--chart-images`).
    public enum ChartImagesMode: String, Sendable, CaseIterable {
        /// List them (and what could not be resolved).
        case report
        /// List them and export them too.
        case add
    }

    /// A chart as exported: its name in the bundle and what it was found to need.
    public struct ChartSummary: Codable, Sendable {
        public struct Image: Codable, Sendable {
            public var reference: String
            public var origin: String
        }
        public struct Unresolved: Codable, Sendable {
            public var text: String
            public var origin: String
        }
        public var chart: String
        public var reference: String
        public var archive: String
        public var digest: String
        public var images: [Image]?
        public var unresolved: [Unresolved]?
    }

    struct FetchedChart: Sendable {
        var image: ResolvedImage
        var summary: ChartSummary
        var images: ChartImages?
        /// The archive's size when it was downloaded by this run (not found in the cache).
        var downloaded: Int64?
    }

    /// Fetches every chart: each repository's index once, then each archive (checked against the
    /// index's digest) into the cache, and makes the OCI artifact `helm push` would.
    func fetchCharts(_ charts: [ChartRequest], options: Options, store: BlobStore) async throws -> [FetchedChart] {
        progress.phase("Fetching \(charts.count) chart(s)")
        let repositories = Array(Set(charts.map(\.repository))).sorted()
        let client = self.client
        // One index at a time: each is parsed whole, and the largest are tens of MiB.
        let indexes = try await boundedMap(repositories, width: 1) { repository in
            let url = "\(repository)/index.yaml"
            let bytes = try await client.fetchResource(url: url) { response in
                do {
                    return Array(try await response.body.collect(upTo: ChartIndex.maximumSize).readableBytesView)
                } catch is NIOTooManyBytesError {
                    throw ChartError.invalidIndex(url: url, why: "larger than \(ChartIndex.maximumSize >> 20) MiB")
                }
            }
            return try ChartIndex(yaml: bytes, url: url)
        } done: { _ in
        }
        let byRepository = Dictionary(uniqueKeysWithValues: zip(repositories, indexes))
        let progress = self.progress
        let scan = options.chartImages != nil
        return try await boundedMap(charts, width: options.parallel) { request in
            guard let index = byRepository[request.repository] else {
                throw ChartError.invalidIndex(url: request.indexURL, why: "not fetched")
            }
            return try await fetchChart(request, entry: try index.entry(for: request), scan: scan, store: store)
        } done: { chart in
            progress.imageResolved(chart.summary.reference, digest: chart.summary.digest)
        }
    }

    private func fetchChart(_ request: ChartRequest, entry: ChartIndex.Entry, scan: Bool, store: BlobStore)
        async throws -> FetchedChart
    {
        let url = ChartIndex.archiveURL(entry, repository: request.repository)
        let chart = "\(request.name) \(request.version)"
        guard let digest = entry.digest else {
            throw ChartError.invalidIndex(url: request.indexURL, why: "\(chart) has no sha256 digest")
        }
        let cached = FileSystem.size(of: store.path(of: digest)) != nil
        if !cached {
            do {
                try await client.fetchResource(url: url) { response in
                    let limit = Int64(ChartArchive.maximumTotalSize)
                    if let length = response.headers.first(name: "Content-Length").flatMap({ Int64($0) }) {
                        guard length <= limit else {
                            throw ChartError.invalidArchive(chart: chart, why: "\(url) is larger than 100 MiB")
                        }
                        let writer = try store.makeWriter(for: digest, size: length)
                        defer { writer.cancel() }
                        for try await buffer in response.body {
                            try buffer.withUnsafeReadableBytes { try writer.write($0) }
                        }
                        try writer.commit()
                        return
                    }
                    // No length given: spooled to a temporary file first, since the cache takes
                    // a blob by its size.
                    let spool = "\(store.root)/ingest/chart-\(digest.encoded.prefix(16))-\(UUID().uuidString)"
                    guard FileManager.default.createFile(atPath: spool, contents: nil),
                        let output = FileHandle(forWritingAtPath: spool)
                    else { throw ChartError.invalidArchive(chart: chart, why: "cannot write into the cache") }
                    defer { unlink(spool) }
                    var size: Int64 = 0
                    do {
                        defer { try? output.close() }
                        for try await buffer in response.body {
                            size += Int64(buffer.readableBytes)
                            guard size <= limit else {
                                throw ChartError.invalidArchive(chart: chart, why: "\(url) is larger than 100 MiB")
                            }
                            try output.write(contentsOf: Data(buffer.readableBytesView))
                        }
                    }
                    let writer = try store.makeWriter(for: digest, size: size)
                    defer { writer.cancel() }
                    guard let input = FileHandle(forReadingAtPath: spool) else {
                        throw ChartError.invalidArchive(chart: chart, why: "cannot read the spooled archive")
                    }
                    defer { try? input.close() }
                    while let chunk = try input.read(upToCount: 1 << 20), !chunk.isEmpty {
                        try chunk.withUnsafeBytes { try writer.write($0) }
                    }
                    try writer.commit()
                }
            } catch StoreError.verification(let failure) {
                throw ChartError.digestMismatch(chart: chart, url: url, detail: "\(failure)")
            }
        }
        let path = store.path(of: digest)
        let size = FileSystem.size(of: path) ?? 0
        let archive = try await NIOThreadPool.singleton.runIfActive { try ChartArchive.read(path: path, chart: chart) }
        let layer = Descriptor(mediaType: ChartArtifact.contentMediaType, digest: digest, size: size)
        let artifact = try ChartArtifact(
            chartYAML: archive.chartYAML, archive: layer, request: request, created: entry.created)
        let configDigest = Digest.of(artifact.config)
        try store.put(artifact.config, as: configDigest)
        try store.put(artifact.manifest, as: Digest.of(artifact.manifest))
        let document = try ManifestDocument(bytes: artifact.manifest)
        let reference = request.reference
        let image = ResolvedImage(
            request: ImageRequest(reference: reference, origin: request.origin), top: document, documents: [document],
            blobs: [
                Descriptor(
                    mediaType: ChartArtifact.configMediaType, digest: configDigest, size: Int64(artifact.config.count)),
                layer,
            ], platforms: [])
        let images = scan ? ChartImages(archive: archive, appVersion: artifact.appVersion) : nil
        let summary = ChartSummary(
            chart: request.description, reference: reference.description, archive: url,
            digest: document.digest.description,
            images: images?.found.map { .init(reference: $0.reference.description, origin: $0.origin) },
            unresolved: images?.unresolved.map { .init(text: $0.text, origin: $0.origin) })
        return FetchedChart(image: image, summary: summary, images: images, downloaded: cached ? nil : size)
    }
}
