/* tokenizer.c - CLIP's byte-level BPE tokenizer, matching OpenAI's
 * simple_tokenizer.py id for id.
 *
 * The path of a text:
 *   UTF-8 check -> NFC -> HTML unescape twice -> strip, collapse whitespace,
 *   strip -> lowercase -> pre-tokenizer (the regex below) -> each piece's
 *   UTF-8 bytes as GPT-2 byte symbols, "</w>" on the last -> BPE -> ids.
 *
 * Design decisions:
 * 1. Everything between loading and the ids works on id numbers, never on
 *    token strings: a word starts as the ids of its byte symbols and a merge
 *    table keyed by the id pair (a, b) gives the rank and the merged id. The
 *    vocabulary strings are needed only while loading, then dropped. Loading
 *    checks that every token a merge can produce is in the vocabulary and
 *    that ids are one-to-one, so id pairs behave exactly like string pairs.
 * 2. BPE keeps the word as a linked list and its mergeable pairs in a heap
 *    ordered by (rank, position), so a 1 MB word costs O(n log n), not the
 *    O(n^2) of the reference loop. The reference merges every occurrence of
 *    the best pair left to right before looking at any new pair; the heap
 *    does the same by draining all entries of one rank (they come out in
 *    position order) before pushing the pairs those merges created.
 * 3. A struct tok is immutable after loading and tok_encode keeps all its
 *    scratch in the call, so it is thread-safe without a lock. There is no
 *    word cache: a 77-token query costs microseconds without one.
 * 4. Pre-tokenizing stops as soon as context - 2 BPE ids are out, so a long
 *    text costs its cleaning (linear) plus 77 tokens of BPE.
 * 5. The regex is matched by hand. OpenAI's pattern is
 *      <\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|
 *      [\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+
 *    compiled by the `regex` module with IGNORECASE on already lowercased
 *    text. Two effects of IGNORECASE survive lowercasing and are kept: 's'
 *    in the literals also matches U+017F LATIN SMALL LETTER LONG S, and
 *    U+0345 COMBINING GREEK YPOGEGRAMMENI (which case-folds to a letter) is
 *    matched by no branch, so it is skipped like whitespace. \s is Unicode
 *    White_Space; letters are Lu Ll Lt Lm Lo, numbers Nd Nl No (utf8proc).
 * 6. Cleaning follows basic_clean + whitespace_clean + str.lower():
 *    - ftfy.fix_text is replaced by its last step, NFC. Its heuristic fixes
 *      (mojibake, curly quotes, ligatures, full-width forms, its own HTML
 *      unescape when the text has no '<') are not done.
 *    - html.unescape, applied twice: numeric references with Python's rules
 *      (Windows-1252 for 0x80-0x9F, U+FFFD for 0, surrogates and > 0x10FFFF,
 *      nothing for other control and non-character code points) and the
 *      named references of HTML 4.01 (Latin-1, symbols and Greek, special:
 *      252 names) plus &apos; and the upper-case aliases AMP COPY GT LT QUOT
 *      REG, with HTML5's values (&lang; &rang; are U+27E8 U+27E9). The 106
 *      legacy names HTML5 accepts without ';' (the Latin-1 set, amp lt gt
 *      quot and the aliases) work without it too, and as the longest prefix
 *      of a longer name ("&notit;" -> "¬it;"), as Python does. The other
 *      ~1870 HTML5-only names (&hellip; is HTML 4, &NewLine; is not) are
 *      left as text.
 *    - str.strip() strips str.isspace() characters (White_Space and
 *      U+001C..U+001F); re.sub(r'\s+', ' ') collapses White_Space runs.
 *    - str.lower() is utf8proc_tolower per code point plus Python's two
 *      full-mapping rules: U+0130 -> "i\u0307", and capital sigma -> final
 *      sigma U+03C2 at the end of a word (Unicode's Final_Sigma context,
 *      with Cased and Case_Ignorable from Unicode 14 as Python 3.11 has).
 *    Unicode tables are utf8proc's (Unicode 15); the reference uses
 *    Python's and the `regex` module's, so code points assigned in recent
 *    versions may be classed differently.
 * 7. Special tokens in the text ("<|startoftext|>") become their special ids,
 *    as in the reference, whose BPE cache maps them to themselves.
 *
 * References: Radford et al., "Learning Transferable Visual Models From
 * Natural Language Supervision" (2021), section 2.4; Sennrich et al., "Neural
 * Machine Translation of Rare Words with Subword Units" (2016) for BPE; the
 * GPT-2 byte-to-unicode table; HTML 4.01 section 24 (character entity
 * references); the WHATWG HTML "named character references" table.
 *
 * Size: one file (about 1,300 lines): the tokenizer is one pipeline
 * (UTF-8, NFC, HTML unescape, ftfy-style cleanup, the pre-token regex,
 * byte-level BPE with its cache), each stage matched to simple_tokenizer.py
 * and used only here; the vocabulary loaders share its tables.
 */
#include "clip/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>
#include <zlib.h>

#include "util/utf8.h"

#define N_MERGES_MAX (49152 - 256 - 2)  /* lines [1 : 49152-256-2+1] */
#define FILE_MAX (64u << 20)            /* largest tokenizer file read */
#define VOCAB_MAX (1 << 22)             /* most entries in vocab.json */

#define SOT_STR "<|startoftext|>"
#define EOT_STR "<|endoftext|>"
#define END_OF_WORD "</w>"

struct merge_slot {
    uint64_t key;    /* (uint32 a) << 32 | (uint32 b) */
    int32_t rank;    /* line index in the merge list; -1: empty slot */
    int32_t id;      /* id of the merged token a+b */
};

struct tok {
    int32_t byte_id[256];      /* id of a byte's symbol inside a word */
    int32_t byte_end_id[256];  /* id of a byte's symbol ending a word (+</w>) */
    int32_t sot;               /* id of <|startoftext|> */
    int32_t eot;               /* id of <|endoftext|> */
    int32_t vocab_size;        /* ids are 0 .. vocab_size-1 */
    struct merge_slot *merges; /* open-addressing table, merge_mask+1 slots */
    uint64_t merge_mask;       /* slot count - 1 (a power of two - 1) */
    int merge_bits;            /* log2 of the slot count */
};

/* ---- GPT-2's byte-to-unicode table ------------------------------------- */

/* Bytes that are printable Latin-1 stand for themselves; the other 68
 * (0x00-0x20, 0x7F-0xA0, 0xAD) get U+0100.. in byte order, so no symbol is
 * whitespace or a control character. */
static int byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
}

static void byte_chars(int32_t cp[256])
{
    int next = 256;
    for (int b = 0; b < 256; b++)
        cp[b] = byte_is_printable(b) ? b : next++;
}

