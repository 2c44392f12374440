/* main.c - command dispatch only. Each command lives in src/cmd/. */
#include "cmd/cmd.h"

#include <stdio.h>
#include <string.h>

static const struct cmd *const commands[] = {
    &cmd_embed,
    &cmd_model,
    &cmd_bench,
    &cmd_classify,
    &cmd_index,
    &cmd_reindex,
    &cmd_search,
    &cmd_items,
    &cmd_duplicates,
    &cmd_migrate,
    &cmd_serve,
    &cmd_tokenize,
};

static void usage(FILE *f)
{
    fprintf(f, "usage: imgsearch COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(f, "\n'imgsearch COMMAND --help' describes a command.\n"
               "\nenvironment:\n"
               "  IMGSEARCH_MODEL      model folder of commands run without --model\n"
               "  IMGSEARCH_STORE      store of commands run without --store; without either\n"
               "                       the default store is $XDG_DATA_HOME/imgsearch/store.db\n"
               "                       (~/.local/share/imgsearch/store.db)\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("imgsearch %s\n", IMGSEARCH_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i]->name))
            return commands[i]->run(argc - 1, argv + 1);
    fprintf(stderr, "imgsearch: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
