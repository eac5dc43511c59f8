import Foundation
import OCICore
import Yams

/// A chart as the OCI artifact `helm push` makes of it: the archive as the one layer
/// (`application/vnd.cncf.helm.chart.content.v1.tar+gzip`), `Chart.yaml` as JSON for the config
/// (`application/vnd.cncf.helm.config.v1+json`, in the field order of Helm's own encoder), and
/// Helm's annotations on the manifest, so `helm pull oci://...` takes it as one it pushed.
public struct ChartArtifact: Sendable {
    public static let configMediaType = MediaType.helmConfig
    public static let contentMediaType = MediaType.helmChartContent

    public var name: String
    public var version: String
    public var appVersion: String?
    public var config: [UInt8]
    public var manifest: [UInt8]

    /// - Parameters:
    ///   - chartYAML: the archive's `Chart.yaml`; its name and version must be the requested ones.
    ///   - archive: the archive's digest and size (the layer).
    ///   - created: the index entry's creation time, for `org.opencontainers.image.created`.
    public init(chartYAML: String, archive: Descriptor, request: ChartRequest, created: String?) throws(ChartError) {
        let chart = "\(request.name) \(request.version)"
        let root: Node?
        do {
            root = try Yams.compose(yaml: chartYAML)
        } catch {
            throw .invalidArchive(chart: chart, why: "Chart.yaml is not YAML")
        }
        guard let map = root?.mapping else { throw .invalidArchive(chart: chart, why: "Chart.yaml is not a mapping") }
        guard let name = map["name"]?.string, let version = map["version"]?.string else {
            throw .invalidArchive(chart: chart, why: "Chart.yaml has no name or version")
        }
        guard name == request.name, version == request.version else {
            throw .invalidArchive(chart: chart, why: "the archive holds \(name) \(version)")
        }
        self.name = name
        self.version = version
        appVersion = map["appVersion"]?.string

        // Helm's chart.Metadata, field by field, empty fields left out.
        func string(_ key: String) -> GoJSON? { map[key]?.string.flatMap { $0.isEmpty ? nil : .string($0) } }
        func strings(_ node: Node?) -> GoJSON? {
            guard let list = node?.sequence?.compactMap(\.string), !list.isEmpty else { return nil }
            return .array(list.map(GoJSON.string))
        }
        func bool(_ key: String) -> GoJSON? { map[key]?.bool == true ? .bool(true) : nil }
        let maintainers = map["maintainers"]?.sequence?.compactMap { node -> GoJSON? in
            guard let m = node.mapping else { return nil }
            return .object(
                ["name", "email", "url"].compactMap { key in
                    m[key]?.string.flatMap { $0.isEmpty ? nil : (key, GoJSON.string($0)) }
                })
        }
        var annotations: [(String, String)] = []
        for (key, value) in map["annotations"]?.mapping ?? [:] {
            if let key = key.string, let value = value.string { annotations.append((key, value)) }
        }
        annotations.sort { $0.0 < $1.0 }
        let dependencies = map["dependencies"]?.sequence?.compactMap { node -> GoJSON? in
            guard let d = node.mapping else { return nil }
            // Helm writes name and repository always, the rest when set (import-values is left out).
            var fields: [(String, GoJSON)] = [("name", .string(d["name"]?.string ?? ""))]
            if let v = d["version"]?.string, !v.isEmpty { fields.append(("version", .string(v))) }
            fields.append(("repository", .string(d["repository"]?.string ?? "")))
            if let v = d["condition"]?.string, !v.isEmpty { fields.append(("condition", .string(v))) }
            if let tags = strings(d["tags"]) { fields.append(("tags", tags)) }
            if d["enabled"]?.bool == true { fields.append(("enabled", .bool(true))) }
            if let alias = d["alias"]?.string, !alias.isEmpty { fields.append(("alias", .string(alias))) }
            return .object(fields)
        }
        let fields: [(String, GoJSON?)] = [
            ("name", string("name")), ("home", string("home")), ("sources", strings(map["sources"])),
            ("version", string("version")), ("description", string("description")),
            ("keywords", strings(map["keywords"])),
            ("maintainers", maintainers.flatMap { $0.isEmpty ? nil : .array($0) }), ("icon", string("icon")),
            ("apiVersion", string("apiVersion")), ("condition", string("condition")), ("tags", string("tags")),
            ("appVersion", string("appVersion")), ("deprecated", bool("deprecated")),
            ("annotations", annotations.isEmpty ? nil : .object(annotations.map { ($0.0, .string($0.1)) })),
            ("kubeVersion", string("kubeVersion")),
            ("dependencies", dependencies.flatMap { $0.isEmpty ? nil : .array($0) }), ("type", string("type")),
        ]
        config = Array(GoJSON.object(fields.compactMap { key, value in value.map { (key, $0) } }).encoded().utf8)

        // The manifest's annotations: Helm's from the metadata, then the chart's own (which may not
        // replace the title or the version).
        var manifestAnnotations: [String: String] = [:]
        func add(_ key: String, _ value: String?) {
            if let value, !value.trimmingCharacters(in: .whitespaces).isEmpty { manifestAnnotations[key] = value }
        }
        add("org.opencontainers.image.description", map["description"]?.string)
        add("org.opencontainers.image.title", name)
        add("org.opencontainers.image.version", version)
        add("org.opencontainers.image.url", map["home"]?.string)
        add("org.opencontainers.image.created", created.map(Self.rfc3339))
        add("org.opencontainers.image.source", map["sources"]?.sequence?.first?.string)
        let authors = (map["maintainers"]?.sequence ?? []).compactMap(\.mapping).map { m -> String in
            let name = m["name"]?.string ?? ""
            let email = m["email"]?.string.flatMap { $0.isEmpty ? nil : " (\($0))" } ?? ""
            return name + email
        }
        add("org.opencontainers.image.authors", authors.isEmpty ? nil : authors.joined(separator: ", "))
        for (key, value) in annotations
        where key != "org.opencontainers.image.title" && key != "org.opencontainers.image.version" {
            manifestAnnotations[key] = value
        }
        let configDescriptor = GoJSON.object([
            ("mediaType", .string(Self.configMediaType)), ("digest", .string(Digest.of(config).description)),
            ("size", .number(Int64(config.count))),
        ])
        let layer = GoJSON.object([
            ("mediaType", .string(Self.contentMediaType)), ("digest", .string(archive.digest.description)),
            ("size", .number(archive.size)),
        ])
        manifest = Array(
            GoJSON.object([
                ("schemaVersion", .number(2)), ("mediaType", .string(MediaType.ociManifest)),
                ("config", configDescriptor), ("layers", .array([layer])),
                (
                    "annotations",
                    .object(manifestAnnotations.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
                ),
            ]).encoded().utf8)
    }

    /// `2024-05-01T10:20:30.123456789+02:00` → `2024-05-01T08:20:30Z` (as Helm writes it); any
    /// other text as it is.
    static func rfc3339(_ text: String) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var trimmed = text
        // Foundation reads at most milliseconds: drop digits past them.
        if let dot = text.firstIndex(of: "."),
            let end = text[dot...].firstIndex(where: { !$0.isNumber && $0 != "." })
        {
            let fraction = text[text.index(after: dot)..<end]
            trimmed = String(text[..<dot]) + "." + fraction.prefix(3) + text[end...]
        }
        guard let date = formatter.date(from: trimmed) ?? ISO8601DateFormatter().date(from: text) else { return text }
        let output = ISO8601DateFormatter()
        output.formatOptions = [.withInternetDateTime]
        return output.string(from: date)
    }
}

