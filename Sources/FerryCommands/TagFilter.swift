import Foundation

/// Which tags of a whole repository to take (mindthegap's, regsync's and skopeo sync's filters):
/// a regular expression, a semver range (`>=1.2 <2`, `^1.4`, `~1.4.2`, `1.x`, alternatives with
/// `||`), exclusions, and the latest N by semver order. Tags that are not versions pass a semver
/// range or a latest-N filter never.
public struct TagFilter: Sendable, Hashable {
    public var regex: String?
    public var semver: String?
    public var exclude: [String] = []
    public var latest: Int?

    public init(regex: String? = nil, semver: String? = nil, exclude: [String] = [], latest: Int? = nil) {
        self.regex = regex
        self.semver = semver
        self.exclude = exclude
        self.latest = latest
    }

    public var isEmpty: Bool { regex == nil && semver == nil && exclude.isEmpty && latest == nil }

    /// This filter's settings, and `defaults`' where this one has none.
    public func filling(from defaults: TagFilter) -> TagFilter {
        TagFilter(
            regex: regex ?? defaults.regex, semver: semver ?? defaults.semver,
            exclude: exclude.isEmpty ? defaults.exclude : exclude, latest: latest ?? defaults.latest)
    }

    /// Checks the expressions once (a bad one is a usage error naming it).
    public func validated() throws(TagFilterError) -> TagFilter {
        for pattern in [regex].compactMap({ $0 }) + exclude {
            guard (try? NSRegularExpression(pattern: pattern)) != nil else { throw .badRegex(pattern) }
        }
        if let semver { _ = try SemverRange(semver) }
        if let latest, latest < 1 { throw .badLatest(latest) }
        return self
    }

    /// The tags kept, in name order (registries list them in no set order), or newest first when
    /// `latest` is given.
    public func apply(_ tags: [String]) throws(TagFilterError) -> [String] {
        // Each expression compiled once (they were checked by `validated()`).
        func compiled(_ pattern: String) throws(TagFilterError) -> NSRegularExpression {
            guard let expression = try? NSRegularExpression(pattern: pattern) else { throw .badRegex(pattern) }
            return expression
        }
        let include = try regex.map(compiled)
        var excluded: [NSRegularExpression] = []
        for pattern in exclude { excluded.append(try compiled(pattern)) }
        func matches(_ expression: NSRegularExpression, _ tag: String) -> Bool {
            expression.firstMatch(in: tag, range: NSRange(tag.startIndex..., in: tag)) != nil
        }
        var kept = tags.sorted().filter { tag in
            if let include, !matches(include, tag) { return false }
            return !excluded.contains { matches($0, tag) }
        }
        if let semver {
            let range = try SemverRange(semver)
            kept = kept.filter { Semver($0).map(range.contains) ?? false }
        }
        if let latest {
            // The newest releases: pre-releases (and suffixed variants like `1.2.3-alpine`) only when
            // a range or a regex chose them.
            let versions = kept.compactMap { tag in Semver(tag).map { (tag, $0) } }
                .filter { semver != nil || regex != nil || $0.1.prerelease.isEmpty }
            kept = versions.sorted { $0.1 > $1.1 }.prefix(latest).map(\.0)
        }
        return kept
    }
}

public enum TagFilterError: Error, Equatable, CustomStringConvertible {
    case badRegex(String)
    case badSemver(String)
    case badLatest(Int)

    public var description: String {
        switch self {
        case .badRegex(let pattern): "'\(pattern)' is not a regular expression"
        case .badSemver(let range): "'\(range)' is not a semver range (e.g. '>=1.2 <2', '^1.4', '~1.4.2')"
        case .badLatest(let count): "--tags-latest \(count): give at least 1"
        }
    }
}

/// A version as tags spell them: `1.2.3`, `v1.2`, `1.2.3-rc.1` (build metadata ignored).
/// Pre-releases sort before their release.
struct Semver: Comparable, Sendable {
    var major: Int
    var minor: Int
    var patch: Int
    var prerelease: [String]
    /// How many numbers were given (`1.2` has 2): a range reads the rest as "any".
    var parts = 3

    init?(_ text: String) {
        var rest = Substring(text)
        if rest.first == "v" || rest.first == "V" { rest = rest.dropFirst() }
        if let plus = rest.firstIndex(of: "+") { rest = rest[..<plus] }
        var pre: [String] = []
        if let dash = rest.firstIndex(of: "-") {
            pre = rest[rest.index(after: dash)...].split(separator: ".").map(String.init)
            guard !pre.isEmpty else { return nil }
            rest = rest[..<dash]
        }
        let numbers = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...3).contains(numbers.count),
            numbers.allSatisfy({ !$0.isEmpty && $0.count <= 9 && $0.allSatisfy(\.isASCII) && $0.allSatisfy(\.isNumber) }
            )
        else { return nil }
        let values = numbers.compactMap { Int($0) }
        guard values.count == numbers.count else { return nil }
        major = values[0]
        minor = values.count > 1 ? values[1] : 0
        patch = values.count > 2 ? values[2] : 0
        prerelease = pre
        parts = values.count
    }

    init(_ major: Int, _ minor: Int, _ patch: Int, prerelease: [String] = []) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.prerelease = prerelease
    }

    /// The first version past every one this partial version stands for: `1.2` → `1.3.0`.
    var nextUp: Semver {
        switch parts {
        case 1: Semver(major + 1, 0, 0)
        case 2: Semver(major, minor + 1, 0)
        default: Semver(major, minor, patch + 1)
        }
    }

    static func == (a: Semver, b: Semver) -> Bool {
        (a.major, a.minor, a.patch) == (b.major, b.minor, b.patch) && a.prerelease == b.prerelease
    }

    static func < (a: Semver, b: Semver) -> Bool {
        if (a.major, a.minor, a.patch) != (b.major, b.minor, b.patch) {
            return (a.major, a.minor, a.patch) < (b.major, b.minor, b.patch)
        }
        switch (a.prerelease.isEmpty, b.prerelease.isEmpty) {
        case (true, true), (true, false): return false
        case (false, true): return true
        case (false, false):
            for (x, y) in zip(a.prerelease, b.prerelease) where x != y {
                switch (Int(x), Int(y)) {
                case (let i?, let j?): return i < j
                case (.some, nil): return true
                case (nil, .some): return false
                case (nil, nil): return x < y
                }
            }
            return a.prerelease.count < b.prerelease.count
        }
    }
}

