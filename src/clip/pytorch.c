/* pytorch.c - PyTorch state dicts (zip and legacy torch.save) read without
 * Python, as in-memory safetensors files (contract in pytorch.h).
 *
 * Design:
 * 1. A restricted pickle machine. It knows the opcodes torch.save emits for
 *    a state dict (protocol 2, plus the protocol 4 framing ones) and nothing
 *    else; an unknown opcode is an error, not a skip. GLOBAL / STACK_GLOBAL
 *    resolve a name against a fixed table of seven entries at the moment the
 *    name is read, so a pickle that names os.system stops there: no value
 *    for it ever exists, let alone a call. REDUCE can only build an empty
 *    OrderedDict or a tensor; BUILD (object state) is accepted on dicts and
 *    tensors and ignored, as torch's own loader does with _metadata.
 * 2. Every pickle value lives on one list freed at the end (no reference
 *    counting); values, memo slots and stack depth are each capped by
 *    PT_MAX_OBJECTS, so a hostile pickle cannot make us allocate without
 *    bound (a value is ~100 bytes).
 * 3. Storages are named by key in persistent ids; one table per file, so
 *    tensors sharing a storage share its bytes. Their data is bound after
 *    the pickle: zip entries (stored: pointer into the file; deflated:
 *    inflated once with zlib) or the legacy tail.
 * 4. Each tensor's view (offset, sizes, strides) is checked to stay inside
 *    its storage, then copied out in row-major order; contiguous views are
 *    one memcpy. The total output is capped (4x the input, at least 64 MiB):
 *    views may repeat storage bytes, but not without bound.
 * 5. The result is serialized as a safetensors file in memory and validated
 *    by st_parse, so the model loader sees one format.
 *
 * References: Python's Lib/pickletools.py (opcode table), PyTorch's
 * torch/serialization.py (_save, _legacy_save, persistent ids) and
 * torch/_utils.py (_rebuild_tensor_v2). The zip container: util/zip.h.
 */
#include "clip/pytorch.h"
#include "util/fsutil.h"
#include "util/zip.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- pickle values ----------------------------------------------------- */

enum vk { V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL,
          V_STORAGE, V_TENSOR };

/* The only globals that may exist. */
enum glob { G_ODICT, G_REBUILD, G_PARAM, G_F32, G_F16, G_BF16, G_I64 };
static const struct {
    const char *module, *name;
} globals[] = {
    [G_ODICT] = {"collections", "OrderedDict"},
    [G_REBUILD] = {"torch._utils", "_rebuild_tensor_v2"},
    [G_PARAM] = {"torch._utils", "_rebuild_parameter"},
    [G_F32] = {"torch", "FloatStorage"},
    [G_F16] = {"torch", "HalfStorage"},
    [G_BF16] = {"torch", "BFloat16Storage"},
    [G_I64] = {"torch", "LongStorage"},
};

struct tensor {
    int storage;                /* index in the storage table */
    int64_t offset;             /* in elements */
    int ndim;                   /* 0..ST_MAX_DIMS */
    int64_t size[ST_MAX_DIMS];  /* sizes */
    int64_t stride[ST_MAX_DIMS]; /* strides, elements */
};

struct val {
    enum vk k;              /* kind */
    int64_t i;              /* INT, BOOL; GLOBAL: enum glob; STORAGE: table index */
    char *s;                /* STR (NUL-terminated copy) */
    size_t slen;            /* bytes in s */
    struct val **items;     /* TUPLE, LIST; DICT: key, value, key, value... */
    int n, cap;             /* items used / allocated */
    struct tensor *t;       /* TENSOR */
    struct val *next;       /* every value, for freeing */
};

struct storage {
    char *key;              /* persistent id key */
    enum st_dtype dt;       /* element type */
    const uint8_t *data;    /* bound after the pickle */
    uint64_t numel;         /* elements available */
    uint8_t *owned;         /* inflated copy, or NULL */
};

struct vm {
    const char *name;       /* file name for messages */
    struct err *err;
    struct val *all;        /* every value */
    long nvals;             /* values made */
    struct val **stack;     /* operand stack */
    int sp, scap;
    int *marks;             /* mark stack (stack positions) */
    int nm, mcap;
    struct val **memo;      /* memo table */
    int64_t nmemo;          /* slots allocated */
    int64_t mlen;           /* highest slot stored + 1 (MEMOIZE's next slot) */
    struct storage *st;     /* storage table */
    int nst, stcap;
};

static struct val *mk(struct vm *vm, enum vk k)
{
    if (vm->nvals >= PT_MAX_OBJECTS) {
        err_set(vm->err, ERR_TOO_LARGE, "%s: pickle has over %d values", vm->name,
                PT_MAX_OBJECTS);
        return NULL;
    }
    struct val *v = calloc(1, sizeof *v);
    if (!v) {
        err_set(vm->err, ERR_NOMEM, "out of memory");
        return NULL;
    }
    v->k = k;
    v->next = vm->all;
    vm->all = v;
    vm->nvals++;
    return v;
}

static int grow(void **p, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    if (need > PT_MAX_OBJECTS)
        return -1;
    int nc = *cap ? *cap * 2 : 16;
    while (nc < need)
        nc *= 2;
    void *q = realloc(*p, (size_t)nc * elem);
    if (!q)
        return -1;
    *p = q;
    *cap = nc;
    return 0;
}

