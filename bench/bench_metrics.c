/*
 * bench_metrics.c — what the metrics cost (metrics_cost section): spawn +
 * join of a named scope with one child, canceling one child blocked in
 * tether_read, and canceling the fan-out of sleepers (as bench_cancel.c),
 * each with metrics on and off in the same interleaved series. The
 * switch applies to scopes opened after it (tether_metrics_set_enabled), so
 * each round sets it before it opens its scope. Figures:
 * metrics_<figure>_on_ns/_off_ns (medians) and metrics_<figure>_ratio, the
 * median over rounds of on / off measured in the same round (the two run
 * back to back, in turn first): a load that drifts over the run moves both
 * halves of a pair, so the paired ratio is steadier than the ratio of the
 * medians on a shared machine. Its target is at most 1.02.
 */
#include "bench_common.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

static const tether_scope_opts named = { .name = "bench" };

static int child_nothing(void *arg)
{
    (void)arg;
    return 0;
}

static int child_read_blocked(void *arg)
{
    about_to_block(arg);
    char c;
    return tether_read(g_pipe[0], &c, 1) < 0 ? errno : EIO;
}

/* The two variants of a figure: ctx is &metrics_on or &metrics_off. */
static bool metrics_on = true, metrics_off = false;

static double round_spawn(void *ctx)
{
    tether_metrics_set_enabled(*(bool *)ctx);
    tether_scope *s;
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_open(&s, &named), "tether_scope_open");
    need_rc(tether_spawn(s, child_nothing, NULL, NULL, NULL), "tether_spawn");
    need_rc(tether_scope_join(s, NULL), "tether_scope_join");
    need_rc(tether_scope_free(s), "tether_scope_free");
    return (double)(tether_now() - t0);
}

static double round_cancel(void *ctx)
{
    tether_metrics_set_enabled(*(bool *)ctx);
    struct slot slot;
    tether_scope *s;
    tether_result r;
    atomic_store(&g_ready, 0);
    need_rc(tether_scope_open(&s, &named), "tether_scope_open");
    need_rc(tether_spawn(s, child_read_blocked, &slot, NULL, NULL), "tether_spawn");
    wait_all_blocked(&slot, 1, IN_POLL);
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, &r), "tether_scope_join");
    tether_time_t t1 = tether_now();
    need_rc(tether_scope_free(s), "tether_scope_free");
    need_all_canceled(&r, 1, "metrics_cancel");
    return (double)(t1 - t0);
}

struct fanout {
    bool *on;
    int n;
    struct slot *slots;
};

static double round_fanout(void *ctx)
{
    struct fanout *c = ctx;
    tether_metrics_set_enabled(*c->on);
    tether_scope *s;
    tether_result r;
    atomic_store(&g_ready, 0);
    need_rc(tether_scope_open(&s, &named), "tether_scope_open");
    for (int i = 0; i < c->n; i++)
        need_rc(tether_spawn(s, child_sleep_until_canceled, &c->slots[i], NULL, NULL),
                "tether_spawn");
    wait_all_blocked(c->slots, c->n, IN_FUTEX);
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, &r), "tether_scope_join");
    tether_time_t t1 = tether_now();
    need_rc(tether_scope_free(s), "tether_scope_free");
    need_all_canceled(&r, (unsigned)c->n, "metrics_fanout");
    return (double)(t1 - t0);
}

/* Report one figure's on/off medians and the median of the per-round
 * ratios; free the samples. interleave runs one of each per round, so
 * sample i of both variants comes from round i. */
static void report_pair(const char *on_name, const char *off_name, const char *ratio_name,
                        struct variant v[2])
{
    samples paired = { 0 };
    for (size_t i = 0; i < v[0].s.n && i < v[1].s.n; i++)
        samples_add(&paired, ratio(v[0].s.v[i], v[1].s.v[i]));
    report_latency(on_name, &v[0].s);
    report_latency(off_name, &v[1].s);
    report(ratio_name, median(&paired), "x", 3);
    samples_free(&paired);
    samples_free(&v[0].s);
    samples_free(&v[1].s);
}

void bench_metrics(const struct config *cfg)
{
    bool was = tether_metrics_enabled();
    struct variant spawn[2] = { { .fn = round_spawn, .ctx = &metrics_on },
                                { .fn = round_spawn, .ctx = &metrics_off } };
    interleave("metrics_spawn_join", spawn, 2, cfg->spawn_rounds, cfg->spawn_warmup, cfg);
    report_pair("metrics_spawn_join_on", "metrics_spawn_join_off", "metrics_spawn_join_ratio",
                spawn);

    struct variant cancel[2] = { { .fn = round_cancel, .ctx = &metrics_on },
                                 { .fn = round_cancel, .ctx = &metrics_off } };
    interleave("metrics_cancel_read", cancel, 2, cfg->cancel_rounds, cfg->cancel_warmup, cfg);
    report_pair("metrics_cancel_read_on", "metrics_cancel_read_off", "metrics_cancel_read_ratio",
                cancel);

    struct slot *slots = calloc((size_t)cfg->fanout_children, sizeof *slots);
    if (!slots)
        die("out of memory");
    struct fanout on = { &metrics_on, cfg->fanout_children, slots };
    struct fanout off = { &metrics_off, cfg->fanout_children, slots };
    struct variant fan[2] = { { .fn = round_fanout, .ctx = &on },
                              { .fn = round_fanout, .ctx = &off } };
    /* Three times the fan-out section's rounds: a 2% difference in a 40 ms
     * round is within one round's noise on a shared machine. */
    interleave("metrics_fanout_1000", fan, 2, 3 * cfg->fanout_rounds, cfg->fanout_warmup, cfg);
    report_pair("metrics_fanout_1000_on", "metrics_fanout_1000_off", "metrics_fanout_1000_ratio",
                fan);
    free(slots);
    tether_metrics_set_enabled(was);
}
