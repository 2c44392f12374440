/* tok_clean.c - the cleaning stage of CLIP's tokenizer (tokenizer.c): text
 * -> the code points that simple_tokenizer.py's basic_clean +
 * whitespace_clean + str.lower() leave, ready for the pre-tokenizer.
 *
 * Design decisions:
 * 1. ftfy.fix_text is replaced by its last step, NFC. Its heuristic fixes
 *    (mojibake, curly quotes, ligatures, full-width forms, its own HTML
 *    unescape when the text has no '<') are not done.
 * 2. html.unescape, applied twice: numeric references with Python's rules
 *    (Windows-1252 for 0x80-0x9F, U+FFFD for 0, surrogates and > 0x10FFFF,
 *    nothing for other control and non-character code points) and the
 *    named references of HTML 4.01 (Latin-1, symbols and Greek, special:
 *    252 names) plus &apos; and the upper-case aliases AMP COPY GT LT QUOT
 *    REG, with HTML5's values (&lang; &rang; are U+27E8 U+27E9). The 106
 *    legacy names HTML5 accepts without ';' (the Latin-1 set, amp lt gt
 *    quot and the aliases) work without it too, and as the longest prefix
 *    of a longer name ("&notit;" -> "¬it;"), as Python does. The other
 *    ~1870 HTML5-only names (&hellip; is HTML 4, &NewLine; is not) are
 *    left as text.
 * 3. str.strip() strips str.isspace() characters (White_Space and
 *    U+001C..U+001F); re.sub(r'\s+', ' ') collapses White_Space runs.
 * 4. str.lower() is utf8proc_tolower per code point plus Python's two
 *    full-mapping rules: U+0130 -> "i\u0307", and capital sigma -> final
 *    sigma U+03C2 at the end of a word (Unicode's Final_Sigma context,
 *    with Cased and Case_Ignorable from Unicode 14 as Python 3.11 has).
 * 5. Unicode tables are utf8proc's (Unicode 15); the reference uses
 *    Python's, so code points assigned in recent versions may be classed
 *    differently.
 *
 * References: HTML 4.01 section 24 (character entity references); the
 * WHATWG HTML "named character references" table; Python's html.unescape,
 * str.strip, str.lower.
 */
#include "clip/tok_int.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- cleaning: HTML character references ------------------------------ */

struct entity {
    char name[10];    /* the name between '&' and ';' */
    uint16_t cp;      /* the code point it stands for */
    uint8_t legacy;   /* HTML5 also accepts it without the ';' */
};

/* HTML 4.01's 252 names, &apos; and six upper-case aliases, sorted by
 * strcmp for bsearch. Values are HTML5's. */
