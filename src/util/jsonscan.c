/* jsonscan.c - values and depth of a JSON text without parsing it (see
 * jsonscan.h). Reference: RFC 8259 (the grammar whose tokens are counted). */
#include "util/jsonscan.h"

void json_shape_scan(const char *s, size_t n, size_t max_values, int max_depth,
                     struct json_shape *out)
{
    size_t values = 0;
    int depth = 0, deepest = 0;
    int in_scalar = 0; /* inside a number or literal (true, false, null) */
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '"') {
            /* a key is followed by ':' and is not a value; look ahead */
            size_t j = i + 1;
            while (j < n && s[j] != '"')
                j += s[j] == '\\' ? 2 : 1;
            size_t k = j + 1;
            while (k < n && (s[k] == ' ' || s[k] == '\t' || s[k] == '\n' || s[k] == '\r'))
                k++;
            if (!(k < n && s[k] == ':'))
                values++;
            i = j < n ? j : n;
            in_scalar = 0;
        } else if (c == '{' || c == '[') {
            values++;
            if (++depth > deepest)
                deepest = depth;
            in_scalar = 0;
        } else if (c == '}' || c == ']') {
            if (depth > 0)
                depth--;
            in_scalar = 0;
        } else if (c == ',' || c == ':' || c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            in_scalar = 0;
        } else if (!in_scalar) {
            values++;
            in_scalar = 1;
        }
        if ((max_values && values > max_values) || (max_depth && deepest > max_depth))
            break;
    }
    out->values = values;
    out->depth = deepest;
}
