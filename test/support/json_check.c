/* The strict JSON checker of json_check.h: recursive descent. */
#include "json_check.h"

#include <stdbool.h>
#include <string.h>

enum { JSON_MAX_DEPTH = 512 };

typedef struct parser {
    const char *p, *end;
    int depth, max_depth;
} parser;

static void skip_ws(parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_hex(char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static bool literal(parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return false;
    ps->p += n;
    return true;
}

static bool string(parser *ps)
{
    if (ps->p >= ps->end || *ps->p != '"')
        return false;
    ps->p++;
    while (ps->p < ps->end) {
        unsigned char c = (unsigned char)*ps->p;
        if (c == '"') {
            ps->p++;
            return true;
        }
        if (c < 0x20)
            return false;
        if (c != '\\') {
            ps->p++;
            continue;
        }
        if (++ps->p >= ps->end)
            return false;
        char e = *ps->p++;
        if (e == 'u') {
            for (int i = 0; i < 4; i++, ps->p++)
                if (ps->p >= ps->end || !is_hex(*ps->p))
                    return false;
        } else if (!strchr("\"\\/bfnrt", e) || e == '\0') {
            return false;
        }
    }
    return false;
}

static bool digits(parser *ps)
{
    const char *start = ps->p;
    while (ps->p < ps->end && is_digit(*ps->p))
        ps->p++;
    return ps->p > start;
}

static bool number(parser *ps)
{
    if (ps->p < ps->end && *ps->p == '-')
        ps->p++;
    if (ps->p < ps->end && *ps->p == '0')
        ps->p++;
    else if (!digits(ps))
        return false;
    if (ps->p < ps->end && *ps->p == '.') {
        ps->p++;
        if (!digits(ps))
            return false;
    }
    if (ps->p < ps->end && (*ps->p == 'e' || *ps->p == 'E')) {
        ps->p++;
        if (ps->p < ps->end && (*ps->p == '+' || *ps->p == '-'))
            ps->p++;
        if (!digits(ps))
            return false;
    }
    return true;
}

static bool value(parser *ps);

/* An array or object, after its opening bracket. */
static bool container(parser *ps, char close, bool object)
{
    if (++ps->depth > JSON_MAX_DEPTH)
        return false;
    if (ps->depth > ps->max_depth)
        ps->max_depth = ps->depth;
    skip_ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return true;
    }
    for (;;) {
        skip_ws(ps);
        if (object) {
            if (!string(ps))
                return false;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return false;
            ps->p++;
        }
        if (!value(ps))
            return false;
        skip_ws(ps);
        if (ps->p >= ps->end)
            return false;
        if (*ps->p == ',') {
            ps->p++;
            continue;
        }
        if (*ps->p != close)
            return false;
        ps->p++;
        ps->depth--;
        return true;
    }
}

static bool value(parser *ps)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return false;
    switch (*ps->p) {
    case '{': ps->p++; return container(ps, '}', true);
    case '[': ps->p++; return container(ps, ']', false);
    case '"': return string(ps);
    case 't': return literal(ps, "true");
    case 'f': return literal(ps, "false");
    case 'n': return literal(ps, "null");
    default: return number(ps);
    }
}

int json_check(const char *text, size_t n, size_t *error_at, int *max_depth)
{
    parser ps = { .p = text, .end = text + n };
    bool ok = value(&ps);
    if (ok) {
        skip_ws(&ps);
        ok = ps.p == ps.end;
    }
    if (!ok && error_at)
        *error_at = (size_t)(ps.p - text);
    if (ok && max_depth)
        *max_depth = ps.max_depth;
    return ok;
}