static int add_item(struct vm *vm, struct val *c, struct val *x)
{
    if (grow((void **)&c->items, &c->cap, c->n + 1, sizeof *c->items))
        return err_set(vm->err, ERR_TOO_LARGE, "%s: container too large", vm->name);
    c->items[c->n++] = x;
    return 0;
}

static int push(struct vm *vm, struct val *v)
{
    if (!v)
        return vm->err->code ? -vm->err->code : -ERR_NOMEM;
    if (grow((void **)&vm->stack, &vm->scap, vm->sp + 1, sizeof *vm->stack))
        return err_set(vm->err, ERR_TOO_LARGE, "%s: pickle stack too deep", vm->name);
    vm->stack[vm->sp++] = v;
    return 0;
}

static struct val *pop(struct vm *vm)
{
    int floor = vm->nm ? vm->marks[vm->nm - 1] : 0;
    if (vm->sp <= floor) {
        err_set(vm->err, ERR_CORRUPT, "%s: pickle stack underflow", vm->name);
        return NULL;
    }
    return vm->stack[--vm->sp];
}

static void vm_free(struct vm *vm)
{
    for (struct val *v = vm->all, *nx; v; v = nx) {
        nx = v->next;
        free(v->s);
        free(v->items);
        free(v->t);
        free(v);
    }
    for (int i = 0; i < vm->nst; i++) {
        free(vm->st[i].key);
        free(vm->st[i].owned);
    }
    free(vm->st);
    free(vm->stack);
    free(vm->marks);
    free(vm->memo);
}

static const char *kind_name(enum vk k)
{
    static const char *n[] = {"None", "bool", "int", "float", "str", "tuple", "list",
                              "dict", "global", "storage", "tensor"};
    return n[k];
}

/* ---- the opcodes ------------------------------------------------------- */

static int resolve(struct vm *vm, const char *mod, size_t ml, const char *nm, size_t nl)
{
    for (size_t g = 0; g < sizeof globals / sizeof *globals; g++)
        if (strlen(globals[g].module) == ml && !memcmp(globals[g].module, mod, ml) &&
            strlen(globals[g].name) == nl && !memcmp(globals[g].name, nm, nl)) {
            struct val *v = mk(vm, V_GLOBAL);
            if (v)
                v->i = (int64_t)g;
            return push(vm, v);
        }
    char safe[160];
    size_t k = 0;
    for (size_t i = 0; i < ml + 1 + nl && k + 1 < sizeof safe; i++) {
        char c = i < ml ? mod[i] : i == ml ? '.' : nm[i - ml - 1];
        safe[k++] = (c >= 32 && c < 127) ? c : '?';
    }
    safe[k] = 0;
    return err_set(vm->err, ERR_UNSUPPORTED_FORMAT,
                   "%s: the pickle asks for %s, which a PyTorch state dict never uses; "
                   "refused, nothing was executed", vm->name, safe);
}

static int storage_of(struct vm *vm, struct val *pid)
{
    /* zip: ('storage', type, key, location, numel); legacy adds view_metadata */
    if (pid->k != V_TUPLE || (pid->n != 5 && pid->n != 6) || pid->items[0]->k != V_STR ||
        strcmp(pid->items[0]->s, "storage") || pid->items[1]->k != V_GLOBAL ||
        pid->items[1]->i < G_F32 || pid->items[2]->k != V_STR)
        return err_set(vm->err, ERR_CORRUPT, "%s: persistent id is not a storage", vm->name);
    if (pid->n == 6 && pid->items[5]->k != V_NONE)
        return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: legacy storage views are not "
                       "supported", vm->name);
    static const enum st_dtype dts[] = {[G_F32] = ST_F32, [G_F16] = ST_F16,
                                        [G_BF16] = ST_BF16, [G_I64] = ST_I64};
    enum st_dtype dt = dts[pid->items[1]->i];
    const char *key = pid->items[2]->s;
    int idx = -1;
    for (int i = 0; i < vm->nst; i++)
        if (!strcmp(vm->st[i].key, key))
            idx = i;
    if (idx < 0) {
        if (vm->nst >= PT_MAX_TENSORS ||
            grow((void **)&vm->st, &vm->stcap, vm->nst + 1, sizeof *vm->st))
            return err_set(vm->err, ERR_TOO_LARGE, "%s: too many storages", vm->name);
        idx = vm->nst;
        memset(&vm->st[idx], 0, sizeof vm->st[idx]);
        vm->st[idx].key = strdup(key);
        vm->st[idx].dt = dt;
        if (!vm->st[idx].key)
            return err_set(vm->err, ERR_NOMEM, "out of memory");
        vm->nst++;
    } else if (vm->st[idx].dt != dt) {
        return err_set(vm->err, ERR_CORRUPT, "%s: storage %s used with two types", vm->name,
                       key);
    }
    struct val *v = mk(vm, V_STORAGE);
    if (v)
        v->i = idx;
    return push(vm, v);
}

static int int_tuple(struct vm *vm, const struct val *t, int64_t *out, int *n, const char *what)
{
    if (t->k != V_TUPLE || t->n > ST_MAX_DIMS)
        return err_set(vm->err, ERR_CORRUPT, "%s: tensor %s is not a tuple of at most %d ints",
                       vm->name, what, ST_MAX_DIMS);
    for (int i = 0; i < t->n; i++) {
        if (t->items[i]->k != V_INT || t->items[i]->i < 0 || t->items[i]->i > (1ll << 31))
            return err_set(vm->err, ERR_CORRUPT, "%s: tensor %s[%d] is not a size", vm->name,
                           what, i);
        out[i] = t->items[i]->i;
    }
    *n = t->n;
    return 0;
}

