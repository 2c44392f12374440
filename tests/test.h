/* test.h - a tiny in-process test harness.
 *
 * Each tests/test_*.c lists its cases with TEST(name) and ends with
 * TEST_MAIN(case, case, ...). CHECK records a failure with file:line and
 * goes on; REQUIRE stops the current case; SKIP ends it as skipped (never
 * as passed) and says what the machine lacks. Each binary prints
 * "N passed, N failed, N skipped"; tests/run sums the binaries into one
 * final line and decides whether each skip is expected on this machine.
 * Tests find fixtures through FIXTURES (tests/fixtures unless the
 * environment variable IMGSEARCH_FIXTURES says otherwise).
 */
#ifndef IMGSEARCH_TEST_H
#define IMGSEARCH_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern int test_failed_checks_;
extern const char *test_current_;
extern int test_skipped_;

void test_skip_(const char *file, const char *tag, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* SKIP(TAG, why...): ends the current case as skipped. TAG names what this
 * machine lacks, in the form tests/run checks: "cpu:FLAG" or
 * "cpu:FLAG|FLAG" with /proc/cpuinfo flag names (the skip is expected only
 * where the CPU has none of them). Prints
 * "SKIP file: case: why [needs TAG]". */
#define SKIP(tag, ...)                                                         \
    do {                                                                       \
        test_skip_(__FILE__, (tag), __VA_ARGS__);                              \
        return;                                                                \
    } while (0)

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: CHECK(%s)\n", __FILE__, __LINE__, \
                    test_current_, #cond);                                     \
            test_failed_checks_++;                                             \
        }                                                                      \
    } while (0)

#define CHECKF(cond, ...)                                                      \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: CHECK(%s): ", __FILE__, __LINE__, \
                    test_current_, #cond);                                     \
            fprintf(stderr, __VA_ARGS__);                                      \
            fputc('\n', stderr);                                               \
            test_failed_checks_++;                                             \
        }                                                                      \
    } while (0)

#define REQUIRE(cond)                                                          \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: REQUIRE(%s)\n", __FILE__,         \
                    __LINE__, test_current_, #cond);                           \
            test_failed_checks_++;                                             \
            return;                                                            \
        }                                                                      \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                     \
    CHECKF((long long)(a) == (long long)(b), "%lld != %lld", (long long)(a),   \
           (long long)(b))

#define CHECK_STR_CONTAINS(hay, needle)                                        \
    CHECKF((hay) && strstr((hay), (needle)), "\"%s\" lacks \"%s\"",            \
           (hay) ? (hay) : "(null)", (needle))

#define TEST(name) static void name(void)

const char *test_fixtures(void);
/* Returns a malloc'd "FIXTURES/rel". */
char *test_path(const char *rel);
/* Reads a whole file (malloc'd, NUL-terminated); NULL on failure. */
char *test_read_file(const char *path, size_t *len);
double test_cosine(const float *a, const float *b, int n);

typedef void (*test_fn)(void);
int test_run_all_(const char *file, const char *const *names, const test_fn *fns,
                  int n, int argc, char **argv);

#define TEST_MAIN(...)                                                         \
    int main(int argc, char **argv)                                            \
    {                                                                          \
        static const test_fn fns[] = {__VA_ARGS__};                            \
        static const char names[] = #__VA_ARGS__;                              \
        static const char *name_ptrs[sizeof fns / sizeof fns[0]];              \
        static char buf[sizeof names];                                         \
        memcpy(buf, names, sizeof names);                                      \
        int k = 0;                                                             \
        for (char *t = strtok(buf, ", \t\n"); t && k < (int)(sizeof fns / sizeof fns[0]); \
             t = strtok(NULL, ", \t\n"))                                       \
            name_ptrs[k++] = t;                                                \
        return test_run_all_(__FILE__, name_ptrs, fns, k, argc, argv);         \
    }

#endif
