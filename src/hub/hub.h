/* hub.h - fetching model repositories from a Hugging Face style hub.
 *
 * A repo ("OWNER/NAME") is listed through GET {endpoint}/api/models/REPO
 * (siblings[].rfilename, sha); its files come from
 * {endpoint}/REPO/resolve/{sha or main}/FILE. Large files answer 302 to a
 * CDN with their SHA-256 in X-Linked-Etag and their size in X-Linked-Size.
 *
 * Rules this client keeps:
 * - Redirects are followed here, not by libcurl, so the token
 *   (Authorization: Bearer) goes only to the endpoint's own scheme + host +
 *   port, never to the host a redirect points at.
 * - A file is written to NAME.part and renamed to NAME only when complete
 *   and, when the hub gave a SHA-256, when it matches; a mismatch removes
 *   the .part and leaves nothing. An interrupted transfer resumes from the
 *   .part with a Range request (within the same call, up to 3 tries, and in
 *   a later call).
 * - Weights: model.safetensors, else open_clip_model.safetensors, else
 *   pytorch_model.bin, else open_clip_pytorch_model.bin. A .bin is
 *   converted once to model.safetensors (clip/pytorch.h) and removed.
 * Library code: nothing is printed; progress goes through a callback.
 * Threads: one fetch per folder at a time; calls share no state.
 */
#ifndef IMGSEARCH_HUB_H
#define IMGSEARCH_HUB_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define HUB_DEFAULT_REPO "openai/clip-vit-base-patch32"
#define HUB_DEFAULT_ENDPOINT "https://huggingface.co"
#define HUB_MAX_LISTING (16u << 20) /* bytes of the API's JSON answer */

/* done of total bytes of file (total 0 when unknown). */
typedef void (*hub_progress_fn)(void *ctx, const char *file, uint64_t done, uint64_t total);

struct hub_opts {
    const char *endpoint;       /* base URL; NULL: $HF_ENDPOINT, else huggingface.co */
    const char *token;          /* NULL: $HF_TOKEN (empty: none) */
    hub_progress_fn progress;   /* may be NULL */
    void *progress_ctx;         /* passed to progress */
};

/* 1 when s is OWNER/NAME: two non-empty parts of [A-Za-z0-9._-] (not "."
 * or ".."), at most 96 bytes each. */
int hub_repo_valid(const char *s);

/* The cache folder of repo: $XDG_CACHE_HOME/imgsearch/models/OWNER/NAME,
 * with $HOME/.cache when XDG_CACHE_HOME is unset. ERR_INVALID_ARGUMENT for
 * an invalid repo, ERR_BAD_PATH without HOME. */
int hub_cache_dir(const char *repo, char *buf, size_t n, struct err *err);

/* The root of the cache ($XDG_CACHE_HOME/imgsearch/models). */
int hub_cache_root(char *buf, size_t n, struct err *err);

/* 1 when dir holds weights the model loader takes (model.safetensors,
 * open_clip_model.safetensors or a .bin). */
int hub_dir_has_weights(const char *dir);

/* Fetches repo into dir (created). *weights (may be NULL) receives the
 * name of the weights file now in dir (static string). Errors, each naming
 * the URL and what to do: ERR_NOT_FOUND (404), ERR_UNAUTHORIZED (401/403:
 * set HF_TOKEN), ERR_UNAVAILABLE (cannot connect, 5xx), ERR_CORRUPT
 * (hash or size mismatch, no usable weights in the repo), ERR_IO. */
int hub_fetch(const char *repo, const char *dir, const struct hub_opts *o,
              const char **weights, struct err *err);

#endif
