/* test_tokenizer.c - the CLIP tokenizer against OpenAI's ids.
 *
 * The fixture texts carry the ids OpenAI's simple_tokenizer gave; the other
 * cases assert ids looked up in tests/fixtures/tiny-clip/vocab.json (the
 * token strings are in the comments, in GPT-2's byte-to-unicode spelling)
 * or relations that must hold (NFC == NFD, entity == literal, upper ==
 * lower).
 */
#include "test.h"

#include <jansson.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clip/tokenizer.h"

#define SOT 49406
#define EOT 49407

static struct tok *load_dir(const char *dir)
{
    struct err e = {0};
    struct tok *t = NULL;
    int rc = tok_new_from_dir(&t, dir, &e);
    CHECKF(rc == 0, "%s: %s", dir, e.msg);
    return t;
}

/* The HF-layout fixture tokenizer. */
static struct tok *load_fixture(void)
{
    char *dir = test_path("tiny-clip");
    struct tok *t = load_dir(dir);
    free(dir);
    return t;
}

/* A temporary folder with the given files (name, contents pairs). */
static char *tmp_dir(void)
{
    char tmpl[] = "/tmp/imgsearch-tok-XXXXXX";
    char *d = mkdtemp(tmpl);
    return d ? strdup(d) : NULL;
}

static int write_file(const char *dir, const char *name, const void *data, size_t n)
{
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f)
        return -1;
    size_t w = fwrite(data, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int copy_fixture(const char *dir, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "tiny-clip/%s", name);
    char *src = test_path(rel);
    size_t n = 0;
    char *data = src ? test_read_file(src, &n) : NULL;
    int rc = data ? write_file(dir, name, data, n) : -1;
    free(data);
    free(src);
    return rc;
}

static void rm_dir(char *dir)
{
    static const char *const names[] = {"vocab.json", "merges.txt",
                                        "bpe_simple_vocab_16e6.txt.gz"};
    char p[4096];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", dir, names[i]);
        unlink(p);
    }
    rmdir(dir);
    free(dir);
}

/* Encodes s (strlen) with context 77; returns the id count or -1. */
static int enc(struct tok *t, const char *s, int32_t *ids)
{
    struct err e = {0};
    int n = 0;
    int rc = tok_encode(t, s, strlen(s), ids, TOK_CONTEXT, &n, &e);
    CHECKF(rc == 0, "\"%s\": %s", s, e.msg);
    return rc == 0 ? n : -1;
}

static int ids_eq(const int32_t *a, int na, const int32_t *b, int nb)
{
    return na == nb && na >= 0 && !memcmp(a, b, (size_t)na * sizeof *a);
}

/* Checks that s encodes to exactly want[0..n). */
#define CHECK_IDS(t, s, ...)                                                   \
    do {                                                                       \
        static const int32_t want_[] = {__VA_ARGS__};                          \
        int32_t got_[TOK_CONTEXT];                                             \
        int n_ = enc((t), (s), got_);                                          \
        CHECKF(ids_eq(got_, n_, want_, (int)(sizeof want_ / sizeof want_[0])), \
               "\"%s\" gave %d ids, first %d", (s), n_, n_ > 1 ? got_[1] : -1); \
    } while (0)

/* Checks that texts a and b give the same ids. */
#define CHECK_SAME(t, a, b)                                                    \
    do {                                                                       \
        int32_t ia_[TOK_CONTEXT], ib_[TOK_CONTEXT];                            \
        int na_ = enc((t), (a), ia_), nb_ = enc((t), (b), ib_);                \
        CHECKF(ids_eq(ia_, na_, ib_, nb_), "\"%s\" != \"%s\"", (a), (b));       \
    } while (0)