/* REDUCE: callable(args). Only OrderedDict() and the two tensor builders. */
static int reduce(struct vm *vm)
{
    struct val *args = pop(vm), *fn = args ? pop(vm) : NULL;
    if (!fn)
        return -ERR_CORRUPT;
    if (fn->k != V_GLOBAL || args->k != V_TUPLE)
        return err_set(vm->err, ERR_CORRUPT, "%s: REDUCE on a %s", vm->name, kind_name(fn->k));
    if (fn->i == G_ODICT) {
        if (args->n != 0)
            return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: OrderedDict with arguments",
                           vm->name);
        return push(vm, mk(vm, V_DICT));
    }
    if (fn->i == G_PARAM) {
        if (args->n < 1 || args->items[0]->k != V_TENSOR)
            return err_set(vm->err, ERR_CORRUPT, "%s: _rebuild_parameter without a tensor",
                           vm->name);
        return push(vm, args->items[0]);
    }
    if (fn->i != G_REBUILD)
        return err_set(vm->err, ERR_CORRUPT, "%s: a storage type called as a function",
                       vm->name);
    /* (storage, storage_offset, size, stride, requires_grad, hooks[, metadata]) */
    if (args->n < 4 || args->items[0]->k != V_STORAGE || args->items[1]->k != V_INT ||
        args->items[1]->i < 0)
        return err_set(vm->err, ERR_CORRUPT, "%s: bad _rebuild_tensor_v2 arguments", vm->name);
    struct tensor *t = calloc(1, sizeof *t);
    struct val *v = t ? mk(vm, V_TENSOR) : NULL;
    if (!v) {
        free(t);
        return vm->err->code ? -vm->err->code : err_set(vm->err, ERR_NOMEM, "out of memory");
    }
    v->t = t;
    t->storage = (int)args->items[0]->i;
    t->offset = args->items[1]->i;
    int ns = 0, nd = 0, rc;
    if ((rc = int_tuple(vm, args->items[2], t->size, &ns, "size")) ||
        (rc = int_tuple(vm, args->items[3], t->stride, &nd, "stride")))
        return rc;
    if (ns != nd)
        return err_set(vm->err, ERR_CORRUPT, "%s: tensor with %d sizes and %d strides",
                       vm->name, ns, nd);
    t->ndim = ns;
    return push(vm, v);
}

static int setitems(struct vm *vm, struct val *d, int from)
{
    if (d->k != V_DICT)
        return err_set(vm->err, ERR_CORRUPT, "%s: SETITEM on a %s", vm->name, kind_name(d->k));
    if ((vm->sp - from) % 2)
        return err_set(vm->err, ERR_CORRUPT, "%s: SETITEMS with an odd count", vm->name);
    for (int i = from; i < vm->sp; i++) {
        int rc = add_item(vm, d, vm->stack[i]);
        if (rc)
            return rc;
    }
    vm->sp = from;
    return 0;
}

static int pop_mark(struct vm *vm, int *at)
{
    if (!vm->nm)
        return err_set(vm->err, ERR_CORRUPT, "%s: no MARK on the stack", vm->name);
    *at = vm->marks[--vm->nm];
    return 0;
}

static int memo_put(struct vm *vm, int64_t idx)
{
    if (idx < 0 || idx >= PT_MAX_OBJECTS)
        return err_set(vm->err, ERR_TOO_LARGE, "%s: memo index %lld", vm->name, (long long)idx);
    if (vm->sp == 0)
        return err_set(vm->err, ERR_CORRUPT, "%s: memo put on an empty stack", vm->name);
    if (idx >= vm->nmemo) {
        int64_t nc = vm->nmemo ? vm->nmemo : 64;
        while (nc <= idx)
            nc *= 2;
        struct val **m = realloc(vm->memo, sizeof *m * (size_t)nc);
        if (!m)
            return err_set(vm->err, ERR_NOMEM, "out of memory");
        memset(m + vm->nmemo, 0, sizeof *m * (size_t)(nc - vm->nmemo));
        vm->memo = m;
        vm->nmemo = nc;
    }
    vm->memo[idx] = vm->stack[vm->sp - 1];
    if (idx >= vm->mlen)
        vm->mlen = idx + 1;
    return 0;
}

static int memo_get(struct vm *vm, int64_t idx)
{
    if (idx < 0 || idx >= vm->nmemo || !vm->memo[idx])
        return err_set(vm->err, ERR_CORRUPT, "%s: memo %lld was never stored", vm->name,
                       (long long)idx);
    return push(vm, vm->memo[idx]);
}

static int new_str(struct vm *vm, const uint8_t *p, uint64_t n)
{
    struct val *v = mk(vm, V_STR);
    if (!v)
        return -vm->err->code;
    v->s = malloc(n + 1);
    if (!v->s)
        return err_set(vm->err, ERR_NOMEM, "out of memory");
    memcpy(v->s, p, n);
    v->s[n] = 0;
    v->slen = n;
    return push(vm, v);
}

