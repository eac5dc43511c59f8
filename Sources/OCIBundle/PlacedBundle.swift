import Foundation
import OCICore
import OCITar
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The whole layout of a bundle, or of one volume of a set, computed from its manifest before any
/// blob is read: the head (the entries before the blobs), and for each entry its tar header and
/// the offset of its data.
///
/// The bytes are those ``BundleWriter`` and ``VolumeSetWriter`` stream for the same inputs (headers
/// from the same tar writer, the same order, padding and the same rule for what a volume holds),
/// so a bundle written in place is byte-identical to one written in one pass.
public struct BundlePlan: Sendable {
    public struct Slot: Sendable {
        /// The entry's name and the digest of its bytes: the blob's, or a part's.
        public let digest: Digest
        public let size: Int64
        /// The blob whose bytes these are, from `offset` (a whole blob: itself, from 0).
        public let blob: Digest
        public let offset: Int64
        /// Where the entry's tar header starts, and the header's bytes.
        public let headerOffset: Int64
        public let header: [UInt8]
        /// Where the entry's bytes go.
        public let dataOffset: Int64
    }

    public let head: [UInt8]
    public let slots: [Slot]
    /// The size of the finished tar.
    public let size: Int64
    /// Identifies the plan: the sha256 of its head and every slot.
    public let id: Digest
    /// Identifies where each entry's bytes go: the sha256 of every slot's name, size and offset and
    /// of the tar's size, not of the head. Two plans that differ only in their head (a later
    /// creation time, another signature) share it, so a run resumed later keeps what an interrupted
    /// one wrote; the head and every header are written again.
    public let layout: Digest

    /// The plan of a bundle.
    public init(
        manifest: BundleManifest, index: [UInt8], modificationTime: Int64, signature: BundleSignature? = nil,
        dockerManifest: [UInt8]? = nil
    ) throws {
        let tar = try TarWriter(capturingWithModificationTime: modificationTime)
        try BundleWriter.writeHead(
            tar, manifest: manifest, index: index, signature: signature, dockerManifest: dockerManifest)
        try self.init(
            head: tar.takeCaptured(),
            entries: manifest.blobs.map { ($0.digest, $0.size, $0.digest, 0) }, modificationTime: modificationTime)
    }

    /// The plan of volume `number` (from 1) of the set `manifest` describes (its part digests
    /// filled in): what ``VolumeSetWriter`` writes to that volume. Every volume holds the blobs of
    /// no volume (manifests), each whole blob its own, and the parts assigned to it; an entry whose
    /// name the volume holds already is not written again.
    public init(
        volume number: Int, of manifest: BundleManifest, index: [UInt8], modificationTime: Int64,
        signature: BundleSignature? = nil, dockerManifest: [UInt8]? = nil
    ) throws {
        guard let volumes = manifest.volumes, (1...volumes.count).contains(number) else {
            throw BundleError.io("volume \(number) is not in the set", errno: EINVAL)
        }
        let tar = try TarWriter(capturingWithModificationTime: modificationTime)
        try BundleWriter.writeHead(
            tar, manifest: manifest, index: index, signature: signature, dockerManifest: dockerManifest,
            volume: VolumeHeader(set: Digest.of(try manifest.encoded()), number: number, count: volumes.count))
        var partsOf: [Digest: [VolumeSet.Part]] = [:]
        for part in volumes.parts { partsOf[part.blob, default: []].append(part) }
        var names: Set<Digest> = []
        var entries: [(Digest, Int64, Digest, Int64)] = []
        for blob in manifest.blobs {
            if blob.volume == 0 {
                for part in (partsOf[blob.digest] ?? []).sorted(by: { $0.offset < $1.offset })
                where part.volume == number && names.insert(part.digest).inserted {
                    entries.append((part.digest, part.size, blob.digest, part.offset))
                }
            } else if blob.volume == nil || blob.volume == number, names.insert(blob.digest).inserted {
                entries.append((blob.digest, blob.size, blob.digest, 0))
            }
        }
        try self.init(head: tar.takeCaptured(), entries: entries, modificationTime: modificationTime)
    }

