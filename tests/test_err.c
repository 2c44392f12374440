/* test_err.c - the error table and message helpers. */
#include "test.h"
#include "util/err.h"

TEST(codes_map_once)
{
    struct err e;
    CHECK_INT_EQ(err_set(&e, ERR_IO, "%s: gone", "a.jpg"), -ERR_IO);
    CHECK_INT_EQ(e.code, ERR_IO);
    CHECK(strcmp(e.msg, "a.jpg: gone") == 0);
    CHECK(strcmp(err_str(-ERR_DECODE), "decode_failed") == 0);
    CHECK_INT_EQ(err_http_status(-ERR_UNSUPPORTED_FORMAT), 415);
    CHECK_INT_EQ(err_http_status(ERR_TOO_LARGE), 413);
    CHECK_INT_EQ(err_exit_code(-ERR_CORRUPT), 2);
    CHECK(strcmp(err_str(12345), "internal") == 0);
    err_prefix(&e, "embed");
    CHECK(strcmp(e.msg, "embed: a.jpg: gone") == 0);
    CHECK_INT_EQ(err_set(NULL, ERR_NOMEM, "x"), -ERR_NOMEM);
}

TEST_MAIN(codes_map_once)