/* ---- loading: a string -> id map used only while loading --------------- */

struct str_slot {
    const char *s;   /* token bytes, not NUL-terminated; NULL: empty slot */
    uint32_t len;    /* length of s */
    int32_t id;      /* the token's id */
};

struct strmap {
    struct str_slot *slots; /* mask+1 slots */
    size_t mask;            /* slot count - 1 */
};

static uint64_t fnv_step(uint64_t h, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 0x100000001b3ull;
    return h;
}

static int strmap_init(struct strmap *m, size_t want)
{
    size_t cap = 16;
    while (cap < 2 * want)
        cap <<= 1;
    m->slots = calloc(cap, sizeof *m->slots);
    m->mask = cap - 1;
    return m->slots ? 0 : -1;
}

/* Finds the slot of the concatenation a+b (b may be empty). */
static struct str_slot *strmap_slot(const struct strmap *m, const char *a,
                                    size_t alen, const char *b, size_t blen)
{
    uint64_t h = fnv_step(fnv_step(0xcbf29ce484222325ull, a, alen), b, blen);
    for (size_t i = (size_t)h & m->mask;; i = (i + 1) & m->mask) {
        struct str_slot *e = &m->slots[i];
        if (!e->s || (e->len == alen + blen && !memcmp(e->s, a, alen) &&
                      !memcmp(e->s + alen, b, blen)))
            return e;
    }
}

static int32_t strmap_get2(const struct strmap *m, const char *a, size_t alen,
                           const char *b, size_t blen)
{
    struct str_slot *e = strmap_slot(m, a, alen, b, blen);
    return e->s ? e->id : -1;
}

static int32_t strmap_get(const struct strmap *m, const char *s)
{
    return strmap_get2(m, s, strlen(s), "", 0);
}

/* Inserts or overwrites (a later entry wins, as in a Python dict); the map
 * keeps the pointer, not a copy. The caller sized the map for every key. */
static void strmap_put(struct strmap *m, const char *s, size_t len, int32_t id)
{
    struct str_slot *e = strmap_slot(m, s, len, "", 0);
    e->s = s;
    e->len = (uint32_t)len;
    e->id = id;
}

/* ---- the merge table ---------------------------------------------------- */

