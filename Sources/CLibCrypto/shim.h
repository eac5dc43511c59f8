// OpenSSL's libcrypto (Debian: libssl-dev). Used for SHA-256/SHA-512, which it runs with the
// CPU's SHA extensions where present.
#include <openssl/evp.h>