    private init(
        head: [UInt8], entries: [(name: Digest, size: Int64, blob: Digest, offset: Int64)], modificationTime: Int64
    ) throws {
        self.head = head
        var offset = Int64(head.count)
        var slots: [Slot] = []
        var identity = DigestHasher(.sha256)
        var placement = DigestHasher(.sha256)
        head.withUnsafeBytes { identity.update($0) }
        slots.reserveCapacity(entries.count)
        for entry in entries {
            let header = try TarWriter.fileHeader(
                path: entry.name.layoutPath, size: entry.size, modificationTime: modificationTime)
            let slot = Slot(
                digest: entry.name, size: entry.size, blob: entry.blob, offset: entry.offset, headerOffset: offset,
                header: header, dataOffset: offset + Int64(header.count))
            slots.append(slot)
            offset = slot.dataOffset + TarWriter.paddedSize(entry.size)
            Array("\(entry.name) \(entry.size) \(slot.dataOffset)\n".utf8).withUnsafeBytes {
                identity.update($0)
                placement.update($0)
            }
        }
        self.slots = slots
        size = offset + TarWriter.endOfArchiveSize
        id = identity.finalize()
        Array("size \(size)\n".utf8).withUnsafeBytes { placement.update($0) }
        layout = placement.finalize()
    }
}

/// A bundle written in place from its ``BundlePlan``: the file is preallocated at its final
/// size, the head and every tar header are written first, and each blob goes straight to its
/// offset, from the network or the cache, by any number of writers at once.
///
/// The file is `PATH.partial` (locked while in use) with a journal beside it
/// (`PATH.partial.journal`) naming the blobs completed and verified. A run killed part way
/// leaves both; the next run with the same plan keeps the recorded blobs and writes only the rest.
/// Sealing reads the file once from start to end, as its parts complete (``sealAhead()``) and at
/// the end (``publish(progress:)``): the sha256 of the whole tar, and a check of every blob this run
/// did not verify as it wrote it (those from the cache or the journal). Only then is the file
/// fsynced and renamed to `PATH`.
public final class PlacedBundle: @unchecked Sendable {
    /// The layout being written; a provisional one is replaced by its final form once
    /// (``finalize(_:)``).
    public var plan: BundlePlan { current.withLock { $0 } }
    private let current: Mutex<BundlePlan>
    /// The plan the journal names (the provisional one, when there was one).
    private let journalID: Digest
    private let provisional: Mutex<Bool>
    public let path: String
    private let file: PartialBundleFile
    private let journalPath: String
    /// The journal, open for appending; records are added and dropped under its lock.
    private let journal: Mutex<Int32>
    private let state = Mutex<Set<Int>>([])
    /// Slots the journal of an earlier run recorded (checked again when the bundle is sealed).
    public let resumed: Set<Int>
    /// How far an earlier run had written slots it did not finish (`SLOT@BYTES` records, one per
    /// writeback step): a download of one goes on from there (``SlotSink/resume(_:)``).
    private let progress: [Int: Int64]
    /// The slot of each blob carried whole (not as a part).
    let wholeSlots: [Digest: Int]

    static let journalMagic = "ferry-partial-bundle 1"

