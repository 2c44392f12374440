/* sidecar.c - the metadata sidecar of an ingest run (see ingest.h): CSV or
 * JSON lines, keyed by path or id, merged over an item's metadata.
 *
 * Design:
 *  1. One jansson object maps keys to field objects: "p:" + a normalised
 *     absolute path, "r:" + a relative path as written, "i:" + an item id.
 *     A relative path is ambiguous (relative to the sidecar's folder, the
 *     current folder, or the root being walked), so it is stored under
 *     every reading; lookups then cost one hash probe each.
 *  2. CSV follows RFC 4180 (comma separated, CRLF or LF, "quoted" fields
 *     may hold commas, line breaks and "" for a quote); a UTF-8 byte order
 *     mark is skipped. Every value must be UTF-8 (jansson checks it).
 *
 * Reference: RFC 4180 (CSV), https://jsonlines.org (JSON lines).
 */
#include "ingest/ingest_int.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/fsutil.h"

struct dbuf {
    char *s;    /* bytes, not NUL-terminated */
    size_t n;   /* used */
    size_t cap; /* allocated */
};

static int dbuf_push(struct dbuf *b, char c)
{
    if (b->n == b->cap) {
        size_t nc = b->cap ? 2 * b->cap : 64;
        char *g = realloc(b->s, nc);
        if (!g)
            return -1;
        b->s = g;
        b->cap = nc;
    }
    b->s[b->n++] = c;
    return 0;
}

/* dbuf_push with csv_record's error: ERR_NOMEM naming the file */
static int push(struct dbuf *b, char c, const char *file, struct err *err)
{
    if (dbuf_push(b, c))
        return err_set(err, ERR_NOMEM, "%s: no memory", file);
    return 0;
}

/* One CSV record (RFC 4180: comma separated, CRLF or LF, "quoted" fields
 * may hold commas, line breaks and "" for a quote) from s[*pos..n) into
 * row, a JSON array of strings. *line counts lines for messages. */
static int csv_record(const char *file, const char *s, size_t n, size_t *pos, int *line,
                      json_t *row, struct err *err)
{
    struct dbuf b = {0};
    size_t i = *pos;
    int first_line = *line, rc = 0;
    for (;;) {
        b.n = 0;
        if (i < n && s[i] == '"') {
            i++;
            for (;;) {
                if (i >= n) {
                    rc = err_set(err, ERR_INVALID_ARGUMENT,
                                 "%s:%d: a quoted field is never closed", file, first_line);
                    goto fail;
                }
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        if ((rc = push(&b, '"', file, err)))
                            goto fail;
                        i += 2;
                        continue;
                    }
                    i++;
                    break;
                }
                if (s[i] == '\n')
                    (*line)++;
                if ((rc = push(&b, s[i++], file, err)))
                    goto fail;
            }
            if (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r') {
                rc = err_set(err, ERR_INVALID_ARGUMENT,
                             "%s:%d: text after the closing quote of a field", file, *line);
                goto fail;
            }
        } else {
            while (i < n && s[i] != ',' && s[i] != '\n' && s[i] != '\r')
                if ((rc = push(&b, s[i++], file, err)))
                    goto fail;
        }
        json_t *f = json_stringn(b.s ? b.s : "", b.n);
        if (!f) {
            rc = err_set(err, ERR_INVALID_UTF8, "%s:%d: a field is not valid UTF-8", file, *line);
            goto fail;
        }
        json_array_append_new(row, f);
        if (i < n && s[i] == ',') {
            i++;
            continue;
        }
        if (i < n && s[i] == '\r')
            i++;
        if (i < n && s[i] == '\n')
            i++;
        (*line)++;
        break;
    }
    *pos = i;
fail:
    free(b.s);
    return rc;
}

