/* hnsw_file.c - the HNSW index on disk: validation, CRC-32C, save, load.
 *
 *  1. The format (hnsw.h) is an 80-byte header with its own checksum, then
 *     a payload in sections: labels, levels, flags, padding, vectors,
 *     links; one CRC-32C covers the payload. Codes are not stored.
 *  2. hnsw_load reads section by section (read_header, read_payload,
 *     check_levels, parse_links, index_vectors): every size is checked
 *     against the file before allocating and every id before use, then
 *     hnsw_validate checks the graph, so a damaged file is ERR_CORRUPT and
 *     never a crash.
 *  3. Save writes a temporary file, fsyncs it, renames it over the old
 *     one and fsyncs the directory: a crash leaves the old or the new file.
 *  4. CRC-32C uses the SSE4.2 instruction when the CPU has it and a table
 *     otherwise (same value).
 *
 * Reference: RFC 3720 appendix B.4 (CRC-32C).
 */
#include "store/hnsw_int.h"

/* ---- validation ------------------------------------------------------------ */

int hnsw_validate(const struct hnsw *h, struct err *err)
{
    uint32_t n = h->n;
    if (n == 0) {
        if (h->entry != NONE || h->n_deleted || h->map_n)
            return err_set(err, ERR_CORRUPT, "hnsw: empty index with entry %u, %u tombstones",
                           h->entry, h->n_deleted);
        return 0;
    }
    if (h->entry >= n)
        return err_set(err, ERR_CORRUPT, "hnsw: entry point %u is not below %u nodes",
                       h->entry, n);
    if (h->levels[h->entry] != h->max_level)
        return err_set(err, ERR_CORRUPT, "hnsw: entry point %u has level %d, top level is %d",
                       h->entry, h->levels[h->entry], h->max_level);
    uint32_t *seen = calloc(n, sizeof *seen);
    if (!seen)
        return err_set(err, ERR_NOMEM, "hnsw: no memory to validate");
    uint32_t dels = 0, stamp = 0;
    int rc = 0;
    for (uint32_t i = 0; i < n && !rc; i++) {
        if (h->levels[i] > h->max_level) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u has level %d above the top %d", i,
                         h->levels[i], h->max_level);
            break;
        }
        if (h->flags[i] & ~FLAG_DELETED) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u has unknown flags 0x%x", i,
                         h->flags[i]);
            break;
        }
        if (is_del(h, i))
            dels++;
        else if (hnsw__map_get(h, h->labels[i]) != i) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u: label %lld maps elsewhere", i,
                         (long long)h->labels[i]);
            break;
        }
        if (h->levels[i] > 0 && !h->upper[i]) {
            rc = err_set(err, ERR_CORRUPT, "hnsw: node %u lacks its upper lists", i);
            break;
        }
        for (int l = 0; l <= h->levels[i] && !rc; l++) {
            const uint32_t *lst = links(h, i, l);
            if (lst[0] > (uint32_t)maxdeg(h, l)) {
                rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d has %u neighbours, max %d",
                             i, l, lst[0], maxdeg(h, l));
                break;
            }
            stamp++;
            for (uint32_t j = 1; j <= lst[0]; j++) {
                uint32_t x = lst[j];
                if (x >= n)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d: neighbour %u >= %u",
                                 i, l, x, n);
                else if (x == i)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d links to itself", i, l);
                else if (h->levels[x] < l)
                    rc = err_set(err, ERR_CORRUPT,
                                 "hnsw: node %u level %d: neighbour %u only reaches level %d",
                                 i, l, x, h->levels[x]);
                else if (seen[x] == stamp)
                    rc = err_set(err, ERR_CORRUPT, "hnsw: node %u level %d lists %u twice", i,
                                 l, x);
                if (rc)
                    break;
                seen[x] = stamp;
            }
        }
    }
    free(seen);
    if (rc)
        return rc;
    if (dels != h->n_deleted)
        return err_set(err, ERR_CORRUPT, "hnsw: %u tombstones flagged, header says %u", dels,
                       h->n_deleted);
    if (h->map_n != (size_t)n - dels)
        return err_set(err, ERR_CORRUPT, "hnsw: %zu labels mapped for %u live nodes", h->map_n,
                       n - dels);
    return 0;
}

size_t hnsw_unreachable(const struct hnsw *h)
{
    if (h->n == 0)
        return 0;
    uint8_t *seen = calloc(h->n, 1);
    uint32_t *queue = malloc((size_t)h->n * sizeof *queue);
    size_t lost = 0;
    if (!seen || !queue)
        lost = (size_t)-1;
    else {
        hnsw__walk0(h, h->entry, seen, queue, NULL);
        for (uint32_t i = 0; i < h->n; i++)
            lost += !seen[i] && !is_del(h, i);
    }
    free(seen);
    free(queue);
    return lost;
}

