import ArgumentParser
import Foundation
import HelmCharts
import OCIBundle
import OCICore

/// Which images an export or a plan is about: lists, references, platforms, and the base of a delta.
struct ImageSelection: ParsableArguments {
    @Option(name: [.short, .customLong("file")], help: "An image list (text or .yaml/.yml); repeatable.")
    var files: [String] = []

    @Option(
        name: .customLong("images"),
        help: """
            image-syncer's images.json: {"SOURCE": "DESTINATION"}; a source without a tag means every \
            tag, the destination is the name the bundle carries (repeatable).
            """)
    var syncerFiles: [String] = []

    @Argument(help: "Image references, in addition to any lists.")
    var references: [String] = []

    @Option(
        name: .customLong("platform"),
        help: "Only these platforms of multi-platform images, e.g. linux/amd64,linux/arm64/v8 (repeatable).")
    var platformArguments: [String] = []

    @Flag(
        name: .customLong("all-tags"),
        help: "References given without a tag mean every tag of the repository (filtered by the --tags options).")
    var allTags = false

    @Option(name: .customLong("tags-regex"), help: "Of a whole repository, only tags matching this regular expression.")
    var tagsRegex: String?

    @Option(
        name: .customLong("tags-semver"),
        help: "Of a whole repository, only version tags in this range: '>=1.2 <2', '^1.4', '~1.4.2', '1.x', '||'.")
    var tagsSemver: String?

    @Option(name: .customLong("tags-latest"), help: "Of a whole repository, only the N newest version tags.")
    var tagsLatest: Int?

    @Option(
        name: .customLong("exclude-tags"), help: "Of a whole repository, leave out tags matching this (repeatable).")
    var excludeTags: [String] = []

    /// The --tags options: the filter of `--all-tags` arguments, and the default of list entries.
    func tagDefaults() throws(TagFilterError) -> TagFilter {
        try TagFilter(regex: tagsRegex, semver: tagsSemver, exclude: excludeTags, latest: tagsLatest).validated()
    }

    @Option(
        name: .customLong("against"),
        help: """
            What the site already holds, for a delta: a site inventory (`ferry-appliance inventory`, \
            gzip or not), a bundle imported there, or its ferry-bundle.json (repeatable). Configs \
            and layers it holds are left out.
            """)
    var against: [String] = []

    @Option(
        name: .customLong("site-key"),
        help: """
            A site's public key (`ferry keygen`; the appliance signs with `inventory --sign-key`), or \
            a directory of them: every inventory given to --against must be signed by one (repeatable).
            """)
    var siteKeys: [String] = []

    func platforms() throws -> [Platform] {
        try platformArguments.flatMap { $0.split(separator: ",") }.map { try Platform(parsing: String($0)) }
    }

    /// The base of a delta, when `--against` was given.
    func deltaBase() throws -> DeltaBase? {
        let keys = try siteKeys.flatMap { try PublicKey.load($0) }
        if !siteKeys.isEmpty && keys.isEmpty { throw ValidationError("--site-key names no *.pub or *.pem keys") }
        if !siteKeys.isEmpty && against.isEmpty {
            throw ValidationError("--site-key checks --against inventories; give one")
        }
        return against.isEmpty ? nil : try DeltaBase.load(against, trustedKeys: keys)
    }

    /// The images only (a plan compares images): charts in the lists are left out, with a warning.
    func loadRequests() throws -> [ImageRequest] {
        let (requests, charts) = try load()
        if let chart = charts.first {
            FileHandle.standardError.write(
                Data(
                    "ferry: warning: \(charts.count) chart(s) left out (first: \(chart.origin)): plans are of images\n"
                        .utf8))
        }
        if requests.isEmpty { throw ImageListError.empty }
        return requests
    }

    /// Lists first, then arguments; duplicates (after normalisation) are dropped. Every problem in
    /// every list is reported before anything is pulled.
    func load() throws -> (images: [ImageRequest], charts: [ChartRequest]) {
        var requests: [ImageRequest] = []
        var charts: [ChartRequest] = []
        var problems: [ImageListError.Problem] = []
        for file in files + syncerFiles {
            do {
                let contents = try ImageList.load(path: file, syncer: syncerFiles.contains(file))
                requests += contents.images
                charts += contents.charts
            } catch {
                switch error {
                case .invalid(let found): problems += found
                default: problems.append(.init(file: file, line: nil, message: error.description))
                }
            }
        }
        if !problems.isEmpty { throw ImageListError.invalid(problems) }
        let defaults: TagFilter
        do {
            defaults = try tagDefaults()
        } catch {
            throw ValidationError(error.description)
        }
        if !defaults.isEmpty && !allTags && !requests.contains(where: { $0.tags != nil }) {
            throw ValidationError(
                "--tags-regex, --tags-semver, --tags-latest and --exclude-tags filter whole repositories: add --all-tags, or allTags entries in a list"
            )
        }
        requests = requests.map { request in
            var request = request
            request.tags = request.tags?.filling(from: defaults)
            return request
        }
        for (i, argument) in references.enumerated() {
            do {
                // With --all-tags, a name without a tag or digest is the whole repository.
                if allTags, let repository = try? Reference(repository: argument) {
                    requests.append(ImageRequest(reference: repository, origin: "argument \(i + 1)", tags: defaults))
                } else {
                    requests.append(ImageRequest(reference: try Reference(argument), origin: "argument \(i + 1)"))
                }
            } catch {
                problems.append(.init(file: "argument \(i + 1)", line: nil, message: error.description))
            }
        }
        if !problems.isEmpty { throw ImageListError.invalid(problems) }
        // The same image under the same name once; a rename, or other filters, is another request.
        struct Key: Hashable {
            var reference: Reference
            var name: Reference?
            var tags: TagFilter?
        }
        var seen: Set<Key> = []
        requests = requests.filter { seen.insert(Key(reference: $0.reference, name: $0.name, tags: $0.tags)).inserted }
        var seenCharts: Set<String> = []
        charts = charts.filter { seenCharts.insert($0.description).inserted }
        if requests.isEmpty && charts.isEmpty { throw ImageListError.empty }
        try ImageRequest.checkNames(requests, charts: charts)
        return (requests, charts)
    }
}
