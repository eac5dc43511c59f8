import CSQLite
import Foundation
import Synchronization

/// One SQLite connection with its prepared statements. Used by one thread at a time: the
/// ``SQLitePool`` hands it out and takes it back, so it is never shared while in use.
final class SQLiteConnection: @unchecked Sendable {
    let path: String
    private let handle: OpaquePointer
    private var statements: [String: OpaquePointer] = [:]

    /// Opens `path`; `create` makes the file when it is missing (otherwise a missing file is an error).
    init(path: String, create: Bool) throws(StoreError) {
        self.path = path
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX | (create ? SQLITE_OPEN_CREATE : 0)
        let status = sqlite3_open_v2(path, &db, flags, nil)
        guard status == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(status))
            sqlite3_close_v2(db)
            throw .database(path: path, message)
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        // Another process (an import, gc) may hold the write lock; wait for it rather than fail.
        sqlite3_busy_timeout(db, 60_000)
    }

    deinit {
        for statement in statements.values { sqlite3_finalize(statement) }
        sqlite3_close_v2(handle)
    }

    /// Creates a database with `schema` under a temporary name and links it into place, so a
    /// killed creation never leaves a half-made file that looks like a database.
    static func createDatabase(_ path: String, schema: String, version: Int) throws(StoreError) {
        let partial = "\(path).creating-\(getpid())"
        unlink(partial)
        do {
            let connection = try SQLiteConnection(path: partial, create: true)
            try connection.execute("PRAGMA journal_mode=DELETE")
            try connection.execute(schema)
            try connection.execute("PRAGMA user_version = \(version)")
        }
        chmod(partial, 0o640)
        // link(2), not rename(2): when two processes create it at once, the first one wins and the
        // second opens that one instead of replacing it.
        defer { unlink(partial) }
        guard link(partial, path) == 0 || errno == EEXIST else { throw .io("create \(path)", errno: errno) }
        FileSystem.syncDirectory((path as NSString).deletingLastPathComponent)
    }

    /// Runs statements that return no rows.
    func execute(_ sql: String) throws(StoreError) {
        var message: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(handle, sql, nil, nil, &message)
        defer { sqlite3_free(message) }
        guard status == SQLITE_OK else {
            throw .database(path: path, message.map { String(cString: $0) } ?? errorMessage(status))
        }
    }

    /// Runs `sql` with `bindings`, calling `row` for each result row.
    func query(_ sql: String, _ bindings: [SQLiteValue] = [], row: (SQLiteRow) throws -> Void) throws {
        let statement = try prepared(sql)
        defer {
            sqlite3_reset(statement)
            sqlite3_clear_bindings(statement)
        }
        for (index, value) in bindings.enumerated() {
            let position = Int32(index + 1)
            let status: Int32
            switch value {
            case .null: status = sqlite3_bind_null(statement, position)
            case .integer(let number): status = sqlite3_bind_int64(statement, position, number)
            case .text(let text): status = sqlite3_bind_text(statement, position, text, -1, csqlite_transient())
            }
            guard status == SQLITE_OK else { throw StoreError.database(path: path, errorMessage(status)) }
        }
        while true {
            let status = sqlite3_step(statement)
            if status == SQLITE_DONE { return }
            guard status == SQLITE_ROW else { throw StoreError.database(path: path, errorMessage(status)) }
            try row(SQLiteRow(statement: statement))
        }
    }

    /// Runs a statement that returns no rows; returns how many rows it changed.
    @discardableResult
    func run(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> Int {
        try query(sql, bindings) { _ in }
        return Int(sqlite3_changes(handle))
    }

    /// The first column of the first row, if any.
    func scalarText(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> String? {
        var value: String?
        try query(sql, bindings) { row in if value == nil { value = row.text(0) } }
        return value
    }

    func scalarInteger(_ sql: String, _ bindings: [SQLiteValue] = []) throws -> Int64? {
        var value: Int64?
        try query(sql, bindings) { row in if value == nil { value = row.integer(0) } }
        return value
    }

    func exists(_ sql: String, _ bindings: [SQLiteValue]) throws -> Bool {
        var found = false
        try query(sql, bindings) { _ in found = true }
        return found
    }

    /// Runs `body` in one write transaction (`BEGIN IMMEDIATE`: the write lock is taken at once,
    /// so two writers, in this process or another, never interleave); rolls back if it throws.
    func writing<Value>(_ body: () throws -> Value) throws -> Value {
        try execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Runs `body` in one read transaction: every query in it sees the same state.
    func reading<Value>(_ body: () throws -> Value) throws -> Value {
        try execute("BEGIN")
        defer { try? execute("COMMIT") }
        return try body()
    }

    private func prepared(_ sql: String) throws(StoreError) -> OpaquePointer {
        if let statement = statements[sql] { return statement }
        var statement: OpaquePointer?
        let status = sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &statement, nil)
        guard status == SQLITE_OK, let statement else { throw .database(path: path, errorMessage(status)) }
        statements[sql] = statement
        return statement
    }

    private func errorMessage(_ status: Int32) -> String {
        let message = String(cString: sqlite3_errmsg(handle))
        return message.isEmpty ? String(cString: sqlite3_errstr(status)) : message
    }
}

enum SQLiteValue: Sendable {
    case null
    case integer(Int64)
    case text(String)

    static func optional(_ text: String?) -> SQLiteValue { text.map { .text($0) } ?? .null }
}

/// The current row of a running query; valid only inside the row callback.
struct SQLiteRow {
    let statement: OpaquePointer

    func text(_ column: Int32) -> String? {
        guard let pointer = sqlite3_column_text(statement, column) else { return nil }
        return String(cString: pointer)
    }

    func integer(_ column: Int32) -> Int64 { sqlite3_column_int64(statement, column) }
}

/// Connections to one database file, one per thread that uses it at once. Each call borrows a
/// connection for its duration; statements stay prepared on the connection across calls.
final class SQLitePool: Sendable {
    let path: String
    private let idle = Mutex<[SQLiteConnection]>([])
    private let configure: @Sendable (SQLiteConnection) throws -> Void

    init(path: String, configure: @escaping @Sendable (SQLiteConnection) throws -> Void) {
        self.path = path
        self.configure = configure
    }

    func withConnection<Value>(_ body: (SQLiteConnection) throws -> Value) throws -> Value {
        let connection: SQLiteConnection
        if let reused = idle.withLock({ $0.popLast() }) {
            connection = reused
        } else {
            connection = try SQLiteConnection(path: path, create: false)
            try configure(connection)
        }
        defer { idle.withLock { $0.append(connection) } }
        return try body(connection)
    }
}
