/* zip.c - a reader of zip archives held in memory (contract in zip.h).
 *
 * Design:
 * 1. Only the central directory is trusted for names and sizes; each local
 *    header is read just for the length of its name and extra field, and
 *    every offset is checked against the buffer before use.
 * 2. Stored entries are returned as pointers into the buffer (no copy:
 *    PyTorch writes its storages stored and 64-byte aligned); deflated
 *    ones are inflated with zlib into one allocation of the announced size,
 *    refused when the announcement exceeds deflate's maximum ratio.
 * 3. Entries are sorted by name once, so a lookup is a binary search.
 *
 * Reference: PKWARE APPNOTE.TXT 6.3 (sections 4.3.7 local header, 4.3.12
 * central directory, 4.3.14-16 ZIP64 end records, 4.5.3 ZIP64 extra field).
 */
#include "util/zip.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

uint64_t zip_rd(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static int zcmp(const void *a, const void *b)
{
    const struct zent *x = a, *y = b;
    size_t n = x->nlen < y->nlen ? x->nlen : y->nlen;
    int c = memcmp(x->name, y->name, n);
    return c ? c : (x->nlen > y->nlen) - (x->nlen < y->nlen);
}

static int zip_zip64(struct zip *z, size_t eocd, uint64_t *count, uint64_t *cdsize,
                     uint64_t *cdoff, const char *name, struct err *err)
{
    if (eocd < 20 || zip_rd(z->buf + eocd - 20, 4) != 0x07064b50)
        return err_set(err, ERR_CORRUPT, "%s: ZIP64 locator missing", name);
    uint64_t off = zip_rd(z->buf + eocd - 20 + 8, 8);
    if (off > z->size || z->size - off < 56 || zip_rd(z->buf + off, 4) != 0x06064b50)
        return err_set(err, ERR_CORRUPT, "%s: ZIP64 end record outside the file", name);
    *count = zip_rd(z->buf + off + 32, 8);
    *cdsize = zip_rd(z->buf + off + 40, 8);
    *cdoff = zip_rd(z->buf + off + 48, 8);
    return 0;
}

/* Reads the ZIP64 extra field (id 1) values for the fields at 0xffffffff. */
static int zip_extra(struct zent *e, const uint8_t *x, size_t xl, int need_u, int need_c,
                     int need_o)
{
    size_t p = 0;
    while (p + 4 <= xl) {
        unsigned id = (unsigned)zip_rd(x + p, 2), len = (unsigned)zip_rd(x + p + 2, 2);
        if (p + 4 + len > xl)
            return -1;
        if (id == 1) {
            const uint8_t *v = x + p + 4;
            size_t q = 0;
            if (need_u) {
                if (q + 8 > len)
                    return -1;
                e->usize = zip_rd(v + q, 8), q += 8;
            }
            if (need_c) {
                if (q + 8 > len)
                    return -1;
                e->csize = zip_rd(v + q, 8), q += 8;
            }
            if (need_o) {
                if (q + 8 > len)
                    return -1;
                e->lho = zip_rd(v + q, 8);
            }
            return 0;
        }
        p += 4 + len;
    }
    return need_u || need_c || need_o ? -1 : 0;
}

int zip_open(struct zip *z, const uint8_t *buf, size_t size, const char *name,
                    struct err *err)
{
    memset(z, 0, sizeof *z);
    z->buf = buf;
    z->size = size;
    if (size < 22)
        return err_set(err, ERR_CORRUPT, "%s: too short for a zip archive", name);
    size_t eocd = size - 22, stop = size > 22 + 65535 ? size - 22 - 65535 : 0;
    while (zip_rd(buf + eocd, 4) != 0x06054b50) {
        if (eocd == stop)
            return err_set(err, ERR_CORRUPT, "%s: zip end record not found", name);
        eocd--;
    }
    uint64_t count = zip_rd(buf + eocd + 10, 2), cdsize = zip_rd(buf + eocd + 12, 4),
             cdoff = zip_rd(buf + eocd + 16, 4);
    if (count == 0xffff || cdsize == 0xffffffff || cdoff == 0xffffffff) {
        int rc = zip_zip64(z, eocd, &count, &cdsize, &cdoff, name, err);
        if (rc)
            return rc;
    }
    if (cdoff > size || cdsize > size - cdoff || count > ZIP_MAX_ENTRIES)
        return err_set(err, ERR_CORRUPT, "%s: zip central directory outside the file "
                       "(%llu entries)", name, (unsigned long long)count);
    z->e = calloc(count ? count : 1, sizeof *z->e);
    if (!z->e)
        return err_set(err, ERR_NOMEM, "out of memory");
    const uint8_t *p = buf + cdoff, *end = p + cdsize;
    for (uint64_t i = 0; i < count; i++) {
        if (end - p < 46 || zip_rd(p, 4) != 0x02014b50)
            return err_set(err, ERR_CORRUPT, "%s: zip entry %llu is damaged", name,
                           (unsigned long long)i);
        struct zent *e = &z->e[z->n];
        unsigned flags = (unsigned)zip_rd(p + 8, 2);
        e->method = (int)zip_rd(p + 10, 2);
        e->csize = zip_rd(p + 20, 4);
        e->usize = zip_rd(p + 24, 4);
        size_t nl = zip_rd(p + 28, 2), xl = zip_rd(p + 30, 2), cl = zip_rd(p + 32, 2);
        e->lho = zip_rd(p + 42, 4);
        if ((size_t)(end - p) < 46 + nl + xl + cl)
            return err_set(err, ERR_CORRUPT, "%s: zip entry %llu is damaged", name,
                           (unsigned long long)i);
        e->name = (const char *)p + 46;
        e->nlen = nl;
        if (zip_extra(e, p + 46 + nl, xl, e->usize == 0xffffffff, e->csize == 0xffffffff,
                      e->lho == 0xffffffff))
            return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s: bad ZIP64 field", name,
                           (int)nl, e->name);
        if (flags & 1)
            return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: zip entry %.*s is encrypted",
                           name, (int)nl, e->name);
        z->n++;
        p += 46 + nl + xl + cl;
    }
    qsort(z->e, (size_t)z->n, sizeof *z->e, zcmp);
    return 0;
}

