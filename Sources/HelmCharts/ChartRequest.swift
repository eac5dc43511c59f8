import Foundation
import OCICore

/// One chart asked for from a classic chart repository (`chart REPO_URL NAME VERSION` in a text
/// list, a `charts:` entry in YAML), and where it was asked for.
public struct ChartRequest: Sendable, Hashable, CustomStringConvertible {
    /// The repository's base URL, without a trailing slash (`https://charts.example.com/stable`).
    public var repository: String
    public var name: String
    public var version: String
    public var origin: String
    /// The name the chart is carried and served under, as an image would be: the repository's host
    /// and path, the chart's name, its version as the tag (`+` becomes `_`, as `helm push` does):
    /// `charts.example.com/stable/nginx:1.2.3`, pulled from the appliance with
    /// `helm pull oci://APPLIANCE/charts.example.com/stable/nginx --version 1.2.3`.
    public let reference: Reference

    /// Checks the URL and the names at once, so a bad entry is reported with the list's other problems.
    public init(repository: String, name: String, version: String, origin: String) throws(ChartError) {
        var base = repository
        while base.hasSuffix("/") { base.removeLast() }
        guard let url = URL(string: base), let scheme = url.scheme, ["https", "http"].contains(scheme),
            let host = url.host
        else { throw .invalidRequest("'\(repository)' is not an http(s):// chart repository URL") }
        // A password in the URL would be printed in summaries and errors: credentials go in --creds.
        guard url.user == nil, url.password == nil, url.query == nil else {
            throw .invalidRequest(
                "a chart repository URL takes no user, password or query; give credentials with --creds HOST=USER:PASSWORD"
            )
        }
        guard !name.isEmpty, !name.contains("/"), !version.isEmpty else {
            throw .invalidRequest("a chart needs a repository URL, a name and a version")
        }
        self.repository = base
        self.name = name
        self.version = version
        self.origin = origin
        let registry = (url.port.map { "\(host):\($0)" } ?? host).lowercased()
        let path = url.path.split(separator: "/").map { $0.lowercased() }
        let tag = version.replacingOccurrences(of: "+", with: "_")
        let text = ([registry] + path + [name.lowercased()]).joined(separator: "/") + ":" + tag
        do {
            reference = try Reference(text)
        } catch {
            throw .invalidRequest("\(base) \(name) \(version): cannot be stored as \(text): \(error)")
        }
    }

    /// `https://charts.example.com/stable nginx 1.2.3`
    public var description: String { "\(repository) \(name) \(version)" }

    /// The URL of the repository's index.
    public var indexURL: String { "\(repository)/index.yaml" }

}

/// What can go wrong with a chart: each case names the chart, repository or file.
public enum ChartError: Error, Equatable, CustomStringConvertible {
    case invalidRequest(String)
    case invalidIndex(url: String, why: String)
    case notInIndex(chart: String, url: String, known: [String])
    case invalidArchive(chart: String, why: String)
    case digestMismatch(chart: String, url: String, detail: String)

    public var description: String {
        switch self {
        case .invalidRequest(let why): why
        case .invalidIndex(let url, let why): "\(url): not a chart repository index: \(why)"
        case .notInIndex(let chart, let url, let known):
            "chart \(chart): not in \(url)"
                + (known.isEmpty ? "" : " (versions there: \(known.prefix(8).joined(separator: ", ")))")
        case .invalidArchive(let chart, let why): "chart \(chart): \(why)"
        case .digestMismatch(let chart, let url, let detail):
            "chart \(chart): \(url) does not match the digest in its repository's index (\(detail))"
        }
    }
}
