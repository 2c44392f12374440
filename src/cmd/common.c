/* common.c - error reporting and option value parsing shared by commands. */
#include "cmd/cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>

int cmd_fail(const char *cmd, const struct err *err)
{
    fprintf(stderr, "imgsearch %s: %s\n", cmd,
            err && err->msg[0] ? err->msg : "unknown error");
    return err ? err_exit_code(err->code) : 1;
}

int cmd_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "imgsearch %s: ", cmd);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n(see 'imgsearch %s --help')\n", cmd);
    va_end(ap);
    return 2;
}

int cmd_parse_int(const char *cmd, const char *opt, const char *s, long lo,
                  long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return cmd_usage_error(cmd, "%s must be an integer in [%ld, %ld], not '%s'",
                               opt, lo, hi, s);
    *out = v;
    return 0;
}

int cmd_parse_double(const char *cmd, const char *opt, const char *s,
                     double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !(v >= lo && v <= hi))
        return cmd_usage_error(cmd, "%s must be a number in [%g, %g], not '%s'",
                               opt, lo, hi, s);
    *out = v;
    return 0;
}
