/// A repository path inside a registry, such as `library/nginx` or `team/sub/app`
/// (`../shared/specs/oci-distribution/spec.md`, "name" grammar).
public struct RepositoryName: Hashable, Sendable, Comparable, CustomStringConvertible {
    public let value: String

    public init(_ value: String) throws(ReferenceError) {
        guard !value.isEmpty else { throw .emptyRepository }
        guard value.utf8.count <= 255 else { throw .nameTooLong(value) }
        // One pass over the bytes (contiguous for native strings; a bridged one is copied once).
        var text = value
        text.makeContiguousUTF8()
        let invalid = text.utf8.withContiguousStorageIfAvailable { bytes -> Range<Int>? in
            var start = 0
            for i in 0...bytes.count where i == bytes.count || bytes[i] == UInt8(ascii: "/") {
                guard Self.isValidComponent(bytes: UnsafeBufferPointer(rebasing: bytes[start..<i])) else {
                    return start..<i
                }
                start = i + 1
            }
            return nil
        }
        if let bad = invalid ?? nil {
            let component = String(Substring(text.utf8.dropFirst(bad.lowerBound).prefix(bad.count)))
            if component.contains(where: { $0.isUppercase }) { throw .uppercaseRepository(value) }
            throw .invalidRepositoryComponent(component, in: value)
        }
        self.value = value
    }

    /// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
    static func isValidComponent(bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard !bytes.isEmpty else { return false }
        func isAlnum(_ b: UInt8) -> Bool { (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) }
        var i = 0
        // first run of alphanumerics
        guard isAlnum(bytes[0]) else { return false }
        while i < bytes.count {
            while i < bytes.count, isAlnum(bytes[i]) { i += 1 }
            if i == bytes.count { return true }
            // separator
            let start = i
            if bytes[i] == UInt8(ascii: ".") {
                i += 1
            } else if bytes[i] == UInt8(ascii: "_") {
                i += 1
                if i < bytes.count, bytes[i] == UInt8(ascii: "_") { i += 1 }
            } else if bytes[i] == UInt8(ascii: "-") {
                while i < bytes.count, bytes[i] == UInt8(ascii: "-") { i += 1 }
            } else {
                return false
            }
            guard i > start, i < bytes.count, isAlnum(bytes[i]) else { return false }
        }
        return true
    }

    public var description: String { value }
    public static func < (a: RepositoryName, b: RepositoryName) -> Bool { a.value < b.value }
}

/// A tag: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
public struct Tag: Hashable, Sendable, CustomStringConvertible {
    public let value: String

    public init(_ value: String) throws(ReferenceError) {
        let bytes = Array(value.utf8)
        func isWord(_ b: UInt8) -> Bool {
            (b >= 0x61 && b <= 0x7a) || (b >= 0x41 && b <= 0x5a) || (b >= 0x30 && b <= 0x39) || b == UInt8(ascii: "_")
        }
        guard let first = bytes.first, isWord(first), bytes.count <= 128,
            bytes.allSatisfy({ isWord($0) || $0 == UInt8(ascii: ".") || $0 == UInt8(ascii: "-") })
        else { throw .invalidTag(value) }
        self.value = value
    }

    private init(valid value: String) { self.value = value }

    /// The tag a reference without tag or digest names.
    public static let latest = Tag(valid: "latest")

    public var description: String { value }
}

/// An image reference, normalised the way docker does it: `nginx` is
/// `docker.io/library/nginx:latest`; `host:5000/a/b:tag`; `name:tag@sha256:…` pins the digest and
/// keeps the tag as the name.
public struct Reference: Hashable, Sendable, CustomStringConvertible {
    /// The registry host with optional port, e.g. `docker.io`, `registry.local:5000`.
    public let registry: String
    public let repository: RepositoryName
    public let tag: Tag?
    public let digest: Digest?

    public static let dockerHub = "docker.io"

    public init(registry: String, repository: RepositoryName, tag: Tag?, digest: Digest?) {
        self.registry = registry
        self.repository = repository
        self.tag = tag
        self.digest = digest
    }

