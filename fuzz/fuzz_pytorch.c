/* fuzz_pytorch.c - libFuzzer target for the PyTorch checkpoint reader (zip
 * container, restricted pickle machine, tensor views): any bytes must give
 * either tensors that lie inside the result and convert, or an error with a
 * message, never a crash, a leak or a call of anything. */
#include <stdint.h>
#include <stdlib.h>

#include "clip/pytorch.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct st_file *f = NULL;
    struct err e;
    if (pt_parse(&f, data, size, "fuzz", &e) != 0) {
        if (f || !e.msg[0])
            abort();
        return 0;
    }
    for (int i = 0; i < f->n; i++) {
        const struct st_tensor *t = &f->tensors[i];
        if ((const uint8_t *)t->data < f->map ||
            (const uint8_t *)t->data + (t->end - t->begin) > f->map + f->size)
            abort();
        if (t->dtype != ST_I64 && t->numel <= 4096) {
            float *buf = malloc(sizeof(float) * (size_t)(t->numel ? t->numel : 1));
            if (buf && st_to_f32(t, buf, &e))
                abort();
            free(buf);
        }
    }
    st_close(f);
    return 0;
}