/// `>=1.2 <2 || ^3.1`: alternatives of comparator sets. A pre-release matches only a set that
/// names a pre-release of the same major.minor.patch (npm's rule), so `>=1.2` takes no `2.0.0-rc1`.
struct SemverRange: Sendable {
    struct Comparator: Sendable {
        enum Operation: Sendable { case less, lessOrEqual, greater, greaterOrEqual, equal }
        var operation: Operation
        var version: Semver
        func holds(_ v: Semver) -> Bool {
            switch operation {
            case .less: v < version
            case .lessOrEqual: v <= version
            case .greater: v > version
            case .greaterOrEqual: v >= version
            case .equal: v == version
            }
        }
    }

    var alternatives: [[Comparator]]

    init(_ text: String) throws(TagFilterError) {
        var alternatives: [[Comparator]] = []
        for alternative in text.components(separatedBy: "||") {
            var set: [Comparator] = []
            for token in alternative.split(separator: " ") where !token.isEmpty {
                guard let parsed = Self.parse(String(token)) else { throw .badSemver(text) }
                set += parsed
            }
            guard !set.isEmpty else { throw .badSemver(text) }
            alternatives.append(set)
        }
        guard !alternatives.isEmpty else { throw .badSemver(text) }
        self.alternatives = alternatives
    }

    func contains(_ version: Semver) -> Bool {
        alternatives.contains { set in
            guard set.allSatisfy({ $0.holds(version) }) else { return false }
            if version.prerelease.isEmpty { return true }
            return set.contains {
                !$0.version.prerelease.isEmpty
                    && ($0.version.major, $0.version.minor, $0.version.patch)
                        == (version.major, version.minor, version.patch)
            }
        }
    }

    /// One token: `>=1.2`, `<2`, `=1.4.0`, `1.4.0`, `^1.4`, `~1.4.2`, `1.x`, `*`. A partial version
    /// stands for all of its versions (npm's X-ranges): `<=1.2` is `<1.3.0`, `>1.2` is `>=1.3.0`,
    /// `1.2` is `>=1.2.0 <1.3.0`.
    static func parse(_ token: String) -> [Comparator]? {
        func between(_ lower: Semver, _ upper: Semver) -> [Comparator] {
            [Comparator(operation: .greaterOrEqual, version: lower), Comparator(operation: .less, version: upper)]
        }
        if token == "*" || token == "x" { return [Comparator(operation: .greaterOrEqual, version: Semver(0, 0, 0))] }
        for (prefix, operation) in [
            (">=", Comparator.Operation.greaterOrEqual), ("<=", .lessOrEqual), (">", .greater), ("<", .less),
            ("=", .equal),
        ] where token.hasPrefix(prefix) {
            guard let version = Semver(String(token.dropFirst(prefix.count))) else { return nil }
            let partial = version.parts < 3 && version.prerelease.isEmpty
            switch (operation, partial) {
            case (.lessOrEqual, true): return [Comparator(operation: .less, version: version.nextUp)]
            case (.greater, true): return [Comparator(operation: .greaterOrEqual, version: version.nextUp)]
            case (.equal, true): return between(version, version.nextUp)
            default: return [Comparator(operation: operation, version: version)]
            }
        }
        if token.hasPrefix("^"), let v = Semver(String(token.dropFirst())) {
            // The leftmost non-zero number given stays; `^0` and `^0.0` cover their whole ranges.
            if v.major > 0 || v.parts == 1 { return between(v, Semver(v.major + 1, 0, 0)) }
            if v.minor > 0 || v.parts == 2 { return between(v, Semver(0, v.minor + 1, 0)) }
            return between(v, Semver(0, 0, v.patch + 1))
        }
        if token.hasPrefix("~"), let v = Semver(String(token.dropFirst())) {
            return between(v, v.parts >= 2 ? Semver(v.major, v.minor + 1, 0) : Semver(v.major + 1, 0, 0))
        }
        // 1.x, 1.2.x, or a bare version.
        let parts = token.split(separator: ".").map(String.init)
        if let wildcard = parts.firstIndex(where: { $0 == "x" || $0 == "X" || $0 == "*" }) {
            let fixed = parts[..<wildcard].compactMap { $0.count <= 9 ? Int($0) : nil }
            guard fixed.count == wildcard, !fixed.isEmpty else { return nil }
            let lower = Semver(fixed[0], fixed.count > 1 ? fixed[1] : 0, 0)
            let upper = fixed.count > 1 ? Semver(fixed[0], fixed[1] + 1, 0) : Semver(fixed[0] + 1, 0, 0)
            return between(lower, upper)
        }
        guard let version = Semver(token) else { return nil }
        if version.parts < 3 && version.prerelease.isEmpty { return between(version, version.nextUp) }
        return [Comparator(operation: .equal, version: version)]
    }
}
