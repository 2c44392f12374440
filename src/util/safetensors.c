/* safetensors.c - validating safetensors reader (mmap) and writer.
 *
 * Design:
 * 1. The header is parsed with jansson into our own table, then every
 *    invariant is checked before a pointer into the data is handed out, so a
 *    truncated or hostile file fails here and never in a kernel.
 * 2. Byte sizes are computed with overflow checks: shape products are capped
 *    at the file size before multiplying by the element size.
 * 3. Overlap is checked by sorting the ranges by their begin offset.
 */
#include "util/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util/fsutil.h"

static const struct {
    const char *name;
    enum st_dtype dt;
    size_t size;
} dtypes[] = {
    {"F32", ST_F32, 4},
    {"F16", ST_F16, 2},
    {"BF16", ST_BF16, 2},
    {"I64", ST_I64, 8},
};

const char *st_dtype_name(enum st_dtype d)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == d)
            return dtypes[i].name;
    return "?";
}

size_t st_dtype_size(enum st_dtype d)
{
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (dtypes[i].dt == d)
            return dtypes[i].size;
    return 0;
}

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const struct st_tensor *)a)->name,
                  ((const struct st_tensor *)b)->name);
}

static int cmp_begin(const void *a, const void *b)
{
    const struct st_tensor *x = *(struct st_tensor *const *)a;
    const struct st_tensor *y = *(struct st_tensor *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin;
}

static void free_tensors(struct st_tensor *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].name);
    free(t);
}

/* Fills one table entry from its JSON description. */
static int parse_entry(struct st_tensor *t, const char *name, json_t *v,
                       uint64_t data_size, const char *file, struct err *err)
{
    if (!json_is_object(v))
        return err_set(err, ERR_CORRUPT, "%s: tensor \"%s\" is not a JSON object",
                       file, name);
    json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"),
           *jo = json_object_get(v, "data_offsets");
    if (!json_is_string(jd) || !json_is_array(js) || !json_is_array(jo) ||
        json_array_size(jo) != 2)
        return err_set(err, ERR_CORRUPT,
                       "%s: tensor \"%s\" needs dtype, shape and data_offsets [begin, end]",
                       file, name);
    size_t esize = 0;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(json_string_value(jd), dtypes[i].name)) {
            t->dtype = dtypes[i].dt;
            esize = dtypes[i].size;
        }
    if (!esize)
        return err_set(err, ERR_CORRUPT,
                       "%s: tensor \"%s\" has dtype %s; only F32, F16, BF16 (and I64 buffers) are supported",
                       file, name, json_string_value(jd));
    size_t nd = json_array_size(js);
    if (nd > ST_MAX_DIMS)
        return err_set(err, ERR_CORRUPT, "%s: tensor \"%s\" has %zu dimensions (max %d)",
                       file, name, nd, ST_MAX_DIMS);
    t->ndim = (int)nd;
    uint64_t numel = 1;
    for (size_t i = 0; i < nd; i++) {
        json_t *d = json_array_get(js, i);
        if (!json_is_integer(d) || json_integer_value(d) < 0)
            return err_set(err, ERR_CORRUPT,
                           "%s: tensor \"%s\": shape[%zu] is not a non-negative integer",
                           file, name, i);
        uint64_t dim = (uint64_t)json_integer_value(d);
        t->shape[i] = (int64_t)dim;
        if (dim && numel > data_size / dim + 1)
            return err_set(err, ERR_CORRUPT, "%s: tensor \"%s\": shape is larger than the file",
                           file, name);
        numel *= dim;
    }
    t->numel = (int64_t)numel;
    json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
    if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 ||
        json_integer_value(je) < json_integer_value(jb))
        return err_set(err, ERR_CORRUPT, "%s: tensor \"%s\": bad data_offsets", file, name);
    t->begin = (uint64_t)json_integer_value(jb);
    t->end = (uint64_t)json_integer_value(je);
    if (t->end > data_size)
        return err_set(err, ERR_CORRUPT,
                       "%s: tensor \"%s\" ends at byte %llu of the data but the data has %llu bytes (truncated file?)",
                       file, name, (unsigned long long)t->end,
                       (unsigned long long)data_size);
    if (numel > data_size / esize || t->end - t->begin != numel * esize)
        return err_set(err, ERR_CORRUPT,
                       "%s: tensor \"%s\": shape needs %llu bytes but data_offsets give %llu",
                       file, name, (unsigned long long)(numel * esize),
                       (unsigned long long)(t->end - t->begin));
    return 0;
}

