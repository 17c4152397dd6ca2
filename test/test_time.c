/*
 * Time helpers, cause/outcome names and the version query.
 *
 * Everything here is pure (no threads, no fds), so the tests compare against
 * values derived from the clock, the macros and the enum identifiers rather
 * than against constants typed in by hand.
 */
#define _GNU_SOURCE
#include "support.h"

#include <ctype.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static tether_time_t raw_monotonic(void)
{
    struct timespec ts;
    ck_assert_int_eq(clock_gettime(CLOCK_MONOTONIC, &ts), 0);
    return (tether_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---------------------------------------------------------------- tether_now */

START_TEST(now_is_monotonic_clock)
{
    /* tether_now reads CLOCK_MONOTONIC: bracketed by two raw reads. */
    for (int i = 0; i < 1000; i++) {
        tether_time_t a = raw_monotonic();
        tether_time_t n = tether_now();
        tether_time_t b = raw_monotonic();
        ck_assert_int_le(a, n);
        ck_assert_int_le(n, b);
    }
}
END_TEST

START_TEST(now_never_goes_back)
{
    tether_time_t prev = tether_now();
    ck_assert_int_gt(prev, 0);
    for (int i = 0; i < 100000; i++) {
        tether_time_t n = tether_now();
        ck_assert_int_ge(n, prev);
        prev = n;
    }
}
END_TEST

START_TEST(now_advances_across_a_sleep)
{
    tether_time_t a = tether_now();
    struct timespec ts = { 0, 2000000 }; /* the code under test is the clock */
    ck_assert_int_eq(clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL), 0);
    tether_time_t b = tether_now();
    ck_assert_int_ge(b - a, 2000000);
    ck_assert_int_lt(b - a, th_bound_ns(2000));
}
END_TEST

/* ----------------------------------------------------- tether_deadline_after */

START_TEST(deadline_after_positive_and_zero)
{
    const int64_t durations[] = {
        0, 1, 999, tether_ms(1), tether_sec(3600), tether_sec(86400) * 365
    };
    for (size_t i = 0; i < sizeof durations / sizeof *durations; i++) {
        tether_time_t before = tether_now();
        tether_time_t d = tether_deadline_after(durations[i]);
        tether_time_t after = tether_now();
        ck_assert_int_ge(d, before + durations[i]);
        ck_assert_int_le(d, after + durations[i]);
        ck_assert_int_ne(d, TETHER_NEVER);
    }
}
END_TEST

START_TEST(deadline_after_saturates_to_never)
{
    ck_assert_int_eq(tether_deadline_after(INT64_MAX), TETHER_NEVER);
    ck_assert_int_eq(tether_deadline_after(INT64_MAX - 1), TETHER_NEVER);
    /* Just enough to overflow from now: anything >= INT64_MAX - now. */
    tether_time_t now = tether_now();
    ck_assert_int_eq(tether_deadline_after(INT64_MAX - now + 1), TETHER_NEVER);
    ck_assert_int_eq(tether_deadline_after(INT64_MAX - now), TETHER_NEVER);
    /* The saturating converters compose with it. */
    ck_assert_int_eq(tether_deadline_after(tether_sec(INT64_MAX)), TETHER_NEVER);
    ck_assert_int_eq(tether_deadline_after(tether_ms(INT64_MAX / 1000000 + 1)), TETHER_NEVER);
}
END_TEST

START_TEST(deadline_after_negative_is_past)
{
    const int64_t durations[] = { -1, -tether_ms(5), -tether_sec(1000000), INT64_MIN / 2,
                                  INT64_MIN };
    for (size_t i = 0; i < sizeof durations / sizeof *durations; i++) {
        tether_time_t before = tether_now();
        tether_time_t d = tether_deadline_after(durations[i]);
        tether_time_t after = tether_now();
        ck_assert_int_lt(d, after); /* in the past once it returns */
        /* Exact: now + duration, which cannot overflow since now >= 0. */
        ck_assert_int_ge(d, before + durations[i]);
        ck_assert_int_le(d, after + durations[i]);
    }
}
END_TEST

/* ------------------------------------------------- tether_us / _ms / _sec */

struct conv {
    int64_t (*fn)(int64_t);
    int64_t scale;
    const char *name;
};

static const struct conv convs[] = {
    { tether_us, 1000, "tether_us" },
    { tether_ms, 1000000, "tether_ms" },
    { tether_sec, 1000000000, "tether_sec" },
};

START_TEST(converters_exact_in_range)
{
    const struct conv *c = &convs[_i];
    const int64_t lim = INT64_MAX / c->scale;
    const int64_t vals[] = { 0, 1, -1, 7, -7, 1000, -1000, lim, -lim, lim - 1, -(lim - 1) };
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        int64_t got = c->fn(vals[i]);
        ck_assert_msg(got == vals[i] * c->scale, "%s(%lld) = %lld", c->name, (long long)vals[i],
                      (long long)got);
    }
}
END_TEST

