/* safetensors.h - reader and writer of the safetensors format.
 *
 * Format (https://github.com/huggingface/safetensors): 8 bytes little-endian
 * u64 N, then N bytes of JSON mapping tensor names to
 * {"dtype": "F32", "shape": [d0, d1, ...], "data_offsets": [begin, end]}
 * (offsets relative to the byte after the header), an optional
 * "__metadata__" object of strings, then the data.
 *
 * The reader validates everything before any tensor is touched: JSON well
 * formed, known dtypes, shape products matching byte sizes without overflow,
 * offsets inside the file, tensors not overlapping. Files are mmap'ed; tensor
 * data pointers stay valid until st_close().
 */
#ifndef IMGSEARCH_SAFETENSORS_H
#define IMGSEARCH_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20) /* a header over 100 MB is refused */

enum st_dtype {
    ST_F32,
    ST_F16,
    ST_BF16,
    ST_I64, /* accepted and validated (HF checkpoints carry position_ids as
             * I64) but not convertible to float */
};

struct st_tensor {
    char *name;               /* NUL-terminated, owned by the file */
    enum st_dtype dtype;      /* element type */
    int ndim;                 /* 0..ST_MAX_DIMS */
    int64_t shape[ST_MAX_DIMS]; /* dims, row-major */
    int64_t numel;            /* product of shape */
    uint64_t begin, end;      /* byte range inside the data area */
    const void *data;         /* points into the mapping */
};

struct st_file {
    char *path;               /* for messages */
    const uint8_t *map;       /* whole file (mmap or caller's buffer) */
    size_t size;              /* bytes in map */
    int mapped;               /* 1 when map must be munmap'ed */
    void *own;                /* heap copy freed by st_close (in-memory
                               * conversions, clip/pytorch.h), or NULL */
    struct st_tensor *tensors; /* sorted by name */
    int n;                    /* number of tensors */
};

/* Opens and validates PATH. *out is set to a heap object, free with
 * st_close(). Errors: ERR_BAD_PATH (cannot open), ERR_IO (cannot map),
 * ERR_CORRUPT (anything wrong in the header or layout, with the reason and
 * the tensor name). */
int st_open(struct st_file **out, const char *path, struct err *err);

/* Validates an in-memory file; buf must outlive the result (not copied).
 * name is used in messages. */
int st_parse(struct st_file **out, const uint8_t *buf, size_t size,
             const char *name, struct err *err);

void st_close(struct st_file *f);

/* Returns the tensor called name, or NULL. */
const struct st_tensor *st_find(const struct st_file *f, const char *name);

/* Converts a float tensor (F32/F16/BF16) to float32 into dst (numel
 * floats). Returns ERR_CORRUPT for a non-float dtype. */
int st_to_f32(const struct st_tensor *t, float *dst, struct err *err);

const char *st_dtype_name(enum st_dtype d);
size_t st_dtype_size(enum st_dtype d);

/* IEEE half / bfloat16 conversions (round to nearest even). */
float st_f16_to_f32(uint16_t h);
uint16_t st_f32_to_f16(float f);
float st_bf16_to_f32(uint16_t h);
uint16_t st_f32_to_bf16(float f);

/* Writer: a tensor to write (data in dtype layout, little-endian). */
struct st_write_tensor {
    const char *name;
    enum st_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
};

/* Writes the tensors durably (temp file, fsync, rename). */
int st_write(const char *path, const struct st_write_tensor *t, int n,
             struct err *err);

#endif
