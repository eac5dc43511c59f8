import Testing

@testable import OCIRegistryClient

struct ContentRangeTests {
    /// The first byte of a range answer, checked against where a cut-off transfer asked to go on.
    @Test func readsTheFirstByteOfAContentRange() {
        #expect(BlobStreamDelegate.rangeStart("bytes 1048576-8388607/8388608") == 1_048_576)
        #expect(BlobStreamDelegate.rangeStart("bytes 0-0/1") == 0)
        #expect(BlobStreamDelegate.rangeStart("bytes */8388608") == nil)
        #expect(BlobStreamDelegate.rangeStart("items 5-9/10") == nil)
        #expect(BlobStreamDelegate.rangeStart("") == nil)
    }
}
