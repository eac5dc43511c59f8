import Foundation
import HelmCharts
import OCIBundle
import OCICore
import Yams

/// One image asked for, and where it was asked for (`images.txt:12`, or `argument 2`).
public struct ImageRequest: Sendable, Hashable {
    public var reference: Reference
    public var origin: String
    /// A whole repository: every tag these filters keep (listed from the registry when the export
    /// starts); nil for one image.
    public var tags: TagFilter?
    /// The name the bundle carries the image under, when not its source's (image-syncer's renames);
    /// for a whole repository, the repository its tags go to.
    public var name: Reference?
    public init(reference: Reference, origin: String, tags: TagFilter? = nil, name: Reference? = nil) {
        self.reference = reference
        self.origin = origin
        self.tags = tags
        self.name = name
    }

    /// What the bundle calls it: the rename, else the source's name.
    public var carried: Reference { name ?? reference }
}

extension ImageRequest {
    /// Two requests may not be stored under one name (`nginx:1.25` and `nginx:1.25@sha256:…`),
    /// nor a request under a chart's: checked on the lists, and again once a chart's images join.
    public static func checkNames(_ requests: [ImageRequest], charts: [ChartRequest]) throws(ImageListError) {
        var problems: [ImageListError.Problem] = []
        var names: [String: (reference: String, origin: String)] = [:]
        func claim(_ reference: Reference, origin: String) {
            let name = BundleWriter.imageName(reference)
            if let other = names[name] {
                problems.append(
                    .init(
                        file: origin, line: nil,
                        message: "\(reference) would be stored as \(name), like \(other.reference) (\(other.origin))"))
            }
            names[name] = (reference.description, origin)
        }
        for chart in charts {
            claim(chart.reference, origin: chart.origin)
        }
        // (A whole repository is claimed tag by tag, once its tags are listed.)
        for request in requests where request.tags == nil { claim(request.carried, origin: request.origin) }
        if !problems.isEmpty { throw .invalid(problems) }
    }
}

/// A bad entry of image-syncer's images.json (reported with its file and source).
struct SyncerEntryError: Error, CustomStringConvertible {
    var description: String
}

/// Reads image lists: plain text (one reference a line, `#` comments, blank lines), or YAML, either
/// a plain `images:` list or mindthegap's form (registry → `images` → repository → list of tags).
/// Both may also name Helm charts of classic chart repositories: `chart REPO_URL NAME VERSION` in
/// text, a `charts:` list of `{repo, name, version}` in YAML (Hauler's `repoURL` is read too).
///
/// Every bad entry is reported, each with its file and line, before anything is pulled.
public enum ImageList {
    public struct Contents: Sendable, Equatable {
        public var images: [ImageRequest] = []
        public var charts: [ChartRequest] = []
    }