/* Every fixture text gives OpenAI's ids with tokenizer t. */
static void check_expected(struct tok *t)
{
    char *path = test_path("tiny-clip/expected.json");
    json_error_t je;
    json_t *root = json_load_file(path, 0, &je);
    CHECKF(root, "%s: %s", path, je.text);
    free(path);
    json_t *texts = json_object_get(root, "texts");
    CHECK(json_array_size(texts) >= 10);
    size_t i;
    json_t *item;
    json_array_foreach(texts, i, item)
    {
        const char *s = json_string_value(json_object_get(item, "text"));
        json_t *want = json_object_get(item, "ids");
        REQUIRE(s && json_is_array(want));
        int32_t ids[TOK_CONTEXT];
        int n = enc(t, s, ids);
        CHECKF(n == (int)json_array_size(want), "\"%s\": %d ids, expected %zu", s, n,
               json_array_size(want));
        for (int k = 0; k < n && k < (int)json_array_size(want); k++) {
            json_int_t w = json_integer_value(json_array_get(want, (size_t)k));
            CHECKF(ids[k] == w, "\"%s\": id %d is %d, expected %lld", s, k, ids[k],
                   (long long)w);
        }
    }
    json_decref(root);
}

TEST(expected_ids_hf_files)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    CHECK_INT_EQ(tok_vocab_size(t), 49408);
    CHECK_INT_EQ(tok_sot(t), SOT);
    CHECK_INT_EQ(tok_eot(t), EOT);
    check_expected(t);
    tok_free(t);
}

TEST(expected_ids_openai_gz)
{
    char *dir = tmp_dir();
    REQUIRE(dir);
    CHECK(copy_fixture(dir, "bpe_simple_vocab_16e6.txt.gz") == 0);
    struct tok *t = load_dir(dir);
    if (t) {
        CHECK_INT_EQ(tok_vocab_size(t), 49408);
        CHECK_INT_EQ(tok_sot(t), SOT);
        CHECK_INT_EQ(tok_eot(t), EOT);
        check_expected(t);
    }
    tok_free(t);
    rm_dir(dir);
}

/* Texts that exercise every stage; both sources must agree on each. */
static const char *const mixed[] = {
    "a photo of a dog", "don't", "THEY'RE", "2024", "?!...", "東京タワー 2024",
    "👍🏽 🇫🇷", "ΟΔΥΣΣΕΥΣ", "İstanbul", "ſtar 'ſ <|ſtartoftext|>", "&notit; &eacute",
    "crème brûlée", "a\xc2\xa0" "b\xe3\x80\x80" "c", "<|endoftext|>x", "ǅemal ﬁsh",
    "x\xcd\x85y", "超级长的中文句子没有空格也要能处理",
};

TEST(both_sources_same_ids)
{
    char *dir = tmp_dir();
    REQUIRE(dir);
    CHECK(copy_fixture(dir, "bpe_simple_vocab_16e6.txt.gz") == 0);
    struct tok *gz = load_dir(dir), *hf = load_fixture();
    if (gz && hf) {
        for (size_t i = 0; i < sizeof mixed / sizeof mixed[0]; i++) {
            int32_t a[TOK_CONTEXT], b[TOK_CONTEXT];
            int na = enc(hf, mixed[i], a), nb = enc(gz, mixed[i], b);
            CHECKF(ids_eq(a, na, b, nb), "\"%s\": sources differ", mixed[i]);
        }
        /* the merges of a long text */
        char *text = malloc(10001);
        REQUIRE(text);
        for (int i = 0; i < 10000; i++)
            text[i] = "abcdefghijklmnopqrstuvwxyz etaoin"[(i * 7919) % 33];
        text[10000] = 0;
        int32_t a[4096], b[4096];
        int na = 0, nb = 0;
        struct err e;
        CHECK(tok_encode(hf, text, 10000, a, 4096, &na, &e) == 0);
        CHECK(tok_encode(gz, text, 10000, b, 4096, &nb, &e) == 0);
        CHECK(na > 1000);
        CHECK(ids_eq(a, na, b, nb));
        free(text);
    }
    tok_free(gz);
    tok_free(hf);
    rm_dir(dir);
}