static int new_int(struct vm *vm, enum vk k, int64_t i)
{
    struct val *v = mk(vm, k);
    if (v)
        v->i = i;
    return push(vm, v);
}

static int tuple_of(struct vm *vm, int from)
{
    struct val *t = mk(vm, V_TUPLE);
    if (!t)
        return -vm->err->code;
    for (int i = from; i < vm->sp; i++) {
        int rc = add_item(vm, t, vm->stack[i]);
        if (rc)
            return rc;
    }
    vm->sp = from;
    return push(vm, t);
}

#define NEED(n)                                                                            \
    do {                                                                                   \
        if ((uint64_t)(n) > size - p)                                                      \
            return err_set(vm->err, ERR_CORRUPT, "%s: pickle ends inside an opcode at "    \
                           "byte %zu", vm->name, p);                                       \
    } while (0)

/* The opcodes that push a number or a string, or use the memo. Returns 1
 * when op is not one of them. */
static int literal(struct vm *vm, uint8_t op, const uint8_t *buf, size_t size, size_t *pp)
{
    size_t p = *pp;
    uint64_t n;
    int rc = 0;
    switch (op) {
        case 'q': NEED(1); rc = memo_put(vm, buf[p]); p += 1; break;        /* BINPUT */
        case 'r': NEED(4); rc = memo_put(vm, (int64_t)zip_rd(buf + p, 4)); p += 4; break;
        case 0x94: rc = memo_put(vm, vm->mlen); break;     /* MEMOIZE */
        case 'h': NEED(1); rc = memo_get(vm, buf[p]); p += 1; break;        /* BINGET */
        case 'j': NEED(4); rc = memo_get(vm, (int64_t)zip_rd(buf + p, 4)); p += 4; break;
        case 'J': NEED(4); rc = new_int(vm, V_INT, (int32_t)zip_rd(buf + p, 4)); p += 4; break;
        case 'K': NEED(1); rc = new_int(vm, V_INT, buf[p]); p += 1; break;
        case 'M': NEED(2); rc = new_int(vm, V_INT, (int64_t)zip_rd(buf + p, 2)); p += 2; break;
        case 0x8a:                                      /* LONG1 */
            NEED(1);
            n = buf[p++];
            if (n > 8)
                return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: %llu-byte integer",
                               vm->name, (unsigned long long)n);
            NEED(n);
            {
                uint64_t u = n ? zip_rd(buf + p, (int)n) : 0;
                if (n && n < 8 && (buf[p + n - 1] & 0x80))
                    u |= ~0ull << (8 * n);
                rc = new_int(vm, V_INT, (int64_t)u);
            }
            p += n;
            break;
        case 'G':                                       /* BINFLOAT: kept as kind only */
            NEED(8);
            p += 8;
            rc = push(vm, mk(vm, V_FLOAT));
            break;
        case 'X': case 'T': case 'B':                   /* BINUNICODE, BINSTRING, BINBYTES */
            NEED(4);
            n = zip_rd(buf + p, 4);
            p += 4;
            NEED(n);
            rc = new_str(vm, buf + p, n);
            p += n;
            break;
        case 0x8c: case 'U': case 'C':                  /* SHORT_BINUNICODE/STRING/BYTES */
            NEED(1);
            n = buf[p++];
            NEED(n);
            rc = new_str(vm, buf + p, n);
            p += n;
            break;
    default:
        return 1;
    }
    *pp = p;
    return rc;
}

/* The opcodes that build lists and dicts. Returns 1 when op is not one. */
static int container(struct vm *vm, uint8_t op)
{
    int from = 0, rc = 0;
    struct val *a, *b, *c;
    switch (op) {
        case 'l': case 'd':                             /* LIST, DICT (from mark) */
            if ((rc = pop_mark(vm, &from)))
                break;
            if (!(a = mk(vm, op == 'l' ? V_LIST : V_DICT)))
                return -vm->err->code;
            if (op == 'd')
                rc = setitems(vm, a, from);
            else {
                for (int i = from; !rc && i < vm->sp; i++)
                    rc = add_item(vm, a, vm->stack[i]);
                vm->sp = from;
            }
            if (!rc)
                rc = push(vm, a);
            break;
        case 's':                                       /* SETITEM */
            if (vm->sp - 3 < (vm->nm ? vm->marks[vm->nm - 1] : 0))
                return err_set(vm->err, ERR_CORRUPT, "%s: pickle stack underflow", vm->name);
            rc = setitems(vm, vm->stack[vm->sp - 3], vm->sp - 2);
            break;
        case 'u':                                       /* SETITEMS */
            if ((rc = pop_mark(vm, &from)))
                break;
            if (from < 1)
                return err_set(vm->err, ERR_CORRUPT, "%s: SETITEMS without a dict", vm->name);
            rc = setitems(vm, vm->stack[from - 1], from);
            break;
        case 'a':                                       /* APPEND */
            if (!(b = pop(vm)) || !(a = pop(vm)))
                return -ERR_CORRUPT;
            if (a->k != V_LIST)
                return err_set(vm->err, ERR_CORRUPT, "%s: APPEND to a %s", vm->name,
                               kind_name(a->k));
            if (!(rc = add_item(vm, a, b)))
                rc = push(vm, a);
            break;
        case 'e':                                       /* APPENDS */
            if ((rc = pop_mark(vm, &from)))
                break;
            if (from < 1 || (c = vm->stack[from - 1])->k != V_LIST)
                return err_set(vm->err, ERR_CORRUPT, "%s: APPENDS without a list", vm->name);
            for (int i = from; !rc && i < vm->sp; i++)
                rc = add_item(vm, c, vm->stack[i]);
            vm->sp = from;
            break;
    default:
        return 1;
    }
    return rc;
}

