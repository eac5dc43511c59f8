import FerryCommands

#if os(Linux)
    /// glibc's `mallopt` (malloc.h is not part of the Glibc module).
    @_silgen_name("mallopt")
    private func mallopt(_ parameter: Int32, _ value: Int32) -> Int32
    private let M_ARENA_MAX: Int32 = -8
#endif

@main
struct Ferry {
    static func main() async {
        #if os(Linux)
            // Few malloc arenas: transfers run on several threads, and an arena per thread keeps
            // freed buffers resident.
            _ = mallopt(M_ARENA_MAX, 2)
        #endif
        await FerryCommand.main()
    }
}
