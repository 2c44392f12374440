/* tokenizer.h - CLIP's byte-level BPE text tokenizer.
 *
 * Turns a UTF-8 text into the token ids CLIP's text tower reads, exactly as
 * OpenAI's simple_tokenizer does (less ftfy's heuristic fixes, see
 * tokenizer.c): <|startoftext|>, the BPE ids of the cleaned, lowercased
 * text, <|endoftext|>, cut to the context length.
 *
 * A loaded struct tok is immutable: tok_encode may be called from any number
 * of threads at once on the same tokenizer.
 */
#ifndef IMGSEARCH_TOKENIZER_H
#define IMGSEARCH_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define TOK_CONTEXT 77              /* CLIP's context length */
#define TOK_MAX_INPUT (1u << 20)    /* longest text tok_encode accepts, bytes */

struct tok;

/* Loads the tokenizer of the model folder dir: vocab.json + merges.txt (the
 * Hugging Face layout) when both are there, else bpe_simple_vocab_16e6.txt.gz
 * (OpenAI's layout). Both give the same ids. On success *out is a new
 * tokenizer the caller frees with tok_free. Errors: ERR_BAD_PATH (no tokenizer
 * files, unreadable file), ERR_CORRUPT (bad JSON, bad merge line, a token
 * the merges need missing from the vocabulary), ERR_TOO_LARGE, ERR_NOMEM;
 * the message names the file. */
int tok_new_from_dir(struct tok **out, const char *dir, struct err *err);

/* Frees t; tok_free(NULL) is a no-op. */
void tok_free(struct tok *t);

/* Encodes the len bytes at text (need not be NUL-terminated; NUL bytes are
 * text) into ids, which has room for context ids (context >= 2; CLIP uses
 * TOK_CONTEXT). Writes <|startoftext|>, the BPE ids, <|endoftext|>; when
 * that is longer than context it keeps the first context ids and sets the
 * last to <|endoftext|>, as clip.tokenize(truncate=True) does. Nothing is
 * written past the last id (no padding); *n_ids gets their count.
 * Thread-safe. Errors: ERR_INVALID_UTF8 (message gives the byte offset),
 * ERR_TOO_LARGE (len > TOK_MAX_INPUT), ERR_INVALID_ARGUMENT (context < 2),
 * ERR_NOMEM. */
int tok_encode(const struct tok *t, const char *text, size_t len, int32_t *ids,
               int context, int *n_ids, struct err *err);

int tok_sot(const struct tok *t);        /* id of <|startoftext|> (49406) */
int tok_eot(const struct tok *t);        /* id of <|endoftext|> (49407) */
int tok_vocab_size(const struct tok *t); /* number of ids (49408) */

#endif