/* Runs one pickle from *pos; the result is left in *res, *pos moves past
 * STOP. Opcode names as in pickletools. */
static int vm_run(struct vm *vm, const uint8_t *buf, size_t size, size_t *pos,
                  struct val **res)
{
    size_t p = *pos;
    int rc = 0;
    vm->sp = vm->nm = 0;
    vm->nmemo = vm->mlen = 0;
    free(vm->memo);
    vm->memo = NULL;
    for (;;) {
        NEED(1);
        size_t at = p;
        uint8_t op = buf[p++];
        int from = 0;
        if ((rc = literal(vm, op, buf, size, &p)) != 1 || (rc = container(vm, op)) != 1) {
            if (rc)
                return rc;
            continue;
        }
        rc = 0;
        struct val *a, *b;
        switch (op) {
        case 0x80: NEED(1); p++; break;                 /* PROTO */
        case 0x95: NEED(8); p += 8; break;              /* FRAME */
        case '.':                                       /* STOP */
            if (!(*res = pop(vm)))
                return -ERR_CORRUPT;
            *pos = p;
            return 0;
        case '(':                                       /* MARK */
            if (grow((void **)&vm->marks, &vm->mcap, vm->nm + 1, sizeof *vm->marks))
                return err_set(vm->err, ERR_TOO_LARGE, "%s: too many marks", vm->name);
            vm->marks[vm->nm++] = vm->sp;
            break;
        case '}': rc = push(vm, mk(vm, V_DICT)); break; /* EMPTY_DICT */
        case ']': rc = push(vm, mk(vm, V_LIST)); break; /* EMPTY_LIST */
        case ')': rc = push(vm, mk(vm, V_TUPLE)); break; /* EMPTY_TUPLE */
        case 'N': rc = push(vm, mk(vm, V_NONE)); break; /* NONE */
        case 0x88: rc = new_int(vm, V_BOOL, 1); break;  /* NEWTRUE */
        case 0x89: rc = new_int(vm, V_BOOL, 0); break;  /* NEWFALSE */
        case 't':                                       /* TUPLE */
            if (!(rc = pop_mark(vm, &from)))
                rc = tuple_of(vm, from);
            break;
        case 0x85: case 0x86: case 0x87:                /* TUPLE1..3 */
            from = vm->sp - (op - 0x84);
            if (from < (vm->nm ? vm->marks[vm->nm - 1] : 0))
                return err_set(vm->err, ERR_CORRUPT, "%s: pickle stack underflow", vm->name);
            rc = tuple_of(vm, from);
            break;
        case 'c': {                                     /* GLOBAL "module\nname\n" */
            const uint8_t *m = buf + p, *e1 = memchr(m, '\n', size - p);
            const uint8_t *e2 = e1 ? memchr(e1 + 1, '\n', size - (size_t)(e1 + 1 - buf)) : NULL;
            if (!e2)
                return err_set(vm->err, ERR_CORRUPT, "%s: GLOBAL without two lines", vm->name);
            rc = resolve(vm, (const char *)m, (size_t)(e1 - m), (const char *)e1 + 1,
                         (size_t)(e2 - e1 - 1));
            p = (size_t)(e2 + 1 - buf);
            break;
        }
        case 0x93:                                      /* STACK_GLOBAL */
            b = pop(vm);
            a = b ? pop(vm) : NULL;
            if (!a || a->k != V_STR || b->k != V_STR)
                return err_set(vm->err, ERR_CORRUPT, "%s: STACK_GLOBAL without two strings",
                               vm->name);
            rc = resolve(vm, a->s, a->slen, b->s, b->slen);
            break;
        case 'R': rc = reduce(vm); break;               /* REDUCE */
        case 'b':                                       /* BUILD */
            if (!(b = pop(vm)) || !(a = pop(vm)))
                return -ERR_CORRUPT;
            if (a->k != V_DICT && a->k != V_TENSOR)
                return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: BUILD on a %s", vm->name,
                               kind_name(a->k));
            rc = push(vm, a);
            break;
        case 'Q':                                       /* BINPERSID */
            if (!(a = pop(vm)))
                return -ERR_CORRUPT;
            rc = storage_of(vm, a);
            break;
        case '0': rc = pop(vm) ? 0 : -ERR_CORRUPT; break; /* POP */
        case '1': if (!(rc = pop_mark(vm, &from))) vm->sp = from; break; /* POP_MARK */
        case '2':                                       /* DUP */
            if (!vm->sp)
                return err_set(vm->err, ERR_CORRUPT, "%s: DUP on an empty stack", vm->name);
            rc = push(vm, vm->stack[vm->sp - 1]);
            break;
        default:
            return err_set(vm->err, ERR_UNSUPPORTED_FORMAT,
                           "%s: pickle opcode 0x%02x at byte %zu is not used by PyTorch state "
                           "dicts; refused", vm->name, op, at);
        }
        if (rc)
            return rc;
    }
}
#undef NEED

/* ---- from values to tensors -------------------------------------------- */