TEST(concrete_ids_from_vocab)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    /* a</w> photo</w> of</w> a</w> dog</w> */
    CHECK_IDS(t, "a photo of a dog", SOT, 320, 1125, 539, 320, 1929, EOT);
    CHECK_IDS(t, "", SOT, EOT);
    CHECK_IDS(t, "   \t\n ", SOT, EOT);
    /* punctuation runs are one piece: !!!</w>; ?! ...</w> */
    CHECK_IDS(t, "!!!", SOT, 995, EOT);
    CHECK_IDS(t, "?!...", SOT, 9785, 678, EOT);
    /* hello</w> ,</w> world</w> !</w> */
    CHECK_IDS(t, "hello, world!", SOT, 3306, 267, 1002, 256, EOT);
    /* contractions split off: don</w> 't</w>, it</w> 's</w>, we</w> 'll</w> */
    CHECK_IDS(t, "don't", SOT, 847, 713, EOT);
    CHECK_IDS(t, "it's", SOT, 585, 568, EOT);
    CHECK_IDS(t, "we'll", SOT, 649, 1342, EOT);
    /* each digit is its own piece: 2</w> 0</w> 2</w> 4</w>; $</w> 5</w> */
    CHECK_IDS(t, "2024", SOT, 273, 271, 273, 275, EOT);
    CHECK_IDS(t, "$5", SOT, 259, 276, EOT);
    /* CJK: æĿ± äº ¬</w> (the UTF-8 bytes of 東京) */
    CHECK_IDS(t, "東京", SOT, 48338, 21078, 361, EOT);
    /* æĹ¥ æľ¬ èª ŀ ãģ® åĨĻ çľ Ł</w> */
    CHECK_IDS(t, "日本語の写真", SOT, 39121, 44353, 34002, 252, 21575, 44653, 33440, 509, EOT);
    /* emoji: ðŁĳį</w>; ðŁĺĢðŁĺĢ</w> */
    CHECK_IDS(t, "👍", SOT, 4201, EOT);
    CHECK_IDS(t, "😀😀", SOT, 34503, EOT);
    /* accents: cafÃ©</w>; na Ã¯ ve</w> */
    CHECK_IDS(t, "café", SOT, 15304, EOT);
    CHECK_IDS(t, "naïve", SOT, 1097, 35689, 563, EOT);
    /* «» is one punctuation piece: Â « Â»</w> */
    CHECK_IDS(t, "«»", SOT, 126, 104, 7599, EOT);
    /* a NUL byte is text: a</w> Ā</w> b</w> */
    {
        int32_t ids[8];
        int n = 0;
        struct err e;
        CHECK(tok_encode(t, "a\0b", 3, ids, 8, &n, &e) == 0);
        static const int32_t want[] = {SOT, 320, 444, 321, EOT};
        CHECK(ids_eq(ids, n, want, 5));
    }
    tok_free(t);
}

TEST(special_tokens_in_text)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    CHECK_IDS(t, "<|startoftext|>", SOT, SOT, EOT);
    CHECK_IDS(t, "a<|endoftext|>dog", SOT, 320, EOT, 1929, EOT);
    /* lowercased first, so this is the special token too */
    CHECK_IDS(t, "<|ENDOFTEXT|>", SOT, EOT, EOT);
    /* inside a punctuation run the literal is not seen: !<| startoftext |> */
    {
        int32_t ids[TOK_CONTEXT];
        int n = enc(t, "!<|startoftext|>", ids);
        CHECK(n > 3);
        for (int i = 1; i < n - 1; i++)
            CHECK(ids[i] != SOT);
    }
    tok_free(t);
}

TEST(case_and_unicode_cleaning)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    CHECK_SAME(t, "A PHOTO OF A DOG", "a photo of a dog");
    CHECK_SAME(t, "Crème Brûlée", "crème brûlée");
    /* NFC: e + U+0301 and U+00E9 are the same text */
    CHECK_SAME(t, "cafe\xcc\x81", "caf\xc3\xa9");
    CHECK_SAME(t, "A\xcc\x8angstr\xc3\xb6m", "\xc3\x85ngstro\xcc\x88m");
    CHECK_SAME(t, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "한"); /* Hangul jamo */
    /* whitespace: NBSP, ideographic space, tabs collapse to one space */
    CHECK_SAME(t, "a\xc2\xa0photo\xe3\x80\x80of\t\n a  dog", "a photo of a dog");
    /* U+001C..U+001F are stripped at the ends (str.strip) */
    CHECK_SAME(t, "\x1c" "dog\x1f", "dog");
    /* final sigma: Σ at a word end lowers to ς (Ï Ĥ</w>), elsewhere σ (Ï ĥ) */
    CHECK_SAME(t, "ΟΔΥΣΣΕΥΣ", "οδυσσευς");
    CHECK_IDS(t, "ΣΑΣ", SOT, 139, 225, 138, 109, 139, 480, EOT);
    /* IGNORECASE quirks of the reference regex on lowercase text: 's also
     * matches 'ſ (one piece: ' Å ¿</w>), and U+0345 matches no branch, so it
     * is dropped like a space (x</w> y</w>) */
    CHECK_IDS(t, "it'\xc5\xbf", SOT, 585, 6, 129, 379, EOT);
    CHECK_IDS(t, "x\xcd\x85y", SOT, 343, 344, EOT);
    /* İ lowers to i + U+0307: i</w> Ìĩ</w> stanbul</w> */
    CHECK_IDS(t, "İstanbul", SOT, 328, 16384, 11231, EOT);
    tok_free(t);
}

