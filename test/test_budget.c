/*
 * Network budgets (tether/budget.h): a deadline as a grpc-timeout value and
 * back. Formatting rounds down in the finest unit that fits in 8 digits;
 * parsing is strict. Checked exhaustively at every unit boundary, against
 * an independent reference, and with seeded random junk.
 */
#define _GNU_SOURCE
#include "support.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const struct {
    char unit;
    int64_t ns;
} units[] = { { 'n', 1 },          { 'u', 1000 },        { 'm', 1000000 },
              { 'S', 1000000000 }, { 'M', 60000000000 }, { 'H', 3600000000000 } };
enum { NUNITS = sizeof units / sizeof units[0] };

/* An assertion for the hot loops: Check's own ck_assert costs a write per
 * call even when it holds. */
#define MUST(cond)                                              \
    do {                                                        \
        if (!(cond))                                            \
            ck_abort_msg("line %d: %s fails", __LINE__, #cond); \
    } while (0)

static int64_t unit_ns(char c)
{
    for (int i = 0; i < NUNITS; i++)
        if (units[i].unit == c)
            return units[i].ns;
    return 0;
}

/* The value a string stands for, parsed by hand (the test's reference). */
static int64_t value_of(const char *s)
{
    size_t n = strlen(s);
    MUST(n >= 2);
    MUST(n <= 9);
    int64_t v = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        MUST(s[i] >= '0' && s[i] <= '9');
        v = v * 10 + (s[i] - '0');
    }
    int64_t u = unit_ns(s[n - 1]);
    MUST(u != 0);
    return v * u;
}

static int fmt(int64_t ns, char *buf)
{
    return tether_budget_format_ns(ns, buf, TETHER_BUDGET_SIZE);
}

START_TEST(format_examples)
{
    char b[TETHER_BUDGET_SIZE];
    ck_assert_int_eq(fmt(1, b), 0);
    ck_assert_str_eq(b, "1n");
    ck_assert_int_eq(fmt(1500, b), 0);
    ck_assert_str_eq(b, "1500n");
    ck_assert_int_eq(fmt(99999999, b), 0);
    ck_assert_str_eq(b, "99999999n");
    ck_assert_int_eq(fmt(100000000, b), 0);
    ck_assert_str_eq(b, "100000u");
    ck_assert_int_eq(fmt(123456789, b), 0);
    ck_assert_str_eq(b, "123456u"); /* rounded down: 789 ns dropped */
    ck_assert_int_eq(fmt(tether_sec(200), b), 0);
    ck_assert_str_eq(b, "200000m");
    ck_assert_int_eq(fmt(tether_sec(100000) + 999999999, b), 0);
    ck_assert_str_eq(b, "100000S");
    ck_assert_int_eq(fmt(tether_sec(99999999) * 60 + 59999999999, b), 0);
    ck_assert_str_eq(b, "99999999M");
    ck_assert_int_eq(fmt(tether_sec(100000000) * 60, b), 0);
    ck_assert_str_eq(b, "1666666H");
    ck_assert_int_eq(fmt(INT64_MAX, b), 0);
    ck_assert_str_eq(b, "2562047H"); /* INT64_MAX ns = 2562047.79 hours */
}
END_TEST

/* Around each unit's limit, the value never exceeds the duration and is the
 * largest the unit can say without exceeding it. */
START_TEST(format_rounds_down_at_every_boundary)
{
    char b[TETHER_BUDGET_SIZE];
    for (int u = 0; u < NUNITS - 1; u++) {
        int64_t limit = 99999999 * units[u].ns;
        for (int64_t d = -3; d <= 3; d++) {
            int64_t ns = limit + d * (units[u].ns > 1 ? units[u].ns / 2 + 1 : 1);
            ck_assert_int_eq(fmt(ns, b), 0);
            int64_t v = value_of(b);
            char unit = b[strlen(b) - 1];
            ck_assert_int_le(v, ns);
            ck_assert_int_gt(v + unit_ns(unit), ns); /* nothing finer lost */
            ck_assert_uint_le(strlen(b), 9);
            /* The finest unit that fits: the next finer one would overflow. */
            for (int f = 0; f < NUNITS && units[f].unit != unit; f++)
                ck_assert_int_gt(ns / units[f].ns, 99999999);
        }
    }
}
END_TEST

START_TEST(format_random_durations_round_down)
{
    uint64_t st = th_seed(__func__);
    char b[TETHER_BUDGET_SIZE];
    for (int i = 0; i < 200000; i++) {
        /* Spread over every magnitude: a random number of random bits. */
        int bits = 1 + (int)(th_rand(&st) % 63);
        int64_t ns = (int64_t)(th_rand(&st) >> (64 - bits));
        if (ns <= 0)
            continue;
        MUST(fmt(ns, b) == 0);
        int64_t v = value_of(b);
        MUST(v <= ns);
        MUST(v + unit_ns(b[strlen(b) - 1]) > ns);
        int64_t back;
        MUST(tether_budget_parse_ns(b, strlen(b), &back) == 0);
        MUST(back == v); /* round trip: exactly what was written */
    }
}
END_TEST

