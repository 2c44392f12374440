/* failed.c - items that could not be embedded (see failed.h).
 *
 * 1. A jansson object maps id -> {path, reason, size, mtime, seq}; size and
 *    mtime are the file's when it failed (stat at record time: the engine's
 *    jobs for waiting items do not carry them).
 * 2. Bounded: past HTTP_FAILED_MAX entries the oldest recorded (lowest seq)
 *    is dropped; it is then tried again at the next round that reaches it,
 *    which is the safe side.
 * 3. Later, in the store: a `failed` column (reason, size, mtime) on the
 *    item would keep this across restarts and share it between processes;
 *    the schema is being reworked (PostgreSQL), so it lives here for now
 *    and a restart tries every failed item once more.
 */
#include "http/failed.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct http_failed {
    pthread_mutex_t mu; /* guards what follows */
    json_t *map;        /* id -> {"path", "reason", "size", "mtime", "seq"} */
    json_int_t seq;     /* records made */
};

int http_failed_new(struct http_failed **out, struct err *err)
{
    struct http_failed *f = calloc(1, sizeof *f);
    if (!f || !(f->map = json_object())) {
        free(f);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    pthread_mutex_init(&f->mu, NULL);
    *out = f;
    return 0;
}

void http_failed_free(struct http_failed *f)
{
    if (!f)
        return;
    json_decref(f->map);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

static void stat_of(const char *path, json_int_t *size, json_int_t *mtime)
{
    struct stat sb;
    *size = *mtime = -1;
    if (path && stat(path, &sb) == 0) {
        *size = (json_int_t)sb.st_size;
        *mtime = (json_int_t)sb.st_mtim.tv_sec * 1000000000 + sb.st_mtim.tv_nsec;
    }
}

/* Drops the oldest entry (mu held). */
static void drop_oldest(struct http_failed *f)
{
    const char *k, *oldest = NULL;
    json_t *v;
    json_int_t best = 0;
    json_object_foreach(f->map, k, v) {
        json_int_t s = json_integer_value(json_object_get(v, "seq"));
        if (!oldest || s < best) {
            oldest = k;
            best = s;
        }
    }
    if (oldest)
        json_object_del(f->map, oldest);
}

void http_failed_set(struct http_failed *f, const char *id, const char *path, const char *reason)
{
    if (!f || !id)
        return;
    json_int_t size, mtime;
    stat_of(path, &size, &mtime);
    json_t *v = json_pack("{s:s?,s:s,s:I,s:I}", "path", path, "reason", reason ? reason : "failed",
                          "size", size, "mtime", mtime);
    if (!v)
        return;
    pthread_mutex_lock(&f->mu);
    if (!json_object_get(f->map, id) && json_object_size(f->map) >= HTTP_FAILED_MAX)
        drop_oldest(f);
    json_object_set_new(v, "seq", json_integer(++f->seq));
    json_object_set_new(f->map, id, v);
    pthread_mutex_unlock(&f->mu);
}

void http_failed_clear(struct http_failed *f, const char *id)
{
    if (!f || !id)
        return;
    pthread_mutex_lock(&f->mu);
    json_object_del(f->map, id);
    pthread_mutex_unlock(&f->mu);
}

int http_failed_unchanged(struct http_failed *f, const char *id)
{
    if (!f || !id)
        return 0;
    pthread_mutex_lock(&f->mu);
    json_t *v = json_object_get(f->map, id);
    char *path = v ? strdup(json_string_value(json_object_get(v, "path")) ?: "") : NULL;
    json_int_t size = v ? json_integer_value(json_object_get(v, "size")) : -1;
    json_int_t mtime = v ? json_integer_value(json_object_get(v, "mtime")) : -1;
    pthread_mutex_unlock(&f->mu);
    if (!path)
        return 0;
    json_int_t s2, m2;
    stat_of(path, &s2, &m2);
    free(path);
    return s2 == size && m2 == mtime;
}

int http_failed_get(struct http_failed *f, const char *id, char *reason, size_t n)
{
    if (!f || !id)
        return 0;
    pthread_mutex_lock(&f->mu);
    json_t *v = json_object_get(f->map, id);
    if (v && n)
        snprintf(reason, n, "%s", json_string_value(json_object_get(v, "reason")) ?: "");
    pthread_mutex_unlock(&f->mu);
    return v != NULL;
}

int64_t http_failed_prune(struct http_failed *f)
{
    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    const char *k;
    json_t *v, *tmp;
    struct stat sb;
    json_object_foreach_safe(f->map, tmp, k, v) {
        const char *p = json_string_value(json_object_get(v, "path"));
        if (!p || stat(p, &sb) != 0)
            json_object_del(f->map, k);
    }
    int64_t n = (int64_t)json_object_size(f->map);
    pthread_mutex_unlock(&f->mu);
    return n;
}

int64_t http_failed_count(struct http_failed *f)
{
    if (!f)
        return 0;
    pthread_mutex_lock(&f->mu);
    int64_t n = (int64_t)json_object_size(f->map);
    pthread_mutex_unlock(&f->mu);
    return n;
}

/* ---- the service's view ------------------------------------------------- */

#include "http/http_int.h"
#include "http/precompute.h"

void http__failed_annotate(struct http_server *s, json_t *item)
{
    const char *id = json_string_value(json_object_get(item, "id"));
    char reason[ERR_MSG_MAX], clean[ERR_MSG_MAX + 64];
    if (!s->pc || !id || !http_failed_get(http_precompute_failed(s->pc), id, reason, sizeof reason))
        return;
    http__scrub(s, reason, clean, sizeof clean, 0);
    json_object_set_new(item, "state", json_string("failed"));
    json_object_set_new(item, "error", json_string(clean));
}
