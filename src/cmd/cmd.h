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

/* The model folder: the option value, else $IMGSEARCH_MODEL, else the
 * default hub repo; a hub repo name resolves through cmd_model_resolve. */
const char *cmd_model_dir(const char *opt);

/* The store of a command: the --store value, else $IMGSEARCH_STORE, else
 * the default store $XDG_DATA_HOME/imgsearch/store.db (XDG_DATA_HOME
 * defaults to ~/.local/share). NULL only when there is no HOME to put the
 * default in. The default's string is static. */
const char *cmd_store_path(const char *opt);

struct store;
struct store_options;

/* store_open with the command line's checks first: a file that is not an
 * SQLite database (e.g. --store meta.csv) is ERR_INVALID_ARGUMENT "PATH:
 * not an imgsearch store", and a missing default store says how to make
 * one. With so->create, the default store's folder is made. */
int cmd_store_open(struct store **st, const char *path, const struct store_options *so,
                   struct err *err);

/* The columns of the terminal stdout writes to: $COLUMNS when set, else
 * the terminal's width; 0 (no limit) when stdout is not a terminal and
 * COLUMNS is not set. */
int cmd_term_width(void);

/* Asks QUESTION on the terminal (stderr, answer from stdin) and returns 1
 * when the answer starts with y or Y. Returns 0 on EOF. */
int cmd_confirm(const char *question);

/* value is a folder/file (returned as is) or a hub repo name (NULL: the
 * default repo): its cache folder, fetched first when missing unless
 * offline (or HF_HUB_OFFLINE=1). NULL after printing why on stderr. The
 * result may be a static buffer. (src/cmd/model.c) */
const char *cmd_model_resolve(const char *value, int offline);

#endif