const struct zent *zip_find(const struct zip *z, const char *name, size_t nlen)
{
    struct zent key = {.name = name, .nlen = nlen};
    return bsearch(&key, z->e, (size_t)z->n, sizeof key, zcmp);
}

/* The bytes of entry e: a pointer into the archive (stored) or a malloc'd
 * inflated copy put in *owned. */
int zip_data(const struct zip *z, const struct zent *e, const uint8_t **data,
                    uint8_t **owned, const char *name, struct err *err)
{
    *owned = NULL;
    if (e->lho > z->size || z->size - e->lho < 30 || zip_rd(z->buf + e->lho, 4) != 0x04034b50)
        return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s: local header outside the file",
                       name, (int)e->nlen, e->name);
    uint64_t off = e->lho + 30 + zip_rd(z->buf + e->lho + 26, 2) + zip_rd(z->buf + e->lho + 28, 2);
    if (off > z->size || e->csize > z->size - off)
        return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s ends past the end of the file",
                       name, (int)e->nlen, e->name);
    if (e->method == 0) {
        if (e->csize != e->usize)
            return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s: sizes differ", name,
                           (int)e->nlen, e->name);
        *data = z->buf + off;
        return 0;
    }
    if (e->method != 8)
        return err_set(err, ERR_UNSUPPORTED_FORMAT, "%s: zip entry %.*s: compression method %d",
                       name, (int)e->nlen, e->name, e->method);
    /* deflate expands at most ~1032x; refuse claims beyond that */
    if (e->usize > e->csize * 1032 + 64 || e->usize > ZIP_MAX_ENTRY)
        return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s claims %llu bytes from %llu",
                       name, (int)e->nlen, e->name, (unsigned long long)e->usize,
                       (unsigned long long)e->csize);
    uint8_t *o = malloc(e->usize ? e->usize : 1);
    if (!o)
        return err_set(err, ERR_NOMEM, "out of memory inflating %.*s", (int)e->nlen, e->name);
    z_stream s;
    memset(&s, 0, sizeof s);
    int ok = inflateInit2(&s, -15) == Z_OK;
    uint64_t done = 0;
    const uint8_t *in = z->buf + off;
    uint64_t left = e->csize;
    int zr = Z_OK;
    while (ok && zr == Z_OK) {
        s.next_in = (Bytef *)in;
        s.avail_in = (uInt)(left > (1u << 30) ? (1u << 30) : left);
        s.next_out = o + done;
        s.avail_out = (uInt)(e->usize - done > (1u << 30) ? (1u << 30) : e->usize - done);
        uInt ai = s.avail_in, ao = s.avail_out;
        zr = inflate(&s, Z_NO_FLUSH);
        in += ai - s.avail_in;
        left -= ai - s.avail_in;
        done += ao - s.avail_out;
        if (zr == Z_OK && ai == s.avail_in && ao == s.avail_out)
            break;
    }
    if (ok)
        inflateEnd(&s);
    if (!ok || zr != Z_STREAM_END || done != e->usize) {
        free(o);
        return err_set(err, ERR_CORRUPT, "%s: zip entry %.*s does not inflate to %llu bytes",
                       name, (int)e->nlen, e->name, (unsigned long long)e->usize);
    }
    *data = *owned = o;
    return 0;
}

void zip_close(struct zip *z)
{
    free(z->e);
    z->e = NULL;
    z->n = 0;
}
