/* utf8.h - strict UTF-8: one checker for every module that takes text from
 * outside (item ids, sources, query values, tokenizer input) and a repair
 * for text that must go out as JSON whatever it holds.
 *
 * Strict means what Python's strict decoder accepts: no overlong forms, no
 * surrogates (U+D800..U+DFFF), nothing above U+10FFFF.
 */
#ifndef IMGSEARCH_UTF8_H
#define IMGSEARCH_UTF8_H

#include <stddef.h>
#include <stdint.h>

/* Length (1..4) of the well-formed sequence at s[0..n), or 0 when s[0]
 * does not start one (n == 0 included). */
int utf8_seq_len(const uint8_t *s, size_t n);

/* 0 when s[0..n) is well-formed UTF-8, else -1 with *bad (may be NULL) at
 * the offset of the first byte that is not. */
int utf8_check(const uint8_t *s, size_t n, size_t *bad);

/* 1 when the NUL-terminated s is well-formed UTF-8 (NULL counts as valid). */
int utf8_valid(const char *s);

/* A malloc'd copy of s with every byte that is not part of a well-formed
 * sequence replaced by U+FFFD; NULL when out of memory. */
char *utf8_repair(const char *s);

#endif
