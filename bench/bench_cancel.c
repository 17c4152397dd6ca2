/*
 * bench_cancel.c — cancellation latency.
 *   cancel  one child blocked in tether_read on an empty pipe, from
 *           tether_scope_cancel until tether_scope_join returns, against a
 *           thread in poll on the pipe and an eventfd woken by an eventfd
 *           write until pthread_join returns, and against a thread in read()
 *           stopped by pthread_cancel (cancel_read_*, cancel_pthread_*).
 *   fanout  1000 children in tether_sleep_for(1 day), cancel until join
 *           returns, against 1000 threads in poll on one eventfd, one write,
 *           all joined (cancel_fanout_1000_*).
 * How the cost grows with the number of children (cancel_converge_*,
 * cancel_fanout_growth) is measured with the scale section, in fresh
 * processes: see bench_scale.c.
 */
#include "bench_common.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

/* Raw: the cancellable read done by hand — poll the pipe and the eventfd. */
static void *raw_poll_pipe_efd(void *arg)
{
    about_to_block(arg);
    struct pollfd p[2] = { { .fd = g_pipe[0], .events = POLLIN },
                           { .fd = g_efd, .events = POLLIN } };
    while (poll(p, 2, -1) < 0 && errno == EINTR) {
    }
    return NULL;
}

/* Raw: a plain blocking read, for pthread_cancel. */
static void *raw_read_until_canceled(void *arg)
{
    about_to_block(arg);
    char c;
    while (read(g_pipe[0], &c, 1) < 0 && errno == EINTR) {
    }
    return NULL; /* not reached: pthread_cancel ends the thread in read */
}

/* tether child: a read on the empty pipe until canceled. */
static int child_read_until_canceled(void *arg)
{
    about_to_block(arg);
    char c;
    ssize_t n = tether_read(g_pipe[0], &c, 1);
    return n < 0 ? errno : EIO;
}

/* ====================================================================== */
/* Canceling one blocked reader                                           */

static double round_cancel_raw(void *ctx)
{
    (void)ctx;
    struct slot slot;
    pthread_t th;
    atomic_store(&g_ready, 0);
    need_rc(pthread_create(&th, NULL, raw_poll_pipe_efd, &slot), "pthread_create");
    wait_all_blocked(&slot, 1, IN_POLL);
    tether_time_t t0 = tether_now();
    fire_efd();
    need_rc(pthread_join(th, NULL), "pthread_join");
    tether_time_t t1 = tether_now();
    reset_efd();
    return (double)(t1 - t0);
}

static double round_cancel_tether(void *ctx)
{
    (void)ctx;
    struct slot slot;
    tether_scope *s;
    tether_result r;
    atomic_store(&g_ready, 0);
    need_rc(tether_scope_open(&s, NULL), "tether_scope_open");
    need_rc(tether_spawn(s, child_read_until_canceled, &slot, NULL, NULL), "tether_spawn");
    wait_all_blocked(&slot, 1, IN_POLL);
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, &r), "tether_scope_join");
    tether_time_t t1 = tether_now();
    need_rc(tether_scope_free(s), "tether_scope_free");
    need_all_canceled(&r, 1, "cancel_read");
    return (double)(t1 - t0);
}

static double round_cancel_pthread(void *ctx)
{
    (void)ctx;
    struct slot slot;
    pthread_t th;
    void *ret;
    atomic_store(&g_ready, 0);
    need_rc(pthread_create(&th, NULL, raw_read_until_canceled, &slot), "pthread_create");
    wait_all_blocked(&slot, 1, IN_READ);
    tether_time_t t0 = tether_now();
    need_rc(pthread_cancel(th), "pthread_cancel");
    need_rc(pthread_join(th, &ret), "pthread_join");
    tether_time_t t1 = tether_now();
    if (ret != PTHREAD_CANCELED)
        die("pthread_cancel: the thread was not canceled");
    return (double)(t1 - t0);
}

void bench_cancel(const struct config *cfg)
{
    struct variant v[3] = {
        { .fn = round_cancel_raw },
        { .fn = round_cancel_tether },
        { .fn = round_cancel_pthread },
    };
    interleave("cancel_read", v, 3, cfg->cancel_rounds, cfg->cancel_warmup, cfg);

    double raw = report_latency("cancel_read_raw", &v[0].s);
    double tether = report_latency("cancel_read", &v[1].s);
    report("cancel_read_ratio", ratio(tether, raw), "x", 3);
    double pcancel = report_latency("cancel_pthread_cancel", &v[2].s);
    report("cancel_vs_pthread_cancel_ratio", ratio(tether, pcancel), "x", 3);
    for (int i = 0; i < 3; i++)
        samples_free(&v[i].s);
}

/* ====================================================================== */
/* Canceling 1000 sleepers                                                */

struct fanout_ctx {
    int n;
    struct slot *slots;
    pthread_t *threads;
};

static double round_fanout_raw(void *ctx)
{
    struct fanout_ctx *c = ctx;
    atomic_store(&g_ready, 0);
    for (int i = 0; i < c->n; i++)
        need_rc(pthread_create(&c->threads[i], NULL, raw_poll_efd, &c->slots[i]), "pthread_create");
    wait_all_blocked(c->slots, c->n, IN_POLL);
    tether_time_t t0 = tether_now();
    fire_efd();
    for (int i = 0; i < c->n; i++)
        need_rc(pthread_join(c->threads[i], NULL), "pthread_join");
    tether_time_t t1 = tether_now();
    reset_efd();
    return (double)(t1 - t0);
}

static double round_fanout_tether(void *ctx)
{
    struct fanout_ctx *c = ctx;
    tether_scope *s;
    tether_result r;
    atomic_store(&g_ready, 0);
    need_rc(tether_scope_open(&s, NULL), "tether_scope_open");
    for (int i = 0; i < c->n; i++)
        need_rc(tether_spawn(s, child_sleep_until_canceled, &c->slots[i], NULL, NULL),
                "tether_spawn");
    wait_all_blocked(c->slots, c->n, IN_FUTEX);
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, &r), "tether_scope_join");
    tether_time_t t1 = tether_now();
    need_rc(tether_scope_free(s), "tether_scope_free");
    need_all_canceled(&r, (unsigned)c->n, "cancel_fanout");
    return (double)(t1 - t0);
}

void bench_fanout(const struct config *cfg)
{
    struct fanout_ctx ctx = {
        .n = cfg->fanout_children,
        .slots = calloc((size_t)cfg->fanout_children, sizeof(struct slot)),
        .threads = calloc((size_t)cfg->fanout_children, sizeof(pthread_t)),
    };
    if (!ctx.slots || !ctx.threads)
        die("out of memory");
    struct variant v[2] = {
        { .fn = round_fanout_raw, .ctx = &ctx },
        { .fn = round_fanout_tether, .ctx = &ctx },
    };
    interleave("cancel_fanout_1000", v, 2, cfg->fanout_rounds, cfg->fanout_warmup, cfg);

    double raw = median(&v[0].s) / 1000, tether = median(&v[1].s) / 1000;
    report("cancel_fanout_1000_raw_us", raw, "us", 0);
    report("cancel_fanout_1000_us", tether, "us", 0);
    report("cancel_fanout_1000_ratio", ratio(tether, raw), "x", 3);
    report("cancel_fanout_1000_raw_max_us", percentile(&v[0].s, 100) / 1000, "us", 0);
    report("cancel_fanout_1000_max_us", percentile(&v[1].s, 100) / 1000, "us", 0);
    for (int i = 0; i < 2; i++)
        samples_free(&v[i].s);
    free(ctx.slots);
    free(ctx.threads);
}
