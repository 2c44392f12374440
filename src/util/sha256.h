/* sha256.h - SHA-256 (FIPS 180-4), incremental, for content hashes of
 * indexed files.
 *
 * Usage: sha256_init, any number of sha256_update, sha256_final (32 bytes)
 * or sha256_final_hex (64 lowercase hex digits + NUL). The work is done by
 * OpenSSL's libcrypto (SHA-NI when the CPU has it); a context holds a
 * libcrypto context, so it must not be copied, and every sha256_init must
 * be finished by sha256_final or sha256_final_hex, which free it.
 * Thread-safe: contexts share nothing.
 *
 * sha256_ref_* is the plain FIPS 180-4 code, the reference the tests check
 * libcrypto against (and the fallback when libcrypto cannot allocate).
 */
#ifndef IMGSEARCH_SHA256_H
#define IMGSEARCH_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define SHA256_BYTES 32
#define SHA256_HEX_LEN 64 /* digits, without the NUL */

struct sha256 {
    void *evp;         /* libcrypto's EVP_MD_CTX, or NULL: the reference runs */
    uint32_t h[8];     /* chaining state (reference) */
    uint64_t len;      /* bytes hashed so far */
    uint8_t buf[64];   /* partial block */
    size_t nbuf;       /* bytes in buf, 0..63 */
};

void sha256_init(struct sha256 *c);
void sha256_update(struct sha256 *c, const void *data, size_t n);
/* Finishes the hash into out; c must be re-initialised before reuse. */
void sha256_final(struct sha256 *c, uint8_t out[SHA256_BYTES]);
/* Same, as lowercase hex in hex[SHA256_HEX_LEN + 1]. */
void sha256_final_hex(struct sha256 *c, char hex[SHA256_HEX_LEN + 1]);

/* One-shot: the hex digest of n bytes. */
void sha256_hex(const void *data, size_t n, char hex[SHA256_HEX_LEN + 1]);

/* The plain reference: same contract, no libcrypto, no heap. */
void sha256_ref_init(struct sha256 *c);
void sha256_ref_update(struct sha256 *c, const void *data, size_t n);
void sha256_ref_final(struct sha256 *c, uint8_t out[SHA256_BYTES]);
void sha256_ref_hex(const void *data, size_t n, char hex[SHA256_HEX_LEN + 1]);

#endif
