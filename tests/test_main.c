/* test_main.c - the shared runner behind TEST_MAIN (see test.h). */
#include "test.h"

#include <stdarg.h>

int test_failed_checks_;
int test_skipped_;
const char *test_current_ = "";

void test_skip_(const char *file, const char *tag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "SKIP %s: %s: ", file, test_current_);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " [needs %s]\n", tag);
    va_end(ap);
    test_skipped_ = 1;
}

const char *test_fixtures(void)
{
    const char *f = getenv("IMGSEARCH_FIXTURES");
    return f && *f ? f : "tests/fixtures";
}

char *test_path(const char *rel)
{
    const char *f = test_fixtures();
    size_t n = strlen(f) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", f, rel);
    return p;
}

char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) {
        b[n] = 0;
        if (len)
            *len = (size_t)n;
    }
    return b;
}

double test_cosine(const float *a, const float *b, int n)
{
    double ab = 0, aa = 0, bb = 0;
    for (int i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? ab / sqrt(aa * bb) : 0.0;
}

int test_run_all_(const char *file, const char *const *names, const test_fn *fns,
                  int n, int argc, char **argv)
{
    int passed = 0, failed = 0, skipped = 0;
    for (int i = 0; i < n; i++) {
        if (argc > 1) { /* run only the named cases */
            int want = 0;
            for (int a = 1; a < argc; a++)
                want |= strcmp(argv[a], names[i]) == 0;
            if (!want)
                continue;
        }
        int before = test_failed_checks_;
        test_current_ = names[i];
        test_skipped_ = 0;
        fns[i]();
        if (test_failed_checks_ != before)
            failed++;
        else if (test_skipped_)
            skipped++;
        else
            passed++;
    }
    /* the SIMD path in the summary: tests/run runs each binary once per path */
    const char *simd = getenv("IMGSEARCH_SIMD");
    fflush(stderr);
    printf("%s [IMGSEARCH_SIMD=%s]: %d passed, %d failed, %d skipped\n", file,
           simd && *simd ? simd : "default", passed, failed, skipped);
    return failed ? 1 : 0;
}