START_TEST(format_expired_and_never)
{
    char b[TETHER_BUDGET_SIZE];
    ck_assert_int_eq(fmt(0, b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(fmt(-5, b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(fmt(INT64_MIN, b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(tether_budget_format(tether_now() - 1, b, sizeof b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(tether_budget_format(INT64_MIN, b, sizeof b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    strcpy(b, "junk");
    ck_assert_int_eq(tether_budget_format(TETHER_NEVER, b, sizeof b), ENOENT);
    ck_assert_str_eq(b, "");
}
END_TEST

START_TEST(format_deadline_is_time_left)
{
    char b[TETHER_BUDGET_SIZE];
    tether_time_t before = tether_now();
    tether_time_t d = before + tether_sec(5);
    ck_assert_int_eq(tether_budget_format(d, b, sizeof b), 0);
    int64_t v = value_of(b);
    ck_assert_int_le(v, tether_sec(5));
    ck_assert_int_gt(v, tether_sec(5) - th_bound_ns(1000));
}
END_TEST

START_TEST(format_small_buffers)
{
    char b[TETHER_BUDGET_SIZE];
    memset(b, 'x', sizeof b);
    ck_assert_int_eq(tether_budget_format_ns(1500, b, 5), ERANGE); /* "1500n" + NUL = 6 */
    ck_assert_str_eq(b, "");
    ck_assert_int_eq(tether_budget_format_ns(1500, b, 6), 0);
    ck_assert_str_eq(b, "1500n");
    b[0] = 'x';
    ck_assert_int_eq(tether_budget_format_ns(1500, b, 0), ERANGE);
    ck_assert_int_eq(b[0], 'x');                                /* size 0: nothing written */
    ck_assert_int_eq(tether_budget_format_ns(0, b, 2), ERANGE); /* "0n" needs 3 */
    ck_assert_str_eq(b, "");
    ck_assert_int_eq(tether_budget_format_ns(1, NULL, 10), EINVAL);
    ck_assert_int_eq(tether_budget_format(tether_now(), NULL, 10), EINVAL);
}
END_TEST

START_TEST(format_token)
{
    char b[TETHER_BUDGET_SIZE];
    tether_token *none = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_budget_format_token(none, b, sizeof b), ENOENT);
    ck_assert_str_eq(b, "");
    tether_token *t = new_token(none, tether_deadline_after(tether_sec(30)));
    tether_token *c = new_token(t, TETHER_NEVER); /* inherits the deadline */
    ck_assert_int_eq(tether_budget_format_token(c, b, sizeof b), 0);
    ck_assert_int_le(value_of(b), tether_sec(30));
    ck_assert_int_gt(value_of(b), tether_sec(30) - th_bound_ns(1000));
    ck_assert_int_eq(tether_token_cancel(none, 0), 0);
    ck_assert_int_eq(tether_budget_format_token(c, b, sizeof b), ECANCELED);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(tether_budget_format_token(none, b, 2), ERANGE);
    ck_assert_int_eq(tether_budget_format_token(NULL, b, sizeof b), EINVAL);
    ck_assert_int_eq(tether_budget_format_token(c, NULL, 10), EINVAL);
    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    ck_assert_int_eq(tether_token_free(none), 0);

    /* A passed deadline is observed (and cancels its owner). */
    tether_token *e = new_token(NULL, tether_now() - 1);
    ck_assert_int_eq(tether_budget_format_token(e, b, sizeof b), ETIMEDOUT);
    ck_assert_str_eq(b, "0n");
    ck_assert_int_eq(tether_token_cause(e), TETHER_CAUSE_DEADLINE);
    ck_assert_int_eq(tether_token_free(e), 0);
}
END_TEST

static int parse(const char *s, int64_t *ns)
{
    return tether_budget_parse_ns(s, strlen(s), ns);
}

START_TEST(parse_every_unit)
{
    for (int u = 0; u < NUNITS; u++) {
        const char *vals[] = { "0", "1", "7", "00000001", "12345678", "99999999" };
        for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
            char s[16];
            snprintf(s, sizeof s, "%s%c", vals[i], units[u].unit);
            int64_t ns = -1;
            ck_assert_int_eq(parse(s, &ns), 0);
            int64_t v = strtoll(vals[i], NULL, 10);
            int64_t want = v > INT64_MAX / units[u].ns ? INT64_MAX : v * units[u].ns;
            ck_assert_int_eq(ns, want);
        }
    }
}
END_TEST

START_TEST(parse_overflow_saturates)
{
    int64_t ns;
    ck_assert_int_eq(parse("99999999H", &ns), 0);
    ck_assert_int_eq(ns, INT64_MAX);
    ck_assert_int_eq(parse("2562047H", &ns), 0); /* the largest that fits */
    ck_assert_int_eq(ns, 2562047 * 3600000000000);
    ck_assert_int_eq(parse("2562048H", &ns), 0);
    ck_assert_int_eq(ns, INT64_MAX);
    ck_assert_int_eq(parse("99999999M", &ns), 0); /* 6e18: fits */
    ck_assert_int_eq(ns, 99999999 * 60000000000);
    tether_time_t d;
    ck_assert_int_eq(tether_budget_parse("99999999H", 9, &d), 0);
    ck_assert_int_eq(d, TETHER_NEVER);
}
END_TEST

START_TEST(parse_rejects_junk)
{
    const char *bad[] = { "",           "S",   "1",    "10",       "123456789S",
                          "000000000n", "-1S", "+1S",  " 1S",      "1S ",
                          "1 S",        "1s",  "1h",   "1N",       "1x",
                          "1SS",        "S1",  "1.5S", "0x10m",    "\xef\xbc\x91S",
                          "1\tS",       "1Sn", "1e3m", "99999999h" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        int64_t ns = 42;
        ck_assert_msg(parse(bad[i], &ns) == EINVAL, "\"%s\" accepted", bad[i]);
        ck_assert_int_eq(ns, 42); /* untouched */
    }
    /* A NUL inside, and len covering only part of a valid value. */
    int64_t ns = 42;
    ck_assert_int_eq(tether_budget_parse_ns("1\0S", 3, &ns), EINVAL);
    ck_assert_int_eq(tether_budget_parse_ns("15S", 2, &ns), EINVAL);
    ck_assert_int_eq(tether_budget_parse_ns("15S", 3, &ns), 0);
    ck_assert_int_eq(ns, tether_sec(15));
    ck_assert_int_eq(tether_budget_parse_ns("15Sxyz", 3, &ns), 0); /* not NUL-terminated */
    ck_assert_int_eq(tether_budget_parse_ns(NULL, 2, &ns), EINVAL);
    ck_assert_int_eq(tether_budget_parse_ns("1S", 2, NULL), EINVAL);
    tether_time_t d = 7;
    ck_assert_int_eq(tether_budget_parse("1x", 2, &d), EINVAL);
    ck_assert_int_eq(d, 7);
    ck_assert_int_eq(tether_budget_parse(NULL, 2, &d), EINVAL);
    ck_assert_int_eq(tether_budget_parse("1S", 2, NULL), EINVAL);
}
END_TEST

/* Random bytes, random lengths: the parser accepts exactly the strings the
 * reference accepts, and agrees on their value. */
START_TEST(parse_random_bytes)
{
    uint64_t st = th_seed(__func__);
    const char alphabet[] = "0123456789HMSmun -+.xs\0\xff";
    for (int i = 0; i < 300000; i++) {
        char s[12];
        size_t len = (size_t)(th_rand(&st) % sizeof s);
        for (size_t k = 0; k < len; k++)
            s[k] = (th_rand(&st) % 4) ? alphabet[th_rand(&st) % (sizeof alphabet - 1)]
                                      : (char)th_rand(&st);
        bool ok = len >= 2 && len <= 9 && unit_ns(s[len - 1]) != 0;
        int64_t v = 0;
        for (size_t k = 0; ok && k + 1 < len; k++) {
            ok = s[k] >= '0' && s[k] <= '9';
            v = v * 10 + (s[k] - '0');
        }
        int64_t ns = -1;
        int rc = tether_budget_parse_ns(s, len, &ns);
        MUST(rc == (ok ? 0 : EINVAL));
        if (ok) {
            int64_t u = unit_ns(s[len - 1]);
            MUST(ns == (v > INT64_MAX / u ? INT64_MAX : v * u));
        } else {
            MUST(ns == -1);
        }
    }
}
END_TEST

START_TEST(parse_deadline_is_now_plus)
{
    tether_time_t before = tether_now(), d;
    ck_assert_int_eq(tether_budget_parse("250m", 4, &d), 0);
    tether_time_t after = tether_now();
    ck_assert_int_ge(d, before + tether_ms(250));
    ck_assert_int_le(d, after + tether_ms(250));
    /* Adopt it: a token with that deadline expires at it. */
    ck_assert_int_eq(tether_budget_parse("30m", 3, &d), 0);
    tether_token *t = new_token(NULL, d);
    while (tether_token_check(t) == 0)
        usleep(1000);
    ck_assert_int_ge(tether_now(), d);
    ck_assert_int_eq(tether_token_check(t), ETIMEDOUT);
    ck_assert_int_eq(tether_token_free(t), 0);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("budget");
    TCase *tc = tcase_create("format");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, format_examples);
    tcase_add_test(tc, format_rounds_down_at_every_boundary);
    tcase_add_test(tc, format_random_durations_round_down);
    tcase_add_test(tc, format_expired_and_never);
    tcase_add_test(tc, format_deadline_is_time_left);
    tcase_add_test(tc, format_small_buffers);
    tcase_add_test(tc, format_token);
    suite_add_tcase(s, tc);

    tc = tcase_create("parse");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, parse_every_unit);
    tcase_add_test(tc, parse_overflow_saturates);
    tcase_add_test(tc, parse_rejects_junk);
    tcase_add_test(tc, parse_random_bytes);
    tcase_add_test(tc, parse_deadline_is_now_plus);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
