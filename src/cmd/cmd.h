/* cmd.h - the commands of the imgsearch binary and their shared helpers.
 *
 * Each command is one file in src/cmd/ exporting a struct cmd. Commands
 * parse their own options (long options only, unknown ones are errors with
 * exit code 2), print results on stdout and errors on stderr.
 */
#ifndef IMGSEARCH_CMD_H
#define IMGSEARCH_CMD_H

#include <stdio.h>

#include "util/err.h"

#define IMGSEARCH_VERSION "0.1.0"

struct cmd {
    const char *name;     /* argv[1] */
    const char *summary;  /* one line for `imgsearch --help` */
    int (*run)(int argc, char **argv); /* argv[0] is the command name */
};

extern const struct cmd cmd_embed;
extern const struct cmd cmd_model;
extern const struct cmd cmd_bench;
extern const struct cmd cmd_tokenize;
extern const struct cmd cmd_classify;
extern const struct cmd cmd_serve;
extern const struct cmd cmd_index, cmd_reindex, cmd_search, cmd_items, cmd_duplicates;
extern const struct cmd cmd_migrate;

/* Prints "imgsearch CMD: message" on stderr and returns the exit code of
 * the error (2 for bad input). */
int cmd_fail(const char *cmd, const struct err *err);

/* Prints "imgsearch CMD: <formatted>" plus a --help hint; returns 2. */
int cmd_usage_error(const char *cmd, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses a decimal int/double option value in [lo, hi]; 0 ok, else prints
 * a usage error and returns 2. */
int cmd_parse_int(const char *cmd, const char *opt, const char *s, long lo,
                  long hi, long *out);
int cmd_parse_double(const char *cmd, const char *opt, const char *s,
                     double lo, double hi, double *out);

/* Writes s as a JSON string literal (quotes, escapes) to f. */
void cmd_json_str(FILE *f, const char *s);

/* Writes {"code": "...", "message": "..."} for err to f. */
void cmd_json_err(FILE *f, const struct err *err);

/* Writes "[v0, v1, ...]" with 7 significant digits. */
void cmd_json_floats(FILE *f, const float *v, int n);

/* The model folder: the option value, else $IMGSEARCH_MODEL, else NULL. */
const char *cmd_model_dir(const char *opt);

#endif
