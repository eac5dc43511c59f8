// libarchive (Debian: libarchive-dev): streaming tar reading and writing.
#include <archive.h>
#include <archive_entry.h>
