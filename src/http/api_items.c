/* api_items.c - the items: GET /items (paged), GET, PUT and DELETE
 * /items/{id}, and GET /items/{id}/image.
 *
 * 1. Uploaded images (PUT /items/{id}) are kept once, under their SHA-256,
 *    in the upload folder (serve --uploads; STORE.images next to an
 *    embedded store by default): the item's source points there, so the
 *    precompute can embed it later (?async=1) and /items/{id}/image serves
 *    it. upload_mu orders file writes and removals with the items that
 *    use them.
 * 2. /items/{id}/image serves only files whose real path lies inside a
 *    catalog root or the upload folder: an item whose source is elsewhere
 *    (or a path with ../ or a symbolic link out) is 404. The file is then
 *    opened beneath its root without following any link (openat2, or one
 *    O_NOFOLLOW openat per component), so a folder swapped for a link
 *    after the check cannot redirect it.
 */
#include "http/http_int.h"

#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "image/image.h"
#include "util/fsutil.h"
#include "util/jsonscan.h"
#include "util/sha256.h"

#define LIST_DEFAULT 100     /* items per page */
#define LIST_MAX 1000        /* items per page at most */

/* ---- /items ---------------------------------------------------------------------- */

/* The failed state (store_set_failed): "state": "failed" and the reason,
 * scrubbed like every message that may name a server path. */
static void failed_state(struct http_server *s, const struct store_item *it, json_t *j)
{
    if (!it->error)
        return;
    char clean[ERR_MSG_MAX + 64];
    http__scrub(s, it->error, clean, sizeof clean, 0);
    json_object_set_new(j, "state", json_string("failed"));
    json_object_set_new(j, "error", http__str_json(clean));
}

static json_t *item_json(const struct store_item *it, int with_embedding, int dim)
{
    json_t *j = json_object();
    json_object_set_new(j, "id", http__str_json(it->id));
    json_object_set_new(j, "source", http__str_json(it->source));
    json_object_set_new(j, "sha256", http__str_json(it->sha256));
    json_object_set_new(j, "size", it->size >= 0 ? json_integer(it->size) : json_null());
    json_object_set_new(j, "mtime", it->mtime >= 0 ? json_integer(it->mtime) : json_null());
    json_object_set_new(j, "metadata", http__metadata_json(it->metadata));
    json_object_set_new(j, "has_embedding", json_boolean(it->has_embedding));
    json_object_set_new(j, "model", http__str_json(it->model));
    json_object_set_new(j, "created_at", json_integer(it->created_at));
    json_object_set_new(j, "updated_at", json_integer(it->updated_at));
    json_object_set_new(j, "image_url", it->source ? http__image_url(it->id) : json_null());
    if (with_embedding && it->embedding)
        json_object_set_new(j, "embedding", http__floats_json(it->embedding, dim));
    return j;
}

void http__api_items_list(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    long cursor = 0, limit = LIST_DEFAULT;
    const char *v;
    if ((v = http__query(r, "cursor")) && *v &&
        http_parse_long("cursor", v, 0, LONG_MAX, &cursor, &e)) {
        http__reply_err(r, &e);
        return;
    }
    if ((v = http__query(r, "limit")) && http_parse_long("limit", v, 1, LIST_MAX, &limit, &e)) {
        http__reply_err(r, &e);
        return;
    }
    struct store_item *items = NULL;
    size_t n = 0;
    int64_t next = 0, total = 0;
    if (store_list(s->store, cursor, (int)limit, &items, &n, &next, &e) ||
        store_count(s->store, &total, &e)) {
        store_items_free(items, n);
        http__reply_err(r, &e);
        return;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *ij = item_json(&items[i], 0, s->pipe->dim);
        failed_state(s, &items[i], ij);
        json_array_append_new(arr, ij);
    }
    store_items_free(items, n);
    json_t *j = json_object();
    json_object_set_new(j, "items", arr);
    json_object_set_new(j, "count", json_integer((json_int_t)n));
    json_object_set_new(j, "total", json_integer(total));
    if (next) {
        char c[32];
        snprintf(c, sizeof c, "%" PRId64, next);
        json_object_set_new(j, "next_cursor", json_string(c));
    } else {
        json_object_set_new(j, "next_cursor", json_null());
    }
    http__reply_json(r, 200, j);
}

