/* pytorch.h - PyTorch checkpoints (torch.save of a state dict) without
 * Python.
 *
 * Two container formats are read:
 *   zip (PyTorch >= 1.6): PREFIX/data.pkl (a pickle), PREFIX/data/KEY (one
 *     entry per storage, raw little-endian elements), PREFIX/version and
 *     optionally PREFIX/byteorder; entries stored or deflated, ZIP64 too.
 *   legacy (PyTorch < 1.6): pickles back to back (magic number, protocol
 *     version, system info, the state dict, the list of storage keys), then
 *     for each key in that list an 8-byte little-endian element count and
 *     the elements.
 *
 * The pickle is run by a small restricted machine: only the opcodes a state
 * dict uses, and only these globals are ever resolved:
 *   collections.OrderedDict, torch._utils._rebuild_tensor_v2,
 *   torch._utils._rebuild_parameter, torch.FloatStorage, torch.HalfStorage,
 *   torch.BFloat16Storage, torch.LongStorage.
 * Any other global (os.system, builtins.eval, ...) is refused the moment the
 * pickle names it (ERR_UNSUPPORTED_FORMAT); nothing is ever executed or
 * imported. Tensors are views of storages (offset, sizes, strides): each is
 * checked to lie inside its storage and copied out contiguous, so storages
 * shared by several tensors and transposed views come out as their values.
 * Tensors in nested dicts are named with dots ({"state_dict": {"w": T}} gives
 * "state_dict.w"); other values (epoch numbers, ...) are skipped.
 */
#ifndef IMGSEARCH_PYTORCH_H
#define IMGSEARCH_PYTORCH_H

#include <stddef.h>
#include <stdint.h>

#include "util/err.h"
#include "util/safetensors.h"

#define PT_MAX_FILE (8ull << 30)    /* a checkpoint over 8 GiB is refused */
#define PT_MAX_OBJECTS (1 << 20)    /* pickle values, memo entries, stack depth */
#define PT_MAX_TENSORS 65536        /* tensors in one state dict */

/* Reads the checkpoint in buf (size bytes; name is used in messages) into
 * an in-memory safetensors file that owns its data (buf may be freed after
 * the call). Errors: ERR_CORRUPT (malformed container, pickle or tensor
 * outside its storage), ERR_UNSUPPORTED_FORMAT (a global or opcode a state
 * dict does not use, big-endian data, an unknown storage type), ERR_TOO_LARGE,
 * ERR_NOMEM. */
int pt_parse(struct st_file **out, const uint8_t *buf, size_t size, const char *name,
             struct err *err);

/* pt_parse on the file at path (mapped, not copied). ERR_BAD_PATH when it
 * cannot be opened. */
int pt_open(struct st_file **out, const char *path, struct err *err);

/* Converts the checkpoint at src into the safetensors file dst (written to a
 * temporary name, fsynced and renamed: dst is complete or absent). */
int pt_convert(const char *src, const char *dst, struct err *err);

/* 1 when buf looks like a PyTorch checkpoint (zip or pickle magic). */
int pt_sniff(const uint8_t *buf, size_t size);

#endif