/* ---- CRC-32C ---------------------------------------------------------------- */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

/* Slicing-by-8 software CRC. */
static uint32_t crc_soft(uint32_t c, const uint8_t *p, size_t n)
{
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
            crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
            crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
            crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return c;
}

/* The SSE4.2 crc32 instruction computes the same CRC-32C. */
__attribute__((target("sse4.2"))) static uint32_t crc_hw(uint32_t c, const uint8_t *p,
                                                         size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c64 = _mm_crc32_u64(c64, w);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}

uint32_t hnsw_crc32c(uint32_t crc, const void *p, size_t n)
{
    static int hw = -1;
    if (hw < 0) {
        __builtin_cpu_init();
        hw = __builtin_cpu_supports("sse4.2") && !getenv("IMGSEARCH_SOFT_CRC");
    }
    uint32_t c = ~crc;
    if (hw)
        c = crc_hw(c, p, n);
    else {
        pthread_once(&crc_once, crc_init);
        c = crc_soft(c, p, n);
    }
    return ~c;
}

/* ---- save ------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p) { return get32(p) | (uint64_t)get32(p + 4) << 32; }

struct writer {
    int fd;          /* output */
    uint8_t *buf;    /* pending bytes */
    size_t len;      /* pending count */
    size_t cap;      /* buffer size */
    uint32_t crc;    /* running CRC of the payload */
    int failed;      /* errno of the first failure, 0 */
};