void http__api_item_get(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    if (store_get(s->store, r->m.id, &it, &e)) {
        http__reply_err(r, &e);
        return;
    }
    int emb = http_parse_bool(http__query(r, "embedding")) == 1;
    json_t *ij = item_json(&it, emb, s->pipe->dim);
    failed_state(s, &it, ij);
    http__reply_json(r, 200, ij);
    store_item_clear(&it);
}

/* 1 when path is inside dir (both resolved). */
static int inside(const char *path, const char *dir)
{
    if (!dir)
        return 0;
    size_t n = strlen(dir);
    return !strncmp(path, dir, n) && (path[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* Removes an upload file no item uses any more. Called under upload_mu. */
static void drop_upload(struct http_server *s, const char *source)
{
    if (!source || !inside(source, s->upload_dir))
        return;
    struct store_item other = {0};
    struct err e;
    int rc = store_find_source(s->store, source, &other, &e);
    store_item_clear(&other);
    if (rc == -ERR_NOT_FOUND)
        unlink(source);
}

/* The metadata of a PUT as JSON text (malloc'd) or NULL for none. */
static int put_metadata(struct http_req *r, char **out, struct err *err)
{
    *out = NULL;
    json_t *md = r->json ? json_object_get(r->json, "metadata") : NULL;
    json_t *parsed = NULL;
    if (!md || json_is_null(md)) {
        const char *t = NULL;
        if (r->kind == HTTP_BODY_MULTIPART) {
            const struct http_part *p = http_parts_get(&r->parts, "metadata", 0);
            t = p ? (const char *)p->data : NULL;
        }
        if (!t && !r->json)
            t = http__query(r, "metadata");
        if (!t)
            return 0;
        json_error_t je;
        if (!(md = parsed = json_loads(t, 0, &je)))
            return err_set(err, ERR_INVALID_ARGUMENT, "metadata is not JSON: %s", je.text);
    }
    int rc = 0;
    struct json_shape sh = {0, 0};
    if (!json_is_object(md))
        rc = err_set(err, ERR_INVALID_ARGUMENT, "metadata must be a JSON object");
    else if (!(*out = json_dumps(md, JSON_COMPACT)))
        rc = err_set(err, ERR_NOMEM, "out of memory");
    else if (json_shape_scan(*out, strlen(*out), 0, STORE_METADATA_DEPTH_MAX, &sh),
             sh.depth > STORE_METADATA_DEPTH_MAX)
        rc = err_set(err, ERR_INVALID_ARGUMENT, "metadata is nested over %d levels deep",
                     STORE_METADATA_DEPTH_MAX);
    json_decref(parsed);
    return rc;
}

void http__api_item_put(struct http_req *r)
{
    if (http__load_json(r))
        return;
    struct http_server *s = r->s;
    struct err e = {0};
    struct http__blob b;
    struct store_item old = {0}, now = {0};
    char *md = NULL, *path = NULL;
    float *vec = NULL;
    int status = 0, is_new = 0, locked = 0;
    int async = http_parse_bool(http__query(r, "async"));
    http__get_image(r, &b);
    if (async < 0) {
        err_set(&e, ERR_INVALID_ARGUMENT, "async must be 0 or 1");
        goto fail;
    }
    if (!b.present) {
        err_set(&e, ERR_INVALID_ARGUMENT, "%s", http__no_image_msg);
        goto fail;
    }
    if (b.rc) {
        e = b.err;
        goto fail;
    }
    if (strlen(r->m.id) > STORE_ID_MAX) {
        err_set(&e, ERR_INVALID_ARGUMENT, "item id of %zu bytes (max %d)", strlen(r->m.id),
                STORE_ID_MAX);
        goto fail;
    }
    if (put_metadata(r, &md, &e))
        goto fail;
    enum img_format fmt = img_sniff(b.p, b.n);
    if (fmt == IMG_FMT_UNKNOWN) {
        err_set(&e, ERR_UNSUPPORTED_FORMAT,
                "image: not an image we can read (JPEG, PNG, WebP or GIF)");
        goto fail;
    }
    if (!async) {
        if (!(vec = malloc(sizeof(float) * (size_t)s->pipe->dim))) {
            err_set(&e, ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (http__embed_blobs(r, &b, 1, vec, 0) != 1) {
            e = b.err;
            goto fail;
        }
    }
    char sha[SHA256_HEX_LEN + 1];
    sha256_hex(b.p, b.n, sha);
    size_t pl = strlen(s->upload_dir) + 80;
    if (!(path = malloc(pl))) {
        err_set(&e, ERR_NOMEM, "out of memory");
        goto fail;
    }
    snprintf(path, pl, "%s/%s.%s", s->upload_dir, sha, img_format_name(fmt));
    pthread_mutex_lock(&s->upload_mu);
    locked = 1;
    /* the item's old upload, dropped once replaced; a store that does not
     * answer (a database down) fails the PUT here, before a file is written */
    int grc = store_get(s->store, r->m.id, &old, &e), had = grc == 0;
    if (grc && grc != -ERR_NOT_FOUND)
        goto fail;
    if (!fs_exists(path) && fs_write_file(path, b.p, b.n, &e))
        goto fail;
    struct store_item it = {
        .id = r->m.id,
        .source = path,
        .sha256 = sha,
        .size = (int64_t)b.n,
        .mtime = -1,
        .metadata = md,
        .embedding = vec,
    };
    /* the reply is the row as written: reading it again after the lock
     * could find it deleted by a DELETE that was waiting for the lock */
    if (store_put_get(s->store, &it, &is_new, &now, &e)) {
        if (!had)
            drop_upload(s, path);
        goto fail;
    }
    if (had && old.source && strcmp(old.source, path) != 0)
        drop_upload(s, old.source);
    pthread_mutex_unlock(&s->upload_mu);
    locked = 0;
    if (async && !now.has_embedding) {
        http_precompute_wake(s->pc, now.seq);
        status = 202;
    } else {
        status = is_new ? 201 : 200;
    }
    http__reply_json(r, status, item_json(&now, 0, s->pipe->dim));
fail: /* the one way out; success has replied already */
    if (!r->reply.status)
        http__reply_err(r, &e);
    if (locked)
        pthread_mutex_unlock(&s->upload_mu);
    store_item_clear(&old);
    store_item_clear(&now);
    http__blob_free(&b);
    free(md);
    free(path);
    free(vec);
}

void http__api_item_delete(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    pthread_mutex_lock(&s->upload_mu);
    int rc = store_get(s->store, r->m.id, &it, &e);
    if (!rc)
        rc = store_delete(s->store, r->m.id, &e);
    if (!rc)
        drop_upload(s, it.source);
    pthread_mutex_unlock(&s->upload_mu);
    store_item_clear(&it);
    if (rc) {
        http__reply_err(r, &e);
        return;
    }
    json_t *j = json_object();
    json_object_set_new(j, "id", http__str_json(r->m.id));
    json_object_set_new(j, "deleted", json_true());
    http__reply_json(r, 200, j);
}

void http__api_item_image(struct http_req *r)
{
    struct http_server *s = r->s;
    struct err e = {0};
    struct store_item it = {0};
    char *real = NULL;
    int fd = -1;
    if (store_get(s->store, r->m.id, &it, &e))
        goto fail;
    /* every refusal below is the same 404: nothing says whether a file
     * outside the roots exists */
    err_set(&e, ERR_NOT_FOUND, "item '%.200s' has no image to serve", r->m.id);
    if (!it.source || !(real = realpath(it.source, NULL)))
        goto fail;
    const char *root = inside(real, s->upload_dir) ? s->upload_dir : NULL;
    for (int i = 0; i < s->nroots && !root; i++)
        if (inside(real, s->roots[i]))
            root = s->roots[i];
    if (!root)
        goto fail;
    /* realpath said where the file is; the open must land there even if a
     * folder of the path becomes a link meanwhile: no component followed */
    fd = fs_open_beneath(root, real + strlen(root) + (strcmp(root, "/") != 0), 1);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        goto fail;
    uint8_t head[16];
    ssize_t got = pread(fd, head, sizeof head, 0);
    enum img_format fmt = got > 0 ? img_sniff(head, (size_t)got) : IMG_FMT_UNKNOWN;
    http__reply_bytes(r, 200, img_format_mime(fmt), NULL, 0, 1);
    r->reply.fd = fd;
    r->reply.fd_len = (uint64_t)sb.st_size;
    r->reply.cache = 1;
    fd = -1;
fail: /* the one way out; success has replied already */
    if (!r->reply.status)
        http__reply_err(r, &e);
    if (fd >= 0)
        close(fd);
    free(real);
    store_item_clear(&it);
}