TEST(html_entities)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    CHECK_SAME(t, "&amp;", "&");
    CHECK_SAME(t, "&#39;", "'");
    CHECK_SAME(t, "&#x27;s", "'s");
    CHECK_SAME(t, "Tom &amp; Jerry", "Tom & Jerry");
    /* tom</w> &</w> jerry</w> */
    CHECK_IDS(t, "Tom &amp; Jerry", SOT, 2435, 261, 9164, EOT);
    /* unescaped twice, as basic_clean does, but not three times */
    CHECK_SAME(t, "&amp;amp;", "&");
    CHECK_SAME(t, "&amp;amp;amp;", "& amp ;");
    CHECK_SAME(t, "caf&eacute;", "café");
    CHECK_SAME(t, "caf&eacute", "café"); /* legacy name without ';' */
    CHECK_SAME(t, "&copy; 2024", "© 2024");
    CHECK_SAME(t, "&COPY;", "©");
    CHECK_SAME(t, "&notit;", "¬it;"); /* longest legacy prefix */
    CHECK_SAME(t, "&lt;dog&gt;", "<dog>");
    CHECK_SAME(t, "&hellip;", "…");
    CHECK_SAME(t, "&Omega;", "Ω");
    CHECK_SAME(t, "&#128512;", "😀");
    CHECK_SAME(t, "&#x1F600;", "😀");
    CHECK_SAME(t, "&#150;", "–");    /* Windows-1252 */
    CHECK_SAME(t, "&#0;", "\xef\xbf\xbd");      /* U+FFFD */
    CHECK_SAME(t, "&#xD800;", "\xef\xbf\xbd");  /* surrogate */
    CHECK_SAME(t, "&#99999999999999999999;", "\xef\xbf\xbd");
    CHECK_SAME(t, "a&#1;b", "ab");   /* control characters are dropped */
    CHECK_SAME(t, "a&nbsp;b", "a b");
    /* not references: stay text */
    CHECK_IDS(t, "&#;", SOT, 5, 2, 282, EOT); /* one piece: & # ;</w> */
    CHECK_SAME(t, "&bogus;", "& bogus ;");
    CHECK_SAME(t, "&amp", "&");
    tok_free(t);
}

TEST(truncation_and_long_text)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    size_t n = 10000;
    char *text = malloc(n + 1);
    REQUIRE(text);
    for (size_t i = 0; i < n; i++)
        text[i] = "photo of a dog "[i % 15];
    text[n] = 0;
    int32_t ids[TOK_CONTEXT];
    CHECK_INT_EQ(enc(t, text, ids), 77);
    CHECK_INT_EQ(ids[0], SOT);
    CHECK_INT_EQ(ids[76], EOT);
    CHECK_INT_EQ(ids[1], 1125);
    CHECK_INT_EQ(ids[75], 320); /* photo of a dog: the 75th token is a</w> */
    /* one 10,000-letter word */
    memset(text, 'a', n);
    CHECK_INT_EQ(enc(t, text, ids), 77);
    CHECK_INT_EQ(ids[76], EOT);
    /* a short context keeps the first ids and ends with <|endoftext|> */
    struct err e;
    int k = 0;
    CHECK(tok_encode(t, "a photo of a cat", 16, ids, 4, &k, &e) == 0);
    static const int32_t want4[] = {SOT, 320, 1125, EOT};
    CHECK(ids_eq(ids, k, want4, 4));
    CHECK(tok_encode(t, "a photo of a cat", 16, ids, 2, &k, &e) == 0);
    static const int32_t want2[] = {SOT, EOT};
    CHECK(ids_eq(ids, k, want2, 2));
    /* exactly full: 5 tokens in a context of 7 */
    CHECK(tok_encode(t, "a photo of a cat", 16, ids, 7, &k, &e) == 0);
    CHECK_INT_EQ(k, 7);
    CHECK_INT_EQ(ids[5], 2368);
    free(text);
    tok_free(t);
}