struct named {
    char *name;             /* dotted path */
    const struct tensor *t; /* the view */
    uint64_t begin, bytes;  /* place in the output data */
};

struct outlist {
    struct named *v;        /* tensors found */
    int n, cap;
};

static int flatten(struct vm *vm, const struct val *d, const char *prefix, int depth,
                   struct outlist *o)
{
    if (depth > 8)
        return err_set(vm->err, ERR_CORRUPT, "%s: dicts nested too deep", vm->name);
    for (int i = 0; i + 1 < d->n; i += 2) {
        const struct val *k = d->items[i], *v = d->items[i + 1];
        if (v->k != V_TENSOR && v->k != V_DICT)
            continue; /* epoch numbers, config strings... */
        if (k->k != V_STR || k->slen == 0 || strlen(k->s) != k->slen || k->slen > 1024)
            return err_set(vm->err, ERR_CORRUPT, "%s: a tensor key is not a name", vm->name);
        size_t pl = strlen(prefix);
        char *name = malloc(pl + k->slen + 2);
        if (!name)
            return err_set(vm->err, ERR_NOMEM, "out of memory");
        snprintf(name, pl + k->slen + 2, "%s%s%s", prefix, pl ? "." : "", k->s);
        int rc = 0;
        if (v->k == V_DICT) {
            rc = flatten(vm, v, name, depth + 1, o);
            free(name);
        } else if (o->n >= PT_MAX_TENSORS ||
                   grow((void **)&o->v, &o->cap, o->n + 1, sizeof *o->v)) {
            free(name);
            rc = err_set(vm->err, ERR_TOO_LARGE, "%s: over %d tensors", vm->name,
                         PT_MAX_TENSORS);
        } else {
            o->v[o->n++] = (struct named){.name = name, .t = v->t};
        }
        if (rc)
            return rc;
    }
    return 0;
}

static int named_cmp(const void *a, const void *b)
{
    return strcmp(((const struct named *)a)->name, ((const struct named *)b)->name);
}

/* Checks t's view against its storage; sets its byte count. */
static int check_view(struct vm *vm, struct named *nt)
{
    const struct tensor *t = nt->t;
    const struct storage *s = &vm->st[t->storage];
    const int64_t lim = 1ll << 40;
    int64_t numel = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->size[d] && numel > lim / t->size[d])
            return err_set(vm->err, ERR_TOO_LARGE, "%s: tensor \"%s\" is too large", vm->name,
                           nt->name);
        numel *= t->size[d];
    }
    if (numel > 0) {
        uint64_t last = (uint64_t)t->offset;
        for (int d = 0; d < t->ndim && last < s->numel; d++)
            last += (uint64_t)(t->size[d] - 1) * (uint64_t)t->stride[d];
        if (last >= s->numel)
            return err_set(vm->err, ERR_CORRUPT, "%s: tensor \"%s\" reaches element %llu of "
                           "storage %s, which has %llu", vm->name, nt->name,
                           (unsigned long long)last, s->key, (unsigned long long)s->numel);
    }
    nt->bytes = (uint64_t)numel * st_dtype_size(s->dt);
    return 0;
}

/* Copies t's elements in row-major order (es bytes each) to dst. */
static void copy_view(uint8_t *dst, const struct tensor *t, const struct storage *s,
                      int64_t numel)
{
    const size_t es = st_dtype_size(s->dt);
    if (numel == 0)
        return;
    int64_t expect = 1;
    int contig = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->size[d] != 1 && t->stride[d] != expect)
            contig = 0;
        expect *= t->size[d];
    }
    if (contig) {
        memcpy(dst, s->data + (size_t)t->offset * es, (size_t)numel * es);
        return;
    }
    int64_t idx[ST_MAX_DIMS] = {0};
    for (int64_t i = 0; i < numel; i++) {
        int64_t off = t->offset;
        for (int d = 0; d < t->ndim; d++)
            off += idx[d] * t->stride[d];
        memcpy(dst + (size_t)i * es, s->data + (size_t)off * es, es);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->size[d])
                break;
            idx[d] = 0;
        }
    }
}

/* Serializes the named tensors as a safetensors file in memory and parses
 * it; the result owns the buffer. */
