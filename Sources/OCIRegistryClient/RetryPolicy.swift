import Foundation

/// Retries with exponential backoff for connection errors, 5xx and 429; honours `Retry-After`.
public struct RetryPolicy: Sendable {
    public var maxAttempts: Int
    public var initialDelay: Double
    public var maximumDelay: Double

    public init(maxAttempts: Int = 4, initialDelay: Double = 0.5, maximumDelay: Double = 30) {
        self.maxAttempts = maxAttempts
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
    }

    /// Runs `operation` until it succeeds, throws a final error, or attempts run out.
    public func run<T>(_ operation: (Int) async throws -> T) async throws -> T {
        var attempt = 1
        while true {
            do {
                return try await operation(attempt)
            } catch let error as RegistryError where error.isRetryable {
                guard attempt < maxAttempts else {
                    throw attempt > 1 ? RegistryError.gaveUp(error, attempts: attempt) : error
                }
                let backoff = min(maximumDelay, initialDelay * pow(2, Double(attempt - 1)))
                let delay = min(maximumDelay, error.retryAfter ?? backoff)
                try await Task.sleep(nanoseconds: UInt64(delay * 1_000_000_000))
                attempt += 1
            }
        }
    }

    /// `Retry-After` as seconds or an HTTP date.
    public static func parseRetryAfter(_ value: String) -> Double? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Double(trimmed), seconds >= 0 { return seconds }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return max(0, date.timeIntervalSinceNow)
    }
}
