import Foundation
import Synchronization

/// The console's sessions: a random id in an `HttpOnly; Secure; SameSite=Strict` cookie, the
/// user it is for (nil before sign-in), and the CSRF token every form of the session carries.
/// Kept in memory: a restart signs everyone out.
final class ConsoleSessions: Sendable {
    struct Session: Sendable {
        var id: String
        var user: String?
        var csrf: String
        var lastSeen: Int
    }

    let idleTimeout: Int
    static let maximum = 10_000
    private let table = Mutex<[String: Session]>([:])

    init(idleTimeout: Int) { self.idleTimeout = idleTimeout }

    static func token() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", generator.next() as UInt64) }.joined()
    }

    /// A new session (a fresh id on every sign-in, so an id seen before sign-in is worth nothing after).
    func start(user: String?, now: Int = Int(Date().timeIntervalSince1970)) -> Session {
        let session = Session(id: Self.token(), user: user, csrf: Self.token(), lastSeen: now)
        table.withLock { table in
            if table.count >= Self.maximum {
                table = table.filter { now - $0.value.lastSeen < idleTimeout }
                // Still full: the oldest sessions before sign-in go first.
                if table.count >= Self.maximum {
                    for (id, _) in table.filter({ $0.value.user == nil }).prefix(table.count - Self.maximum + 1) {
                        table[id] = nil
                    }
                }
            }
            table[session.id] = session
        }
        return session
    }

    /// The live session with this id, touched; nil when unknown or idle too long (then forgotten).
    func find(_ id: String, now: Int = Int(Date().timeIntervalSince1970)) -> Session? {
        table.withLock { table in
            guard var session = table[id] else { return nil }
            guard now - session.lastSeen < idleTimeout else {
                table[id] = nil
                return nil
            }
            session.lastSeen = now
            table[id] = session
            return session
        }
    }

    func end(_ id: String) { _ = table.withLock { $0.removeValue(forKey: id) } }
}
