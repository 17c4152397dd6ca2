/*
 * The metrics' internal side (metrics.c): the series a scope counts into,
 * the gauges spawn and exit move, the fold at join, and the process-wide
 * counters the drop-ins and retry feed.
 *
 * A scope looks its name's series up once, at open (NULL: not counted),
 * and keeps it: spawn and exit move the live gauges of that series and of
 * the process (relaxed atomics, each set on a cache line of its own, no
 * lock); join folds the rest in once, under the series' lock.
 */
#ifndef TETHER__METRICS_H
#define TETHER__METRICS_H

#include "internal.h"

enum { TETHER__CACHE_LINE = 64 };

/* Children live in one series (or the process), and their peak. */
struct tether__gauges {
    _Alignas(TETHER__CACHE_LINE) _Atomic int64_t live;
    _Atomic int64_t peak;
};

/* What join folds in, under the series' lock. */
struct tether__fold {
    uint64_t joined;
    uint64_t outcomes[TETHER_METRICS_OUTCOMES];
    uint64_t causes[TETHER_METRICS_CAUSES];
    uint64_t buckets[TETHER_METRICS_BUCKETS]; /* per bucket, not cumulative */
    uint64_t conv_count, conv_sum_ns;
    uint64_t hostages, late, left_running;
};

/* One name's series. The name is written before the series is published
 * (metrics.c) and never changes. */
struct tether__series {
    struct tether__gauges children;
    _Alignas(TETHER__CACHE_LINE) _Atomic uint64_t opened;
    _Alignas(TETHER__CACHE_LINE) pthread_mutex_t mu;
    struct tether__fold fold;
    char name[TETHER_NAME_MAX];
};

/* The process-wide children gauges. */
extern TETHER_HIDDEN struct tether__gauges tether__process_gauges;

/* Raise g's peak to n if n is higher. */
static inline void tether__gauge_peak(struct tether__gauges *g, int64_t n)
{
    int64_t p = atomic_load_explicit(&g->peak, memory_order_relaxed);
    while (n > p && !atomic_compare_exchange_weak_explicit(&g->peak, &p, n, memory_order_relaxed,
                                                           memory_order_relaxed))
        ;
}

/* A child of a scope counted in m (NULL: not counted) got its slot. */
static inline void tether__metrics_child_up(struct tether__series *m)
{
    if (!m)
        return;
    struct tether__gauges *g = &m->children;
    tether__gauge_peak(g, atomic_fetch_add_explicit(&g->live, 1, memory_order_relaxed) + 1);
    g = &tether__process_gauges;
    tether__gauge_peak(g, atomic_fetch_add_explicit(&g->live, 1, memory_order_relaxed) + 1);
}

/* That child exited (or its spawn failed). */
static inline void tether__metrics_child_down(struct tether__series *m)
{
    if (!m)
        return;
    atomic_fetch_sub_explicit(&m->children.live, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&tether__process_gauges.live, 1, memory_order_relaxed);
}

/* A scope named `name` opens: its series, counted as opened, or NULL when
 * counting is off. */
TETHER_HIDDEN struct tether__series *tether__metrics_open(const char *name);

/* What a scope counted itself, folded at its join. */
struct tether__scope_tally {
    unsigned hostages;     /* children reported held hostage */
    unsigned halts;        /* tether_task_halt calls */
    unsigned left_running; /* children not done when join returned */
};

/* A scope counted in m was joined with result r. */
TETHER_HIDDEN void tether__metrics_joined(struct tether__series *m, const tether_result *r,
                                          const struct tether__scope_tally *tally);
/* A retry attempt is starting under a token already canceled. */
TETHER_HIDDEN void tether__metrics_retry_after_cancel(void);
/* A blocking call that waited is returning `err` (ECANCELED or ETIMEDOUT;
 * anything else is ignored). */
TETHER_HIDDEN void tether__metrics_call_stopped(int err);
/* The registry's part of the fork handlers (fork.c): take the registry
 * lock; release it in the parent; in the child, release it and start every
 * count from zero. */
TETHER_HIDDEN void tether__metrics_fork_prepare(void);
TETHER_HIDDEN void tether__metrics_fork_parent(void);
TETHER_HIDDEN void tether__metrics_fork_child(void);

#endif /* TETHER__METRICS_H */