static uint64_t pair_key(int32_t a, int32_t b)
{
    return (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
}

static struct merge_slot *merge_slot(const struct tok *t, uint64_t key)
{
    uint64_t i = (key * 0x9E3779B97F4A7C15ull) >> (64 - t->merge_bits);
    for (;; i = (i + 1) & t->merge_mask) {
        struct merge_slot *e = &t->merges[i];
        if (e->rank < 0 || e->key == key)
            return e;
    }
}

/* Rank of merging symbols a, b, and the merged id; -1 when they don't merge. */
static int32_t merge_find(const struct tok *t, int32_t a, int32_t b, int32_t *id)
{
    const struct merge_slot *e = merge_slot(t, pair_key(a, b));
    *id = e->id;
    return e->rank;
}

/* ---- loading: files ----------------------------------------------------- */

struct merge_line {
    const char *a, *b;   /* the two tokens, inside the file buffer */
    uint32_t alen, blen; /* their lengths */
    size_t line;         /* 1-based line number in the file */
};

static int read_file(const char *path, char **out, size_t *len, struct err *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(err, err_code_of_errno(errno, 1), "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(f);
        return err_set(err, ERR_BAD_PATH, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size > FILE_MAX) {
        fclose(f);
        return err_set(err, ERR_TOO_LARGE, "%s: %lld bytes, the limit is %u",
                       path, (long long)st.st_size, FILE_MAX);
    }
    size_t n = (size_t)st.st_size;
    char *b = malloc(n + 1);
    if (!b) {
        fclose(f);
        return err_set(err, ERR_NOMEM, "%s: out of memory", path);
    }
    size_t got = fread(b, 1, n, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || got != n) {
        free(b);
        return err_set(err, ERR_IO, "%s: read failed", path);
    }
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
}

static int read_gz(const char *path, char **out, size_t *len, struct err *err)
{
    *out = NULL;
    gzFile f = gzopen(path, "rb");
    if (!f)
        return err_set(err, errno ? err_code_of_errno(errno, 1) : ERR_BAD_PATH, "%s: %s", path,
                       errno ? strerror(errno) : "cannot open");
    size_t cap = 1 << 20, n = 0;
    char *b = malloc(cap + 1);
    int rc = 0;
    if (!b) {
        rc = err_set(err, ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (;;) {
        if (n == cap) {
            if (cap >= FILE_MAX) {
                rc = err_set(err, ERR_TOO_LARGE,
                             "%s: more than %u bytes uncompressed", path, FILE_MAX);
                goto fail;
            }
            cap *= 2;
            char *nb = realloc(b, cap + 1);
            if (!nb) {
                rc = err_set(err, ERR_NOMEM, "%s: out of memory", path);
                goto fail;
            }
            b = nb;
        }
        int got = gzread(f, b + n, (unsigned)(cap - n));
        if (got < 0) {
            int zerr;
            const char *m = gzerror(f, &zerr);
            rc = err_set(err, ERR_CORRUPT, "%s: %s", path, m ? m : "gzip error");
            goto fail;
        }
        if (got == 0)
            break;
        n += (size_t)got;
    }
    int zerr = Z_OK;
    gzerror(f, &zerr);
    if (zerr != Z_OK) { /* Z_BUF_ERROR: the stream ends mid-way */
        rc = err_set(err, ERR_CORRUPT, "%s: truncated or damaged gzip data", path);
        goto fail;
    }
    gzclose(f);
    b[n] = 0;
    *out = b;
    *len = n;
    return 0;
fail:
    gzclose(f);
    free(b);
    return rc;
}

static int is_ascii_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1C && c <= 0x1F);
}

/* Splits buf into lines and parses lines [1 : 1 + N_MERGES_MAX) as "A B"
 * merges (line 0 is the "#version" header both layouts have). A final
 * empty line is ignored. */
static int parse_merges(const char *path, char *buf, size_t len,
                        struct merge_line **out, size_t *n_out, struct err *err)
{
    *out = NULL;
    *n_out = 0;
    size_t bad;
    if (utf8_check((const uint8_t *)buf, len, &bad) != 0)
        return err_set(err, ERR_CORRUPT, "%s: invalid UTF-8 at byte %zu", path, bad);
    struct merge_line *m = malloc(N_MERGES_MAX * sizeof *m);
    if (!m)
        return err_set(err, ERR_NOMEM, "%s: out of memory", path);
    size_t n = 0, line = 0;
    char *p = buf, *end = buf + len;
    while (p < end && n < N_MERGES_MAX) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        char *next = nl ? nl + 1 : end;
        line++;
        if (line == 1) {
            p = next;
            continue;
        }
        if (e > p && e[-1] == '\r')
            e--;
        if (e == p && next == end)
            break; /* the empty string after the last newline */
        char *sp = memchr(p, ' ', (size_t)(e - p));
        if (!sp || sp == p || sp + 1 == e || memchr(sp + 1, ' ', (size_t)(e - sp - 1))) {
            free(m);
            return err_set(err, ERR_CORRUPT,
                           "%s: line %zu: expected two tokens separated by one space",
                           path, line);
        }
        m[n].a = p;
        m[n].alen = (uint32_t)(sp - p);
        m[n].b = sp + 1;
        m[n].blen = (uint32_t)(e - sp - 1);
        m[n].line = line;
        n++;
        p = next;
    }
    *out = m;
    *n_out = n;
    return 0;
}

/* Fills the byte symbols, special ids and merge table of t from a
 * vocabulary map and a merge list. vocab_path names the file a missing
 * token is reported against. */
static int build(struct tok *t, const struct strmap *vocab,
                 const struct merge_line *m, size_t n_merges,
                 const char *vocab_path, const char *merges_path, struct err *err)
{
    int32_t cp[256];
    byte_chars(cp);
    for (int b = 0; b < 256; b++) {
        char u[8];
        size_t ul = (size_t)utf8proc_encode_char(cp[b], (uint8_t *)u);
        t->byte_id[b] = strmap_get2(vocab, u, ul, "", 0);
        t->byte_end_id[b] = strmap_get2(vocab, u, ul, END_OF_WORD, 4);
        if (t->byte_id[b] < 0 || t->byte_end_id[b] < 0)
            return err_set(err, ERR_CORRUPT,
                           "%s: the symbol \"%.*s%s\" of byte 0x%02X is missing",
                           vocab_path, (int)ul, u, t->byte_id[b] < 0 ? "" : END_OF_WORD, b);
    }
    t->sot = strmap_get(vocab, SOT_STR);
    t->eot = strmap_get(vocab, EOT_STR);
    if (t->sot < 0 || t->eot < 0)
        return err_set(err, ERR_CORRUPT, "%s: \"%s\" is missing", vocab_path,
                       t->sot < 0 ? SOT_STR : EOT_STR);

    int bits = 4;
    while (((uint64_t)1 << bits) < 2 * (uint64_t)n_merges)
        bits++;
    t->merge_bits = bits;
    t->merge_mask = ((uint64_t)1 << bits) - 1;
    t->merges = malloc(((size_t)1 << bits) * sizeof *t->merges);
    if (!t->merges)
        return err_set(err, ERR_NOMEM, "%s: out of memory", merges_path);
    for (uint64_t i = 0; i <= t->merge_mask; i++)
        t->merges[i].rank = -1;
    for (size_t i = 0; i < n_merges; i++) {
        int32_t a = strmap_get2(vocab, m[i].a, m[i].alen, "", 0);
        int32_t b = strmap_get2(vocab, m[i].b, m[i].blen, "", 0);
        if (a < 0 || b < 0)
            continue; /* a symbol no word can hold: the merge never applies */
        int32_t ab = strmap_get2(vocab, m[i].a, m[i].alen, m[i].b, m[i].blen);
        if (ab < 0)
            return err_set(err, ERR_CORRUPT,
                           "%s: line %zu: the merged token \"%.*s%.*s\" is not in %s",
                           merges_path, m[i].line, (int)m[i].alen, m[i].a,
                           (int)m[i].blen, m[i].b, vocab_path);
        struct merge_slot *e = merge_slot(t, pair_key(a, b));
        e->key = pair_key(a, b);
        e->rank = (int32_t)i; /* a repeated pair keeps its last rank */
        e->id = ab;
    }
    return 0;
}

/* Hugging Face layout: vocab.json maps token -> id, merges.txt lists merges. */
static int load_hf(struct tok *t, const char *vpath, const char *mpath, struct err *err)
{
    char *vbuf = NULL, *mbuf = NULL;
    size_t vlen = 0, mlen = 0, n_merges = 0;
    json_t *root = NULL;
    struct strmap map = {0};
    struct merge_line *m = NULL;
    unsigned char *seen = NULL;
    json_error_t jerr;
    int rc = read_file(vpath, &vbuf, &vlen, err);
    if (rc)
        goto fail;
    root = json_loadb(vbuf, vlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        rc = err_set(err, ERR_CORRUPT, "%s: line %d column %d: %s", vpath,
                     jerr.line, jerr.column, jerr.text);
        goto fail;
    }
    if (!json_is_object(root)) {
        rc = err_set(err, ERR_CORRUPT, "%s: not a JSON object of token -> id", vpath);
        goto fail;
    }
    size_t n = json_object_size(root);
    if (n == 0 || n > VOCAB_MAX) {
        rc = err_set(err, n ? ERR_TOO_LARGE : ERR_CORRUPT,
                     "%s: %zu tokens, expected 1 to %d", vpath, n, VOCAB_MAX);
        goto fail;
    }
    seen = calloc(n, 1);
    if (!seen || strmap_init(&map, n)) {
        rc = err_set(err, ERR_NOMEM, "%s: out of memory", vpath);
        goto fail;
    }
    const char *key;
    size_t klen;
    json_t *val;
    json_object_keylen_foreach(root, key, klen, val)
    {
        json_int_t id = json_is_integer(val) ? json_integer_value(val) : -1;
        if (id < 0 || (size_t)id >= n || seen[id]) {
            rc = err_set(err, ERR_CORRUPT,
                         "%s: token \"%.*s\": id must be an integer in [0, %zu) "
                         "given once", vpath, (int)(klen > 64 ? 64 : klen), key, n);
            goto fail;
        }
        seen[id] = 1;
        strmap_put(&map, key, klen, (int32_t)id);
    }
    t->vocab_size = (int32_t)n;

    rc = read_file(mpath, &mbuf, &mlen, err);
    if (rc)
        goto fail;
    /* HF reads merges.txt as read().strip().split("\n")[1:...] */
    char *s = mbuf, *e = mbuf + mlen;
    while (s < e && is_ascii_space(*s))
        s++;
    while (e > s && is_ascii_space(e[-1]))
        e--;
    rc = parse_merges(mpath, s, (size_t)(e - s), &m, &n_merges, err);
    if (rc)
        goto fail;
    rc = build(t, &map, m, n_merges, vpath, mpath, err);
fail:
    free(m);
    free(seen);
    free(map.slots);
    json_decref(root);
    free(vbuf);
    free(mbuf);
    return rc;
}

/* OpenAI layout: a gzipped merge list; the vocabulary is built from it as
 * simple_tokenizer does: the 256 byte symbols in code point order, the same
 * with "</w>", each merge joined, then <|startoftext|>, <|endoftext|>. */
static int load_gz(struct tok *t, const char *path, struct err *err)
{
    char *buf = NULL, *arena = NULL;
    size_t len = 0, n_merges = 0;
    struct merge_line *m = NULL;
    struct strmap map = {0};
    int rc = read_gz(path, &buf, &len, err);
    if (rc)
        goto fail;
    rc = parse_merges(path, buf, len, &m, &n_merges, err);
    if (rc)
        goto fail;
    size_t n_vocab = 512 + n_merges + 2, arena_len = 512 * 6 + 64;
    for (size_t i = 0; i < n_merges; i++)
        arena_len += m[i].alen + m[i].blen;
    arena = malloc(arena_len);
    if (!arena || strmap_init(&map, n_vocab)) {
        rc = err_set(err, ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    int32_t cp[256], sorted[256];
    byte_chars(cp);
    memcpy(sorted, cp, sizeof cp);
    /* the byte symbols in code point order: printable bytes, then U+0100.. */
    for (int i = 1; i < 256; i++)
        for (int j = i; j > 0 && sorted[j - 1] > sorted[j]; j--) {
            int32_t x = sorted[j];
            sorted[j] = sorted[j - 1];
            sorted[j - 1] = x;
        }
    char *w = arena;
    int32_t id = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 256; i++) {
            char *s = w;
            w += utf8proc_encode_char(sorted[i], (uint8_t *)w);
            if (pass) {
                memcpy(w, END_OF_WORD, 4);
                w += 4;
            }
            strmap_put(&map, s, (size_t)(w - s), id++);
        }
    for (size_t i = 0; i < n_merges; i++) {
        char *s = w;
        memcpy(w, m[i].a, m[i].alen);
        memcpy(w + m[i].alen, m[i].b, m[i].blen);
        w += m[i].alen + m[i].blen;
        strmap_put(&map, s, (size_t)(w - s), id++);
    }
    strmap_put(&map, SOT_STR, strlen(SOT_STR), id++);
    strmap_put(&map, EOT_STR, strlen(EOT_STR), id++);
    t->vocab_size = id;
    rc = build(t, &map, m, n_merges, path, path, err);
fail:
    free(m);
    free(map.slots);
    free(arena);
    free(buf);
    return rc;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int tok_new_from_dir(struct tok **out, const char *dir, struct err *err)
{
    *out = NULL;
    if (!dir || !*dir)
        return err_set(err, ERR_INVALID_ARGUMENT, "tokenizer: no model folder given");
    size_t dl = strlen(dir);
    if (dl > 4000)
        return err_set(err, ERR_INVALID_ARGUMENT, "tokenizer: model folder path too long");
    char vpath[4096 + 64], mpath[4096 + 64], gpath[4096 + 64];
    snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
    snprintf(gpath, sizeof gpath, "%s/bpe_simple_vocab_16e6.txt.gz", dir);
    struct tok *t = calloc(1, sizeof *t);
    if (!t)
        return err_set(err, ERR_NOMEM, "tokenizer: out of memory");
    int rc;
    int hv = exists(vpath), hm = exists(mpath);
    if (hv && hm)
        rc = load_hf(t, vpath, mpath, err);
    else if (exists(gpath))
        rc = load_gz(t, gpath, err);
    else if (hv || hm)
        rc = err_set(err, ERR_BAD_PATH, "%s: %s (%s needs it)", hv ? mpath : vpath,
                     strerror(ENOENT), hv ? "vocab.json" : "merges.txt");
    else if (!exists(dir))
        rc = err_set(err, err_code_of_errno(errno, 1), "%s: %s", dir, strerror(errno));
    else
        rc = err_set(err, ERR_BAD_PATH, "%s: no tokenizer files (vocab.json + merges.txt, "
                                  "or bpe_simple_vocab_16e6.txt.gz)", dir);
    if (rc) {
        tok_free(t);
        return rc;
    }
    *out = t;
    return 0;
}

void tok_free(struct tok *t)
{
    if (!t)
        return;
    free(t->merges);
    free(t);
}

int tok_sot(const struct tok *t) { return t->sot; }
int tok_eot(const struct tok *t) { return t->eot; }
int tok_vocab_size(const struct tok *t) { return t->vocab_size; }

/* ---- cleaning: HTML character references ------------------------------ */

struct entity {
    char name[10];    /* the name between '&' and ';' */
    uint16_t cp;      /* the code point it stands for */
    uint8_t legacy;   /* HTML5 also accepts it without the ';' */
};

/* HTML 4.01's 252 names, &apos; and six upper-case aliases, sorted by
 * strcmp for bsearch. Values are HTML5's. */
static const struct entity entities[] = {
    {"AElig", 0x00C6, 1}, {"AMP", 0x0026, 1}, {"Aacute", 0x00C1, 1},
    {"Acirc", 0x00C2, 1}, {"Agrave", 0x00C0, 1}, {"Alpha", 0x0391, 0},
    {"Aring", 0x00C5, 1}, {"Atilde", 0x00C3, 1}, {"Auml", 0x00C4, 1},
    {"Beta", 0x0392, 0}, {"COPY", 0x00A9, 1}, {"Ccedil", 0x00C7, 1},
    {"Chi", 0x03A7, 0}, {"Dagger", 0x2021, 0}, {"Delta", 0x0394, 0},
    {"ETH", 0x00D0, 1}, {"Eacute", 0x00C9, 1}, {"Ecirc", 0x00CA, 1},
    {"Egrave", 0x00C8, 1}, {"Epsilon", 0x0395, 0}, {"Eta", 0x0397, 0},
    {"Euml", 0x00CB, 1}, {"GT", 0x003E, 1}, {"Gamma", 0x0393, 0},
    {"Iacute", 0x00CD, 1}, {"Icirc", 0x00CE, 1}, {"Igrave", 0x00CC, 1},
    {"Iota", 0x0399, 0}, {"Iuml", 0x00CF, 1}, {"Kappa", 0x039A, 0},
    {"LT", 0x003C, 1}, {"Lambda", 0x039B, 0}, {"Mu", 0x039C, 0},
    {"Ntilde", 0x00D1, 1}, {"Nu", 0x039D, 0}, {"OElig", 0x0152, 0},
    {"Oacute", 0x00D3, 1}, {"Ocirc", 0x00D4, 1}, {"Ograve", 0x00D2, 1},
    {"Omega", 0x03A9, 0}, {"Omicron", 0x039F, 0}, {"Oslash", 0x00D8, 1},
    {"Otilde", 0x00D5, 1}, {"Ouml", 0x00D6, 1}, {"Phi", 0x03A6, 0},
    {"Pi", 0x03A0, 0}, {"Prime", 0x2033, 0}, {"Psi", 0x03A8, 0},
    {"QUOT", 0x0022, 1}, {"REG", 0x00AE, 1}, {"Rho", 0x03A1, 0},
    {"Scaron", 0x0160, 0}, {"Sigma", 0x03A3, 0}, {"THORN", 0x00DE, 1},
    {"Tau", 0x03A4, 0}, {"Theta", 0x0398, 0}, {"Uacute", 0x00DA, 1},
    {"Ucirc", 0x00DB, 1}, {"Ugrave", 0x00D9, 1}, {"Upsilon", 0x03A5, 0},
    {"Uuml", 0x00DC, 1}, {"Xi", 0x039E, 0}, {"Yacute", 0x00DD, 1},
    {"Yuml", 0x0178, 0}, {"Zeta", 0x0396, 0}, {"aacute", 0x00E1, 1},
    {"acirc", 0x00E2, 1}, {"acute", 0x00B4, 1}, {"aelig", 0x00E6, 1},
    {"agrave", 0x00E0, 1}, {"alefsym", 0x2135, 0}, {"alpha", 0x03B1, 0},
    {"amp", 0x0026, 1}, {"and", 0x2227, 0}, {"ang", 0x2220, 0},
    {"apos", 0x0027, 0}, {"aring", 0x00E5, 1}, {"asymp", 0x2248, 0},
    {"atilde", 0x00E3, 1}, {"auml", 0x00E4, 1}, {"bdquo", 0x201E, 0},
    {"beta", 0x03B2, 0}, {"brvbar", 0x00A6, 1}, {"bull", 0x2022, 0},
    {"cap", 0x2229, 0}, {"ccedil", 0x00E7, 1}, {"cedil", 0x00B8, 1},
    {"cent", 0x00A2, 1}, {"chi", 0x03C7, 0}, {"circ", 0x02C6, 0},
    {"clubs", 0x2663, 0}, {"cong", 0x2245, 0}, {"copy", 0x00A9, 1},
    {"crarr", 0x21B5, 0}, {"cup", 0x222A, 0}, {"curren", 0x00A4, 1},
    {"dArr", 0x21D3, 0}, {"dagger", 0x2020, 0}, {"darr", 0x2193, 0},
    {"deg", 0x00B0, 1}, {"delta", 0x03B4, 0}, {"diams", 0x2666, 0},
    {"divide", 0x00F7, 1}, {"eacute", 0x00E9, 1}, {"ecirc", 0x00EA, 1},
    {"egrave", 0x00E8, 1}, {"empty", 0x2205, 0}, {"emsp", 0x2003, 0},
    {"ensp", 0x2002, 0}, {"epsilon", 0x03B5, 0}, {"equiv", 0x2261, 0},
    {"eta", 0x03B7, 0}, {"eth", 0x00F0, 1}, {"euml", 0x00EB, 1},
    {"euro", 0x20AC, 0}, {"exist", 0x2203, 0}, {"fnof", 0x0192, 0},
    {"forall", 0x2200, 0}, {"frac12", 0x00BD, 1}, {"frac14", 0x00BC, 1},
    {"frac34", 0x00BE, 1}, {"frasl", 0x2044, 0}, {"gamma", 0x03B3, 0},
    {"ge", 0x2265, 0}, {"gt", 0x003E, 1}, {"hArr", 0x21D4, 0},
    {"harr", 0x2194, 0}, {"hearts", 0x2665, 0}, {"hellip", 0x2026, 0},
    {"iacute", 0x00ED, 1}, {"icirc", 0x00EE, 1}, {"iexcl", 0x00A1, 1},
    {"igrave", 0x00EC, 1}, {"image", 0x2111, 0}, {"infin", 0x221E, 0},
    {"int", 0x222B, 0}, {"iota", 0x03B9, 0}, {"iquest", 0x00BF, 1},
    {"isin", 0x2208, 0}, {"iuml", 0x00EF, 1}, {"kappa", 0x03BA, 0},
    {"lArr", 0x21D0, 0}, {"lambda", 0x03BB, 0}, {"lang", 0x27E8, 0},
    {"laquo", 0x00AB, 1}, {"larr", 0x2190, 0}, {"lceil", 0x2308, 0},
    {"ldquo", 0x201C, 0}, {"le", 0x2264, 0}, {"lfloor", 0x230A, 0},
    {"lowast", 0x2217, 0}, {"loz", 0x25CA, 0}, {"lrm", 0x200E, 0},
    {"lsaquo", 0x2039, 0}, {"lsquo", 0x2018, 0}, {"lt", 0x003C, 1},
    {"macr", 0x00AF, 1}, {"mdash", 0x2014, 0}, {"micro", 0x00B5, 1},
    {"middot", 0x00B7, 1}, {"minus", 0x2212, 0}, {"mu", 0x03BC, 0},
    {"nabla", 0x2207, 0}, {"nbsp", 0x00A0, 1}, {"ndash", 0x2013, 0},
    {"ne", 0x2260, 0}, {"ni", 0x220B, 0}, {"not", 0x00AC, 1},
    {"notin", 0x2209, 0}, {"nsub", 0x2284, 0}, {"ntilde", 0x00F1, 1},
    {"nu", 0x03BD, 0}, {"oacute", 0x00F3, 1}, {"ocirc", 0x00F4, 1},
    {"oelig", 0x0153, 0}, {"ograve", 0x00F2, 1}, {"oline", 0x203E, 0},
    {"omega", 0x03C9, 0}, {"omicron", 0x03BF, 0}, {"oplus", 0x2295, 0},
    {"or", 0x2228, 0}, {"ordf", 0x00AA, 1}, {"ordm", 0x00BA, 1},
    {"oslash", 0x00F8, 1}, {"otilde", 0x00F5, 1}, {"otimes", 0x2297, 0},
    {"ouml", 0x00F6, 1}, {"para", 0x00B6, 1}, {"part", 0x2202, 0},
    {"permil", 0x2030, 0}, {"perp", 0x22A5, 0}, {"phi", 0x03C6, 0},
    {"pi", 0x03C0, 0}, {"piv", 0x03D6, 0}, {"plusmn", 0x00B1, 1},
    {"pound", 0x00A3, 1}, {"prime", 0x2032, 0}, {"prod", 0x220F, 0},
    {"prop", 0x221D, 0}, {"psi", 0x03C8, 0}, {"quot", 0x0022, 1},
    {"rArr", 0x21D2, 0}, {"radic", 0x221A, 0}, {"rang", 0x27E9, 0},
    {"raquo", 0x00BB, 1}, {"rarr", 0x2192, 0}, {"rceil", 0x2309, 0},
    {"rdquo", 0x201D, 0}, {"real", 0x211C, 0}, {"reg", 0x00AE, 1},
    {"rfloor", 0x230B, 0}, {"rho", 0x03C1, 0}, {"rlm", 0x200F, 0},
    {"rsaquo", 0x203A, 0}, {"rsquo", 0x2019, 0}, {"sbquo", 0x201A, 0},
    {"scaron", 0x0161, 0}, {"sdot", 0x22C5, 0}, {"sect", 0x00A7, 1},
    {"shy", 0x00AD, 1}, {"sigma", 0x03C3, 0}, {"sigmaf", 0x03C2, 0},
    {"sim", 0x223C, 0}, {"spades", 0x2660, 0}, {"sub", 0x2282, 0},
    {"sube", 0x2286, 0}, {"sum", 0x2211, 0}, {"sup", 0x2283, 0},
    {"sup1", 0x00B9, 1}, {"sup2", 0x00B2, 1}, {"sup3", 0x00B3, 1},
    {"supe", 0x2287, 0}, {"szlig", 0x00DF, 1}, {"tau", 0x03C4, 0},
    {"there4", 0x2234, 0}, {"theta", 0x03B8, 0}, {"thetasym", 0x03D1, 0},
    {"thinsp", 0x2009, 0}, {"thorn", 0x00FE, 1}, {"tilde", 0x02DC, 0},
    {"times", 0x00D7, 1}, {"trade", 0x2122, 0}, {"uArr", 0x21D1, 0},
    {"uacute", 0x00FA, 1}, {"uarr", 0x2191, 0}, {"ucirc", 0x00FB, 1},
    {"ugrave", 0x00F9, 1}, {"uml", 0x00A8, 1}, {"upsih", 0x03D2, 0},
    {"upsilon", 0x03C5, 0}, {"uuml", 0x00FC, 1}, {"weierp", 0x2118, 0},
    {"xi", 0x03BE, 0}, {"yacute", 0x00FD, 1}, {"yen", 0x00A5, 1},
    {"yuml", 0x00FF, 1}, {"zeta", 0x03B6, 0}, {"zwj", 0x200D, 0},
    {"zwnj", 0x200C, 0},
};

static int entity_cmp(const void *k, const void *e)
{
    return strcmp(k, ((const struct entity *)e)->name);
}

/* The entity named s[0..n) (code points); with_semi: written with the ';'.
 * Returns its code point or -1. */
static int32_t entity_find(const int32_t *s, size_t n, int with_semi)
{
    char key[16];
    if (n >= sizeof key)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0 || s[i] > 0x7E)
            return -1;
        key[i] = (char)s[i];
    }
    key[n] = 0;
    const struct entity *e = bsearch(key, entities, sizeof entities / sizeof entities[0],
                                     sizeof entities[0], entity_cmp);
    return e && (with_semi || e->legacy) ? e->cp : -1;
}

/* What Python's html.unescape makes of the numeric reference num: writes
 * 0 or 1 code point to out and returns the count. */
static size_t charref(uint32_t num, int32_t *out)
{
    /* HTML5 reads 0x80-0x9F as Windows-1252; its 5 holes stay as they are */
    static const uint16_t cp1252[32] = {
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
        0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
        0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
        0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    };
    int32_t c;
    if (num == 0 || (num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
        c = 0xFFFD;
    else if (num >= 0x80 && num <= 0x9F)
        c = cp1252[num - 0x80];
    else if (num == 0x0D)
        c = 0x0D;
    else if (num <= 0x08 || num == 0x0B || (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
             (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return 0; /* control and non-characters are dropped */
    else
        c = (int32_t)num;
    *out = c;
    return 1;
}

static int is_digit(int32_t c) { return c >= '0' && c <= '9'; }

static int hex_val(int32_t c)
{
    if (is_digit(c))
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* A character Python's entity regex [^\t\n\f <&#;] accepts in a name. */
static int name_char(int32_t c)
{
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' &&
           c != '#' && c != ';';
}

/* Python's html.unescape on code points: out (room for n) gets the result,
 * never longer than the input; returns its length. Python matches
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * and replaces each match as charref() and entity_find() say. */
static size_t unescape(const int32_t *in, size_t n, int32_t *out)
{
    size_t i = 0, w = 0;
    while (i < n) {
        if (in[i] != '&') {
            out[w++] = in[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && in[j] == '#') {
            size_t k = j + 1;
            int base = 10;
            if (k < n && is_digit(in[k]))
                base = 10;
            else if (k + 1 < n && (in[k] | 0x20) == 'x' && hex_val(in[k + 1]) >= 0)
                base = 16, k++;
            else {
                out[w++] = in[i++]; /* "&#" without digits is text */
                continue;
            }
            uint32_t num = 0;
            for (int d; k < n && (d = base == 10 ? (is_digit(in[k]) ? in[k] - '0' : -1)
                                                 : hex_val(in[k])) >= 0; k++)
                if (num <= 0x10FFFF) /* saturate: any larger value maps alike */
                    num = num * (uint32_t)base + (uint32_t)d;
            if (k < n && in[k] == ';')
                k++;
            w += charref(num, out + w);
            i = k;
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && name_char(in[k]))
            k++;
        if (k == j) {
            out[w++] = in[i++];
            continue;
        }
        size_t len = k - j, end = k < n && in[k] == ';' ? k + 1 : k;
        int semi = end > k;
        int32_t c = entity_find(in + j, len, semi);
        if (c >= 0) {
            out[w++] = c;
            i = end;
            continue;
        }
        /* the longest legacy name that is a prefix (at least 2 characters) */
        size_t x = semi ? len : len - 1;
        for (; x >= 2; x--)
            if ((c = entity_find(in + j, x, 0)) >= 0)
                break;
        if (x >= 2) {
            out[w++] = c;
            i = j + x;
        }
        while (i < end) /* the rest of the match is copied as it was */
            out[w++] = in[i++];
    }
    return w;
}

/* ---- cleaning: whitespace and case ------------------------------------- */

/* \s of the `regex` module: Unicode White_Space. */
static int re_space(int32_t c)
{
    if (c <= 0x20)
        return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's str.isspace(): White_Space plus the separators U+001C..U+001F. */
static int py_space(int32_t c)
{
    return re_space(c) || (c >= 0x1C && c <= 0x1F);
}

/* strip(), re.sub(r'\s+', ' '), strip(), in place; returns the new length.
 * After the first strip the ends are not spaces, so the second is a no-op. */
static size_t clean_space(int32_t *s, size_t n)
{
    size_t a = 0, w = 0;
    while (a < n && py_space(s[a]))
        a++;
    while (n > a && py_space(s[n - 1]))
        n--;
    int run = 0; /* inside a run of \s */
    for (size_t i = a; i < n; i++) {
        int sp = re_space(s[i]);
        if (!sp)
            s[w++] = s[i];
        else if (!run)
            s[w++] = ' ';
        run = sp;
    }
    return w;
}

/* Unicode 14's Case_Ignorable, as Python 3.11 reads it for final sigma. */
static int case_ignorable(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    /* Word_Break MidLetter, MidNumLet and Single_Quote */
    static const int32_t mid[] = {0x0027, 0x002E, 0x003A, 0x00B7, 0x0387, 0x055F,
                                  0x05F4, 0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                  0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (c == mid[i])
            return 1;
    return 0;
}

/* Unicode's Cased for a character that is not Case_Ignorable. */
static int cased(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
        return 1;
    default: /* Other_Lowercase / Other_Uppercase outside Lm */
        return c == 0xAA || c == 0xBA || (c >= 0x2160 && c <= 0x217F) ||
               (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
               (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
    }
}

/* Final_Sigma: s[i] (a capital sigma) follows a cased letter and is not
 * followed by one, skipping case-ignorable characters both ways. */
static int final_sigma(const int32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && case_ignorable(s[j - 1]))
        j--;
    if (j == 0 || !cased(s[j - 1]))
        return 0;
    for (j = i + 1; j < n && case_ignorable(s[j]); j++)
        ;
    return j == n || !cased(s[j]);
}

/* Python's str.lower(): out has room for 2n; returns the length. */
static size_t lower(const int32_t *s, size_t n, int32_t *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = s[i];
        if (c < 0x80)
            out[w++] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        else if (c == 0x130) { /* the one unconditional multi-character lowercase */
            out[w++] = 'i';
            out[w++] = 0x307;
        } else if (c == 0x3A3)
            out[w++] = final_sigma(s, n, i) ? 0x3C2 : 0x3C3;
        else
            out[w++] = utf8proc_tolower(c);
    }
    return w;
}

/* ---- pre-tokenizer ------------------------------------------------------ */

enum { CL_SPACE, CL_LETTER, CL_NUMBER, CL_OTHER, CL_NONE };

static int char_class(int32_t c)
{
    if (c < 0x80) {
        if (c == ' ' || (c >= 0x09 && c <= 0x0D))
            return CL_SPACE;
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z')
            return CL_LETTER;
        return is_digit(c) ? CL_NUMBER : CL_OTHER;
    }
    if (re_space(c))
        return CL_SPACE;
    if (c == 0x345) /* IGNORECASE: folds to iota, so [^\s\p{L}\p{N}] misses it */
        return CL_NONE;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CL_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CL_NUMBER;
    default:
        return CL_OTHER;
    }
}

/* Matches the literal lit at s[0..n) as IGNORECASE does on lowercase text
 * ('s' also matches U+017F). Returns its length or 0; *exact says whether
 * the text is lit itself. */
static size_t match_lit(const int32_t *s, size_t n, const char *lit, int *exact)
{
    size_t len = strlen(lit);
    if (n < len)
        return 0;
    *exact = 1;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == lit[i])
            continue;
        if (lit[i] == 's' && s[i] == 0x17F)
            *exact = 0;
        else
            return 0;
    }
    return len;
}

/* Length of the piece starting at s[0] (0: s[0] starts none and is
 * skipped) and the special id it stands for, or -1. */
static size_t next_piece(const struct tok *t, const int32_t *s, size_t n, int32_t *special)
{
    static const char *const contractions[] = {"'s", "'t", "'re", "'ve", "'m", "'ll", "'d"};
    int exact;
    size_t m;
    *special = -1;
    if (s[0] == '<') {
        if ((m = match_lit(s, n, SOT_STR, &exact))) {
            *special = exact ? t->sot : -1;
            return m;
        }
        if ((m = match_lit(s, n, EOT_STR, &exact))) {
            *special = exact ? t->eot : -1;
            return m;
        }
    } else if (s[0] == '\'') {
        for (size_t k = 0; k < sizeof contractions / sizeof contractions[0]; k++)
            if ((m = match_lit(s, n, contractions[k], &exact)))
                return m;
    }
    int cl = char_class(s[0]);
    if (cl == CL_NUMBER)
        return 1;
    if (cl != CL_LETTER && cl != CL_OTHER)
        return 0;
    m = 1;
    while (m < n && char_class(s[m]) == cl)
        m++;
    return m;
}

/* ---- BPE ---------------------------------------------------------------- */

struct pair {
    int32_t rank;   /* merge rank: lower merges first */
    int32_t pos;    /* index of the left symbol's node */
    int32_t a, b;   /* the symbols when queued; stale if either changed */
    int32_t id;     /* the merged symbol */
};

struct scratch {
    int32_t *sym;         /* symbol id per node; -1: merged into its left */
    int32_t *nxt, *prv;   /* the word as a list of nodes; -1 ends it */
    size_t cap;           /* nodes sym/nxt/prv have room for */
    struct pair *heap;    /* binary min-heap on (rank, pos) */
    size_t heap_n, heap_cap;
    struct pair *pend;    /* pairs made by the merges of the current rank */
    size_t pend_n, pend_cap;
    uint8_t *bytes;       /* the piece as UTF-8 */
    size_t bytes_cap;
};

static void scratch_free(struct scratch *s)
{
    free(s->sym);
    free(s->nxt);
    free(s->prv);
    free(s->heap);
    free(s->pend);
    free(s->bytes);
}

static int grow(void **p, size_t *cap, size_t want, size_t size)
{
    if (want <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < want)
        c *= 2;
    void *np = realloc(*p, c * size);
    if (!np)
        return -1;
    *p = np;
    *cap = c;
    return 0;
}

static int pair_less(const struct pair *x, const struct pair *y)
{
    return x->rank != y->rank ? x->rank < y->rank : x->pos < y->pos;
}

static int heap_push(struct scratch *s, const struct pair *p)
{
    if (grow((void **)&s->heap, &s->heap_cap, s->heap_n + 1, sizeof *s->heap))
        return -1;
    size_t i = s->heap_n++;
    while (i > 0 && pair_less(p, &s->heap[(i - 1) / 2])) {
        s->heap[i] = s->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    s->heap[i] = *p;
    return 0;
}

static struct pair heap_pop(struct scratch *s)
{
    struct pair top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && pair_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!pair_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    if (n)
        s->heap[i] = last;
    return top;
}

/* Queues the pair of node pos and its successor if the two merge: on the
 * heap (into_heap) or on the pending list. */
static int queue_pair(const struct tok *t, struct scratch *s, int32_t pos, int into_heap)
{
    int32_t q = s->nxt[pos];
    if (q < 0)
        return 0;
    struct pair p = {.pos = pos, .a = s->sym[pos], .b = s->sym[q]};
    p.rank = merge_find(t, p.a, p.b, &p.id);
    if (p.rank < 0)
        return 0;
    if (into_heap)
        return heap_push(s, &p);
    if (grow((void **)&s->pend, &s->pend_cap, s->pend_n + 1, sizeof *s->pend))
        return -1;
    s->pend[s->pend_n++] = p;
    return 0;
}

static int pair_live(const struct scratch *s, const struct pair *p)
{
    int32_t q = s->nxt[p->pos];
    return s->sym[p->pos] == p->a && q >= 0 && s->sym[q] == p->b;
}

static int merge_at(const struct tok *t, struct scratch *s, const struct pair *p)
{
    int32_t pos = p->pos, q = s->nxt[pos];
    s->sym[pos] = p->id;
    s->sym[q] = -1;
    s->nxt[pos] = s->nxt[q];
    if (s->nxt[q] >= 0)
        s->prv[s->nxt[q]] = pos;
    if (s->prv[pos] >= 0 && queue_pair(t, s, s->prv[pos], 0))
        return -1;
    return queue_pair(t, s, pos, 0);
}

/* BPE of one piece's n UTF-8 bytes (n >= 1): appends up to room ids to out
 * and returns how many, or -1 when out of memory. Same result as the
 * reference loop: repeatedly take the lowest-ranked adjacent pair and merge
 * all its occurrences left to right. */
static int bpe(const struct tok *t, struct scratch *s, const uint8_t *bytes,
               size_t n, int32_t *out, int room)
{
    if (n > s->cap) { /* the three node arrays share one capacity */
        size_t c1 = s->cap, c2 = s->cap, c3 = s->cap;
        if (grow((void **)&s->sym, &c1, n, sizeof *s->sym) ||
            grow((void **)&s->nxt, &c2, n, sizeof *s->nxt) ||
            grow((void **)&s->prv, &c3, n, sizeof *s->prv))
            return -1;
        s->cap = c1;
    }
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = i + 1 < n ? t->byte_id[bytes[i]] : t->byte_end_id[bytes[i]];
        s->nxt[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        s->prv[i] = (int32_t)i - 1;
    }
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        if (queue_pair(t, s, (int32_t)i, 1))
            return -1;
    while (s->heap_n) {
        struct pair p = heap_pop(s);
        if (!pair_live(s, &p))
            continue;
        int32_t rank = p.rank;
        s->pend_n = 0;
        if (merge_at(t, s, &p))
            return -1;
        /* the other occurrences of this pair, in position order */
        while (s->heap_n && s->heap[0].rank == rank) {
            p = heap_pop(s);
            if (pair_live(s, &p) && merge_at(t, s, &p))
                return -1;
        }
        for (size_t i = 0; i < s->pend_n; i++)
            if (heap_push(s, &s->pend[i]))
                return -1;
    }
    int k = 0;
    for (int32_t i = 0; i >= 0 && k < room; i = s->nxt[i])
        out[k++] = s->sym[i];
    return k;
}

/* ---- encode ------------------------------------------------------------- */

/* Cleans text[0..len) (valid UTF-8) into code points: NFC, html.unescape
 * twice, whitespace, lower. Returns the malloc'd array or NULL (no
 * memory); *n gets its length. */
static int32_t *clean(const char *text, size_t len, size_t *n)
{
    utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    size_t cap = len + 16;
    int32_t *a = NULL, *b = NULL;
    utf8proc_ssize_t m;
    for (;;) {
        int32_t *na = realloc(a, cap * sizeof *a);
        if (!na)
            goto fail;
        a = na;
        m = utf8proc_decompose((const uint8_t *)text, (utf8proc_ssize_t)len, a,
                               (utf8proc_ssize_t)cap, opt);
        if (m < 0)
            goto fail;
        if ((size_t)m <= cap)
            break;
        cap = (size_t)m;
    }
    m = utf8proc_normalize_utf32(a, m, opt);
    if (m < 0)
        goto fail;
    size_t k = (size_t)m;
    b = malloc((2 * k + 1) * sizeof *b);
    if (!b)
        goto fail;
    k = unescape(a, k, b);
    k = unescape(b, k, a);
    k = clean_space(a, k);
    k = lower(a, k, b);
    free(a);
    *n = k;
    return b;
fail:
    free(a);
    free(b);
    return NULL;
}

int tok_encode(const struct tok *t, const char *text, size_t len, int32_t *ids,
               int context, int *n_ids, struct err *err)
{
    if (n_ids)
        *n_ids = 0;
    if (!t || !ids || !n_ids || (!text && len))
        return err_set(err, ERR_INVALID_ARGUMENT, "tok_encode: missing argument");
    if (context < 2)
        return err_set(err, ERR_INVALID_ARGUMENT,
                       "context length %d is too short, it must be at least 2", context);
    if (len > TOK_MAX_INPUT)
        return err_set(err, ERR_TOO_LARGE, "text is %zu bytes, the limit is %u",
                       len, TOK_MAX_INPUT);
    size_t bad;
    if (utf8_check((const uint8_t *)text, len, &bad) != 0)
        return err_set(err, ERR_INVALID_UTF8, "text is not valid UTF-8 at byte %zu", bad);
    size_t n = 0;
    int32_t *s = clean(text ? text : "", len, &n);
    if (!s)
        return err_set(err, ERR_NOMEM, "tokenizer: out of memory");

    struct scratch sc = {0};
    int room = context - 2, k = 0, rc = 0;
    size_t i = 0;
    while (i < n && k < room) {
        int32_t special;
        size_t m = next_piece(t, s + i, n - i, &special);
        if (m == 0) {
            i++;
            continue;
        }
        if (special >= 0)
            ids[1 + k++] = special;
        else {
            if (grow((void **)&sc.bytes, &sc.bytes_cap, 4 * m, 1)) {
                rc = err_set(err, ERR_NOMEM, "tokenizer: out of memory");
                goto done;
            }
            size_t nb = 0;
            for (size_t j = 0; j < m; j++)
                nb += (size_t)utf8proc_encode_char(s[i + j], sc.bytes + nb);
            int got = bpe(t, &sc, sc.bytes, nb, ids + 1 + k, room - k);
            if (got < 0) {
                rc = err_set(err, ERR_NOMEM, "tokenizer: out of memory");
                goto done;
            }
            k += got;
        }
        i += m;
    }
    ids[0] = t->sot;
    ids[1 + k] = t->eot;
    *n_ids = k + 2;
done:
    scratch_free(&sc);
    free(s);
    return rc;
}