    /// Opens `PATH.partial` for `plan`: resumes it when its journal names the same layout
    /// (``BundlePlan/layout``: the same entries at the same offsets, whatever the head), else
    /// starts it over. Throws ``BundleError/busy(_:)`` when another process writes it. A
    /// `provisional` plan has names still to be settled (a volume's parts, named by digests not
    /// known yet): nothing is sealed until ``finalize(_:)`` gives the final plan.
    public init(path: String, plan: BundlePlan, provisional: Bool = false) throws {
        current = Mutex(plan)
        journalID = plan.layout
        var wholeSlots: [Digest: Int] = [:]
        for (i, slot) in plan.slots.enumerated() where slot.digest == slot.blob { wholeSlots[slot.blob] = i }
        self.wholeSlots = wholeSlots
        self.provisional = Mutex(provisional)
        self.path = path
        file = try PartialBundleFile(resumableFor: path)
        journalPath = file.partialPath + ".journal"
        let fd = file.fd
        let header = "\(Self.journalMagic) \(plan.layout)"
        var recorded: Set<Int> = []
        var progress: [Int: Int64] = [:]
        var info = stat()
        if let text = try? String(contentsOfFile: journalPath, encoding: .utf8), fstat(fd, &info) == 0,
            Int64(info.st_size) == plan.size
        {
            // Only whole lines count: a line cut off by a kill is ignored.
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
            if lines.first.map(String.init) == header {
                for line in lines.dropFirst() {
                    if let index = Int(line), plan.slots.indices.contains(index) {
                        recorded.insert(index)
                    } else if let at = line.firstIndex(of: "@"), let index = Int(line[..<at]),
                        let count = Int64(line[line.index(after: at)...]), plan.slots.indices.contains(index),
                        count >= 0, count <= plan.slots[index].size
                    {
                        // The last record counts (0: the blob started over).
                        progress[index] = count
                    }
                }
            }
        }
        for index in recorded { progress[index] = nil }
        progress = progress.filter { $0.value > 0 }
        resumed = recorded
        self.progress = progress
        state.withLock { $0 = recorded }
        // The journal starts again from what counts (a line cut off by a power cut is not
        // continued by the next record).
        let journalFD = try Self.openJournal(
            journalPath, header: header,
            records: recorded.sorted().map(String.init) + progress.sorted { $0.key < $1.key }.map { "\($0)@\($1)" })
        journal = Mutex(journalFD)
        do {
            if recorded.isEmpty && progress.isEmpty {
                // A new plan: the file starts empty, so every byte not written below reads as zero
                // (the padding after each blob and the end-of-archive blocks).
                guard ftruncate(fd, 0) == 0 else { throw BundleError.io("truncate \(file.partialPath)", errno: errno) }
                try preallocate(fd, size: plan.size)
            }
            try write(plan.head, at: 0)
            for slot in plan.slots { try write(slot.header, at: slot.headerOffset) }
        } catch {
            close(journalFD)
            throw error
        }
    }

    deinit { close(journal.withLock { $0 }) }

    /// Writes the journal whole (its header and `records`), atomically, and opens it for appending.
    private static func openJournal(_ path: String, header: String, records: [String]) throws -> Int32 {
        let text = ([header] + records).joined(separator: "\n") + "\n"
        do {
            try Data(text.utf8).write(to: URL(fileURLWithPath: path), options: .atomic)
        } catch {
            throw BundleError.io("write \(path)", errno: EIO)
        }
        let fd = open(path, O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw BundleError.io("open \(path)", errno: errno) }
        return fd
    }

    private func preallocate(_ fd: Int32, size: Int64) throws {
        // Space up front: a disk too small fails now, not after most of the download.
        let code = FileRange.allocate(fd, size: size)
        guard code == 0 else { throw BundleError.io("allocate \(size) bytes for \(file.partialPath)", errno: code) }
        guard ftruncate(fd, off_t(size)) == 0 else { throw BundleError.io("size \(file.partialPath)", errno: errno) }
    }

    private func write(_ bytes: [UInt8], at offset: Int64) throws {
        do {
            try bytes.withUnsafeBytes { try FileRange.writeAll(file.fd, $0, at: offset) }
        } catch {
            throw BundleError.io("write \(file.partialPath)", errno: errno)
        }
    }

    /// Whether the slot is written and verified (this run, or recorded by an earlier one).
    public func isComplete(_ slot: Int) -> Bool { state.withLock { $0.contains(slot) } }

    /// Records a slot as written and verified.
    public func complete(_ slot: Int) throws {
        try journal.withLock { fd in
            guard state.withLock({ $0.insert(slot).inserted }) else { return }
            try append("\(slot)\n", to: fd)
        }
    }

    /// Records how far a slot being downloaded is written (an interrupted run's successor goes on
    /// from there). A record that cannot be written only costs that: the blob starts over.
    fileprivate func recordProgress(_ slot: Int, through count: Int64) {
        journal.withLock { fd in
            guard !state.withLock({ $0.contains(slot) }) else { return }
            try? append("\(slot)@\(count)\n", to: fd)
        }
    }

