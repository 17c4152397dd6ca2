/*
 * bench_check.c — the cancellation check: tether_check with a current
 * token and no deadline, against a hand-rolled thread-local flag check and
 * pthread_testcancel; and tether_check in a thread with no token at all
 * (the common case of code that merely may run under one).
 */
#include "bench_common.h"

#include <errno.h>
#include <pthread.h>


/* The hand-rolled equivalent: a thread-local pointer to a flag. */
struct raw_flag {
    atomic_bool canceled;
};
static _Thread_local struct raw_flag *raw_current;

__attribute__((noinline)) static int raw_check(void)
{
    struct raw_flag *f = raw_current;
    return f && atomic_load_explicit(&f->canceled, memory_order_acquire) ? ECANCELED : 0;
}

/* The empty asm keeps the compiler from hoisting or merging the calls. */
#define CHECK_LOOP(iters, call)                 \
    do {                                        \
        for (long i_ = 0; i_ < (iters); i_++) { \
            acc += (call);                      \
            __asm__ volatile("" ::: "memory");  \
        }                                       \
    } while (0)

static long g_check_iters;

static double round_check_raw(void *ctx)
{
    (void)ctx;
    long acc = 0;
    tether_time_t t0 = tether_now();
    CHECK_LOOP(g_check_iters, raw_check());
    tether_time_t t1 = tether_now();
    if (acc)
        die("raw check: canceled");
    return (double)(t1 - t0) / (double)g_check_iters;
}

static double round_check_tether(void *ctx)
{
    (void)ctx;
    long acc = 0;
    tether_time_t t0 = tether_now();
    CHECK_LOOP(g_check_iters, tether_check());
    tether_time_t t1 = tether_now();
    if (acc)
        die("tether_check: canceled");
    return (double)(t1 - t0) / (double)g_check_iters;
}

/* The same loop with no current token: ctx is the bench's token, left for
 * the round. */
static double round_check_no_token(void *ctx)
{
    need_rc(tether_token_leave(ctx), "tether_token_leave");
    long acc = 0;
    tether_time_t t0 = tether_now();
    CHECK_LOOP(g_check_iters, tether_check());
    tether_time_t t1 = tether_now();
    need_rc(tether_token_enter(ctx), "tether_token_enter");
    if (acc)
        die("tether_check without a token: canceled");
    return (double)(t1 - t0) / (double)g_check_iters;
}

static double round_check_testcancel(void *ctx)
{
    (void)ctx;
    long acc = 0;
    tether_time_t t0 = tether_now();
    CHECK_LOOP(g_check_iters, (pthread_testcancel(), 0));
    tether_time_t t1 = tether_now();
    if (acc)
        die("pthread_testcancel: impossible");
    return (double)(t1 - t0) / (double)g_check_iters;
}

void bench_check(const struct config *cfg)
{
    tether_token *tok;
    need_rc(tether_token_new(&tok, NULL, TETHER_NEVER), "tether_token_new");
    need_rc(tether_token_enter(tok), "tether_token_enter");
    struct raw_flag flag = { false };
    raw_current = &flag;
    g_check_iters = cfg->check_iters;
    struct variant v[4] = {
        { .fn = round_check_raw },
        { .fn = round_check_tether },
        { .fn = round_check_testcancel },
        { .fn = round_check_no_token, .ctx = tok },
    };
    interleave("check", v, 4, cfg->check_rounds, 1, cfg);
    double raw = median(&v[0].s), tether = median(&v[1].s);
    report("check_raw_ns", raw, "ns", 2);
    report("check_ns", tether, "ns", 2);
    report("check_ratio", ratio(tether, raw), "x", 3);
    report("check_pthread_testcancel_ns", median(&v[2].s), "ns", 2);
    report("check_no_token_ns", median(&v[3].s), "ns", 2);
    for (int i = 0; i < 4; i++)
        samples_free(&v[i].s);
    raw_current = NULL;
    need_rc(tether_token_leave(tok), "tether_token_leave");
    need_rc(tether_token_free(tok), "tether_token_free");
}
