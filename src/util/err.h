/* err.h - the one error list of imgsearch.
 *
 * Every function that can fail returns an int (0 ok, negative ERR_* code) and
 * fills a caller-owned struct err with a human message that says what was
 * wrong and where. The X-macro below generates the enum, the stable string
 * codes used in JSON replies, the HTTP statuses and the CLI exit codes, so the
 * mapping lives in exactly one place.
 */
#ifndef IMGSEARCH_ERR_H
#define IMGSEARCH_ERR_H

#include <stddef.h>

/*      NAME               string code            HTTP  exit */
#define ERR_MAP(X)                                                    \
    X(INVALID_ARGUMENT,   "invalid_argument",    400,  2)             \
    X(BAD_PATH,           "bad_path",            400,  2)             \
    X(NOT_FOUND,          "not_found",           404,  2)             \
    X(CORRUPT,            "corrupt",             422,  2)             \
    X(UNSUPPORTED_FORMAT, "unsupported_format",  415,  2)             \
    X(DECODE,             "decode_failed",       422,  2)             \
    X(TOO_LARGE,          "too_large",           413,  2)             \
    X(INVALID_UTF8,       "invalid_utf8",        400,  2)             \
    X(MODEL_MISMATCH,     "model_mismatch",      409,  2)             \
    X(CONFLICT,           "conflict",            409,  2)             \
    X(UNAUTHORIZED,       "unauthorized",        401,  2)             \
    X(METHOD,             "method_not_allowed",  405,  2)             \
    X(UNAVAILABLE,        "unavailable",         503,  1)             \
    X(INTERRUPTED,        "interrupted",         503,  130)           \
    X(NOMEM,              "out_of_memory",       500,  1)             \
    X(IO,                 "io_error",            500,  1)             \
    X(NO_SPACE,           "no_space",            507,  1)             \
    X(STORE,              "store_error",         500,  1)             \
    X(TOO_MANY_REQUESTS,  "too_many_requests",   429,  2)             \
    X(INTERNAL,           "internal",            500,  1)

enum err_code {
    ERR_OK = 0,
#define X(name, str, http, exitc) ERR_##name,
    ERR_FIRST_ = 0,
    ERR_MAP(X)
#undef X
    ERR_COUNT_
};
/* Public codes are negative: return -ERR_IO etc.
 *
 * Files: BAD_PATH is a path the caller named (a CLI argument, a model or
 * catalog folder given on the command line) that is missing, of the wrong
 * kind or not readable: the caller's mistake, 4xx / exit 2. IO is a read or
 * write of the program's own files that failed (the store, its index, an
 * upload): the server's side, 5xx / exit 1. NO_SPACE is IO for a full disk
 * or quota (ENOSPC, EDQUOT, EFBIG). */

#define ERR_MSG_MAX 512

struct err {
    int code;               /* 0 or a positive enum err_code */
    char msg[ERR_MSG_MAX];  /* human message, "" when code is 0 */
};

/* Sets err (may be NULL) and returns -code, so callers can write
 * `return err_set(err, ERR_IO, "%s: %s", path, strerror(errno));`. */
int err_set(struct err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes the existing message with "prefix: " (keeps the code). */
void err_prefix(struct err *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

void err_clear(struct err *err);

/* The code for a failed file operation with errno errnum: NO_SPACE for
 * ENOSPC, EDQUOT and EFBIG; when caller_path is 1 (the path came from the
 * caller), BAD_PATH for a path that is missing, not of the needed kind or
 * not accessible (ENOENT, ENOTDIR, EISDIR, EACCES, EPERM, ELOOP,
 * ENAMETOOLONG); IO otherwise. */
int err_code_of_errno(int errnum, int caller_path);

/* Stable lowercase code for a (positive or negative) err code: "io_error". */
const char *err_str(int code);
int err_http_status(int code);
int err_exit_code(int code);

#endif
