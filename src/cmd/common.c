/* common.c - error reporting and option value parsing shared by commands. */
#include "cmd/cmd.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "util/utf8.h"

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

/* Valid UTF-8 is copied; each invalid byte becomes U+FFFD, so the output
 * is always valid JSON. */
void cmd_json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        int n = utf8_seq_len(p, strnlen((const char *)p, 4));
        if (n == 0) {
            fputs("\\ufffd", f);
            p++;
        } else if (n > 1) {
            fwrite(p, 1, (size_t)n, f);
            p += n;
        } else {
            unsigned char c = *p++;
            if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c == '\n')
                fputs("\\n", f);
            else if (c == '\t')
                fputs("\\t", f);
            else if (c == '\r')
                fputs("\\r", f);
            else if (c < 0x20 || c == 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
    fputc('"', f);
}

void cmd_json_err(FILE *f, const struct err *err)
{
    fprintf(f, "{\"code\": \"%s\", \"message\": ", err_str(err->code));
    cmd_json_str(f, err->msg);
    fputc('}', f);
}

void cmd_json_floats(FILE *f, const float *v, int n)
{
    fputc('[', f);
    for (int i = 0; i < n; i++)
        fprintf(f, i ? ", %.7g" : "%.7g", (double)v[i]);
    fputc(']', f);
}

const char *cmd_model_dir(const char *opt)
{
    const char *e = getenv("IMGSEARCH_MODEL");
    return cmd_model_resolve(opt && *opt ? opt : e && *e ? e : NULL, 0);
}
