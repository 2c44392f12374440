/* test_err.c - the error table and message helpers. */
#include <errno.h>

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

/* A failure on the server's side is never a 4xx: issue 9 item 5. */
TEST(server_io_is_5xx)
{
    CHECK_INT_EQ(err_http_status(ERR_IO), 500);
    CHECK_INT_EQ(err_exit_code(ERR_IO), 1);
    CHECK(strcmp(err_str(ERR_NO_SPACE), "no_space") == 0);
    CHECK_INT_EQ(err_http_status(-ERR_NO_SPACE), 507);
    CHECK_INT_EQ(err_exit_code(ERR_NO_SPACE), 1);
    CHECK(strcmp(err_str(ERR_BAD_PATH), "bad_path") == 0);
    CHECK_INT_EQ(err_http_status(ERR_BAD_PATH), 400);
    CHECK_INT_EQ(err_exit_code(ERR_BAD_PATH), 2);
    /* every code with a 5xx status exits 1 (or 130), every 4xx exits 2 */
    for (int c = 1; c < ERR_COUNT_; c++) {
        int h = err_http_status(c), x = err_exit_code(c);
        CHECKF(h >= 500 ? x == 1 || x == 130 : x == 2, "%s: HTTP %d, exit %d", err_str(c), h, x);
    }
}

TEST(errno_codes)
{
    CHECK_INT_EQ(err_code_of_errno(ENOSPC, 0), ERR_NO_SPACE);
    CHECK_INT_EQ(err_code_of_errno(EDQUOT, 1), ERR_NO_SPACE);
    CHECK_INT_EQ(err_code_of_errno(EFBIG, 0), ERR_NO_SPACE);
    CHECK_INT_EQ(err_code_of_errno(ENOENT, 1), ERR_BAD_PATH);
    CHECK_INT_EQ(err_code_of_errno(EACCES, 1), ERR_BAD_PATH);
    CHECK_INT_EQ(err_code_of_errno(ENOENT, 0), ERR_IO);
    CHECK_INT_EQ(err_code_of_errno(EIO, 1), ERR_IO);
}

TEST_MAIN(codes_map_once, server_io_is_5xx, errno_codes)
