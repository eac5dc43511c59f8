// SQLite 3 (Debian's libsqlite3-dev): the registry's metadata database.
#include <sqlite3.h>

// SQLITE_TRANSIENT is a macro over a cast Swift cannot import.
static inline void (*_Nullable csqlite_transient(void))(void *_Nullable) { return SQLITE_TRANSIENT; }