static int emit(struct vm *vm, struct outlist *o, size_t insize, struct st_file **out)
{
    qsort(o->v, (size_t)o->n, sizeof *o->v, named_cmp);
    uint64_t total = 0, cap = insize * 4ull > (64ull << 20) ? insize * 4ull : (64ull << 20);
    int rc = 0;
    for (int i = 0; i < o->n; i++) {
        if (i && !strcmp(o->v[i].name, o->v[i - 1].name))
            return err_set(vm->err, ERR_CORRUPT, "%s: tensor \"%s\" appears twice", vm->name,
                           o->v[i].name);
        if ((rc = check_view(vm, &o->v[i])))
            return rc;
        o->v[i].begin = total;
        total += o->v[i].bytes;
        if (total > cap)
            return err_set(vm->err, ERR_TOO_LARGE, "%s: tensors add up to over %llu bytes "
                           "from a %zu-byte file", vm->name, (unsigned long long)cap, insize);
    }
    json_t *root = json_object();
    for (int i = 0; root && i < o->n; i++) {
        const struct tensor *t = o->v[i].t;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->size[d]));
        json_object_set_new(root, o->v[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype",
                                      st_dtype_name(vm->st[t->storage].dt), "shape", shape,
                                      "data_offsets", (json_int_t)o->v[i].begin,
                                      (json_int_t)(o->v[i].begin + o->v[i].bytes)));
    }
    char *hdr = root ? json_dumps(root, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(root);
    size_t hl = hdr ? strlen(hdr) : 0, padded = (hl + 7) & ~(size_t)7;
    uint8_t *buf = hdr ? malloc(8 + padded + total + 1) : NULL;
    if (!buf) {
        free(hdr);
        return err_set(vm->err, ERR_NOMEM, "out of memory for %llu bytes of tensors",
                       (unsigned long long)total);
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    memset(buf + 8 + hl, ' ', padded - hl);
    free(hdr);
    uint8_t *data = buf + 8 + padded;
    for (int i = 0; i < o->n; i++)
        copy_view(data + o->v[i].begin, o->v[i].t, &vm->st[o->v[i].t->storage],
                  (int64_t)(o->v[i].bytes / st_dtype_size(vm->st[o->v[i].t->storage].dt)));
    if ((rc = st_parse(out, buf, 8 + padded + total, vm->name, vm->err))) {
        free(buf);
        return rc;
    }
    (*out)->own = buf;
    return 0;
}

/* ---- containers ------------------------------------------------------- */

static int bind(struct vm *vm, struct storage *s, const uint8_t *data, uint64_t nbytes)
{
    size_t es = st_dtype_size(s->dt);
    if (nbytes % es)
        return err_set(vm->err, ERR_CORRUPT, "%s: storage %s has %llu bytes, not a whole "
                       "number of %zu-byte elements", vm->name, s->key,
                       (unsigned long long)nbytes, es);
    s->data = data;
    s->numel = nbytes / es;
    return 0;
}

static int from_zip(struct vm *vm, const uint8_t *buf, size_t size, struct val **res)
{
    struct zip z;
    uint8_t *pkl_owned = NULL, *bo_owned = NULL;
    int rc = zip_open(&z, buf, size, vm->name, vm->err);
    if (rc)
        goto done;
    const struct zent *pkl = NULL;
    size_t pl = 0;
    for (int i = 0; i < z.n; i++) {
        const struct zent *e = &z.e[i];
        if (e->nlen < 8 || memcmp(e->name + e->nlen - 8, "data.pkl", 8))
            continue;
        const char *slash = memchr(e->name, '/', e->nlen);
        size_t want = slash ? (size_t)(slash - e->name) + 1 : 0;
        if (e->nlen - 8 != want || pkl) {
            if (pkl)
                rc = err_set(vm->err, ERR_CORRUPT, "%s: two data.pkl entries", vm->name);
            if (pkl)
                goto done;
            continue;
        }
        pkl = e;
        pl = want;
    }
    if (!pkl) {
        rc = err_set(vm->err, ERR_CORRUPT, "%s: a zip archive without PREFIX/data.pkl: not a "
                     "PyTorch checkpoint", vm->name);
        goto done;
    }
    char key[1200];
    const uint8_t *d;
    if (pl + 16 > sizeof key) {
        rc = err_set(vm->err, ERR_CORRUPT, "%s: archive prefix too long", vm->name);
        goto done;
    }
    memcpy(key, pkl->name, pl);
    memcpy(key + pl, "byteorder", 9);
    const struct zent *bo = zip_find(&z, key, pl + 9);
    if (bo && ((rc = zip_data(&z, bo, &d, &bo_owned, vm->name, vm->err)) ||
               (bo->usize != 6 || memcmp(d, "little", 6)))) {
        if (!rc)
            rc = err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: not a little-endian checkpoint",
                         vm->name);
        goto done;
    }
    if ((rc = zip_data(&z, pkl, &d, &pkl_owned, vm->name, vm->err)))
        goto done;
    size_t pos = 0;
    if ((rc = vm_run(vm, d, pkl->usize, &pos, res)))
        goto done;
    for (int i = 0; i < vm->nst; i++) {
        struct storage *s = &vm->st[i];
        size_t kl = strlen(s->key);
        if (pl + 5 + kl > sizeof key) {
            rc = err_set(vm->err, ERR_CORRUPT, "%s: storage key too long", vm->name);
            goto done;
        }
        memcpy(key + pl, "data/", 5);
        memcpy(key + pl + 5, s->key, kl);
        const struct zent *e = zip_find(&z, key, pl + 5 + kl);
        if (!e) {
            rc = err_set(vm->err, ERR_CORRUPT, "%s: storage %s has no entry %.*s", vm->name,
                         s->key, (int)(pl + 5 + kl), key);
            goto done;
        }
        if ((rc = zip_data(&z, e, &d, &s->owned, vm->name, vm->err)) ||
            (rc = bind(vm, s, d, e->usize)))
            goto done;
    }
done:
    free(pkl_owned);
    free(bo_owned);
    zip_close(&z);
    return rc;
}

static const uint8_t legacy_magic[15] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                         0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e};

