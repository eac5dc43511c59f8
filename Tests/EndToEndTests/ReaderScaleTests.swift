import Foundation
import OCIBundle
import Testing

/// The bundle reader at scale (issue 11, point 13): memory stays flat in the number of manifests,
/// problems stay readable, and an untrusted bundle is refused before any bookkeeping.
@Suite(.serialized)
struct ReaderScaleTests {
    /// 1,000 images of 100 manifests each: 101,001 blobs carried (manifests, indexes, a config) and
    /// 100,000 listed but missing.
    @Test func hundredThousandManifestsAndMissingBlobsInBoundedMemory() throws {
        let directory = try Shell.temporaryDirectory("ferry-reader-scale")
        defer { Shell.remove(directory) }
        let bundle = "\(directory)/large.tar"
        try LargeBundle.write(to: bundle, images: 1000, manifestsPerImage: 100)

        let verify = try Shell.measure([Shell.ferry, "verify", "--json", bundle])
        #expect(verify.status == 65)
        let peak = verify.peakResidentBytes >> 20
        #expect(peak < 100, "peak RSS \(peak) MiB")
        let report = try JSONDecoder().decode(VerificationReport.self, from: Data(verify.stdout.utf8))
        #expect(report.blobCount == 101_001)
        // Each missing layer is named once, up to the limit; one more line counts the rest.
        #expect(report.problems.count == BundleReader.problemLimit + 1)
        #expect(
            report.problems.dropLast().allSatisfy {
                $0.message == "listed in the bundle manifest but missing from the tar" && $0.image != nil
            })
        #expect(report.problems.last?.message == "and 99000 more problems not listed")

        // Under a trusted key, an unsigned bundle is refused on its signature alone: no completeness
        // or graph problems are computed, so a flood of missing blobs costs nothing.
        try Ferry.run(["keygen", "-o", "\(directory)/key"])
        let untrusted = try Shell.measure(
            [Shell.ferry, "verify", "--json", "--trust-key", "\(directory)/key.pub", bundle])
        #expect(untrusted.status == 65)
        let refused = try JSONDecoder().decode(VerificationReport.self, from: Data(untrusted.stdout.utf8))
        #expect(refused.problems.map(\.message) == ["bundle is not signed"])
        #expect(refused.blobCount == 0)
    }
}