    public init(_ string: String) throws(ReferenceError) {
        guard !string.isEmpty else { throw .empty }
        guard string.trimmingWhitespace() == string, !string.contains(" ") else { throw .whitespace(string) }
        var rest = Substring(string)
        var digest: Digest?
        if let at = rest.firstIndex(of: "@") {
            do {
                digest = try Digest(String(rest[rest.index(after: at)...]))
            } catch {
                throw .invalidDigest(string, error)
            }
            rest = rest[..<at]
        }
        var tag: Tag?
        let lastSlash = rest.lastIndex(of: "/")
        if let colon = rest.lastIndex(of: ":"), lastSlash.map({ colon > $0 }) ?? true {
            tag = try Tag(String(rest[rest.index(after: colon)...]))
            rest = rest[..<colon]
        }
        var registry: String
        var path: String
        if let slash = rest.firstIndex(of: "/") {
            let first = rest[..<slash]
            if first.contains(".") || first.contains(":") || first == "localhost"
                || first.contains(where: { $0.isUppercase })
            {
                registry = String(first)
                path = String(rest[rest.index(after: slash)...])
            } else {
                registry = Self.dockerHub
                path = String(rest)
            }
        } else {
            registry = Self.dockerHub
            path = String(rest)
        }
        guard !path.isEmpty else { throw .emptyRepository }
        guard Self.isValidRegistry(registry) else { throw .invalidRegistry(registry) }
        if registry == "index.docker.io" || registry == "registry-1.docker.io" { registry = Self.dockerHub }
        if registry == Self.dockerHub, !path.contains("/") { path = "library/" + path }
        let repository = try RepositoryName(path)
        guard (registry.utf8.count + 1 + path.utf8.count) <= 255 else { throw .nameTooLong(string) }
        if tag == nil, digest == nil { tag = .latest }
        self.init(registry: registry, repository: repository, tag: tag, digest: digest)
    }

    /// A repository as a whole (`quay.io/org/app`, no tag, no digest): the reference to list its
    /// tags from. Refuses a name that carries a tag or a digest.
    public init(repository string: String) throws(ReferenceError) {
        let parsed = try Reference(string)
        let path = string.split(separator: "@", maxSplits: 1).first.map(String.init) ?? string
        let afterSlash = path.lastIndex(of: "/").map { path[path.index(after: $0)...] } ?? Substring(path)
        guard !string.contains("@"), !afterSlash.contains(":") else { throw .notARepository(string) }
        self.init(registry: parsed.registry, repository: parsed.repository, tag: nil, digest: nil)
    }

    /// `registry/repository`, e.g. `docker.io/library/nginx`.
    public var name: String { "\(registry)/\(repository)" }

    /// The full normalised reference: `docker.io/library/nginx:1.25`, `…:1.25@sha256:…`, `…@sha256:…`.
    public var description: String {
        var s = name
        if let tag { s += ":\(tag)" }
        if let digest { s += "@\(digest)" }
        return s
    }

    /// What to ask a registry for under `/manifests/`: the digest when pinned, else the tag.
    public var manifestReference: ManifestReference {
        if let digest { return .digest(digest) }
        return .tag(tag ?? .latest)
    }

    /// host[:port] grammar of the distribution reference: domain components or a bracketed IPv6
    /// address, with an optional numeric port.
    public static func isValidRegistry(_ registry: String) -> Bool {
        var host = Substring(registry)
        if host.hasPrefix("[") {
            guard let close = host.firstIndex(of: "]") else { return false }
            let rest = host[host.index(after: close)...]
            if rest.isEmpty { return true }
            guard rest.first == ":" else { return false }
            return isPort(rest.dropFirst())
        }
        if let colon = host.lastIndex(of: ":") {
            guard isPort(host[host.index(after: colon)...]) else { return false }
            host = host[..<colon]
        }
        return !host.isEmpty
            && host.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { component in
                guard let f = component.first, let l = component.last else { return false }
                return f.isLetterOrDigitASCII && l.isLetterOrDigitASCII
                    && component.allSatisfy { $0.isLetterOrDigitASCII || $0 == "-" }
            }
    }