    private func append(_ record: String, to fd: Int32) throws {
        let bytes = Array(record.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        guard written == bytes.count else { throw BundleError.io("write \(journalPath)", errno: errno) }
    }

    /// How far an interrupted run wrote `slot` (recorded, not yet verified); 0 for none.
    func recordedProgress(_ slot: Int) -> Int64 { progress[slot] ?? 0 }

    /// A sink writing one blob's bytes into its slot: never past the slot's end, whatever it is given.
    public func sink(for slot: Int) -> SlotSink {
        SlotSink(fd: file.fd, slot: plan.slots[slot], index: slot, path: file.partialPath, bundle: self)
    }

    /// Bytes written so far of the slots being downloaded: sealing may read that far into them.
    private let written = Mutex<[Int: Int64]>([:])

    fileprivate func wrote(_ slot: Int, through count: Int64) {
        written.withLock { $0[slot] = count }
    }

    /// A download starts its blob again: sealing forgets what it read of the slot's first attempt
    /// (and, since a hash cannot be rewound, starts over from the beginning of the file). Only
    /// noted here, for sealing to act on before it reads again: sealing may hold its lock through a
    /// long read, and a download's thread must not wait for that.
    fileprivate func restarted(_ slot: Int) {
        recordProgress(slot, through: 0)
        written.withLock { $0[slot] = 0 }
        let start = plan.slots[slot].dataOffset
        restartedFrom.withLock { $0 = min($0 ?? start, start) }
    }

    /// The lowest data offset of a slot whose download started again since sealing last looked.
    private let restartedFrom = Mutex<Int64?>(nil)

    /// Starts sealing over when a slot it has read (part of) was restarted. Under the sealing lock.
    private func forgetRestarted(_ seal: inout Seal) {
        guard
            let start = restartedFrom.withLock({ from in
                defer { from = nil }; return from
            })
        else { return }
        if seal.position > start, seal.failure == nil { seal = Seal(verifying: seal.verifying) }
    }

    /// Copies a slot's bytes from the file `source` (the blob's, read from the slot's offset in it)
    /// into the slot (in the kernel where the filesystem allows). Not verified here: give the slot
    /// to ``verifyWhenSealing(_:)``.
    public func copy(from source: String, into slot: Int) throws {
        let target = plan.slots[slot]
        let fd = open(source, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw BundleError.io("open \(source)", errno: errno) }
        defer { close(fd) }
        do {
            try FileRange.copy(from: fd, at: target.offset, to: file.fd, at: target.dataOffset, count: target.size)
        } catch {
            throw BundleError.io("copy \(source) into \(file.partialPath) (\(error))", errno: EIO)
        }
        var writeback = Writeback(from: target.dataOffset)
        writeback.wrote(file.fd, through: target.dataOffset + target.size)
    }

    /// Replaces a provisional plan by its final form: the same entries at the same offsets, only
    /// names (and so the head and headers) changed. The new head and headers are written; sealing
    /// may begin.
    func finalize(_ final: BundlePlan) throws {
        let provisional = plan
        guard final.size == provisional.size, final.head.count == provisional.head.count,
            final.slots.map(\.dataOffset) == provisional.slots.map(\.dataOffset)
        else {
            throw BundleError.io("\(file.partialPath): the final layout differs from the planned one", errno: EINVAL)
        }
        try write(final.head, at: 0)
        for slot in final.slots { try write(slot.header, at: slot.headerOffset) }
        current.withLock { $0 = final }
        sealing.withLock { $0 = Seal(verifying: $0.verifying) }
        self.provisional.withLock { $0 = false }
    }

    /// Reads a slot's bytes back, in chunks.
    func readSlot(_ slot: Int, _ body: (UnsafeRawBufferPointer) throws -> Void) throws {
        let slot = plan.slots[slot]
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < slot.size {
            let n = pread(
                file.fd, buffer.baseAddress, Int(min(Int64(buffer.count), slot.size - done)),
                off_t(slot.dataOffset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BundleError.io("read \(file.partialPath)", errno: n == 0 ? EIO : errno) }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            done += Int64(n)
        }
    }

    /// What sealing has read so far: the tar's hash up to `position`, the next slot, and the
    /// check of a slot being read.
    private struct Seal {
        init(verifying: Set<Int> = []) { self.verifying = verifying }
        var position: Int64 = 0
        var hasher = DigestHasher(.sha256)
        var next = 0
        var verifier: BlobVerifier?
        var verifying: Set<Int> = []
        var failure: BundleError?
    }
    private let sealing = Mutex(Seal())

    /// Slots to check against their digests as sealing reads them: those not verified as they
    /// were written (copied from a cache). Slots the journal recorded are always checked. Give them
    /// before the first ``sealAhead()``.
    public func verifyWhenSealing(_ slots: Set<Int>) {
        sealing.withLock { $0.verifying.formUnion(slots) }
    }

    /// Reads the part of the file that is written from where sealing stopped (up to what the first
    /// unfinished slot has received), hashing it, so ``publish(progress:)`` has only the rest to
    /// read. Call it as blobs arrive, off any event loop.
    public func sealAhead() {
        guard !provisional.withLock({ $0 }) else { return }
        sealing.withLock { seal in
            forgetRestarted(&seal)
            guard seal.failure == nil else { return }
            var next = seal.next
            while next < plan.slots.count && isComplete(next) { next += 1 }
            // Up to what the first unfinished slot has written (its header is written already).
            let end =
                next == plan.slots.count
                ? plan.size : plan.slots[next].dataOffset + (written.withLock { $0[next] } ?? 0)
            do {
                try read(to: end, &seal) { _ in }
            } catch let error as BundleError {
                seal.failure = error
            } catch {
                seal.failure = .io("read \(file.partialPath)", errno: EIO)
            }
        }
    }

    /// Seals the bundle and renames it: ``seal(progress:)`` then ``rename()``. Returns the tar's
    /// sha256.
    public func publish(progress: @Sendable (Int64) -> Void = { _ in }) throws -> Digest {
        let digest = try seal(progress: progress)
        try rename()
        return digest
    }

    /// Seals the bundle, still under its partial name: reads what ``sealAhead()`` has not
    /// (hashing the tar and checking the slots given to ``verifyWhenSealing(_:)`` and those resumed
    /// from the journal), fsyncs it and writes its checksum beside it. A slot that does not match
    /// throws ``BundleError/placedBlobCorrupt(path:slot:blob:_:)`` and its journal record is dropped (the
    /// next run writes it again). Returns the tar's sha256.
    public func seal(progress: @Sendable (Int64) -> Void = { _ in }) throws -> Digest {
        guard !provisional.withLock({ $0 }) else {
            throw BundleError.io("seal \(file.partialPath): its plan is not final", errno: EINVAL)
        }
        if let failure = sealing.withLock({ $0.failure }) { throw failure }
        let missing = plan.slots.indices.filter { !isComplete($0) }
        guard missing.isEmpty else {
            throw BundleError.io("seal \(file.partialPath): \(missing.count) blob(s) not written yet", errno: EINVAL)
        }
        let hash = try sealing.withLock { seal -> Digest in
            forgetRestarted(&seal)
            try read(to: plan.size, &seal, progress: progress)
            return seal.hasher.finalize()
        }
        return try file.seal(digest: hash)
    }

    /// The sealed bundle and its checksum take their final names; the journal goes.
    public func rename() throws {
        try file.rename()
        unlink(journalPath)
    }

    /// Takes a renamed bundle back (when the rest of its volume set failed to publish).
    public func withdraw() { file.withdraw() }

    /// Reads the file from `seal.position` to `end`: hashes it, and checks each slot in
    /// `seal.verifying` it covers (slots never overlap, so one check runs at a time).
    private func read(to end: Int64, _ seal: inout Seal, progress: @Sendable (Int64) -> Void) throws {
        let slots = plan.slots
        let verifying = seal.verifying.union(resumed)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4 << 20, alignment: 16)
        defer { buffer.deallocate() }
        while seal.position < end {
            let position = seal.position
            let want = Int(min(Int64(buffer.count), end - position))
            let n = pread(file.fd, buffer.baseAddress, want, off_t(position))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BundleError.io("read \(file.partialPath)", errno: n == 0 ? EIO : errno) }
            let chunk = UnsafeRawBufferPointer(rebasing: buffer[..<n])
            seal.hasher.update(chunk)
            let chunkEnd = position + Int64(n)
            while seal.next < slots.count, slots[seal.next].dataOffset < chunkEnd {
                let slot = slots[seal.next]
                let slotEnd = slot.dataOffset + slot.size
                if verifying.contains(seal.next) {
                    if seal.verifier == nil { seal.verifier = BlobVerifier(digest: slot.digest, size: slot.size) }
                    let from = Int(max(slot.dataOffset, position) - position)
                    let to = Int(min(slotEnd, chunkEnd) - position)
                    do {
                        try seal.verifier?.update(UnsafeRawBufferPointer(rebasing: chunk[from..<to]))
                        if slotEnd <= chunkEnd { try seal.verifier?.finish() }
                    } catch {
                        try? forget(seal.next)
                        seal.position = chunkEnd
                        throw BundleError.placedBlobCorrupt(path: path, slot: seal.next, blob: slot.blob, error)
                    }
                }
                guard slotEnd <= chunkEnd else { break }
                seal.verifier = nil
                seal.next += 1
            }
            progress(Int64(n))
            seal.position = chunkEnd
        }
    }

