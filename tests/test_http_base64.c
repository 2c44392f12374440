/* test_http_base64.c - the base64 codec of JSON image bodies: RFC 4648
 * section 10 vectors, both alphabets, optional padding, whitespace, data
 * URLs, every malformed input named, and random round trips. */
#include "test.h"
#include "http/base64.h"

static int dec(const char *in, char *out, size_t *n)
{
    struct err e = {0};
    int rc = http_base64_decode(in, strlen(in), (uint8_t *)out, n, &e);
    if (!rc)
        out[*n] = 0;
    return rc;
}

TEST(rfc4648_vectors)
{
    static const char *plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *enc[] = {"", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (int i = 0; i < 7; i++) {
        char out[64], got[64];
        size_t n = http_base64_encode((const uint8_t *)plain[i], strlen(plain[i]), out);
        CHECK_INT_EQ(n, strlen(enc[i]));
        CHECKF(strcmp(out, enc[i]) == 0, "encode %s: %s", plain[i], out);
        size_t m = 0;
        CHECK_INT_EQ(dec(enc[i], got, &m), 0);
        CHECK_INT_EQ(m, strlen(plain[i]));
        CHECKF(strcmp(got, plain[i]) == 0, "decode %s: %s", enc[i], got);
    }
}

TEST(lenient_forms)
{
    char got[64];
    size_t n;
    /* padding is optional */
    CHECK_INT_EQ(dec("Zm9vYg", got, &n), 0);
    CHECK(strcmp(got, "foob") == 0);
    CHECK_INT_EQ(dec("Zm9vYmE", got, &n), 0);
    CHECK(strcmp(got, "fooba") == 0);
    /* line breaks and spaces anywhere (MIME wrapping) */
    CHECK_INT_EQ(dec(" Zm9v\r\nYmFy\n", got, &n), 0);
    CHECK(strcmp(got, "foobar") == 0);
    /* the URL-safe alphabet: 0xfb 0xff -> "-_8" */
    CHECK_INT_EQ(dec("-_8=", got, &n), 0);
    CHECK_INT_EQ(n, 2);
    CHECK((uint8_t)got[0] == 0xfb && (uint8_t)got[1] == 0xff);
    CHECK_INT_EQ(dec("+/8=", got, &n), 0);
    CHECK((uint8_t)got[0] == 0xfb && (uint8_t)got[1] == 0xff);
    /* a data URL, as FileReader.readAsDataURL gives */
    CHECK_INT_EQ(dec("data:image/png;base64,Zm9vYmFy", got, &n), 0);
    CHECK(strcmp(got, "foobar") == 0);
    CHECK_INT_EQ(dec("data:;base64,Zg==", got, &n), 0);
    CHECK(strcmp(got, "f") == 0);
}

TEST(malformed_inputs)
{
    struct err e = {0};
    uint8_t out[64];
    size_t n;
    const struct {
        const char *in, *msg;
    } bad[] = {
        {"Zm9v!", "character 4 (0x21) is not in the alphabet"},
        {"Zg=", "wrong '=' padding"},
        {"Zg===", "wrong '=' padding"},
        {"====", "wrong '=' padding"},
        {"Zg==Zg==", "data after '=' padding at character 4"},
        {"Z", "lone character"},
        {"Zm9vY", "lone character"},
        {"Zh==", "non-zero padding bits"},
        {"Zm9=", "non-zero padding bits"},
        {"data:image/png,Zm9v", "not in the alphabet"}, /* not ;base64 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = http_base64_decode(bad[i].in, strlen(bad[i].in), out, &n, &e);
        CHECKF(rc == -ERR_INVALID_ARGUMENT, "%s: rc %d", bad[i].in, rc);
        CHECK_STR_CONTAINS(e.msg, bad[i].msg);
        CHECK_STR_CONTAINS(e.msg, "base64");
    }
}

TEST(round_trips_and_limit)
{
    uint8_t in[300], back[300];
    char enc[420];
    uint32_t x = 12345;
    for (size_t len = 0; len < sizeof in; len++) {
        for (size_t i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            in[i] = (uint8_t)(x >> 16);
        }
        size_t en = http_base64_encode(in, len, enc);
        CHECK_INT_EQ(en, 4 * ((len + 2) / 3));
        CHECK(http_base64_decoded_max(en) >= len);
        size_t n = 0;
        struct err e;
        REQUIRE(http_base64_decode(enc, en, back, &n, &e) == 0);
        CHECK_INT_EQ(n, len);
        CHECK(memcmp(in, back, len) == 0);
    }
    uint8_t *p = NULL;
    size_t n = 0;
    struct err e = {0};
    CHECK_INT_EQ(http_base64_decode_alloc("Zm9vYmFy", 8, 6, &p, &n, &e), 0);
    CHECK_INT_EQ(n, 6);
    CHECK(p && memcmp(p, "foobar", 6) == 0);
    free(p);
    CHECK_INT_EQ(http_base64_decode_alloc("Zm9vYmFy", 8, 5, &p, &n, &e), -ERR_TOO_LARGE);
    CHECK(p == NULL);
    CHECK_STR_CONTAINS(e.msg, "over the limit of 5");
    /* refused from the length alone, before decoding */
    static char big[4000];
    memset(big, 'A', sizeof big);
    CHECK_INT_EQ(http_base64_decode_alloc(big, sizeof big, 100, &p, &n, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "4000 characters");
}

TEST_MAIN(rfc4648_vectors, lenient_forms, malformed_inputs, round_trips_and_limit)
