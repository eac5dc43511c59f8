import Foundation
import OCICore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Reports progress on standard error: a redrawn bar on a terminal (bytes, rate, ETA, images
/// done), plain lines otherwise, or nothing.
public final class ProgressReporter: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case auto, bar, plain, none
    }

    struct State {
        var phase = ""
        var totalBytes: Int64 = 0
        var doneBytes: Int64 = 0
        var started = Date()
        var lastDraw = Date.distantPast
        var imagesTotal = 0
        var imagesDone = 0
        var pendingPerImage: [Set<String>] = []
        var blobsTotal = 0
        var blobsDone = 0
    }

    let mode: Mode
    private let state = Mutex(State())

    public init(mode: Mode) {
        if mode == .auto {
            self.mode = isatty(STDERR_FILENO) == 1 ? .bar : .plain
        } else {
            self.mode = mode
        }
    }

    func line(_ text: String) {
        guard mode != .none else { return }
        let prefix = mode == .bar ? "\r\u{1B}[K" : ""
        FileHandle.standardError.write(Data((prefix + text + "\n").utf8))
    }

    func phase(_ text: String) { line(text) }

    func imageResolved(_ reference: String, digest: String) {
        if mode == .plain { line("resolved \(reference) \(digest)") }
    }

    func startDownload(blobs: Int, bytes: Int64, cached: Int, images: Int, pendingPerImage: [Set<String>] = []) {
        state.withLock {
            $0.phase = "Downloading"
            $0.totalBytes = bytes
            $0.doneBytes = 0
            $0.started = Date()
            $0.blobsTotal = blobs
            $0.blobsDone = 0
            $0.imagesTotal = images
            $0.pendingPerImage = pendingPerImage
            $0.imagesDone = pendingPerImage.isEmpty ? 0 : pendingPerImage.filter(\.isEmpty).count
        }
        line("Downloading \(blobs) blob(s), \(Self.bytes(bytes)); \(cached) already in the cache")
    }

    func downloaded(_ delta: Int64) {
        let draw = state.withLock { s -> String? in
            s.doneBytes += delta
            return redrawIfDue(&s)
        }
        if let draw { FileHandle.standardError.write(Data(draw.utf8)) }
    }

    func blobDone(_ digest: String, size: Int64) {
        let plain = state.withLock { s -> String in
            s.blobsDone += 1
            for i in s.pendingPerImage.indices where s.pendingPerImage[i].remove(digest) != nil {
                if s.pendingPerImage[i].isEmpty { s.imagesDone += 1 }
            }
            return "fetched \(digest) (\(Self.bytes(size))) [\(s.blobsDone)/\(s.blobsTotal)]"
        }
        if mode == .plain { line(plain) }
    }

    func finishDownload() { finishBar() }

    func startWriting(bytes: Int64, path: String) {
        state.withLock {
            $0.phase = "Writing"
            $0.totalBytes = bytes
            $0.doneBytes = 0
            $0.started = Date()
            $0.imagesTotal = 0
        }
        line("Writing \(path) (\(Self.bytes(bytes)) of blobs)")
    }

    func wrote(_ delta: Int64) { downloaded(delta) }

    func finishWriting() { finishBar() }

    private func finishBar() {
        guard mode == .bar else { return }
        let text = state.withLock { s -> String in
            s.lastDraw = .distantPast
            return render(s) + "\n"
        }
        FileHandle.standardError.write(Data(text.utf8))
    }

    private func redrawIfDue(_ s: inout State) -> String? {
        guard mode == .bar else { return nil }
        let now = Date()
        guard now.timeIntervalSince(s.lastDraw) >= 0.1 else { return nil }
        s.lastDraw = now
        return render(s)
    }

    private func render(_ s: State) -> String {
        let width = 30
        let fraction = s.totalBytes > 0 ? min(1, Double(s.doneBytes) / Double(s.totalBytes)) : 1
        let filled = Int(fraction * Double(width))
        let bar =
            String(repeating: "=", count: filled) + (filled < width ? ">" : "")
            + String(repeating: " ", count: max(0, width - filled - 1))
        let elapsed = max(0.001, Date().timeIntervalSince(s.started))
        let rate = Double(s.doneBytes) / elapsed
        // Rates over the first half second say little: no ETA until then.
        let eta = rate > 0 && elapsed >= 0.5 ? Double(s.totalBytes - s.doneBytes) / rate : .infinity
        var text =
            "\r\u{1B}[K\(s.phase) [\(bar)] \(Int(fraction * 100))% \(Self.bytes(s.doneBytes))/\(Self.bytes(s.totalBytes)) "
            + "\(Self.bytes(Int64(rate)))/s ETA \(Self.duration(eta))"
        if s.imagesTotal > 0 { text += " images \(s.imagesDone)/\(s.imagesTotal)" }
        return text
    }

    static func bytes(_ n: Int64) -> String { ByteCount.text(n) }

    static func duration(_ seconds: Double) -> String {
        guard seconds.isFinite else { return "--:--" }
        let s = Int(seconds.rounded())
        return String(format: "%d:%02d", s / 60, s % 60)
    }
}