static int from_legacy(struct vm *vm, const uint8_t *buf, size_t size, struct val **res)
{
    size_t p = 0;
    struct val *ver, *info, *keys;
    int rc;
    if (size >= sizeof legacy_magic && !memcmp(buf, legacy_magic, sizeof legacy_magic)) {
        p = sizeof legacy_magic; /* a 10-byte integer, beyond what the machine holds */
    } else {
        /* any other pickle still runs under the same rules (a hostile one is
         * refused with its global's name), then is not a checkpoint */
        if ((rc = vm_run(vm, buf, size, &p, &ver)))
            return rc;
        return err_set(vm->err, ERR_CORRUPT, "%s: a pickle without torch.save's magic number: "
                       "not a PyTorch checkpoint", vm->name);
    }
    if ((rc = vm_run(vm, buf, size, &p, &ver)))
        return rc;
    if (ver->k != V_INT || ver->i != 1001)
        return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: legacy protocol version is not "
                       "1001", vm->name);
    if ((rc = vm_run(vm, buf, size, &p, &info)))
        return rc;
    for (int i = 0; info->k == V_DICT && i + 1 < info->n; i += 2)
        if (info->items[i]->k == V_STR && !strcmp(info->items[i]->s, "little_endian") &&
            info->items[i + 1]->k == V_BOOL && !info->items[i + 1]->i)
            return err_set(vm->err, ERR_UNSUPPORTED_FORMAT, "%s: a big-endian checkpoint",
                           vm->name);
    if ((rc = vm_run(vm, buf, size, &p, res)) || (rc = vm_run(vm, buf, size, &p, &keys)))
        return rc;
    if (keys->k != V_LIST)
        return err_set(vm->err, ERR_CORRUPT, "%s: legacy storage key list missing", vm->name);
    for (int i = 0; i < keys->n; i++) {
        struct storage *s = NULL;
        for (int j = 0; keys->items[i]->k == V_STR && j < vm->nst; j++)
            if (!strcmp(vm->st[j].key, keys->items[i]->s))
                s = &vm->st[j];
        if (!s || s->data)
            return err_set(vm->err, ERR_CORRUPT, "%s: legacy storage %d is unknown or repeated",
                           vm->name, i);
        if (size - p < 8)
            return err_set(vm->err, ERR_CORRUPT, "%s: legacy storage %s: file ends", vm->name,
                           s->key);
        uint64_t numel = zip_rd(buf + p, 8), es = st_dtype_size(s->dt);
        p += 8;
        if (numel > (size - p) / es)
            return err_set(vm->err, ERR_CORRUPT, "%s: legacy storage %s: %llu elements past the "
                           "end of the file", vm->name, s->key, (unsigned long long)numel);
        bind(vm, s, buf + p, numel * es);
        p += numel * es;
    }
    return 0;
}

int pt_sniff(const uint8_t *buf, size_t size)
{
    return (size >= 4 && !memcmp(buf, "PK\3\4", 4)) || (size >= 2 && buf[0] == 0x80 && buf[1] <= 5);
}

int pt_parse(struct st_file **out, const uint8_t *buf, size_t size, const char *name,
             struct err *err)
{
    struct err local;
    if (!err)
        err = &local;
    err_clear(err);
    *out = NULL;
    struct vm vm = {.name = name, .err = err};
    struct outlist o = {0};
    struct val *res = NULL;
    int rc;
    if (size >= 4 && !memcmp(buf, "PK\3\4", 4))
        rc = from_zip(&vm, buf, size, &res);
    else if (size >= 2 && buf[0] == 0x80 && buf[1] <= 5) /* pickle PROTO */
        rc = from_legacy(&vm, buf, size, &res);
    else
        rc = err_set(err, ERR_CORRUPT, "%s: not a PyTorch checkpoint (neither a zip archive "
                     "nor a legacy torch.save pickle)", name);
    if (rc)
        goto done;
    if (res->k != V_DICT) {
        rc = err_set(err, ERR_CORRUPT, "%s: the checkpoint holds a %s, not a state dict", name,
                     kind_name(res->k));
        goto done;
    }
    if ((rc = flatten(&vm, res, "", 0, &o)))
        goto done;
    if (o.n == 0) {
        rc = err_set(err, ERR_CORRUPT, "%s: the state dict holds no tensors", name);
        goto done;
    }
    rc = emit(&vm, &o, size, out);
done:
    for (int i = 0; i < o.n; i++)
        free(o.v[i].name);
    free(o.v);
    vm_free(&vm);
    return rc;
}

int pt_open(struct st_file **out, const char *path, struct err *err)
{
    *out = NULL;
    void *map;
    size_t size;
    int rc = fs_map_file(path, PT_MAX_FILE, &map, &size, err);
    if (rc)
        return rc;
    rc = pt_parse(out, size ? map : (const uint8_t *)"", size, path, err);
    if (size)
        munmap(map, size);
    return rc;
}

int pt_convert(const char *src, const char *dst, struct err *err)
{
    struct st_file *f = NULL;
    int rc = pt_open(&f, src, err);
    if (rc)
        return rc;
    struct st_write_tensor *w = calloc((size_t)f->n, sizeof *w);
    if (!w) {
        st_close(f);
        return err_set(err, ERR_NOMEM, "out of memory");
    }
    for (int i = 0; i < f->n; i++) {
        const struct st_tensor *t = &f->tensors[i];
        w[i] = (struct st_write_tensor){.name = t->name, .dtype = t->dtype, .ndim = t->ndim,
                                        .data = t->data};
        memcpy(w[i].shape, t->shape, sizeof t->shape);
    }
    rc = st_write(dst, w, f->n, err);
    free(w);
    st_close(f);
    return rc;
}