TEST(input_errors)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    int32_t ids[TOK_CONTEXT];
    int n = 99;
    struct err e = {0};
    static const struct {
        const char *s;
        size_t len;
        const char *at;
    } bad[] = {
        {"\xff", 1, "byte 0"},
        {"abc\xc3", 4, "byte 3"},           /* truncated */
        {"ab\xc0\xaf", 4, "byte 2"},        /* overlong '/' */
        {"x\xed\xa0\x80", 4, "byte 1"},     /* surrogate */
        {"\xf4\x90\x80\x80", 4, "byte 0"},  /* above U+10FFFF */
        {"ok \xe2\x82", 5, "byte 3"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_INT_EQ(tok_encode(t, bad[i].s, bad[i].len, ids, TOK_CONTEXT, &n, &e),
                     -ERR_INVALID_UTF8);
        CHECK_INT_EQ(e.code, ERR_INVALID_UTF8);
        CHECK_STR_CONTAINS(e.msg, bad[i].at);
        CHECK_INT_EQ(n, 0);
    }
    size_t big = TOK_MAX_INPUT + 1;
    char *text = malloc(big);
    REQUIRE(text);
    memset(text, 'a', big);
    CHECK_INT_EQ(tok_encode(t, text, big, ids, TOK_CONTEXT, &n, &e), -ERR_TOO_LARGE);
    CHECK_STR_CONTAINS(e.msg, "1048577");
    /* exactly at the limit is fine */
    CHECK_INT_EQ(tok_encode(t, text, big - 1, ids, TOK_CONTEXT, &n, &e), 0);
    CHECK_INT_EQ(n, 77);
    free(text);
    CHECK_INT_EQ(tok_encode(t, "a", 1, ids, 1, &n, &e), -ERR_INVALID_ARGUMENT);
    CHECK_INT_EQ(tok_encode(t, NULL, 0, ids, TOK_CONTEXT, &n, &e), 0);
    CHECK_INT_EQ(n, 2);
    tok_free(t);
}

#define NMIXED (sizeof mixed / sizeof mixed[0])

/* The single-threaded ids of every mixed text, computed before the threads
 * start; each thread compares every id of every encode with them. */
struct serial_ids {
    int32_t ids[NMIXED][TOK_CONTEXT];
    int n[NMIXED];
};

struct thread_arg {
    struct tok *t;                 /* shared tokenizer */
    const struct serial_ids *want; /* the single-threaded results */
    int first;                     /* first text this thread encodes */
    int mismatches;                /* encodes that differed in any id */
};

static void *encode_many(void *p)
{
    struct thread_arg *a = p;
    a->mismatches = 0;
    for (int round = 0; round < 50; round++)
        for (size_t k = 0; k < NMIXED; k++) {
            size_t i = (k + (size_t)a->first) % NMIXED; /* threads stay out of step */
            int32_t x[TOK_CONTEXT];
            int nx = 0;
            struct err e;
            if (tok_encode(a->t, mixed[i], strlen(mixed[i]), x, TOK_CONTEXT, &nx, &e) ||
                nx != a->want->n[i] || memcmp(x, a->want->ids[i], sizeof(int32_t) * (size_t)nx))
                a->mismatches++;
        }
    return NULL;
}

TEST(concurrent_encodes)
{
    struct tok *t = load_fixture();
    REQUIRE(t);
    static struct serial_ids want;
    for (size_t i = 0; i < NMIXED; i++) {
        struct err e;
        CHECK(tok_encode(t, mixed[i], strlen(mixed[i]), want.ids[i], TOK_CONTEXT, &want.n[i], &e) == 0);
        CHECK(want.n[i] >= 3);
    }
    pthread_t th[4];
    struct thread_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (struct thread_arg){t, &want, i * 5, 0};
        CHECK(pthread_create(&th[i], NULL, encode_many, &args[i]) == 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CHECKF(args[i].mismatches == 0, "thread %d: %d of %d encodes differ from the "
               "single-threaded ids", i, args[i].mismatches, 50 * (int)NMIXED);
    }
    tok_free(t);
}

