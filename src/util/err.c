/* err.c - error records and the code tables generated from ERR_MAP. */
#include "util/err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

struct err_info {
    const char *str;
    int http;
    int exitc;
};

static const struct err_info infos[ERR_COUNT_] = {
    [ERR_OK] = {"ok", 200, 0},
#define X(name, s, h, e) [ERR_##name] = {s, h, e},
    ERR_MAP(X)
#undef X
};

static int norm(int code)
{
    if (code < 0)
        code = -code;
    if (code <= 0 || code >= ERR_COUNT_)
        return code == 0 ? 0 : ERR_INTERNAL;
    return code;
}

int err_set(struct err *err, int code, const char *fmt, ...)
{
    code = norm(code);
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -code;
}

void err_prefix(struct err *err, const char *fmt, ...)
{
    if (!err)
        return;
    char old[ERR_MSG_MAX];
    memcpy(old, err->msg, sizeof old);
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof err->msg - 2)
        return;
    size_t used = (size_t)n;
    memcpy(err->msg + used, ": ", 2);
    used += 2;
    size_t room = sizeof err->msg - used - 1, len = strlen(old);
    if (len > room)
        len = room;
    memcpy(err->msg + used, old, len);
    err->msg[used + len] = 0;
}

void err_clear(struct err *err)
{
    if (err) {
        err->code = 0;
        err->msg[0] = 0;
    }
}

const char *err_str(int code) { return infos[norm(code)].str; }
int err_http_status(int code) { return infos[norm(code)].http; }
int err_exit_code(int code) { return infos[norm(code)].exitc; }

int err_code_of_errno(int errnum, int caller_path)
{
    switch (errnum) {
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return ERR_NO_SPACE;
    case ENOENT:
    case ENOTDIR:
    case EISDIR:
    case EACCES:
    case EPERM:
    case ELOOP:
    case ENAMETOOLONG:
        return caller_path ? ERR_BAD_PATH : ERR_IO;
    default:
        return ERR_IO;
    }
}