START_TEST(converters_saturate)
{
    const struct conv *c = &convs[_i];
    const int64_t hi = INT64_MAX / c->scale + 1;
    const int64_t lo = INT64_MIN / c->scale - 1;
    const int64_t over[] = { hi, hi + 1, INT64_MAX / 2, INT64_MAX };
    const int64_t under[] = { lo, lo - 1, INT64_MIN / 2, INT64_MIN };
    for (size_t i = 0; i < sizeof over / sizeof *over; i++) {
        ck_assert_msg(c->fn(over[i]) == INT64_MAX, "%s(%lld) did not saturate", c->name,
                      (long long)over[i]);
        ck_assert_msg(c->fn(under[i]) == INT64_MIN, "%s(%lld) did not saturate", c->name,
                      (long long)under[i]);
    }
}
END_TEST

START_TEST(converters_agree_with_each_other)
{
    for (int64_t v = -5000; v <= 5000; v += 37) {
        ck_assert_int_eq(tether_sec(v), tether_ms(v * 1000));
        ck_assert_int_eq(tether_ms(v), tether_us(v * 1000));
    }
}
END_TEST

/* ------------------------------------------------------------------ names */

/* The name of every value is its enum identifier's suffix in lower case,
 * e.g. TETHER_CAUSE_SIBLING_FAILED -> "sibling_failed". */
struct named {
    int value;
    const char *ident;
};

#define CAUSE(x)             \
    {                        \
        TETHER_CAUSE_##x, #x \
    }
static const struct named causes[] = {
    CAUSE(NONE),           CAUSE(EXPLICIT),       CAUSE(DEADLINE),
    CAUSE(PARENT),         CAUSE(SIBLING_FAILED), CAUSE(SIBLING_SUCCEEDED),
    CAUSE(SCOPE_FINISHED), CAUSE(HALTED),         CAUSE(SIGNAL),
};
#undef CAUSE

#define OUTCOME(x)             \
    {                          \
        TETHER_OUTCOME_##x, #x \
    }
static const struct named outcomes[] = {
    OUTCOME(OK), OUTCOME(PARTIAL), OUTCOME(FAILED), OUTCOME(CANCELED), OUTCOME(DEADLINE_EXCEEDED),
};
#undef OUTCOME

static void lower(char *dst, const char *src, size_t n)
{
    size_t i = 0;
    for (; src[i] && i + 1 < n; i++)
        dst[i] = (char)tolower((unsigned char)src[i]);
    dst[i] = '\0';
}

static void check_names(const struct named *tab, size_t n, const char *(*name)(int))
{
    for (size_t i = 0; i < n; i++) {
        const char *got = name(tab[i].value);
        ck_assert_ptr_nonnull(got);
        char want[64];
        lower(want, tab[i].ident, sizeof want);
        ck_assert_str_eq(got, want);
        ck_assert_str_ne(got, "unknown");
        /* Static: the same string on every call. */
        ck_assert_ptr_eq(name(tab[i].value), got);
        for (size_t j = 0; j < i; j++)
            ck_assert_str_ne(name(tab[j].value), got);
    }
}

static const char *cause_name(int v)
{
    return tether_cause_name((tether_cause)v);
}
static const char *outcome_name(int v)
{
    return tether_outcome_name((tether_outcome)v);
}

