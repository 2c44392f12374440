/* fuzz_safetensors.c - libFuzzer target for the safetensors header parser:
 * any bytes must give either a valid table or an error, never a crash; a
 * valid table's tensors must lie inside the buffer and convert. */
#include <stdint.h>
#include <stdlib.h>

#include "util/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_file *f = NULL;
    struct err e;
    if (st_parse(&f, data, size, "fuzz", &e) == 0) {
        for (int i = 0; i < f->n; i++) {
            const struct st_tensor *t = &f->tensors[i];
            if ((const uint8_t *)t->data < data ||
                (const uint8_t *)t->data + (t->end - t->begin) > data + size)
                abort();
            if (t->dtype != ST_I64 && t->numel <= 4096) {
                float *buf = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
                if (buf)
                    st_to_f32(t, buf, &e);
                free(buf);
            }
            if (st_find(f, t->name) != t)
                abort();
        }
        st_close(f);
    }
    return 0;
}
