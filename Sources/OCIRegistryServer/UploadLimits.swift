import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// What one client may put into the store through pushes, so a careless or hostile one cannot
/// fill the disk or the server's memory (`storage` in appliance.yml).
public struct UploadLimits: Sendable, Equatable {
    /// The largest blob one upload may hold.
    public var maxUploadBytes: Int64
    /// Upload sessions one user (or anonymous) may hold open at once.
    public var maxUploadsPerUser: Int
    /// Writes stop while less than this is free on the store's filesystem.
    public var minFreeBytes: Int64

    public init(
        maxUploadBytes: Int64 = 64 << 30, maxUploadsPerUser: Int = 64, minFreeBytes: Int64 = 1 << 30
    ) {
        self.maxUploadBytes = maxUploadBytes
        self.maxUploadsPerUser = maxUploadsPerUser
        self.minFreeBytes = minFreeBytes
    }

    /// Refuses a write of `adding` bytes under `path` that would leave less than the reserve free.
    func checkSpace(at path: String, adding: Int64) throws(DistributionError) {
        var info = statvfs()
        guard statvfs(path, &info) == 0 else { return }
        let free = Int64(info.f_bavail) * Int64(info.f_frsize)
        if free - adding < minFreeBytes {
            throw DistributionError(
                status: 507, code: .denied, message: "the appliance is short of disk space; nothing was written",
                detail: "\(free) bytes free, \(minFreeBytes) kept in reserve")
        }
    }
}
