/* common.c - what the commands share: error reporting, option value
 * parsing, JSON output, the model and store chosen by flags, environment or
 * default, and the terminal (width, questions).
 *
 * Design:
 *  1. Every command that takes --store takes IMGSEARCH_STORE too, and
 *     without either uses one default store (cmd_store_path), so
 *     `imgsearch index ~/Photos` then `imgsearch search "a cat"` work with
 *     no flags; scripts and services name their store.
 *  2. A --store that is some other file (a CSV, an image) is refused by
 *     its first bytes before SQLite sees it, with a message that says what
 *     the option wants, instead of SQLite's "file is not a database".
 */
#include "cmd/cmd.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store.h"
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

static char default_store[4096];

const char *cmd_store_path(const char *opt)
{
    if (opt && *opt)
        return opt;
    const char *e = getenv("IMGSEARCH_STORE");
    if (e && *e)
        return e;
    const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
    int n;
    if (xdg && *xdg)
        n = snprintf(default_store, sizeof default_store, "%s/imgsearch/store.db", xdg);
    else if (home && *home)
        n = snprintf(default_store, sizeof default_store, "%s/.local/share/imgsearch/store.db",
                     home);
    else
        return NULL;
    return n > 0 && (size_t)n < sizeof default_store ? default_store : NULL;
}

/* mkdir -p of the folder that holds path */
static int make_parent(const char *path, struct err *err)
{
    char dir[sizeof default_store];
    snprintf(dir, sizeof dir, "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir)
        return 0;
    *slash = 0;
    for (char *p = dir + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(dir, 0755) && errno != EEXIST)
            return err_set(err, ERR_IO, "%s: %s", dir, strerror(errno));
        *p = '/';
    }
    if (mkdir(dir, 0755) && errno != EEXIST)
        return err_set(err, ERR_IO, "%s: %s", dir, strerror(errno));
    return 0;
}

int cmd_store_open(struct store **st, const char *path, const struct store_options *so,
                   struct err *err)
{
    int is_default = path == default_store;
    struct stat sb;
    if (!store_is_url(path) && stat(path, &sb) == 0) {
        /* an SQLite database starts with this 16-byte header; an empty file
         * is one SQLite would make a store of */
        static const char magic[16] = "SQLite format 3";
        char head[16] = {0};
        int fd = S_ISREG(sb.st_mode) ? open(path, O_RDONLY | O_CLOEXEC) : -1;
        ssize_t got = fd >= 0 ? read(fd, head, sizeof head) : -1;
        if (fd >= 0)
            close(fd);
        if (!S_ISREG(sb.st_mode) || (got != 0 && (got != 16 || memcmp(head, magic, 16))))
            return err_set(err, ERR_INVALID_ARGUMENT,
                           "%s: not an imgsearch store (--store wants the database file "
                           "that 'imgsearch index' makes, e.g. photos.db)",
                           path);
    } else if (is_default && !(so && so->create)) {
        return err_set(err, ERR_NOT_FOUND,
                       "no store given (--store PATH or IMGSEARCH_STORE) and the default "
                       "store %s does not exist yet: 'imgsearch index DIR' makes it",
                       path);
    } else if (is_default) {
        int rc = make_parent(path, err);
        if (rc)
            return rc;
    }
    return store_open(st, path, so, err);
}

int cmd_term_width(void)
{
    const char *e = getenv("COLUMNS");
    if (e && *e) {
        long w = strtol(e, NULL, 10);
        return w > 0 && w < 100000 ? (int)w : 0;
    }
    struct winsize ws;
    if (isatty(STDOUT_FILENO) && ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 0;
}

int cmd_confirm(const char *question)
{
    fprintf(stderr, "%s [y/N] ", question);
    fflush(stderr);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 0;
    return line[0] == 'y' || line[0] == 'Y';
}
