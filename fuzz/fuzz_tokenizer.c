/* fuzz_tokenizer.c - libFuzzer target for the CLIP tokenizer: any bytes as
 * a text, at the CLIP context, a short one and a long one. The tokenizer is
 * loaded once from $IMGSEARCH_FIXTURES/tiny-clip (default tests/fixtures).
 * Besides not crashing, every result must be well formed: <|startoftext|>
 * first, <|endoftext|> last, ids in the vocabulary, the count in bounds;
 * and the error, when there is one, must be a bad-input code. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "clip/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct tok *load(void)
{
    static struct tok *t;
    if (t)
        return t;
    const char *f = getenv("IMGSEARCH_FIXTURES");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tiny-clip", f && *f ? f : "tests/fixtures");
    struct err e = {0};
    if (tok_new_from_dir(&t, dir, &e) != 0) {
        /* no tokenizer: a broken setup, not a finding; say so loudly */
        fprintf(stderr, "fuzz_tokenizer: %s\n", e.msg);
        abort();
    }
    return t;
}

static void check(const struct tok *t, const uint8_t *data, size_t size, int context)
{
    static int32_t ids[1024];
    int n = -1;
    struct err e = {0};
    int rc = tok_encode(t, (const char *)data, size, ids, context, &n, &e);
    if (rc) {
        if (rc != -ERR_INVALID_UTF8 && rc != -ERR_TOO_LARGE)
            abort();
        return;
    }
    if (n < 2 || n > context || ids[0] != tok_sot(t) || ids[n - 1] != tok_eot(t))
        abort();
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_vocab_size(t))
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const struct tok *t = load();
    check(t, data, size, TOK_CONTEXT);
    check(t, data, size, 2 + (int)(size % 7));
    check(t, data, size, 1024);
    return 0;
}
