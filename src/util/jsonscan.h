/* jsonscan.h - the shape of a JSON text (how many values, how deep) in one
 * pass, without allocating: the check that runs before a parser builds a
 * tree whose size the text alone does not bound (a 20 MB body of "1,"
 * becomes ten million jansson nodes, about 40 bytes each).
 */
#ifndef IMGSEARCH_JSONSCAN_H
#define IMGSEARCH_JSONSCAN_H

#include <stddef.h>

struct json_shape {
    size_t values; /* scalars, arrays and objects (object keys not counted) */
    int depth;     /* deepest nesting of arrays and objects (a scalar: 0) */
};

/* Scans s[0..n). Strings (escapes included) are skipped as one value;
 * anything else outside strings is taken as it comes: the text is not
 * validated (the parser does that afterwards), but for well-formed JSON the
 * counts are exact and for any text they bound what a parser could build.
 * Stops early, with the counts so far, once values > max_values or depth >
 * max_depth (0: no limit). */
void json_shape_scan(const char *s, size_t n, size_t max_values, int max_depth,
                     struct json_shape *out);

#endif