int st_parse(struct st_file **out, const uint8_t *buf, size_t size,
             const char *name, struct err *err)
{
    *out = NULL;
    if (size < 8)
        return err_set(err, ERR_CORRUPT, "%s: %zu bytes is too short for a safetensors file",
                       name, size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | buf[i];
    if (hlen > ST_MAX_HEADER || hlen > size - 8)
        return err_set(err, ERR_CORRUPT,
                       "%s: header length %llu does not fit in the file (%zu bytes)",
                       name, (unsigned long long)hlen, size);
    json_error_t je;
    json_t *root = json_loadb((const char *)buf + 8, (size_t)hlen,
                              JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &je);
    if (!root)
        return err_set(err, ERR_CORRUPT, "%s: header is not valid JSON (%s at offset %d)",
                       name, je.text, je.position);
    struct st_file *f = calloc(1, sizeof *f);
    struct st_tensor **by_begin = NULL;
    int rc = 0;
    if (!f) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    f->map = buf;
    f->size = size;
    if (!json_is_object(root)) {
        rc = err_set(err, ERR_CORRUPT, "%s: header is not a JSON object", name);
        goto fail;
    }
    size_t cap = json_object_size(root);
    f->tensors = calloc(cap ? cap : 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    uint64_t data_size = size - 8 - hlen;
    const uint8_t *data = buf + 8 + hlen;
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v) {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(v)) {
                rc = err_set(err, ERR_CORRUPT, "%s: __metadata__ is not an object", name);
                goto fail;
            }
            continue;
        }
        struct st_tensor *t = &f->tensors[f->n];
        if (strlen(key) == 0 || memchr(key, 0, strlen(key) + 1) != key + strlen(key)) {
            rc = err_set(err, ERR_CORRUPT, "%s: empty tensor name", name);
            goto fail;
        }
        t->name = strdup(key);
        if (!t->name) {
            rc = err_set(err, ERR_NOMEM, "out of memory");
            goto fail;
        }
        f->n++;
        rc = parse_entry(t, key, v, data_size, name, err);
        if (rc)
            goto fail;
        t->data = data + t->begin;
    }
    by_begin = malloc(sizeof *by_begin * (f->n ? (size_t)f->n : 1));
    if (!by_begin) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < f->n; i++)
        by_begin[i] = &f->tensors[i];
    qsort(by_begin, (size_t)f->n, sizeof *by_begin, cmp_begin);
    /* Empty tensors occupy no bytes and cannot overlap anything. */
    const struct st_tensor *last = NULL;
    for (int i = 0; i < f->n; i++) {
        const struct st_tensor *t = by_begin[i];
        if (t->end == t->begin)
            continue;
        if (last && t->begin < last->end) {
            rc = err_set(err, ERR_CORRUPT, "%s: tensors \"%s\" and \"%s\" overlap", name,
                         last->name, t->name);
            goto fail;
        }
        if (!last || t->end > last->end)
            last = t;
    }
    free(by_begin);
    by_begin = NULL;
    qsort(f->tensors, (size_t)f->n, sizeof *f->tensors, cmp_name);
    f->path = strdup(name);
    if (!f->path) {
        rc = err_set(err, ERR_NOMEM, "out of memory");
        goto fail;
    }
    json_decref(root);
    *out = f;
    return 0;
fail:
    free(by_begin);
    if (f) {
        free_tensors(f->tensors, f->n);
        free(f);
    }
    json_decref(root);
    return rc;
}

