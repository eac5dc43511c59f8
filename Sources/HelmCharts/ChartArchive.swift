import Foundation
import OCITar

#if canImport(Glibc)
    import Glibc
#endif

/// What ferry reads of a chart archive (`.tgz`): the top chart's `Chart.yaml`, and the values and
/// templates of the chart and of every subchart, unpacked under `charts/` or archived there.
public struct ChartArchive: Sendable {
    public struct File: Sendable, Equatable {
        /// As inside the archive; a nested archive's files are named `charts/sub-1.0.0.tgz:sub/values.yaml`.
        public var path: String
        public var text: String
    }

    public var chartYAML: String
    public var files: [File]

    /// Helm's own limits: a file of a chart at most 5 MiB, a chart at most 100 MiB unpacked.
    public static let maximumFileSize = 5 << 20
    public static let maximumTotalSize = 100 << 20

    public static func read(path: String, chart: String) throws(ChartError) -> ChartArchive {
        var total = 0
        var archive = ChartArchive(chartYAML: "", files: [])
        var top: String?
        try scan(path: path, prefix: "", chart: chart, depth: 0, total: &total) { name, text in
            let parts = name.split(separator: "/", omittingEmptySubsequences: true)
            if parts.count == 2, parts[1] == "Chart.yaml", top == nil || top == String(parts[0]) {
                top = String(parts[0])
                archive.chartYAML = text
            } else {
                archive.files.append(File(path: name, text: text))
            }
        }
        guard !archive.chartYAML.isEmpty else {
            throw .invalidArchive(chart: chart, why: "no Chart.yaml in the archive")
        }
        return archive
    }

    private static func scan(
        path: String, prefix: String, chart: String, depth: Int, total: inout Int,
        keep: (String, String) throws(ChartError) -> Void
    ) throws(ChartError) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .invalidArchive(chart: chart, why: "cannot open the downloaded archive") }
        defer { close(fd) }
        do {
            let reader = try TarReader(fileDescriptor: fd, blockSize: 1 << 16)
            while let entry = try reader.next() {
                guard entry.type == .regular else { continue }
                let name = entry.path.hasPrefix("./") ? String(entry.path.dropFirst(2)) : entry.path
                let nested = name.hasSuffix(".tgz") && name.contains("/charts/") && depth < 4
                guard nested || wanted(name) else { continue }
                if nested {
                    try scanNested(
                        reader, size: entry.size, prefix: "\(prefix)\(name):", chart: chart, depth: depth + 1,
                        total: &total, keep: keep)
                    continue
                }
                let bytes = try reader.readAll(limit: maximumFileSize)
                total += bytes.count
                guard total <= maximumTotalSize else {
                    throw ChartError.invalidArchive(chart: chart, why: "more than 100 MiB unpacked")
                }
                if let text = String(bytes: bytes, encoding: .utf8) {
                    try keep(prefix + name, text.replacingOccurrences(of: "\r\n", with: "\n"))
                }
            }
        } catch let error as ChartError {
            throw error
        } catch {
            throw .invalidArchive(chart: chart, why: "not a chart archive: \(error)")
        }
    }

    /// A subchart archived under `charts/`: streamed from the outer archive into a temporary file
    /// (libarchive reads one archive at a time), then read like the outer one.
    private static func scanNested(
        _ reader: TarReader, size: Int64, prefix: String, chart: String, depth: Int, total: inout Int,
        keep: (String, String) throws(ChartError) -> Void
    ) throws(ChartError) {
        total += Int(size)
        guard total <= maximumTotalSize else { throw .invalidArchive(chart: chart, why: "more than 100 MiB unpacked") }
        var template = Array("\(NSTemporaryDirectory())/ferry-chart-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buffer -> Int32 in
            guard let base = buffer.baseAddress else { return -1 }
            return mkstemp(base)
        }
        guard fd >= 0 else { throw .invalidArchive(chart: chart, why: "cannot make a temporary file") }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        defer { unlink(temporary) }
        var failed = false
        do {
            while let block = try reader.nextBlock() {
                if write(fd, block.baseAddress, block.count) != block.count {
                    failed = true
                    break
                }
            }
        } catch {
            close(fd)
            throw .invalidArchive(chart: chart, why: "not a chart archive: \(error)")
        }
        close(fd)
        guard !failed else { throw .invalidArchive(chart: chart, why: "cannot write a temporary file") }
        try scan(path: temporary, prefix: prefix, chart: chart, depth: depth, total: &total, keep: keep)
    }

    /// Chart.yaml files, values files and templates: what naming an image can be in.
    static func wanted(_ name: String) -> Bool {
        let parts = name.split(separator: "/")
        guard let last = parts.last else { return false }
        if last == "Chart.yaml" || last == "values.yaml" { return true }
        return parts.dropLast().contains("templates")
    }
}