/* Loads dir expecting failure with code and a message containing what. */
static void check_load_error(const char *dir, int code, const char *what)
{
    struct tok *t = (struct tok *)1;
    struct err e = {0};
    CHECK_INT_EQ(tok_new_from_dir(&t, dir, &e), -code);
    CHECK(t == NULL);
    if (t && t != (struct tok *)1)
        tok_free(t);
    CHECK_INT_EQ(e.code, code);
    CHECK_STR_CONTAINS(e.msg, what);
}

TEST(load_errors)
{
    check_load_error("/nonexistent/model", ERR_BAD_PATH, "/nonexistent/model");
    char *dir = tmp_dir();
    REQUIRE(dir);
    check_load_error(dir, ERR_BAD_PATH, "no tokenizer files");

    /* vocab.json alone: merges.txt is named */
    CHECK(copy_fixture(dir, "vocab.json") == 0);
    check_load_error(dir, ERR_BAD_PATH, "merges.txt");

    /* bad JSON */
    const char *bad_json = "{\"a\": 1,,}";
    CHECK(write_file(dir, "vocab.json", bad_json, strlen(bad_json)) == 0);
    CHECK(copy_fixture(dir, "merges.txt") == 0);
    check_load_error(dir, ERR_CORRUPT, "vocab.json: line 1");

    /* JSON that is not token -> id */
    CHECK(write_file(dir, "vocab.json", "[1, 2]", 6) == 0);
    check_load_error(dir, ERR_CORRUPT, "vocab.json");
    CHECK(write_file(dir, "vocab.json", "{\"a\": 0, \"b\": 0}", 16) == 0);
    check_load_error(dir, ERR_CORRUPT, "given once");

    /* a vocabulary without the byte symbols */
    CHECK(write_file(dir, "vocab.json", "{\"a\": 0}", 8) == 0);
    check_load_error(dir, ERR_CORRUPT, "of byte 0x00 is missing");

    /* a merge line that is not two tokens */
    CHECK(copy_fixture(dir, "vocab.json") == 0);
    const char *bad_merges = "#version: 0.2\ni n\nthree to kens\n";
    CHECK(write_file(dir, "merges.txt", bad_merges, strlen(bad_merges)) == 0);
    check_load_error(dir, ERR_CORRUPT, "merges.txt: line 3");

    /* a merge whose result is not in the vocabulary */
    const char *odd = "#version: 0.2\nz q\n";
    CHECK(write_file(dir, "merges.txt", odd, strlen(odd)) == 0);
    check_load_error(dir, ERR_CORRUPT, "\"zq\" is not in");

    /* a small consistent merge list loads and merges only what it lists */
    const char *two = "#version: 0.2\ni n</w>\nt h\n";
    CHECK(write_file(dir, "merges.txt", two, strlen(two)) == 0);
    struct tok *t = load_dir(dir);
    if (t) {
        /* "thin" -> th in</w> (ids 513, 530 in vocab.json) */
        int32_t ids[TOK_CONTEXT];
        int n = enc(t, "thin", ids);
        static const int32_t want[] = {SOT, 513, 530, EOT};
        CHECK(ids_eq(ids, n, want, 4));
    }
    tok_free(t);

    /* a truncated gzip file */
    char p[4096];
    snprintf(p, sizeof p, "%s/vocab.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/merges.txt", dir);
    unlink(p);
    char *gz = test_path("tiny-clip/bpe_simple_vocab_16e6.txt.gz");
    size_t gn = 0;
    char *data = gz ? test_read_file(gz, &gn) : NULL;
    REQUIRE(data && gn > 5000);
    CHECK(write_file(dir, "bpe_simple_vocab_16e6.txt.gz", data, 5000) == 0);
    check_load_error(dir, ERR_CORRUPT, "bpe_simple_vocab_16e6.txt.gz");
    free(data);
    free(gz);
    rm_dir(dir);
}

TEST(free_null)
{
    tok_free(NULL);
}

TEST_MAIN(expected_ids_hf_files, expected_ids_openai_gz, both_sources_same_ids,
          concrete_ids_from_vocab, special_tokens_in_text, case_and_unicode_cleaning,
          html_entities, truncation_and_long_text, input_errors, concurrent_encodes,
          load_errors, free_null)
