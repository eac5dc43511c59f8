import OCIBundle
import OCICore
import Testing

@Suite struct VolumePlannerTests {
    func blob(_ n: Int, _ size: Int64, document: Bool = false) -> BundleManifest.Blob {
        BundleManifest.Blob(
            digest: Digest.of(Array("blob \(n)".utf8)), size: size,
            mediaType: document ? MediaType.ociManifest : MediaType.ociLayer)
    }

    @Test func wholeBlobsFitAndLargeOnesAreCutIntoParts() throws {
        let mib: Int64 = 1 << 20
        let blobs = [
            blob(0, 2000, document: true), blob(1, 5 * mib / 2), blob(2, 700 * 1024), blob(3, 700 * 1024),
            blob(4, 300),
        ]
        let plan = try VolumePlanner.plan(blobs: blobs, headerBytes: 16 * 1024, volumeSize: mib)
        #expect(plan.placement[0] == nil)  // a manifest: in every volume
        #expect(plan.placement[1] == 0)  // in parts
        #expect(plan.parts.map(\.offset) == [0, plan.parts[0].size, 2 * plan.parts[0].size])
        #expect(plan.parts.reduce(0) { $0 + $1.size } == 5 * mib / 2)
        #expect(plan.count == 5)
        // No volume holds more than it has room for.
        var used = [Int64](repeating: plan.fixedBytes, count: plan.count)
        for (i, volume) in plan.placement.enumerated() {
            if let volume, volume > 0 { used[volume - 1] += VolumePlanner.entryBytes(blobs[i].size) }
        }
        for part in plan.parts { used[part.volume - 1] += VolumePlanner.entryBytes(part.size) }
        #expect(used.allSatisfy { $0 <= mib }, "\(used)")
    }

    @Test func aVolumeTooSmallForWhatEveryVolumeCarriesIsRefused() {
        #expect(throws: VolumePlanError.self) {
            try VolumePlanner.plan(blobs: [blob(0, 100)], headerBytes: 60 * 1024, volumeSize: 100 * 1024)
        }
    }

    @Test func volumeNamesFollowTheOutputName() {
        #expect(VolumeSet.volumePath(for: "/m/site.tar", number: 3, count: 5) == "/m/site.vol003.tar")
        #expect(VolumeSet.volumePath(for: "site", number: 12, count: 1200) == "site.vol0012.tar")
    }

    @Test func aPlanThatDoesNotCoverItsBlobsIsFound() {
        let blobs = [BundleManifest.Blob(digest: Digest.of([1]), size: 10, mediaType: nil, volume: 0)]
        let set = VolumeSet(
            volumeSize: 1 << 20, count: 2,
            parts: [.init(blob: Digest.of([1]), offset: 0, size: 6, digest: Digest.of([2]), volume: 1)])
        #expect(set.problem(with: blobs)?.contains("do not cover") == true)
    }
}
