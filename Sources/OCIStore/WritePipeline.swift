import Foundation
import OCICore

#if canImport(Glibc)
    import Glibc
#endif

/// Writes a file on a thread of its own: the caller copies its bytes into one of a few buffers and
/// goes on (hashing, reading the next block) while this thread does `write(2)`, whose copy into the
/// page cache costs about as much as SHA-256 does. On two cores a verified import then runs at
/// close to the speed of hashing alone. Memory: `depth` buffers of `bufferSize` bytes.
///
/// One producer. ``finish()`` waits until every byte is written and reports the first error.
final class WritePipeline: @unchecked Sendable {
    private let fd: Int32
    /// The same file opened with O_DIRECT, when the filesystem allows: whole aligned buffers go
    /// straight to the device, with no copy into the page cache and no reclaim to make room for it.
    private let directFD: Int32
    private let path: String
    private let bufferSize: Int
    private let condition = NSCondition()
    private var full: [(UnsafeMutableRawBufferPointer, Int)] = []
    private var empty: [UnsafeMutableRawBufferPointer] = []
    private var current: UnsafeMutableRawBufferPointer?
    private var filled = 0
    private var failure: StoreError?
    private var closing = false
    private var running = true
    private var thread: Thread?

    /// `direct`: write whole buffers with O_DIRECT (for a store whose blobs are not read back at
    /// once; a cache read right after would then come from the device).
    /// `start`: the file offset the first byte goes to (a part of a blob written at its place).
    init(fd: Int32, path: String, direct: Bool, start: Int64 = 0, depth: Int = 6, bufferSize: Int = 1 << 20) {
        self.fd = fd
        self.offset = start
        self.writeback = Writeback(from: start)
        self.directFD = direct ? open(path, O_WRONLY | O_CLOEXEC | Self.directFlag) : -1
        self.path = path
        self.bufferSize = bufferSize
        for _ in 0..<depth {
            empty.append(.allocate(byteCount: bufferSize, alignment: 4096))
        }
        let thread = Thread { [unowned self] in self.drain() }
        thread.name = "ferry-store-writer"
        self.thread = thread
        thread.start()
    }

    deinit {
        stop()
        if directFD >= 0 { close(directFD) }
        for buffer in empty { buffer.deallocate() }
        for (buffer, _) in full { buffer.deallocate() }
        current?.deallocate()
    }

    /// Copies `bytes` into the pipeline; blocks only while every buffer waits to be written.
    func write(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        var offset = 0
        while offset < bytes.count {
            if current == nil { current = try takeEmpty() }
            guard let buffer = current else { return }
            let count = min(bufferSize - filled, bytes.count - offset)
            guard let target = buffer.baseAddress, let source = bytes.baseAddress else { return }
            (target + filled).copyMemory(from: source + offset, byteCount: count)
            filled += count
            offset += count
            if filled == bufferSize { submit() }
        }
    }

    /// Writes what is buffered and waits until the file holds every byte given.
    func finish() throws(StoreError) {
        if current != nil { submit() }
        condition.lock()
        while failure == nil && (!full.isEmpty || !idle) { condition.wait() }
        let error = failure
        condition.unlock()
        if let error { throw error }
    }

    /// Waits for pending writes, then starts again at offset 0 (the caller truncated the file).
    func rewind() throws(StoreError) {
        try finish()
        condition.lock()
        offset = 0
        writeback = Writeback()
        condition.unlock()
    }

    /// Stops the thread; anything not yet written is dropped. Idempotent.
    func stop() {
        condition.lock()
        closing = true
        condition.broadcast()
        while running { condition.wait() }
        condition.unlock()
    }

    private var idle = true
    /// Owned by the writing thread: bytes written, and how far writeback was started.
    private var offset: Int64 = 0
    private var writeback = Writeback()

    private func takeEmpty() throws(StoreError) -> UnsafeMutableRawBufferPointer {
        condition.lock()
        defer { condition.unlock() }
        while empty.isEmpty && failure == nil { condition.wait() }
        if let failure { throw failure }
        filled = 0
        return empty.removeLast()
    }

    private func submit() {
        guard let buffer = current else { return }
        condition.lock()
        full.append((buffer, filled))
        current = nil
        filled = 0
        condition.broadcast()
        condition.unlock()
    }

    /// Writes one buffer at the current offset: directly when it is whole and O_DIRECT is open,
    /// else through the page cache, starting writeback so the final fsync has little left to do.
    private func writeOut(_ bytes: UnsafeRawBufferPointer) throws(StoreError) {
        guard let base = bytes.baseAddress else { return }
        let direct = directFD >= 0 && bytes.count == bufferSize
        var done = 0
        while done < bytes.count {
            let n = pwrite(direct ? directFD : fd, base + done, bytes.count - done, off_t(offset) + off_t(done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw .io("write \(path)", errno: n < 0 ? errno : EIO) }
            done += n
        }
        offset += Int64(bytes.count)
        if !direct { writeback.wrote(fd, through: offset) }
    }

    #if arch(arm64)
        static let directFlag: Int32 = 0o200000
    #else
        static let directFlag: Int32 = 0o40000
    #endif

    private func drain() {
        condition.lock()
        while true {
            while full.isEmpty && !closing { condition.wait() }
            if closing { break }
            let (buffer, count) = full.removeFirst()
            idle = false
            condition.unlock()
            var failed: StoreError?
            do throws(StoreError) {
                try writeOut(UnsafeRawBufferPointer(rebasing: buffer[..<count]))
            } catch {
                failed = error
            }
            condition.lock()
            idle = true
            if let failed, failure == nil { failure = failed }
            empty.append(buffer)
            condition.broadcast()
        }
        running = false
        condition.broadcast()
        condition.unlock()
    }
}