    /// Drops slots' journal records (it is rewritten without them, and reopened).
    func forget(_ slots: Int...) throws {
        let path = journalPath
        let header = "\(Self.journalMagic) \(journalID)"
        try journal.withLock { fd in
            let kept = state.withLock { state -> [Int] in
                state.subtract(slots)
                return state.sorted()
            }
            let reopened = try Self.openJournal(path, header: header, records: kept.map(String.init))
            close(fd)
            fd = reopened
        }
    }

    /// Removes the partial file and its journal (content that failed verification: nothing to resume).
    public func discard() {
        file.discard()
        unlink(journalPath)
    }
}

/// Writes one blob into its slot of a ``PlacedBundle``; used by one writer at a time. Bytes past
/// the slot's size are refused before anything is written, so a registry that sends more than the
/// descriptor says never overwrites the next entry.
public final class SlotSink: @unchecked Sendable {
    private let fd: Int32
    private let slot: BundlePlan.Slot
    private let index: Int
    private let path: String
    private let bundle: PlacedBundle
    private var writeback: Writeback
    public private(set) var count: Int64 = 0

    init(fd: Int32, slot: BundlePlan.Slot, index: Int, path: String, bundle: PlacedBundle) {
        self.fd = fd
        self.slot = slot
        self.index = index
        self.path = path
        self.bundle = bundle
        self.writeback = Writeback(from: slot.dataOffset)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws {
        guard count + Int64(bytes.count) <= slot.size else {
            throw BlobVerificationError.tooLarge(digest: slot.digest, expected: slot.size)
        }
        do {
            try FileRange.writeAll(fd, bytes, at: slot.dataOffset + count)
        } catch {
            throw BundleError.io("write \(path)", errno: errno)
        }
        count += Int64(bytes.count)
        if writeback.wrote(fd, through: slot.dataOffset + count) { bundle.recordProgress(index, through: count) }
        bundle.wrote(index, through: count)
    }

    /// Takes up what an interrupted run wrote of this slot and recorded: those bytes are read back
    /// and given to `body` in order (to hash them), and writing goes on after them. Returns how
    /// many there were (0: the blob starts from its beginning).
    public func resume(_ body: (UnsafeRawBufferPointer) throws -> Void) throws -> Int64 {
        let recorded = bundle.recordedProgress(index)
        guard recorded > 0, count == 0 else { return 0 }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
        defer { buffer.deallocate() }
        var done: Int64 = 0
        while done < recorded {
            let want = Int(min(Int64(buffer.count), recorded - done))
            let n = pread(fd, buffer.baseAddress, want, off_t(slot.dataOffset + done))
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BundleError.io("read \(path)", errno: n < 0 ? errno : EIO) }
            try body(UnsafeRawBufferPointer(rebasing: buffer[..<n]))
            done += Int64(n)
        }
        count = recorded
        writeback = Writeback(from: slot.dataOffset + recorded)
        bundle.wrote(index, through: recorded)
        return recorded
    }

    public func reset() {
        // A download's first attempt starts with a reset too: nothing to undo or record then.
        guard count > 0 || bundle.recordedProgress(index) > 0 else { return }
        count = 0
        writeback = Writeback(from: slot.dataOffset)
        bundle.restarted(index)
    }

    /// Records the slot as written and verified; refused unless every byte of it was written here.
    public func complete() throws {
        guard count == slot.size else {
            throw BundleError.io(
                "\(slot.digest) in \(path): \(count) of its \(slot.size) bytes written, recorded as complete",
                errno: EIO)
        }
        try bundle.complete(index)
    }
}
