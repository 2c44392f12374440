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
 * 6. Cleaning (NFC, html.unescape twice, whitespace, lower) is in
 *    tok_clean.c, with its own notes on where it follows the reference.
 * 7. Special tokens in the text ("<|startoftext|>") become their special ids,
 *    as in the reference, whose BPE cache maps them to themselves.
 *
 * References: Radford et al., "Learning Transferable Visual Models From
 * Natural Language Supervision" (2021), section 2.4; Sennrich et al., "Neural
 * Machine Translation of Rare Words with Subword Units" (2016) for BPE; the
 * GPT-2 byte-to-unicode table; HTML 4.01 section 24 (character entity
 * references); the WHATWG HTML "named character references" table.
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

#include "clip/tok_int.h"
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

/* ---- pre-tokenizer ------------------------------------------------------ */

static int is_digit(int32_t c) { return c >= '0' && c <= '9'; }

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
    if (tok__re_space(c))
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
    int32_t *s = tok__clean(text ? text : "", len, &n);
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
                goto fail;
            }
            size_t nb = 0;
            for (size_t j = 0; j < m; j++)
                nb += (size_t)utf8proc_encode_char(s[i + j], sc.bytes + nb);
            int got = bpe(t, &sc, sc.bytes, nb, ids + 1 + k, room - k);
            if (got < 0) {
                rc = err_set(err, ERR_NOMEM, "tokenizer: out of memory");
                goto fail;
            }
            k += got;
        }
        i += m;
    }
    ids[0] = t->sot;
    ids[1 + k] = t->eot;
    *n_ids = k + 2;
fail:
    scratch_free(&sc);
    free(s);
    return rc;
}