static void w_flush(struct writer *w)
{
    size_t off = 0;
    while (off < w->len && !w->failed) {
        ssize_t k = write(w->fd, w->buf + off, w->len - off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            w->failed = k < 0 ? errno : EIO;
        else
            off += (size_t)k;
    }
    w->len = 0;
}

static void w_put(struct writer *w, const void *p, size_t n)
{
    w->crc = hnsw_crc32c(w->crc, p, n);
    const uint8_t *b = p;
    while (n && !w->failed) {
        size_t room = w->cap - w->len, k = n < room ? n : room;
        memcpy(w->buf + w->len, b, k);
        w->len += k;
        b += k;
        n -= k;
        if (w->len == w->cap)
            w_flush(w);
    }
}

static void w_u32(struct writer *w, uint32_t v)
{
    uint8_t b[4];
    put32(b, v);
    w_put(w, b, 4);
}

static int fsync_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        slash[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

int hnsw_save(const struct hnsw *h, const char *path, struct err *err)
{
    size_t plen = strlen(path) + 32;
    char *tmp = malloc(plen);
    if (!tmp)
        return err_set(err, ERR_NOMEM, "%s: no memory", path);
    snprintf(tmp, plen, "%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int rc = err_set(err, ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        free(tmp);
        return rc;
    }
    struct writer w = {fd, malloc(1 << 20), 0, 1 << 20, 0, 0};
    if (!w.buf) {
        close(fd);
        unlink(tmp);
        free(tmp);
        return err_set(err, ERR_NOMEM, "%s: no memory", path);
    }
    uint64_t n = h->n;
    uint8_t hdr[HEADER_BYTES] = {0};
    w_put(&w, hdr, sizeof hdr); /* placeholder, rewritten at the end */
    w.crc = 0;
    size_t start = sizeof hdr;
    uint64_t payload = 0;
    for (uint64_t i = 0; i < n; i++) {
        uint8_t b[8];
        put64(b, (uint64_t)h->labels[i]);
        w_put(&w, b, 8);
    }
    w_put(&w, h->levels, n);
    w_put(&w, h->flags, n);
    static const uint8_t zeros[4] = {0};
    size_t pad = (size_t)((4 - (n * 10) % 4) % 4);
    w_put(&w, zeros, pad);
    /* Vectors: little-endian f32 is the in-memory layout on x86-64. */
    w_put(&w, h->vecs, (size_t)n * h->dim * sizeof(float));
    for (uint64_t i = 0; i < n; i++)
        for (int l = 0; l <= h->levels[i]; l++) {
            const uint32_t *lst = links(h, (uint32_t)i, l);
            for (uint32_t j = 0; j <= lst[0]; j++)
                w_u32(&w, lst[j]);
        }
    w_flush(&w);
    off_t end = lseek(fd, 0, SEEK_CUR);
    payload = (uint64_t)end - start;
    memcpy(hdr, MAGIC, 8);
    put32(hdr + 8, VERSION);
    put32(hdr + 12, (uint32_t)h->dim);
    put32(hdr + 16, (uint32_t)h->m);
    put32(hdr + 20, (uint32_t)h->efc);
    put32(hdr + 24, (uint32_t)h->max_level);
    put32(hdr + 28, h->entry);
    put64(hdr + 32, n);
    put64(hdr + 40, h->n_deleted);
    put64(hdr + 48, (uint64_t)h->covered);
    put64(hdr + 56, h->tag);
    put64(hdr + 64, payload);
    put32(hdr + 72, w.crc);
    put32(hdr + 76, hnsw_crc32c(0, hdr, 76));
    int rc = 0;
    if (w.failed)
        rc = err_set(err, ERR_IO, "%s: write failed: %s", tmp, strerror(w.failed));
    else if (pwrite(fd, hdr, sizeof hdr, 0) != (ssize_t)sizeof hdr)
        rc = err_set(err, ERR_IO, "%s: header write failed: %s", tmp, strerror(errno));
    else if (fsync(fd))
        rc = err_set(err, ERR_IO, "%s: fsync failed: %s", tmp, strerror(errno));
    free(w.buf);
    if (close(fd) && !rc)
        rc = err_set(err, ERR_IO, "%s: close failed: %s", tmp, strerror(errno));
    if (!rc && rename(tmp, path))
        rc = err_set(err, ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
    if (!rc && fsync_dir(path))
        rc = err_set(err, ERR_IO, "%s: cannot fsync its directory: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    free(tmp);
    return rc;
}

/* ---- load ------------------------------------------------------------------ */

static int read_full(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n) {
        ssize_t k = read(fd, b, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -1 : -2;
        b += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The header's fields (hnsw.h, bytes 0..79), checked against the file. */
struct fhdr {
    uint32_t dim, m, efc, top, entry, payload_crc;
    uint64_t n, ndel, payload, covered, tag;
    uint64_t pad;   /* zero bytes after the flags, to a multiple of 4 */
    uint64_t fixed; /* payload bytes before the links */
};

#define CORRUPT(...) return err_set(err, ERR_CORRUPT, __VA_ARGS__)

/* Section 1, the header: magic, checksum, version, ranges, and sizes that
 * fit the file (fsize bytes). */
static int read_header(int fd, const char *path, uint64_t fsize, struct fhdr *f,
                       struct err *err)
{
    uint8_t hdr[HEADER_BYTES];
    if (fsize < HEADER_BYTES)
        CORRUPT("%s: %llu bytes, shorter than the %d byte header", path,
                (unsigned long long)fsize, HEADER_BYTES);
    if (read_full(fd, hdr, sizeof hdr))
        return err_set(err, ERR_IO, "%s: cannot read the header", path);
    if (memcmp(hdr, MAGIC, 8))
        CORRUPT("%s: not an imgsearch HNSW file (bad magic)", path);
    if (get32(hdr + 76) != hnsw_crc32c(0, hdr, 76))
        CORRUPT("%s: header checksum mismatch", path);
    if (get32(hdr + 8) != VERSION)
        CORRUPT("%s: version %u, this build reads %d", path, get32(hdr + 8), VERSION);
    f->dim = get32(hdr + 12), f->m = get32(hdr + 16), f->efc = get32(hdr + 20);
    f->top = get32(hdr + 24), f->entry = get32(hdr + 28);
    f->n = get64(hdr + 32), f->ndel = get64(hdr + 40), f->payload = get64(hdr + 64);
    f->covered = get64(hdr + 48), f->tag = get64(hdr + 56), f->payload_crc = get32(hdr + 72);
    if (f->dim < 1 || f->dim > HNSW_MAX_DIM || f->m < 2 || f->m > HNSW_MAX_M || f->efc < 1 ||
        f->efc > HNSW_MAX_EF || f->top > HNSW_MAX_LEVEL)
        CORRUPT("%s: header out of range (dim %u, m %u, ef_construction %u, top level %u)",
                path, f->dim, f->m, f->efc, f->top);
    if (f->payload != fsize - HEADER_BYTES)
        CORRUPT("%s: header says %llu payload bytes, file has %llu", path,
                (unsigned long long)f->payload, (unsigned long long)(fsize - HEADER_BYTES));
    if (f->n > HNSW_MAX_NODES || f->ndel > f->n)
        CORRUPT("%s: %llu nodes, %llu deleted: out of range", path, (unsigned long long)f->n,
                (unsigned long long)f->ndel);
    /* Every node needs at least: label, level, flags, vector, one count. */
    f->pad = (4 - (f->n * 10) % 4) % 4;
    f->fixed = f->n * 10 + f->pad + f->n * f->dim * 4;
    if (f->fixed + f->n * 4 > f->payload)
        CORRUPT("%s: %llu nodes of dimension %u need more than the %llu payload bytes", path,
                (unsigned long long)f->n, f->dim, (unsigned long long)f->payload);
    if ((f->n == 0) != (f->entry == NONE) || (f->n && f->entry >= f->n))
        CORRUPT("%s: entry point %u invalid for %llu nodes", path, f->entry,
                (unsigned long long)f->n);
    return 0;
}

/* Sections 2-6, the payload: labels, levels, flags, padding and vectors
 * straight into h's arrays, the link section into *lbuf (lbytes bytes),
 * all under the payload checksum. */
static int read_payload(int fd, const char *path, const struct fhdr *f, struct hnsw *h,
                        uint8_t **lbuf, size_t lbytes, struct err *err)
{
    uint64_t n = f->n;
    uint32_t crc = 0;
    int r = 0;
    /* Labels arrive little-endian, which is the host order on x86-64. */
    r |= read_full(fd, h->labels, n * 8);
    crc = hnsw_crc32c(crc, h->labels, n * 8);
    r |= read_full(fd, h->levels, n);
    crc = hnsw_crc32c(crc, h->levels, n);
    r |= read_full(fd, h->flags, n);
    crc = hnsw_crc32c(crc, h->flags, n);
    uint8_t padb[4] = {0};
    r |= read_full(fd, padb, f->pad);
    crc = hnsw_crc32c(crc, padb, f->pad);
    r |= read_full(fd, h->vecs, n * f->dim * 4);
    crc = hnsw_crc32c(crc, h->vecs, n * f->dim * 4);
    *lbuf = malloc(lbytes ? lbytes : 1);
    if (!*lbuf)
        return err_set(err, ERR_NOMEM, "%s: no memory for %zu link bytes", path, lbytes);
    r |= read_full(fd, *lbuf, lbytes);
    crc = hnsw_crc32c(crc, *lbuf, lbytes);
    if (r)
        return err_set(err, ERR_IO, "%s: read failed", path);
    if (crc != f->payload_crc)
        CORRUPT("%s: payload checksum mismatch", path);
    return 0;
}

/* Levels and flags: every level within the header's top, which some node
 * reaches; only known flags; the tombstone count the header gives. */
static int check_levels(const struct hnsw *h, const struct fhdr *f, const char *path,
                        struct err *err)
{
    uint32_t dels = 0, maxlv = 0;
    for (uint64_t i = 0; i < f->n; i++) {
        if (h->levels[i] > f->top)
            CORRUPT("%s: node %llu has level %u above the top %u", path, (unsigned long long)i,
                    h->levels[i], f->top);
        if (h->levels[i] > maxlv)
            maxlv = h->levels[i];
        if (h->flags[i] & ~FLAG_DELETED)
            CORRUPT("%s: node %llu has unknown flags 0x%x", path, (unsigned long long)i,
                    h->flags[i]);
        dels += h->flags[i] & FLAG_DELETED;
    }
    if (f->n && maxlv != f->top)
        CORRUPT("%s: top level %u but the highest node level is %u", path, f->top, maxlv);
    if (dels != f->ndel)
        CORRUPT("%s: %u tombstones flagged, header says %llu", path, dels,
                (unsigned long long)f->ndel);
    return 0;
}

/* The link section: per node and level, a count within the level's degree
 * and that many node ids below n, with no byte left over. h->n counts the
 * nodes whose upper blocks exist, so that hnsw_free frees them on failure. */
static int parse_links(struct hnsw *h, const struct fhdr *f, const uint8_t *lbuf,
                       size_t lbytes, const char *path, struct err *err)
{
    size_t off = 0;
    for (uint64_t i = 0; i < f->n; i++) {
        int lv = h->levels[i];
        if (lv > 0) {
            h->upper[i] = calloc((size_t)lv * (1 + (size_t)f->m), sizeof(uint32_t));
            if (!h->upper[i])
                return err_set(err, ERR_NOMEM, "%s: no memory for links", path);
        }
        h->n = (uint32_t)i + 1;
        for (int l = 0; l <= lv; l++) {
            if (lbytes - off < 4)
                CORRUPT("%s: links end early at node %llu", path, (unsigned long long)i);
            uint32_t cnt = get32(lbuf + off);
            off += 4;
            if (cnt > (uint32_t)maxdeg(h, l))
                CORRUPT("%s: node %llu level %d: %u neighbours (max %d)", path,
                        (unsigned long long)i, l, cnt, maxdeg(h, l));
            if ((lbytes - off) / 4 < cnt)
                CORRUPT("%s: links end early in node %llu level %d", path,
                        (unsigned long long)i, l);
            uint32_t *lst = links(h, (uint32_t)i, l);
            lst[0] = cnt;
            for (uint32_t j = 1; j <= cnt; j++, off += 4) {
                lst[j] = get32(lbuf + off);
                if (lst[j] >= f->n)
                    CORRUPT("%s: node %llu: neighbour %u out of range", path,
                            (unsigned long long)i, lst[j]);
            }
        }
    }
    if (off != lbytes)
        CORRUPT("%s: %zu stray bytes after the links", path, lbytes - off);
    return 0;
}

/* Vectors: unit norm (which also rejects NaN and infinities); then the
 * codes, which the file does not hold, and the label map of live nodes. */
static int index_vectors(struct hnsw *h, const char *path, struct err *err)
{
    for (uint32_t i = 0; i < h->n; i++) {
        const float *x = vec_of(h, i);
        double ss = 0;
        for (int k = 0; k < h->dim; k++)
            ss += (double)x[k] * x[k];
        if (!(fabs(ss - 1) < 1e-3))
            CORRUPT("%s: node %u: vector norm^2 is %g, not 1", path, i, ss);
        hnsw__set_codes(h, i);
        if (is_del(h, i))
            continue;
        int put = hnsw__map_put(h, h->labels[i], i);
        if (put < 0)
            return err_set(err, ERR_NOMEM, "%s: no memory for the label map", path);
        if (put > 0)
            CORRUPT("%s: label %lld is live on two nodes", path, (long long)h->labels[i]);
    }
    return 0;
}

#undef CORRUPT

/* An index with the header's parameters (pp for the rest) and room for its
 * nodes; no node counted yet. */
static int alloc_index(struct hnsw **out, const struct fhdr *f, const struct hnsw_params *pp,
                       const char *path, struct err *err)
{
    struct hnsw_params p;
    if (pp)
        p = *pp;
    else
        hnsw_params_default(&p);
    p.m = (int)f->m;
    p.ef_construction = (int)f->efc;
    int rc = hnsw_new(out, (int)f->dim, &p, err);
    if (rc)
        return rc;
    if (f->n && hnsw__grow(*out, f->n))
        return err_set(err, ERR_NOMEM, "%s: no memory for %llu nodes", path,
                       (unsigned long long)f->n);
    for (uint64_t i = 0; i < f->n; i++)
        (*out)->upper[i] = NULL;
    return 0;
}

int hnsw_load(struct hnsw **out, const char *path, const struct hnsw_params *pp,
              struct err *err)
{
    *out = NULL;
    struct hnsw *h = NULL;
    uint8_t *lbuf = NULL;
    struct fhdr f = {0};
    int rc = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return err_set(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_IO, "%s: cannot open: %s",
                       path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st)) {
        rc = err_set(err, ERR_IO, "%s: stat failed: %s", path, strerror(errno));
        goto fail;
    }
    rc = read_header(fd, path, (uint64_t)st.st_size, &f, err);
    if (!rc)
        rc = alloc_index(&h, &f, pp, path, err);
    size_t lbytes = (size_t)(f.payload - f.fixed);
    if (!rc)
        rc = read_payload(fd, path, &f, h, &lbuf, lbytes, err);
    if (!rc)
        rc = check_levels(h, &f, path, err);
    if (!rc)
        rc = parse_links(h, &f, lbuf, lbytes, path, err);
    if (rc)
        goto fail;
    h->n = (uint32_t)f.n;
    h->n_deleted = (uint32_t)f.ndel;
    h->entry = f.n ? f.entry : NONE;
    h->max_level = (int)f.top;
    h->covered = (int64_t)f.covered;
    h->tag = f.tag;
    rc = index_vectors(h, path, err);
    if (rc)
        goto fail;
    rc = hnsw_validate(h, err);
    if (rc) {
        err_prefix(err, "%s", path);
        goto fail;
    }
    /* Older builds could leave nodes without incoming links (copies of one
     * vector): link them now, the file stays as it is until the next save. */
    if (hnsw__repair_reachability(h) < 0) {
        rc = err_set(err, ERR_NOMEM, "%s: no memory to check the graph's reachability", path);
        goto fail;
    }
    free(lbuf);
    close(fd);
    *out = h;
    return 0;
fail:
    free(lbuf);
    hnsw_free(h);
    close(fd);
    return rc;
}
