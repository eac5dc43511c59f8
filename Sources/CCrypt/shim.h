// libxcrypt (Debian's libcrypt-dev): crypt_rn and crypt_gensalt_rn for bcrypt password hashes,
// the format `htpasswd -B` writes.
#include <crypt.h>
