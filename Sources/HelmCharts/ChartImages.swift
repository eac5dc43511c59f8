import Foundation
import OCICore
import Yams

/// The images a chart refers to, found without rendering it: `image:` values and maps
/// (`registry`, `repository`, `tag`, `digest`) in its values files, literal references in its
/// templates (`image:` lines, and any fully qualified `host/name:tag` elsewhere: container
/// `args`, `env` values), in the chart and its subcharts. What names an image only through a
/// template expression that no values entry answers is listed as unresolved.
public struct ChartImages: Sendable, Equatable {
    public struct Found: Sendable, Equatable {
        public var reference: Reference
        /// Where: `nginx/values.yaml:12 (image)`, `nginx/templates/job.yaml:30`.
        public var origin: String
    }
    public struct Unresolved: Sendable, Equatable {
        public var text: String
        public var origin: String
    }

    public var found: [Found] = []
    public var unresolved: [Unresolved] = []

    public init(archive: ChartArchive, appVersion: String?) {
        var seen: Set<Reference> = []
        var imagePaths: [[String]] = []
        func note(_ text: String, origin: String) {
            guard let reference = try? Reference(text) else {
                unresolved.append(Unresolved(text: text, origin: origin + " (not a reference)"))
                return
            }
            if seen.insert(reference).inserted { found.append(Found(reference: reference, origin: origin)) }
        }
        // What the chart says it needs (Artifact Hub's `artifacthub.io/images` annotation).
        if let root = try? Yams.compose(yaml: archive.chartYAML),
            let listed = root.mapping?["annotations"]?.mapping?["artifacthub.io/images"]?.string,
            let images = try? Yams.compose(yaml: listed)?.sequence
        {
            for item in images {
                if let image = item.mapping?["image"]?.string {
                    note(image, origin: "Chart.yaml (artifacthub.io/images)")
                }
            }
        }
        let values = archive.files.filter { $0.path.hasSuffix("values.yaml") }
        let templates = archive.files.filter { !$0.path.hasSuffix("values.yaml") }
        for file in values {
            guard let root = try? Yams.compose(yaml: file.text) else { continue }
            // Bitnami's charts put every image under `global.imageRegistry` when it is set.
            let globalRegistry = root.mapping?["global"]?.mapping?["imageRegistry"]?.string.flatMap {
                $0.isEmpty ? nil : $0
            }
            walk(root, path: []) { node, path in
                let origin = "\(file.path):\(node.mark?.line ?? 0) (\(path.joined(separator: ".")))"
                guard let key = path.last, key == "image" || key.hasSuffix("Image") else {
                    // Any other string: a fully qualified reference inside it (args, env).
                    if let text = node.string, node.scalar != nil {
                        for token in Self.qualifiedReferences(in: text) { note(token, origin: origin) }
                    }
                    return
                }
                if node.scalar != nil {
                    // `image: null`, `pullImage: true` and the like name nothing.
                    guard node.null == nil, node.bool == nil, let text = node.string, !text.isEmpty else { return }
                    if text.contains("{{") {
                        unresolved.append(Unresolved(text: text, origin: origin))
                    } else if !(text.contains("/") || text.contains(":") || text.contains("@")) {
                        // A bare name (`proxyv2`) is completed by a template this scan does not run.
                        unresolved.append(Unresolved(text: text, origin: origin + " (a bare name)"))
                    } else {
                        imagePaths.append(path)
                        note(text, origin: origin)
                    }
                } else if let map = node.mapping {
                    // {registry, repository, tag, digest}, or ingress-nginx's {registry, image, tag, digest}.
                    guard let repository = (map["repository"] ?? map["image"])?.string, !repository.isEmpty else {
                        if map["tag"] != nil || map["registry"] != nil {
                            unresolved.append(Unresolved(text: "(a map without repository)", origin: origin))
                        }
                        return
                    }
                    imagePaths.append(path)
                    var text = repository
                    if let registry = globalRegistry ?? map["registry"]?.string, !registry.isEmpty {
                        text = "\(registry)/\(text)"
                    }
                    let tag = map["tag"]?.string ?? ""
                    let digest = map["digest"]?.string ?? ""
                    var where_ = origin
                    if !tag.isEmpty {
                        text += ":\(tag)"
                    } else if digest.isEmpty, let appVersion, !appVersion.isEmpty {
                        text += ":\(appVersion)"
                        where_ += " (tag from appVersion)"
                    } else if digest.isEmpty {
                        where_ += " (no tag: latest)"
                    }
                    if !digest.isEmpty { text += "@\(digest)" }
                    if text.contains("{{") {
                        unresolved.append(Unresolved(text: text, origin: origin))
                    } else {
                        note(text, origin: where_)
                    }
                }
            }
        }
        for file in templates {
            for (number, line) in file.text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let origin = "\(file.path):\(number + 1)"
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                var value = Substring(trimmed)
                if value.hasPrefix("- ") { value = value.dropFirst(2) }
                if value.hasPrefix("image:") {
                    let text = value.dropFirst("image:".count).trimmingCharacters(
                        in: CharacterSet(charactersIn: " \"'"))
                    if text.contains("{{") {
                        // Answered by a values entry (`.Values.image.repository`, `.Values.image`)?
                        let answered = Self.valuesPaths(in: text).contains { used in
                            imagePaths.contains { found in used.starts(with: found) || found.starts(with: used) }
                        }
                        if !answered { unresolved.append(Unresolved(text: text, origin: origin)) }
                    } else if !text.isEmpty {
                        note(text, origin: origin)
                    }
                    continue
                }
                for token in Self.qualifiedReferences(in: String(line)) { note(token, origin: origin) }
            }
        }
    }

    private func walk(_ node: Node, path: [String], _ visit: (Node, [String]) -> Void) {
        if let map = node.mapping {
            for (key, value) in map {
                guard let name = key.string else { continue }
                if value.mapping != nil && !(name == "image" || name.hasSuffix("Image")) {
                    walk(value, path: path + [name], visit)
                } else if let list = value.sequence {
                    for item in list { walk(item, path: path + [name], visit) }
                } else {
                    visit(value, path + [name])
                }
            }
        } else if let list = node.sequence {
            for item in list { walk(item, path: path, visit) }
        } else {
            visit(node, path)
        }
    }

    /// Tokens of `text` that are fully qualified references: a registry host (with a dot or a
    /// port, or `localhost`), a path, and a tag or digest: `--image=quay.io/org/app:1.2`.
    static func qualifiedReferences(in text: String) -> [String] {
        let separators = CharacterSet.whitespaces.union(CharacterSet(charactersIn: "\"'`=,;()[]{}|"))
        return text.components(separatedBy: separators).compactMap { token in
            guard let slash = token.firstIndex(of: "/"), !token.contains("://") else { return nil }
            let host = token[..<slash]
            guard host.contains(".") || host.contains(":") || host == "localhost" else { return nil }
            let last = token[token.index(after: slash)...].split(separator: "/").last ?? ""
            guard last.contains(":") || last.contains("@") else { return nil }
            guard (try? Reference(token)) != nil else { return nil }
            return token
        }
    }

    /// `.Values.a.b.c` paths named in a template expression: [["a", "b", "c"]].
    static func valuesPaths(in text: String) -> [[String]] {
        var paths: [[String]] = []
        var rest = Substring(text)
        while let range = rest.range(of: ".Values.") {
            let tail = rest[range.upperBound...]
            let name = tail.prefix { $0.isLetter || $0.isNumber || $0 == "_" || $0 == "." || $0 == "-" }
            paths.append(name.split(separator: ".").map(String.init))
            rest = tail.dropFirst(name.count)
        }
        return paths
    }
}
