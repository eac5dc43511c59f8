// OpenSSL's libcrypto (Debian: libssl-dev). SHA-256/SHA-512 (with the CPU's SHA extensions where
// present) and Ed25519 keys and signatures for bundles.
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