    /// `syncer`: image-syncer's images.json (also any `.json` list).
    public static func load(path: String, syncer: Bool = false) throws(ImageListError) -> Contents {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw .unreadable(path, SystemError.unreadable(path))
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw .invalid([.init(file: path, line: nil, message: "not UTF-8 text")])
        }
        if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
            return try parseYAML(text, file: path)
        }
        if syncer || path.hasSuffix(".json") {
            return Contents(images: try parseImageSyncer(data, file: path))
        }
        return try parseText(text, file: path)
    }

    /// image-syncer's `images.json`: source → destination (a string or a list of them). A source
    /// without a tag means every tag; `repo:t1,t2` several; a destination without a tag keeps the
    /// source's tags. The destination is the name the bundle carries the image under.
    public static func parseImageSyncer(_ data: Data, file: String) throws(ImageListError) -> [ImageRequest] {
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw .invalid([.init(file: file, line: nil, message: "expected a JSON object of source: destination")])
        }
        var requests: [ImageRequest] = []
        var problems: [ImageListError.Problem] = []
        for (source, value) in object.sorted(by: { $0.key < $1.key }) {
            let destinations = (value as? [String]) ?? (value as? String).map { [$0] } ?? []
            guard !destinations.isEmpty else {
                problems.append(
                    .init(
                        file: file, line: nil, message: "\(source): the destination must be a name or a list of names"))
                continue
            }
            do {
                requests += try syncerRequests(source: source, destinations: destinations, file: file)
            } catch {
                problems.append(.init(file: file, line: nil, message: "\(source): \(error)"))
            }
        }
        if !problems.isEmpty { throw .invalid(problems) }
        return requests
    }

    static func syncerRequests(source: String, destinations: [String], file: String) throws -> [ImageRequest] {
        // repo, repo:tag, repo:t1,t2, repo@digest (the tags follow the last ':' after the last '/').
        var repository = source
        var tags: [String] = []
        if !source.contains("@"), let colon = source.lastIndex(of: ":"),
            source.lastIndex(of: "/").map({ colon > $0 }) ?? true
        {
            repository = String(source[..<colon])
            tags = source[source.index(after: colon)...].split(separator: ",").map {
                $0.trimmingCharacters(in: .whitespaces)
            }
        }
        var requests: [ImageRequest] = []
        for given in destinations {
            // An empty destination (image-syncer: the default one) keeps the source's name.
            let destination = given.isEmpty ? String(repository.split(separator: "@").first ?? "") : given
            let origin = "\(file): \(source)"
            let target = try Reference(destination)
            guard target.digest == nil else {
                throw SyncerEntryError(
                    description: "a destination is named by repository or tag, not digest (\(destination))")
            }
            let targetIsRepository = (try? Reference(repository: destination)) != nil
            if source.contains("@") {
                let reference = try Reference(source)
                let name =
                    targetIsRepository
                    ? Reference(
                        registry: target.registry, repository: target.repository, tag: nil, digest: reference.digest)
                    : target
                requests.append(ImageRequest(reference: reference, origin: origin, name: name))
            } else if tags.isEmpty {
                guard targetIsRepository else {
                    throw SyncerEntryError(description: "every tag of \(source) cannot go to one tag (\(destination))")
                }
                requests.append(
                    ImageRequest(
                        reference: try Reference(repository: repository), origin: origin, tags: TagFilter(),
                        name: Reference(registry: target.registry, repository: target.repository, tag: nil, digest: nil)
                    ))
            } else {
                guard targetIsRepository || tags.count == 1 else {
                    throw SyncerEntryError(
                        description: "\(tags.count) tags of \(source) cannot go to one tag (\(destination))")
                }
                for tag in tags {
                    let reference = try Reference("\(repository):\(tag)")
                    let name =
                        targetIsRepository
                        ? Reference(
                            registry: target.registry, repository: target.repository, tag: try Tag(tag), digest: nil)
                        : target
                    requests.append(ImageRequest(reference: reference, origin: origin, name: name))
                }
            }
        }
        return requests
    }

    public static func parseText(_ text: String, file: String) throws(ImageListError) -> Contents {
        var requests: [ImageRequest] = []
        var charts: [ChartRequest] = []
        var problems: [ImageListError.Problem] = []
        for (number, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated()
        {
            var line = Substring(rawLine)
            if let hash = line.firstIndex(of: "#"),
                hash == line.startIndex || line[line.index(before: hash)].isWhitespace
            {
                line = line[..<hash]
            }
            let entry = line.trimmingCharacters(in: .whitespaces)
            if entry.isEmpty { continue }
            let fields = entry.split(whereSeparator: \.isWhitespace).map(String.init)
            if fields.first == "chart" {
                do throws(ChartError) {
                    guard fields.count == 4 else { throw .invalidRequest("expected `chart REPO_URL NAME VERSION`") }
                    charts.append(
                        try ChartRequest(
                            repository: fields[1], name: fields[2], version: fields[3], origin: "\(file):\(number + 1)")
                    )
                } catch {
                    problems.append(.init(file: file, line: number + 1, message: error.description))
                }
                continue
            }
            do {
                requests.append(ImageRequest(reference: try Reference(entry), origin: "\(file):\(number + 1)"))
            } catch {
                problems.append(.init(file: file, line: number + 1, message: error.description))
            }
        }
        if !problems.isEmpty { throw .invalid(problems) }
        return Contents(images: requests, charts: charts)
    }

    public static func parseYAML(_ text: String, file: String) throws(ImageListError) -> Contents {
        let root: Node?
        do {
            root = try Yams.compose(yaml: text)
        } catch let error as YamlError {
            throw .invalid([.init(file: file, line: Self.line(of: error), message: "invalid YAML: \(error)")])
        } catch {
            throw .invalid([.init(file: file, line: nil, message: "invalid YAML: \(error)")])
        }
        guard let root, let mapping = root.mapping else {
            throw .invalid([.init(file: file, line: root.map(line), message: "expected a mapping at the top level")])
        }
        var requests: [ImageRequest] = []
        var charts: [ChartRequest] = []
        var problems: [ImageListError.Problem] = []
        func add(_ string: String, at node: Node) {
            do {
                requests.append(ImageRequest(reference: try Reference(string), origin: "\(file):\(line(node))"))
            } catch {
                problems.append(.init(file: file, line: line(node), message: error.description))
            }
        }
        for (key, value) in mapping {
            guard let keyString = key.string else {
                problems.append(.init(file: file, line: line(key), message: "keys must be strings"))
                continue
            }
            if keyString == "images" {
                // Plain form: images: [ref, ref, ...]
                guard let list = value.sequence else {
                    problems.append(
                        .init(file: file, line: line(value), message: "'images' must be a list of references"))
                    continue
                }
                for item in list {
                    if let entry = item.mapping {
                        // A whole repository: {name: REPO, allTags: true, tagsRegex, tagsSemver, tagsLatest, excludeTags}
                        guard let name = entry["name"]?.string, entry["allTags"]?.bool == true else {
                            problems.append(
                                .init(
                                    file: file, line: line(item),
                                    message: "a mapping in 'images' needs name and allTags: true"))
                            continue
                        }
                        let known: Set<String> = [
                            "name", "allTags", "tagsRegex", "tagsSemver", "tagsLatest", "excludeTags",
                        ]
                        let unknown = entry.keys.compactMap(\.string).filter { !known.contains($0) }
                        let badLatest = entry["tagsLatest"].map { $0.int == nil } ?? false
                        let badExclude =
                            entry["excludeTags"].map { node in
                                node.string == nil && (node.sequence?.contains { $0.string == nil } ?? true)
                            } ?? false
                        guard unknown.isEmpty, !badLatest, !badExclude else {
                            let why =
                                !unknown.isEmpty
                                ? "unknown key(s) \(unknown.sorted().joined(separator: ", ")) (known: \(known.sorted().joined(separator: ", ")))"
                                : badLatest
                                    ? "tagsLatest must be a number" : "excludeTags must be a pattern or a list of them"
                            problems.append(.init(file: file, line: line(item), message: why))
                            continue
                        }
                        let filter = TagFilter(
                            regex: entry["tagsRegex"]?.string, semver: entry["tagsSemver"]?.string,
                            exclude: entry["excludeTags"]?.sequence?.compactMap(\.string)
                                ?? entry["excludeTags"]?.string.map { [$0] } ?? [],
                            latest: entry["tagsLatest"]?.int)
                        do {
                            let reference = try Reference(repository: name)
                            requests.append(
                                ImageRequest(
                                    reference: reference, origin: "\(file):\(line(item))", tags: try filter.validated())
                            )
                        } catch {
                            problems.append(.init(file: file, line: line(item), message: "\(error)"))
                        }
                        continue
                    }
                    guard let s = item.string, item.scalar != nil else {
                        problems.append(.init(file: file, line: line(item), message: "expected an image reference"))
                        continue
                    }
                    add(s, at: item)
                }
                continue
            }
            if keyString == "charts" {
                // charts: [{repo: URL, name: NAME, version: VERSION}, ...]
                guard let list = value.sequence else {
                    problems.append(.init(file: file, line: line(value), message: "'charts' must be a list"))
                    continue
                }
                for item in list {
                    let map = item.mapping
                    let repository = (map?["repo"] ?? map?["repoURL"] ?? map?["url"])?.string
                    guard let repository, let name = map?["name"]?.string, let version = map?["version"]?.string
                    else {
                        problems.append(
                            .init(file: file, line: line(item), message: "a chart needs repo, name and version"))
                        continue
                    }
                    do {
                        charts.append(
                            try ChartRequest(
                                repository: repository, name: name, version: version, origin: "\(file):\(line(item))"))
                    } catch {
                        problems.append(.init(file: file, line: line(item), message: error.description))
                    }
                }
                continue
            }
            // mindthegap form: REGISTRY: { images: { REPOSITORY: [TAG, ...] } }
            guard let registryMap = value.mapping, let images = registryMap["images"] else {
                problems.append(
                    .init(file: file, line: line(key), message: "registry '\(keyString)' needs an 'images' mapping"))
                continue
            }
            guard let repositories = images.mapping else {
                problems.append(
                    .init(
                        file: file, line: line(images),
                        message: "'images' of '\(keyString)' must map repositories to tag lists"))
                continue
            }
            for (repositoryNode, tagsNode) in repositories {
                guard let repository = repositoryNode.string else {
                    problems.append(
                        .init(file: file, line: line(repositoryNode), message: "expected a repository name"))
                    continue
                }
                guard let tags = tagsNode.sequence, !tags.isEmpty else {
                    problems.append(
                        .init(
                            file: file, line: line(tagsNode), message: "'\(repository)' needs a non-empty list of tags")
                    )
                    continue
                }
                for tagNode in tags {
                    guard let tag = tagNode.string, !tag.isEmpty else {
                        problems.append(.init(file: file, line: line(tagNode), message: "expected a tag"))
                        continue
                    }
                    let separator = tag.contains(":") ? "@" : ":"  // a digest given as a "tag"
                    add("\(keyString)/\(repository)\(separator)\(tag)", at: tagNode)
                }
            }
        }
        if !problems.isEmpty { throw .invalid(problems) }
        return Contents(images: requests, charts: charts)
    }

    static func line(_ node: Node) -> Int { (node.mark?.line ?? 0) }

    static func line(of error: YamlError) -> Int? {
        switch error {
        case .scanner(_, _, let mark, _), .parser(_, _, let mark, _), .composer(_, _, let mark, _):
            return mark.line
        default:
            return nil
        }
    }
}

public enum ImageListError: Error, Equatable, CustomStringConvertible {
    public struct Problem: Equatable, Sendable, CustomStringConvertible {
        public var file: String
        public var line: Int?
        public var message: String
        public var description: String {
            if let line { return "\(file):\(line): \(message)" }
            return "\(file): \(message)"
        }
    }
    case unreadable(String, String)
    case invalid([Problem])
    case empty

    public var description: String {
        switch self {
        case .unreadable(_, let why): "cannot read the image list: \(why)"
        case .invalid(let problems): problems.map(\.description).joined(separator: "\n")
        case .empty: "no images given: pass references as arguments or an image list with -f"
        }
    }
}