START_TEST(cause_names)
{
    size_t n = sizeof causes / sizeof *causes;
    /* The table covers the enum: its values are 0..n-1. */
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(causes[i].value, (int)i);
    check_names(causes, n, cause_name);
    /* The two names the header spells out. */
    ck_assert_str_eq(tether_cause_name(TETHER_CAUSE_EXPLICIT), "explicit");
    ck_assert_str_eq(tether_cause_name(TETHER_CAUSE_DEADLINE), "deadline");
}
END_TEST

START_TEST(outcome_names)
{
    size_t n = sizeof outcomes / sizeof *outcomes;
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(outcomes[i].value, (int)i);
    check_names(outcomes, n, outcome_name);
    ck_assert_str_eq(tether_outcome_name(TETHER_OUTCOME_DEADLINE_EXCEEDED), "deadline_exceeded");
}
END_TEST

START_TEST(names_out_of_range_are_unknown)
{
    const int bad_causes[] = {
        TETHER_CAUSE_SIGNAL + 1, TETHER_CAUSE_SIGNAL + 2, 255, 256, -1, INT_MAX, INT_MIN
    };
    for (size_t i = 0; i < sizeof bad_causes / sizeof *bad_causes; i++)
        ck_assert_str_eq(cause_name(bad_causes[i]), "unknown");
    const int bad_outcomes[] = { TETHER_OUTCOME_DEADLINE_EXCEEDED + 1, 100, -1, INT_MAX, INT_MIN };
    for (size_t i = 0; i < sizeof bad_outcomes / sizeof *bad_outcomes; i++)
        ck_assert_str_eq(outcome_name(bad_outcomes[i]), "unknown");
}
END_TEST

/* ---------------------------------------------------------------- version */

START_TEST(version_matches_header)
{
    ck_assert_ptr_nonnull(tether_version());
    ck_assert_str_eq(tether_version(), TETHER_VERSION_STRING);
    ck_assert_int_eq(tether_version_number(), TETHER_VERSION_NUMBER);
    ck_assert_int_eq(TETHER_VERSION_NUMBER, TETHER_VERSION_MAJOR * 10000 +
                                                TETHER_VERSION_MINOR * 100 + TETHER_VERSION_PATCH);

    /* The string is "major.minor.patch" and agrees with the number. */
    int major = -1, minor = -1, patch = -1, end = 0;
    ck_assert_int_eq(sscanf(tether_version(), "%d.%d.%d%n", &major, &minor, &patch, &end), 3);
    ck_assert_int_eq((int)strlen(tether_version()), end);
    ck_assert_int_eq(major, TETHER_VERSION_MAJOR);
    ck_assert_int_eq(minor, TETHER_VERSION_MINOR);
    ck_assert_int_eq(patch, TETHER_VERSION_PATCH);
    ck_assert_int_eq(tether_version_number(), major * 10000 + minor * 100 + patch);
    /* The encoding is unambiguous only while minor and patch stay below 100. */
    ck_assert_int_lt(minor, 100);
    ck_assert_int_lt(patch, 100);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("time");
    TCase *tc;

    tc = tcase_create("now");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, now_is_monotonic_clock);
    tcase_add_test(tc, now_never_goes_back);
    tcase_add_test(tc, now_advances_across_a_sleep);
    suite_add_tcase(s, tc);

    tc = tcase_create("deadline_after");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, deadline_after_positive_and_zero);
    tcase_add_test(tc, deadline_after_saturates_to_never);
    tcase_add_test(tc, deadline_after_negative_is_past);
    suite_add_tcase(s, tc);

    tc = tcase_create("converters");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, converters_exact_in_range, 0, (int)(sizeof convs / sizeof *convs));
    tcase_add_loop_test(tc, converters_saturate, 0, (int)(sizeof convs / sizeof *convs));
    tcase_add_test(tc, converters_agree_with_each_other);
    suite_add_tcase(s, tc);

    tc = tcase_create("names");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, cause_names);
    tcase_add_test(tc, outcome_names);
    tcase_add_test(tc, names_out_of_range_are_unknown);
    suite_add_tcase(s, tc);

    tc = tcase_create("version");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, version_matches_header);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
