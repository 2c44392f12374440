/* index_int.h - the terminal side of an ingest run, shared by `imgsearch
 * index` and `imgsearch reindex` (defined in index.c): the stop flag that
 * SIGINT/SIGTERM set, the progress bar, and the list of failed files
 * printed at the end. The work itself is src/ingest/'s.
 */
#ifndef IMGSEARCH_CMD_INDEX_INT_H
#define IMGSEARCH_CMD_INDEX_INT_H

#include <stddef.h>

#include "ingest/ingest.h"

struct ix_ui {
    const char *cmd;      /* "index" or "reindex", for messages */
    const char *verb;     /* "indexed" or "reindexed", for progress lines */
    char **fails;         /* "path: reason", nfails of them (owned) */
    size_t nfails;        /* failures listed */
    size_t capfails;      /* room in fails */
    int tty;              /* stderr is a terminal: a bar redrawn in place */
    double t0;            /* start of the command */
    double bar_t0;        /* start of the engine run */
    double last;          /* last progress print */
    int drawn;            /* a bar or a line was printed */
    struct ingest_progress pr; /* the latest progress */
};

/* Sets up ui and fills h: failures are listed, progress drawn, and the
 * engine stops once SIGINT or SIGTERM came (after ix_ui_catch_signals). */
void ix_ui_init(struct ix_ui *ui, const char *cmd, const char *verb, struct ingest_hooks *h);
/* From now on SIGINT and SIGTERM ask the run to stop; a second one kills. */
void ix_ui_catch_signals(void);
/* Clears the progress bar (a log that got periodic lines gets a last one). */
void ix_ui_end(struct ix_ui *ui);
/* Prints each failure on stderr ("imgsearch CMD: failed: ...") and the count. */
void ix_ui_print_failures(const struct ix_ui *ui, long failed);
void ix_ui_free(struct ix_ui *ui);

#endif
