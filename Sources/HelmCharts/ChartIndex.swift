import Foundation
import OCICore
import Yams

/// A chart repository's `index.yaml` (Helm's repository format): for each chart name, its versions
/// with the archive's URLs, sha256 digest and creation time.
public struct ChartIndex: Sendable {
    public struct Entry: Sendable, Equatable {
        public var name: String
        public var version: String
        /// Absolute or relative to the repository's URL.
        public var urls: [String]
        /// The archive's digest (the index gives sha256 hex); nil when absent or malformed.
        public var digest: Digest?
        public var created: String?
    }

    public var entries: [String: [Entry]]

    /// The largest index read (the biggest public repositories' are a few tens of MiB; one is
    /// read at a time).
    public static let maximumSize = 128 << 20

    public init(yaml bytes: [UInt8], url: String) throws(ChartError) {
        guard let text = String(bytes: bytes, encoding: .utf8) else {
            throw .invalidIndex(url: url, why: "not UTF-8 text")
        }
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch {
            throw .invalidIndex(url: url, why: "invalid YAML: \(String(describing: error).prefix(200))")
        }
        guard let entriesNode = root?.mapping?["entries"], let byName = entriesNode.mapping else {
            throw .invalidIndex(url: url, why: "no 'entries' mapping")
        }
        var entries: [String: [Entry]] = [:]
        for (nameNode, versionsNode) in byName {
            guard let name = nameNode.string, let versions = versionsNode.sequence else {
                throw .invalidIndex(url: url, why: "entries must map chart names to lists of versions")
            }
            entries[name] = versions.compactMap { node -> Entry? in
                guard let map = node.mapping, let version = map["version"]?.string else { return nil }
                return Entry(
                    name: name, version: version, urls: map["urls"]?.sequence?.compactMap(\.string) ?? [],
                    digest: map["digest"]?.string.flatMap { try? Digest("sha256:\($0.lowercased())") },
                    created: map["created"]?.string)
            }
        }
        self.entries = entries
    }

    /// The entry for `request`'s name and version, with an archive URL and a digest to check it by.
    public func entry(for request: ChartRequest) throws(ChartError) -> Entry {
        let versions = entries[request.name] ?? []
        guard let entry = versions.first(where: { $0.version == request.version }) else {
            throw .notInIndex(
                chart: "\(request.name) \(request.version)", url: request.indexURL, known: versions.map(\.version))
        }
        guard !entry.urls.isEmpty else {
            throw .invalidIndex(url: request.indexURL, why: "\(request.name) \(request.version) has no urls")
        }
        guard entry.digest != nil else {
            throw .invalidIndex(
                url: request.indexURL,
                why: "\(request.name) \(request.version) has no sha256 digest to check the archive against")
        }
        return entry
    }

    /// The archive's absolute URL: `urls[0]`, resolved against the repository's URL.
    public static func archiveURL(_ entry: Entry, repository: String) -> String {
        guard let first = entry.urls.first else { return repository }
        return URL(string: first, relativeTo: URL(string: repository + "/"))?.absoluteURL.absoluteString ?? first
    }
}