/// JSON written the way Go's `encoding/json` writes it: fields in the given order, no spaces,
/// `<`, `>`, `&`, U+2028 and U+2029 escaped.
enum GoJSON {
    case string(String)
    case number(Int64)
    case bool(Bool)
    case array([GoJSON])
    case object([(String, GoJSON)])

    func encoded() -> String {
        var out = ""
        write(into: &out)
        return out
    }

    private func write(into out: inout String) {
        switch self {
        case .string(let s): Self.quote(s, into: &out)
        case .number(let n): out += String(n)
        case .bool(let b): out += b ? "true" : "false"
        case .array(let items):
            out += "["
            for (i, item) in items.enumerated() {
                if i > 0 { out += "," }
                item.write(into: &out)
            }
            out += "]"
        case .object(let fields):
            out += "{"
            for (i, (key, value)) in fields.enumerated() {
                if i > 0 { out += "," }
                Self.quote(key, into: &out)
                out += ":"
                value.write(into: &out)
            }
            out += "}"
        }
    }

    private static func quote(_ s: String, into out: inout String) {
        out += "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "<", ">", "&", "\u{2028}", "\u{2029}":
                out += String(format: "\\u%04x", scalar.value)
            default:
                if scalar.value < 0x20 {
                    out += String(format: "\\u%04x", scalar.value)
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        out += "\""
    }
}
