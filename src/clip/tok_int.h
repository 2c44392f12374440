/* tok_int.h - internals shared by the files of the tokenizer
 * (tokenizer.c: loading, pre-tokenizer, BPE; tok_clean.c: cleaning). */
#ifndef IMGSEARCH_TOK_INT_H
#define IMGSEARCH_TOK_INT_H

#include <stddef.h>
#include <stdint.h>

/* Cleans text[0..len) (valid UTF-8) into code points: NFC, html.unescape
 * twice, strip and collapse whitespace, lower. Returns a malloc'd array the
 * caller frees, or NULL (no memory); *n gets its length. */
int32_t *tok__clean(const char *text, size_t len, size_t *n);

/* \s of Python's `regex` module: Unicode White_Space. */
int tok__re_space(int32_t c);

#endif