/* Adds fields under the keys for `key` (a path or an id). */
static int sidecar_add(struct ingest_sidecar *sc, const char *dir, const char *cwd, int is_path,
                       const char *key, json_t *fields)
{
    char *k[3] = {NULL, NULL, NULL};
    size_t nk = 0;
    if (!is_path) {
        k[nk] = malloc(strlen(key) + 3);
        if (k[nk])
            sprintf(k[nk], "i:%s", key);
        nk++;
    } else {
        /* a relative path may be relative to the sidecar, to the current
         * folder, or to the root being indexed: keep all three readings */
        char *a = ingest_path_normal(dir, key), *b = key[0] == '/' ? NULL : ingest_path_normal(cwd, key);
        if (a) {
            k[nk] = malloc(strlen(a) + 3);
            if (k[nk])
                sprintf(k[nk], "p:%s", a);
        }
        nk++;
        if (b) {
            k[nk] = malloc(strlen(b) + 3);
            if (k[nk])
                sprintf(k[nk], "p:%s", b);
            nk++;
        }
        if (key[0] != '/') {
            k[nk] = malloc(strlen(key) + 3);
            if (k[nk])
                sprintf(k[nk], "r:%s", key);
            nk++;
        }
        free(a);
        free(b);
    }
    int rc = 0;
    for (size_t i = 0; i < nk; i++) {
        if (!k[i] || json_object_set(sc->map, k[i], fields))
            rc = -1;
        free(k[i]);
    }
    return rc;
}

static int load_csv(struct ingest_sidecar *sc, const char *file, const char *dir, const char *cwd,
                    const char *s, size_t n, struct err *err)
{
    size_t pos = 0;
    int line = 1, rc;
    if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
        pos = 3; /* UTF-8 byte order mark */
    json_t *head = json_array();
    if (!head)
        return err_set(err, ERR_NOMEM, "no memory");
    if ((rc = csv_record(file, s, n, &pos, &line, head, err)))
        goto fail;
    size_t ncol = json_array_size(head), key = (size_t)-1;
    for (size_t i = 0; i < ncol; i++)
        if (!strcmp(json_string_value(json_array_get(head, i)), "path"))
            key = i;
    int is_path = key != (size_t)-1;
    for (size_t i = 0; !is_path && i < ncol; i++)
        if (!strcmp(json_string_value(json_array_get(head, i)), "id"))
            key = i;
    if (key == (size_t)-1) {
        rc = err_set(err, ERR_INVALID_ARGUMENT,
                     "%s: the header row has no 'path' or 'id' column", file);
        goto fail;
    }
    while (pos < n) {
        int at = line;
        json_t *row = json_array();
        if (!row) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            goto fail;
        }
        if ((rc = csv_record(file, s, n, &pos, &line, row, err))) {
            json_decref(row);
            goto fail;
        }
        size_t nf = json_array_size(row);
        if (nf == 1 && !*json_string_value(json_array_get(row, 0))) {
            json_decref(row); /* a blank line */
            continue;
        }
        if (nf != ncol) {
            json_decref(row);
            rc = err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: %zu fields, the header has %zu",
                         file, at, nf, ncol);
            goto fail;
        }
        const char *k = json_string_value(json_array_get(row, key));
        if (!*k) {
            json_decref(row);
            rc = err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: the %s is empty", file, at,
                         is_path ? "path" : "id");
            goto fail;
        }
        json_t *fields = json_object();
        for (size_t i = 0; fields && i < ncol; i++) {
            const char *name = json_string_value(json_array_get(head, i));
            if (i != key && *name)
                json_object_set(fields, name, json_array_get(row, i));
        }
        rc = fields ? sidecar_add(sc, dir, cwd, is_path, k, fields) : -1;
        json_decref(fields);
        json_decref(row);
        if (rc) {
            rc = err_set(err, ERR_NOMEM, "no memory");
            goto fail;
        }
    }
fail:
    json_decref(head);
    return rc;
}

