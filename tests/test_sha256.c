/* test_sha256.c - SHA-256 against the NIST example vectors (FIPS 180-4
 * examples, "abc" and the two-block messages, one million 'a'), lengths
 * around the padding boundary (digests from coreutils sha256sum), a fixture
 * file, incremental updates split at every offset, and libcrypto against
 * the plain reference on many lengths. */
#include "test.h"
#include "util/sha256.h"

static void check_hex(const char *msg, size_t n, const char *want)
{
    char hex[SHA256_HEX_LEN + 1];
    sha256_hex(msg, n, hex);
    CHECKF(strcmp(hex, want) == 0, "len %zu: %s != %s", n, hex, want);
}

TEST(nist_vectors)
{
    check_hex("", 0, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    check_hex("abc", 3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *m2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    check_hex(m2, strlen(m2), "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    const char *m3 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmno"
                     "ijklmnopjklmnopqklmnopqrlmnopqrsmnopqrstnopqrstu";
    check_hex(m3, strlen(m3), "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

TEST(million_a)
{
    /* fed in uneven pieces to cross block boundaries */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    struct sha256 c;
    sha256_init(&c);
    size_t left = 1000000;
    while (left) {
        size_t k = left < sizeof chunk ? left : sizeof chunk;
        sha256_update(&c, chunk, k);
        left -= k;
    }
    char hex[SHA256_HEX_LEN + 1];
    sha256_final_hex(&c, hex);
    CHECK(strcmp(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") == 0);
}

TEST(padding_boundaries)
{
    static const struct {
        size_t n;
        const char *hex;
    } v[] = {
        {55, "9f4390f8d30c2dd92ec9f095b65e2b9ae9b0a925a5258e241c9f1e910f734318"},
        {56, "b35439a4ac6f0948b6d6f9e3c6af0f5f590ce20f1bde7090ef7970686ec6738a"},
        {63, "7d3e74a05d7db15bce4ad9ec0658ea98e3f06eeecf16b4c6fff2da457ddc2f34"},
        {64, "ffe054fe7ae0cb6dc65c3af9b61d5209f439851db43d0ba5997337df154668eb"},
        {65, "635361c48bb9eab14198e76ea8ab7f1a41685d6ad62aa9146d301d4f17eb0ae0"},
        {119, "31eba51c313a5c08226adf18d4a359cfdfd8d2e816b13f4af952f7ea6584dcfb"},
        {120, "2f3d335432c70b580af0e8e1b3674a7c020d683aa5f73aaaedfdc55af904c21c"},
    };
    char a[128];
    memset(a, 'a', sizeof a);
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        check_hex(a, v[i].n, v[i].hex);
}

TEST(fixture_file)
{
    char *path = test_path("tiny-clip/images/fruits.jpg");
    size_t n = 0;
    char *data = test_read_file(path, &n);
    free(path);
    REQUIRE(data);
    check_hex(data, n, "9c031d80a1c52da5eca790db896baffec6a7e52bf786cdb7bbfca5c7f880e6a1");
    free(data);
}

TEST(split_anywhere)
{
    /* every split point of a 200-byte message gives the one-shot digest */
    uint8_t msg[200];
    for (size_t i = 0; i < sizeof msg; i++)
        msg[i] = (uint8_t)(i * 131 + 7);
    char want[SHA256_HEX_LEN + 1], got[SHA256_HEX_LEN + 1];
    sha256_hex(msg, sizeof msg, want);
    for (size_t cut = 0; cut <= sizeof msg; cut++) {
        struct sha256 c;
        sha256_init(&c);
        sha256_update(&c, msg, cut);
        sha256_update(&c, msg + cut, 0);
        sha256_update(&c, msg + cut, sizeof msg - cut);
        sha256_final_hex(&c, got);
        CHECKF(strcmp(got, want) == 0, "cut at %zu", cut);
    }
}

TEST(libcrypto_matches_reference)
{
    /* every length 0..300 and some large ones, in uneven updates */
    size_t cap = 1 << 20;
    uint8_t *msg = malloc(cap);
    REQUIRE(msg);
    uint32_t x = 12345;
    for (size_t i = 0; i < cap; i++) {
        x = x * 1103515245u + 12345u;
        msg[i] = (uint8_t)(x >> 16);
    }
    char want[SHA256_HEX_LEN + 1], got[SHA256_HEX_LEN + 1];
    size_t lens[310];
    size_t nl = 0;
    for (size_t n = 0; n <= 300; n++)
        lens[nl++] = n;
    lens[nl++] = 4095;
    lens[nl++] = 4096;
    lens[nl++] = 65537;
    lens[nl++] = cap - 1;
    lens[nl++] = cap;
    for (size_t i = 0; i < nl; i++) {
        sha256_ref_hex(msg, lens[i], want);
        sha256_hex(msg, lens[i], got);
        CHECKF(strcmp(got, want) == 0, "one-shot, len %zu", lens[i]);
        struct sha256 c;
        sha256_init(&c);
        for (size_t off = 0, step = 1; off < lens[i]; off += step, step = step * 3 + 1)
            sha256_update(&c, msg + off, off + step > lens[i] ? lens[i] - off : step);
        sha256_final_hex(&c, got);
        CHECKF(strcmp(got, want) == 0, "pieces, len %zu", lens[i]);
    }
    free(msg);
}

TEST(reference_vectors)
{
    /* the reference itself, on NIST's "abc" */
    char hex[SHA256_HEX_LEN + 1];
    sha256_ref_hex("abc", 3, hex);
    CHECK(strcmp(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0);
}

TEST_MAIN(nist_vectors, million_a, padding_boundaries, fixture_file, split_anywhere,
          libcrypto_matches_reference, reference_vectors)
