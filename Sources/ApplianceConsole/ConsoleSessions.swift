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
        /// The user's password fingerprint at sign-in (a password change ends the session).
        var stamp: String?
        var started: Int
    }

    let idleTimeout: Int
    /// However active, a session ends this long after sign-in.
    static let lifetime = 12 * 3600
    static let maximum = 10_000
    private let table = Mutex<[String: Session]>([:])

    init(idleTimeout: Int) { self.idleTimeout = idleTimeout }

    static func token() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<4).map { _ in String(format: "%016llx", generator.next() as UInt64) }.joined()
    }

    /// A new session (a fresh id on every sign-in, so an id seen before sign-in is worth nothing after).
    func start(user: String?, stamp: String? = nil, now: Int = Int(Date().timeIntervalSince1970)) -> Session {
        let session = Session(
            id: Self.token(), user: user, csrf: Self.token(), lastSeen: now, stamp: stamp, started: now)
        table.withLock { table in
            if table.count >= Self.maximum {
                table = table.filter { now - $0.value.lastSeen < idleTimeout }
                // Still full: the sessions before sign-in seen longest ago go first (signed-in
                // users keep theirs however many sign-in pages are asked for).
                if table.count >= Self.maximum {
                    let waiting = table.values.filter { $0.user == nil }.sorted { $0.lastSeen < $1.lastSeen }
                    for old in waiting.prefix(table.count - Self.maximum + 1) { table[old.id] = nil }
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
            guard now - session.lastSeen < idleTimeout, now - session.started < Self.lifetime else {
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