static int load_jsonl(struct ingest_sidecar *sc, const char *file, const char *dir, const char *cwd,
                      const char *s, size_t n, struct err *err)
{
    int line = 0;
    for (size_t pos = 0; pos < n;) {
        const char *nl = memchr(s + pos, '\n', n - pos);
        size_t end = nl ? (size_t)(nl - s) : n;
        line++;
        size_t a = pos, b = end;
        pos = nl ? end + 1 : n;
        while (a < b && (s[a] == ' ' || s[a] == '\t' || s[a] == '\r'))
            a++;
        if (a == b)
            continue;
        json_error_t je;
        json_t *o = json_loadb(s + a, b - a, 0, &je);
        if (!o || !json_is_object(o)) {
            json_decref(o);
            return err_set(err, ERR_INVALID_ARGUMENT, "%s:%d: %s", file, line,
                           o ? "not a JSON object" : je.text);
        }
        json_t *kp = json_object_get(o, "path"), *ki = json_object_get(o, "id");
        int is_path = kp != NULL;
        json_t *kv = is_path ? kp : ki;
        if (!kv || !json_is_string(kv) || !*json_string_value(kv)) {
            json_decref(o);
            return err_set(err, ERR_INVALID_ARGUMENT,
                           "%s:%d: needs a \"path\" or \"id\" string", file, line);
        }
        char *k = strdup(json_string_value(kv));
        json_object_del(o, is_path ? "path" : "id");
        int rc = k ? sidecar_add(sc, dir, cwd, is_path, k, o) : -1;
        free(k);
        json_decref(o);
        if (rc)
            return err_set(err, ERR_NOMEM, "no memory");
    }
    return 0;
}

int ingest_sidecar_load(struct ingest_sidecar *sc, const char *file, struct err *err)
{
    sc->map = json_object();
    if (!sc->map)
        return err_set(err, ERR_NOMEM, "no memory");
    uint8_t *data;
    size_t n;
    int rc = fs_read_file(file, INGEST_SIDECAR_MAX_BYTES, &data, &n, err);
    if (rc)
        return rc;
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd)) {
        free(data);
        return err_set(err, ERR_IO, "cannot read the current folder: %s", strerror(errno));
    }
    char *abs = ingest_path_normal(cwd, file);
    char *dir = abs ? abs : NULL;
    if (dir) {
        char *slash = strrchr(dir, '/');
        if (slash == dir)
            slash[1] = 0;
        else if (slash)
            *slash = 0;
    }
    const char *s = (const char *)data;
    size_t i = 0;
    if (n >= 3 && !memcmp(s, "\xef\xbb\xbf", 3))
        i = 3;
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    if (!dir)
        rc = err_set(err, ERR_NOMEM, "no memory");
    else if (i < n && s[i] == '{')
        rc = load_jsonl(sc, file, dir, cwd, s, n, err);
    else
        rc = load_csv(sc, file, dir, cwd, s, n, err);
    free(abs);
    free(data);
    return rc;
}

/* The sidecar's fields for a file (merged: path first, then id), or NULL. */
static json_t *sidecar_fields(const struct ingest_sidecar *sc, const char *abs, const char *rel,
                              const char *id)
{
    if (!sc || !sc->map)
        return NULL;
    json_t *out = NULL;
    const char *pre[3] = {"p:", "r:", "i:"}, *val[3] = {abs, rel, id};
    for (int i = 0; i < 3; i++) {
        if (!val[i])
            continue;
        size_t l = strlen(val[i]);
        char *k = malloc(l + 3);
        if (!k)
            continue;
        memcpy(k, pre[i], 2);
        memcpy(k + 2, val[i], l + 1);
        json_t *f = json_object_get(sc->map, k);
        free(k);
        if (!f)
            continue;
        if (!out)
            out = json_object();
        if (out)
            json_object_update(out, f);
        if (i == 0)
            i++; /* an absolute match wins over the relative reading */
    }
    return out;
}

/* old (JSON text or NULL) with fields merged over it. */
static char *merge_metadata(const char *old, json_t *fields, int *changed)
{
    json_t *o = old ? json_loads(old, 0, NULL) : NULL;
    if (!o || !json_is_object(o)) {
        json_decref(o);
        o = json_object();
    }
    json_t *before = json_deep_copy(o);
    if (fields)
        json_object_update(o, fields);
    *changed = !before || !json_equal(before, o);
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(before);
    json_decref(o);
    return s;
}

void ingest_sidecar_free(struct ingest_sidecar *sc)
{
    if (!sc)
        return;
    json_decref(sc->map);
    sc->map = NULL;
}

char *ingest_sidecar_merge(const struct ingest_sidecar *sc, const char *old, const char *abs,
                           const char *rel, const char *id, int *changed)
{
    json_t *f = sidecar_fields(sc, abs, rel, id);
    char *md = merge_metadata(old, f, changed);
    json_decref(f);
    return md;
}
