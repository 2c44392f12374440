/* replay.c - runs a libFuzzer target over every file of the corpus folders
 * given on the command line, so `make check` replays the committed corpora
 * in the normal and the sanitized builds without clang. A corpus is one
 * test: it passes when every file replays (a crash or a sanitizer report
 * ends the process), and the number of files is printed beside it. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int main(int argc, char **argv);

static int replay_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return -1;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    size_t got = b ? fread(b, 1, (size_t)(n > 0 ? n : 0), f) : 0;
    fclose(f);
    if (!b)
        return -1;
    LLVMFuzzerTestOneInput(b, got);
    free(b);
    return 0;
}

int main(int argc, char **argv)
{
    int passed = 0, failed = 0;
    long files = 0;
    for (int a = 1; a < argc; a++) {
        int bad = 0, n = 0;
        DIR *d = opendir(argv[a]);
        if (!d) {
            fprintf(stderr, "FAIL replay: cannot open corpus %s\n", argv[a]);
            failed++;
            continue;
        }
        struct dirent *e;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.')
                continue;
            char p[4096];
            snprintf(p, sizeof p, "%s/%s", argv[a], e->d_name);
            if (replay_file(p) == 0) {
                n++;
            } else {
                fprintf(stderr, "FAIL replay: cannot read %s\n", p);
                bad++;
            }
        }
        closedir(d);
        if (n == 0 && !bad) {
            fprintf(stderr, "FAIL replay: corpus %s is empty\n", argv[a]);
            bad++;
        }
        if (bad)
            failed++;
        else
            passed++;
        files += n;
    }
    printf("replay %s (%ld inputs): %d passed, %d failed\n", argc > 1 ? argv[1] : "", files,
           passed, failed);
    return failed != 0;
}