    static func isPort(_ s: Substring) -> Bool {
        !s.isEmpty && s.count <= 5 && s.allSatisfy { $0.isASCII && $0.isNumber }
    }
}

extension Character {
    fileprivate var isLetterOrDigitASCII: Bool { isASCII && (isLetter || isNumber) }
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        var s = Substring(self)
        while let f = s.first, f.isWhitespace { s = s.dropFirst() }
        while let l = s.last, l.isWhitespace { s = s.dropLast() }
        return s
    }
}

public enum ReferenceError: Error, Equatable, CustomStringConvertible {
    case empty
    case whitespace(String)
    case emptyRepository
    case nameTooLong(String)
    case uppercaseRepository(String)
    case invalidRepositoryComponent(String, in: String)
    case invalidTag(String)
    case invalidDigest(String, DigestError)
    case invalidRegistry(String)
    case unservableRegistry(String)
    case notARepository(String)

    public var description: String {
        switch self {
        case .empty: "empty image reference"
        case .whitespace(let s): "image reference '\(s)' contains whitespace"
        case .emptyRepository: "image reference has no repository name"
        case .nameTooLong(let s): "image name '\(s)' is longer than 255 characters"
        case .uppercaseRepository(let s): "repository name '\(s)' must be lowercase"
        case .invalidRepositoryComponent(let c, let s):
            "invalid repository name component '\(c)' in '\(s)' (lowercase letters, digits and . _ __ - separators)"
        case .invalidTag(let t): "invalid tag '\(t)' (letters, digits, _ . -; at most 128; not starting with . or -)"
        case .invalidDigest(let s, let e): "invalid digest in '\(s)': \(e)"
        case .invalidRegistry(let r): "invalid registry host '\(r)'"
        case .notARepository(let s): "'\(s)' names a tag or digest; a whole repository is named without one"
        case .unservableRegistry(let r):
            "registry \(r) cannot be the first component of a repository name the appliance serves (an IPv6 address); reach it by a host name"
        }
    }
}

extension Reference {
    /// The repository an appliance serves this image under: the source registry stays the first
    /// component so clients keep their image names through a mirror; a port's `:` is spelled `_`,
    /// since the name grammar has no colon (`registry.local:5000/team/app` is served as
    /// `registry.local_5000/team/app`).
    public var servedRepository: String { "\(Self.servedHost(registry))/\(repository)" }

    /// ``servedRepository`` as a checked name: a source host the name grammar cannot hold (an IPv6
    /// address) is refused here, before anything is exported or imported under it.
    public func servedRepositoryName() throws(ReferenceError) -> RepositoryName {
        do {
            return try RepositoryName(servedRepository)
        } catch {
            throw .unservableRegistry(registry)
        }
    }

    /// A registry host as the first component of a served name: `registry.local:5000` →
    /// `registry.local_5000`, lower case (host names are case-insensitive; repository names are not
    /// allowed capitals).
    public static func servedHost(_ registry: String) -> String {
        String(
            registry.lowercased().compactMap { c -> Character? in c == "[" || c == "]" ? nil : (c == ":" ? "_" : c) })
    }

    /// The source registry a served repository name stands for, when its first component names one
    /// (a host with a dot or a port, or `localhost`): `registry.local_5000/team/app` →
    /// `registry.local:5000`; nil for `team/app`.
    public static func sourceRegistry(ofServed name: String) -> String? {
        let parts = name.split(separator: "/", maxSplits: 1)
        guard parts.count == 2, parts[0].contains(".") || parts[0].contains("_") || parts[0] == "localhost" else {
            return nil
        }
        return registry(servedHost: String(parts[0]))
    }

    /// The registry a served first component stands for: `registry.local_5000` → `registry.local:5000`.
    public static func registry(servedHost: String) -> String {
        guard let underscore = servedHost.lastIndex(of: "_"),
            Int(servedHost[servedHost.index(after: underscore)...]) != nil
        else { return servedHost }
        return servedHost[..<underscore] + ":" + servedHost[servedHost.index(after: underscore)...]
    }
}