int st_open(struct st_file **out, const char *path, struct err *err)
{
    *out = NULL;
    void *map;
    size_t size;
    int rc = fs_map_file(path, UINT64_MAX, &map, &size, err);
    if (rc)
        return rc;
    rc = st_parse(out, map, size, path, err);
    if (rc) {
        if (size)
            munmap(map, size);
        return rc;
    }
    (*out)->mapped = size > 0;
    return 0;
}

void st_close(struct st_file *f)
{
    if (!f)
        return;
    if (f->mapped)
        munmap((void *)f->map, f->size);
    free(f->own);
    free_tensors(f->tensors, f->n);
    free(f->path);
    free(f);
}

const struct st_tensor *st_find(const struct st_file *f, const char *name)
{
    struct st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, (size_t)f->n, sizeof key, cmp_name);
}

float st_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 31, man = h & 1023u;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: renormalize */
            exp = 113;
            while (!(man & 1024u)) {
                man <<= 1;
                exp--;
            }
            bits = sign | exp << 23 | (man & 1023u) << 13;
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (exp + 112) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t st_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0));
    if (ax >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00u);
    if (ax < 0x38800000u) { /* result is subnormal or zero */
        if (ax < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1)))
            r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = ((ax >> 13) - (112u << 10));
    uint32_t rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1)))
        r++;
    return (uint16_t)(sign | r);
}

float st_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t st_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u); /* quiet nan */
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

int st_to_f32(const struct st_tensor *t, float *dst, struct err *err)
{
    const uint8_t *p = t->data;
    switch (t->dtype) {
    case ST_F32:
        memcpy(dst, p, (size_t)t->numel * 4);
        return 0;
    case ST_F16:
        for (int64_t i = 0; i < t->numel; i++)
            dst[i] = st_f16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    case ST_BF16:
        for (int64_t i = 0; i < t->numel; i++)
            dst[i] = st_bf16_to_f32((uint16_t)(p[2 * i] | p[2 * i + 1] << 8));
        return 0;
    default:
        return err_set(err, ERR_CORRUPT, "tensor \"%s\" has dtype %s, expected a float type",
                       t->name, st_dtype_name(t->dtype));
    }
}

int st_write(const char *path, const struct st_write_tensor *t, int n,
             struct err *err)
{
    json_t *root = json_object();
    uint64_t off = 0;
    int rc = 0;
    char *hdr = NULL;
    for (int i = 0; root && i < n; i++) {
        json_t *shape = json_array();
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++) {
            json_array_append_new(shape, json_integer(t[i].shape[d]));
            numel *= t[i].shape[d];
        }
        uint64_t bytes = (uint64_t)numel * st_dtype_size(t[i].dtype);
        json_object_set_new(root, t[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                                      st_dtype_name(t[i].dtype), "shape", shape,
                                      "data_offsets", (json_int_t)off,
                                      (json_int_t)(off + bytes)));
        off += bytes;
    }
    hdr = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    if (!hdr)
        return err_set(err, ERR_NOMEM, "out of memory");
    size_t hl = strlen(hdr), padded = (hl + 7) & ~(size_t)7;
    struct fs_atomic w;
    rc = fs_atomic_open(&w, path, err);
    if (rc)
        goto fail;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++)
        len8[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";
    rc = fs_atomic_write(&w, len8, 8, err);
    if (!rc)
        rc = fs_atomic_write(&w, hdr, hl, err);
    if (!rc)
        rc = fs_atomic_write(&w, spaces, padded - hl, err);
    for (int i = 0; !rc && i < n; i++) {
        int64_t numel = 1;
        for (int d = 0; d < t[i].ndim; d++)
            numel *= t[i].shape[d];
        rc = fs_atomic_write(&w, t[i].data, (size_t)numel * st_dtype_size(t[i].dtype), err);
    }
    if (rc)
        fs_atomic_abort(&w);
    else
        rc = fs_atomic_commit(&w, err);
fail:
    free(hdr);
    return rc;
}