static const struct entity entities[] = {
    {"AElig", 0x00C6, 1}, {"AMP", 0x0026, 1}, {"Aacute", 0x00C1, 1},
    {"Acirc", 0x00C2, 1}, {"Agrave", 0x00C0, 1}, {"Alpha", 0x0391, 0},
    {"Aring", 0x00C5, 1}, {"Atilde", 0x00C3, 1}, {"Auml", 0x00C4, 1},
    {"Beta", 0x0392, 0}, {"COPY", 0x00A9, 1}, {"Ccedil", 0x00C7, 1},
    {"Chi", 0x03A7, 0}, {"Dagger", 0x2021, 0}, {"Delta", 0x0394, 0},
    {"ETH", 0x00D0, 1}, {"Eacute", 0x00C9, 1}, {"Ecirc", 0x00CA, 1},
    {"Egrave", 0x00C8, 1}, {"Epsilon", 0x0395, 0}, {"Eta", 0x0397, 0},
    {"Euml", 0x00CB, 1}, {"GT", 0x003E, 1}, {"Gamma", 0x0393, 0},
    {"Iacute", 0x00CD, 1}, {"Icirc", 0x00CE, 1}, {"Igrave", 0x00CC, 1},
    {"Iota", 0x0399, 0}, {"Iuml", 0x00CF, 1}, {"Kappa", 0x039A, 0},
    {"LT", 0x003C, 1}, {"Lambda", 0x039B, 0}, {"Mu", 0x039C, 0},
    {"Ntilde", 0x00D1, 1}, {"Nu", 0x039D, 0}, {"OElig", 0x0152, 0},
    {"Oacute", 0x00D3, 1}, {"Ocirc", 0x00D4, 1}, {"Ograve", 0x00D2, 1},
    {"Omega", 0x03A9, 0}, {"Omicron", 0x039F, 0}, {"Oslash", 0x00D8, 1},
    {"Otilde", 0x00D5, 1}, {"Ouml", 0x00D6, 1}, {"Phi", 0x03A6, 0},
    {"Pi", 0x03A0, 0}, {"Prime", 0x2033, 0}, {"Psi", 0x03A8, 0},
    {"QUOT", 0x0022, 1}, {"REG", 0x00AE, 1}, {"Rho", 0x03A1, 0},
    {"Scaron", 0x0160, 0}, {"Sigma", 0x03A3, 0}, {"THORN", 0x00DE, 1},
    {"Tau", 0x03A4, 0}, {"Theta", 0x0398, 0}, {"Uacute", 0x00DA, 1},
    {"Ucirc", 0x00DB, 1}, {"Ugrave", 0x00D9, 1}, {"Upsilon", 0x03A5, 0},
    {"Uuml", 0x00DC, 1}, {"Xi", 0x039E, 0}, {"Yacute", 0x00DD, 1},
    {"Yuml", 0x0178, 0}, {"Zeta", 0x0396, 0}, {"aacute", 0x00E1, 1},
    {"acirc", 0x00E2, 1}, {"acute", 0x00B4, 1}, {"aelig", 0x00E6, 1},
    {"agrave", 0x00E0, 1}, {"alefsym", 0x2135, 0}, {"alpha", 0x03B1, 0},
    {"amp", 0x0026, 1}, {"and", 0x2227, 0}, {"ang", 0x2220, 0},
    {"apos", 0x0027, 0}, {"aring", 0x00E5, 1}, {"asymp", 0x2248, 0},
    {"atilde", 0x00E3, 1}, {"auml", 0x00E4, 1}, {"bdquo", 0x201E, 0},
    {"beta", 0x03B2, 0}, {"brvbar", 0x00A6, 1}, {"bull", 0x2022, 0},
    {"cap", 0x2229, 0}, {"ccedil", 0x00E7, 1}, {"cedil", 0x00B8, 1},
    {"cent", 0x00A2, 1}, {"chi", 0x03C7, 0}, {"circ", 0x02C6, 0},
    {"clubs", 0x2663, 0}, {"cong", 0x2245, 0}, {"copy", 0x00A9, 1},
    {"crarr", 0x21B5, 0}, {"cup", 0x222A, 0}, {"curren", 0x00A4, 1},
    {"dArr", 0x21D3, 0}, {"dagger", 0x2020, 0}, {"darr", 0x2193, 0},
    {"deg", 0x00B0, 1}, {"delta", 0x03B4, 0}, {"diams", 0x2666, 0},
    {"divide", 0x00F7, 1}, {"eacute", 0x00E9, 1}, {"ecirc", 0x00EA, 1},
    {"egrave", 0x00E8, 1}, {"empty", 0x2205, 0}, {"emsp", 0x2003, 0},
    {"ensp", 0x2002, 0}, {"epsilon", 0x03B5, 0}, {"equiv", 0x2261, 0},
    {"eta", 0x03B7, 0}, {"eth", 0x00F0, 1}, {"euml", 0x00EB, 1},
    {"euro", 0x20AC, 0}, {"exist", 0x2203, 0}, {"fnof", 0x0192, 0},
    {"forall", 0x2200, 0}, {"frac12", 0x00BD, 1}, {"frac14", 0x00BC, 1},
    {"frac34", 0x00BE, 1}, {"frasl", 0x2044, 0}, {"gamma", 0x03B3, 0},
    {"ge", 0x2265, 0}, {"gt", 0x003E, 1}, {"hArr", 0x21D4, 0},
    {"harr", 0x2194, 0}, {"hearts", 0x2665, 0}, {"hellip", 0x2026, 0},
    {"iacute", 0x00ED, 1}, {"icirc", 0x00EE, 1}, {"iexcl", 0x00A1, 1},
    {"igrave", 0x00EC, 1}, {"image", 0x2111, 0}, {"infin", 0x221E, 0},
    {"int", 0x222B, 0}, {"iota", 0x03B9, 0}, {"iquest", 0x00BF, 1},
    {"isin", 0x2208, 0}, {"iuml", 0x00EF, 1}, {"kappa", 0x03BA, 0},
    {"lArr", 0x21D0, 0}, {"lambda", 0x03BB, 0}, {"lang", 0x27E8, 0},
    {"laquo", 0x00AB, 1}, {"larr", 0x2190, 0}, {"lceil", 0x2308, 0},
    {"ldquo", 0x201C, 0}, {"le", 0x2264, 0}, {"lfloor", 0x230A, 0},
    {"lowast", 0x2217, 0}, {"loz", 0x25CA, 0}, {"lrm", 0x200E, 0},
    {"lsaquo", 0x2039, 0}, {"lsquo", 0x2018, 0}, {"lt", 0x003C, 1},
    {"macr", 0x00AF, 1}, {"mdash", 0x2014, 0}, {"micro", 0x00B5, 1},
    {"middot", 0x00B7, 1}, {"minus", 0x2212, 0}, {"mu", 0x03BC, 0},
    {"nabla", 0x2207, 0}, {"nbsp", 0x00A0, 1}, {"ndash", 0x2013, 0},
    {"ne", 0x2260, 0}, {"ni", 0x220B, 0}, {"not", 0x00AC, 1},
    {"notin", 0x2209, 0}, {"nsub", 0x2284, 0}, {"ntilde", 0x00F1, 1},
    {"nu", 0x03BD, 0}, {"oacute", 0x00F3, 1}, {"ocirc", 0x00F4, 1},
    {"oelig", 0x0153, 0}, {"ograve", 0x00F2, 1}, {"oline", 0x203E, 0},
    {"omega", 0x03C9, 0}, {"omicron", 0x03BF, 0}, {"oplus", 0x2295, 0},
    {"or", 0x2228, 0}, {"ordf", 0x00AA, 1}, {"ordm", 0x00BA, 1},
    {"oslash", 0x00F8, 1}, {"otilde", 0x00F5, 1}, {"otimes", 0x2297, 0},
    {"ouml", 0x00F6, 1}, {"para", 0x00B6, 1}, {"part", 0x2202, 0},
    {"permil", 0x2030, 0}, {"perp", 0x22A5, 0}, {"phi", 0x03C6, 0},
    {"pi", 0x03C0, 0}, {"piv", 0x03D6, 0}, {"plusmn", 0x00B1, 1},
    {"pound", 0x00A3, 1}, {"prime", 0x2032, 0}, {"prod", 0x220F, 0},
    {"prop", 0x221D, 0}, {"psi", 0x03C8, 0}, {"quot", 0x0022, 1},
    {"rArr", 0x21D2, 0}, {"radic", 0x221A, 0}, {"rang", 0x27E9, 0},
    {"raquo", 0x00BB, 1}, {"rarr", 0x2192, 0}, {"rceil", 0x2309, 0},
    {"rdquo", 0x201D, 0}, {"real", 0x211C, 0}, {"reg", 0x00AE, 1},
    {"rfloor", 0x230B, 0}, {"rho", 0x03C1, 0}, {"rlm", 0x200F, 0},
    {"rsaquo", 0x203A, 0}, {"rsquo", 0x2019, 0}, {"sbquo", 0x201A, 0},
    {"scaron", 0x0161, 0}, {"sdot", 0x22C5, 0}, {"sect", 0x00A7, 1},
    {"shy", 0x00AD, 1}, {"sigma", 0x03C3, 0}, {"sigmaf", 0x03C2, 0},
    {"sim", 0x223C, 0}, {"spades", 0x2660, 0}, {"sub", 0x2282, 0},
    {"sube", 0x2286, 0}, {"sum", 0x2211, 0}, {"sup", 0x2283, 0},
    {"sup1", 0x00B9, 1}, {"sup2", 0x00B2, 1}, {"sup3", 0x00B3, 1},
    {"supe", 0x2287, 0}, {"szlig", 0x00DF, 1}, {"tau", 0x03C4, 0},
    {"there4", 0x2234, 0}, {"theta", 0x03B8, 0}, {"thetasym", 0x03D1, 0},
    {"thinsp", 0x2009, 0}, {"thorn", 0x00FE, 1}, {"tilde", 0x02DC, 0},
    {"times", 0x00D7, 1}, {"trade", 0x2122, 0}, {"uArr", 0x21D1, 0},
    {"uacute", 0x00FA, 1}, {"uarr", 0x2191, 0}, {"ucirc", 0x00FB, 1},
    {"ugrave", 0x00F9, 1}, {"uml", 0x00A8, 1}, {"upsih", 0x03D2, 0},
    {"upsilon", 0x03C5, 0}, {"uuml", 0x00FC, 1}, {"weierp", 0x2118, 0},
    {"xi", 0x03BE, 0}, {"yacute", 0x00FD, 1}, {"yen", 0x00A5, 1},
    {"yuml", 0x00FF, 1}, {"zeta", 0x03B6, 0}, {"zwj", 0x200D, 0},
    {"zwnj", 0x200C, 0},
};

