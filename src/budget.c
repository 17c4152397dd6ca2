/*
 * Network budgets: a deadline as a grpc-timeout value ("<1-8 digits><unit>")
 * and back. Written values round down, so passing a budget on never gives
 * the next hop more time than is left.
 */
#include "clock.h"

#include "tether/budget.h"

#include <string.h>

/* The units, finest first, with their length in nanoseconds. */
static const struct unit {
    char name;
    int64_t ns;
} units[] = {
    { 'n', 1 },
    { 'u', 1000 },
    { 'm', 1000000 },
    { 'S', TETHER_NS_PER_SEC },
    { 'M', 60 * TETHER_NS_PER_SEC },
    { 'H', 3600 * TETHER_NS_PER_SEC },
};

enum { MAX_DIGITS = 8, MAX_VALUE = 99999999 };

/* Write `text` (NUL-terminated) into buf, or "" and ERANGE if it does not
 * fit. */
static int put(char *buf, size_t size, const char *text, int ok)
{
    size_t n = strlen(text);
    if (n >= size) {
        if (size > 0)
            buf[0] = '\0';
        return ERANGE;
    }
    memcpy(buf, text, n + 1);
    return ok;
}

int tether_budget_format_ns(int64_t duration_ns, char *buf, size_t size)
{
    if (!buf)
        return EINVAL;
    if (duration_ns <= 0)
        return put(buf, size, "0n", ETIMEDOUT);
    size_t u = 0;
    while (duration_ns / units[u].ns > MAX_VALUE)
        u++; /* ends at H at the latest: INT64_MAX ns is about 2.6e6 hours */
    int64_t v = duration_ns / units[u].ns;
    char text[TETHER_BUDGET_SIZE];
    char digits[MAX_DIGITS];
    int nd = 0;
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    int i = 0;
    while (nd)
        text[i++] = digits[--nd];
    text[i++] = units[u].name;
    text[i] = '\0';
    return put(buf, size, text, 0);
}

int tether_budget_format(tether_time_t deadline, char *buf, size_t size)
{
    if (!buf)
        return EINVAL;
    if (deadline == TETHER_NEVER)
        return put(buf, size, "", ENOENT);
    tether_time_t now = tether_now();
    /* deadline - now cannot overflow for a past deadline far below now:
     * clamp first. */
    return tether_budget_format_ns(deadline > now ? deadline - now : 0, buf, size);
}

int tether_budget_format_token(tether_token *t, char *buf, size_t size)
{
    if (!t || !buf)
        return EINVAL;
    int c = tether_token_check(t);
    if (c) {
        int rc = put(buf, size, "0n", c);
        return rc == ERANGE ? ERANGE : c;
    }
    return tether_budget_format(tether_token_deadline(t), buf, size);
}

int tether_budget_parse_ns(const char *s, size_t len, int64_t *out)
{
    if (!s || !out || len < 2 || len > MAX_DIGITS + 1)
        return EINVAL;
    int64_t v = 0;
    for (size_t i = 0; i + 1 < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return EINVAL;
        v = v * 10 + (s[i] - '0');
    }
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (s[len - 1] != units[u].name)
            continue;
        *out = v > INT64_MAX / units[u].ns ? INT64_MAX : v * units[u].ns;
        return 0;
    }
    return EINVAL;
}

int tether_budget_parse(const char *s, size_t len, tether_time_t *deadline)
{
    if (!deadline)
        return EINVAL;
    int64_t ns;
    int rc = tether_budget_parse_ns(s, len, &ns);
    if (rc)
        return rc;
    *deadline = tether_deadline_after(ns);
    return 0;
}
