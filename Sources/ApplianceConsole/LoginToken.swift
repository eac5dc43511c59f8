import Crypto
import Foundation

/// The sign-in form's CSRF token: an HMAC-SHA256, under a key made when the process starts, of a
/// random nonce the browser holds in the `ferry_login` cookie.
struct LoginToken: Sendable {
    static let cookie = "ferry_login"
    let key = SymmetricKey(size: .bits256)

    func token(for nonce: String) -> String {
        HMAC<SHA256>.authenticationCode(for: Data(nonce.utf8), using: key).map { String(format: "%02x", $0) }
            .joined()
    }

    /// What ``ConsoleSessions/token()`` makes: 64 lower-case hex digits.
    static func isNonce(_ text: String) -> Bool {
        text.utf8.count == 64 && text.utf8.allSatisfy { (48...57).contains($0) || (97...102).contains($0) }
    }
}