static int entity_cmp(const void *k, const void *e)
{
    return strcmp(k, ((const struct entity *)e)->name);
}

/* The entity named s[0..n) (code points); with_semi: written with the ';'.
 * Returns its code point or -1. */
static int32_t entity_find(const int32_t *s, size_t n, int with_semi)
{
    char key[16];
    if (n >= sizeof key)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] <= 0 || s[i] > 0x7E)
            return -1;
        key[i] = (char)s[i];
    }
    key[n] = 0;
    const struct entity *e = bsearch(key, entities, sizeof entities / sizeof entities[0],
                                     sizeof entities[0], entity_cmp);
    return e && (with_semi || e->legacy) ? e->cp : -1;
}

/* What Python's html.unescape makes of the numeric reference num: writes
 * 0 or 1 code point to out and returns the count. */
static size_t charref(uint32_t num, int32_t *out)
{
    /* HTML5 reads 0x80-0x9F as Windows-1252; its 5 holes stay as they are */
    static const uint16_t cp1252[32] = {
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021,
        0x02C6, 0x2030, 0x0160, 0x2039, 0x0152, 0x008D, 0x017D, 0x008F,
        0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022, 0x2013, 0x2014,
        0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    };
    int32_t c;
    if (num == 0 || (num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF)
        c = 0xFFFD;
    else if (num >= 0x80 && num <= 0x9F)
        c = cp1252[num - 0x80];
    else if (num == 0x0D)
        c = 0x0D;
    else if (num <= 0x08 || num == 0x0B || (num >= 0x0E && num <= 0x1F) || num == 0x7F ||
             (num >= 0xFDD0 && num <= 0xFDEF) || (num & 0xFFFE) == 0xFFFE)
        return 0; /* control and non-characters are dropped */
    else
        c = (int32_t)num;
    *out = c;
    return 1;
}

static int is_digit(int32_t c) { return c >= '0' && c <= '9'; }

static int hex_val(int32_t c)
{
    if (is_digit(c))
        return c - '0';
    if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
        return (c | 0x20) - 'a' + 10;
    return -1;
}

/* A character Python's entity regex [^\t\n\f <&#;] accepts in a name. */
static int name_char(int32_t c)
{
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' &&
           c != '#' && c != ';';
}

/* Python's html.unescape on code points: out (room for n) gets the result,
 * never longer than the input; returns its length. Python matches
 *   &(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
 * and replaces each match as charref() and entity_find() say. */
static size_t unescape(const int32_t *in, size_t n, int32_t *out)
{
    size_t i = 0, w = 0;
    while (i < n) {
        if (in[i] != '&') {
            out[w++] = in[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && in[j] == '#') {
            size_t k = j + 1;
            int base = 10;
            if (k < n && is_digit(in[k]))
                base = 10;
            else if (k + 1 < n && (in[k] | 0x20) == 'x' && hex_val(in[k + 1]) >= 0)
                base = 16, k++;
            else {
                out[w++] = in[i++]; /* "&#" without digits is text */
                continue;
            }
            uint32_t num = 0;
            for (int d; k < n && (d = base == 10 ? (is_digit(in[k]) ? in[k] - '0' : -1)
                                                 : hex_val(in[k])) >= 0; k++)
                if (num <= 0x10FFFF) /* saturate: any larger value maps alike */
                    num = num * (uint32_t)base + (uint32_t)d;
            if (k < n && in[k] == ';')
                k++;
            w += charref(num, out + w);
            i = k;
            continue;
        }
        size_t k = j;
        while (k < n && k - j < 32 && name_char(in[k]))
            k++;
        if (k == j) {
            out[w++] = in[i++];
            continue;
        }
        size_t len = k - j, end = k < n && in[k] == ';' ? k + 1 : k;
        int semi = end > k;
        int32_t c = entity_find(in + j, len, semi);
        if (c >= 0) {
            out[w++] = c;
            i = end;
            continue;
        }
        /* the longest legacy name that is a prefix (at least 2 characters) */
        size_t x = semi ? len : len - 1;
        for (; x >= 2; x--)
            if ((c = entity_find(in + j, x, 0)) >= 0)
                break;
        if (x >= 2) {
            out[w++] = c;
            i = j + x;
        }
        while (i < end) /* the rest of the match is copied as it was */
            out[w++] = in[i++];
    }
    return w;
}

/* ---- cleaning: whitespace and case ------------------------------------- */

/* \s of the `regex` module: Unicode White_Space. */
int tok__re_space(int32_t c)
{
    if (c <= 0x20)
        return c == 0x20 || (c >= 0x09 && c <= 0x0D);
    return c == 0x85 || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

/* Python's str.isspace(): White_Space plus the separators U+001C..U+001F. */
static int py_space(int32_t c)
{
    return tok__re_space(c) || (c >= 0x1C && c <= 0x1F);
}

/* strip(), re.sub(r'\s+', ' '), strip(), in place; returns the new length.
 * After the first strip the ends are not spaces, so the second is a no-op. */
static size_t clean_space(int32_t *s, size_t n)
{
    size_t a = 0, w = 0;
    while (a < n && py_space(s[a]))
        a++;
    while (n > a && py_space(s[n - 1]))
        n--;
    int run = 0; /* inside a run of \s */
    for (size_t i = a; i < n; i++) {
        int sp = tok__re_space(s[i]);
        if (!sp)
            s[w++] = s[i];
        else if (!run)
            s[w++] = ' ';
        run = sp;
    }
    return w;
}

/* Unicode 14's Case_Ignorable, as Python 3.11 reads it for final sigma. */
static int case_ignorable(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_MN:
    case UTF8PROC_CATEGORY_ME:
    case UTF8PROC_CATEGORY_CF:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_SK:
        return 1;
    default:
        break;
    }
    /* Word_Break MidLetter, MidNumLet and Single_Quote */
    static const int32_t mid[] = {0x0027, 0x002E, 0x003A, 0x00B7, 0x0387, 0x055F,
                                  0x05F4, 0x2018, 0x2019, 0x2024, 0x2027, 0xFE13,
                                  0xFE52, 0xFE55, 0xFF07, 0xFF0E, 0xFF1A};
    for (size_t i = 0; i < sizeof mid / sizeof mid[0]; i++)
        if (c == mid[i])
            return 1;
    return 0;
}

/* Unicode's Cased for a character that is not Case_Ignorable. */
static int cased(int32_t c)
{
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
        return 1;
    default: /* Other_Lowercase / Other_Uppercase outside Lm */
        return c == 0xAA || c == 0xBA || (c >= 0x2160 && c <= 0x217F) ||
               (c >= 0x24B6 && c <= 0x24E9) || (c >= 0x1F130 && c <= 0x1F149) ||
               (c >= 0x1F150 && c <= 0x1F169) || (c >= 0x1F170 && c <= 0x1F189);
    }
}

/* Final_Sigma: s[i] (a capital sigma) follows a cased letter and is not
 * followed by one, skipping case-ignorable characters both ways. */
static int final_sigma(const int32_t *s, size_t n, size_t i)
{
    size_t j = i;
    while (j > 0 && case_ignorable(s[j - 1]))
        j--;
    if (j == 0 || !cased(s[j - 1]))
        return 0;
    for (j = i + 1; j < n && case_ignorable(s[j]); j++)
        ;
    return j == n || !cased(s[j]);
}

/* Python's str.lower(): out has room for 2n; returns the length. */
static size_t lower(const int32_t *s, size_t n, int32_t *out)
{
    size_t w = 0;
    for (size_t i = 0; i < n; i++) {
        int32_t c = s[i];
        if (c < 0x80)
            out[w++] = c >= 'A' && c <= 'Z' ? c + 32 : c;
        else if (c == 0x130) { /* the one unconditional multi-character lowercase */
            out[w++] = 'i';
            out[w++] = 0x307;
        } else if (c == 0x3A3)
            out[w++] = final_sigma(s, n, i) ? 0x3C2 : 0x3C3;
        else
            out[w++] = utf8proc_tolower(c);
    }
    return w;
}

/* ---- the whole stage ---------------------------------------------------- */

/* Cleans text[0..len) (valid UTF-8) into code points: NFC, html.unescape
 * twice, whitespace, lower. Returns the malloc'd array or NULL (no
 * memory); *n gets its length. */
int32_t *tok__clean(const char *text, size_t len, size_t *n)
{
    utf8proc_option_t opt = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    size_t cap = len + 16;
    int32_t *a = NULL, *b = NULL;
    utf8proc_ssize_t m;
    for (;;) {
        int32_t *na = realloc(a, cap * sizeof *a);
        if (!na)
            goto fail;
        a = na;
        m = utf8proc_decompose((const uint8_t *)text, (utf8proc_ssize_t)len, a,
                               (utf8proc_ssize_t)cap, opt);
        if (m < 0)
            goto fail;
        if ((size_t)m <= cap)
            break;
        cap = (size_t)m;
    }
    m = utf8proc_normalize_utf32(a, m, opt);
    if (m < 0)
        goto fail;
    size_t k = (size_t)m;
    b = malloc((2 * k + 1) * sizeof *b);
    if (!b)
        goto fail;
    k = unescape(a, k, b);
    k = unescape(b, k, a);
    k = clean_space(a, k);
    k = lower(a, k, b);
    free(a);
    *n = k;
    return b;
fail:
    free(a);
    free(b);
    return NULL;
}
