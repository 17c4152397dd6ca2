/*
 * Metrics: the bounded registry of scope names, the fold at join, the
 * snapshot, and the Prometheus text format.
 *
 * The registry is a fixed pool of series and an open-addressing table of
 * pointers into it. A lookup reads the table without a lock (acquire loads;
 * a published series' name never changes); the registry lock is taken only
 * to insert a name not seen before, and once the pool is full every new
 * name maps to the overflow series. Nothing is ever removed, so a pointer a
 * scope keeps from its open stays valid for good.
 */
#define _GNU_SOURCE
#include "metrics.h"
#include "wait.h"

#include <stdio.h>
#include <string.h>

_Static_assert(sizeof TETHER_METRICS_OVERFLOW_NAME > TETHER_NAME_MAX,
               "the overflow name cannot be a scope name");
_Static_assert(TETHER_METRICS_OUTCOMES == TETHER_OUTCOME_DEADLINE_EXCEEDED + 1, "outcomes");
_Static_assert(TETHER_METRICS_CAUSES == TETHER_CAUSE_SIGNAL + 1, "causes");

enum { TABLE_SLOTS = 256 }; /* a power of two, at least twice the names */
_Static_assert(TABLE_SLOTS >= 2 * TETHER_METRICS_NAMES, "table load");

/* The histogram's bounds (prometheus.c writes the same as `le` labels). */
static const int64_t bucket_le_ns[TETHER_METRICS_BUCKETS] = {
    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,   25000000,
    50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 5000000000, 10000000000
};

struct tether__gauges tether__process_gauges;
static _Atomic bool metrics_on = true;

/* Counters the process keeps outside any scope: rare events, one line. */
static struct {
    _Alignas(TETHER__CACHE_LINE) _Atomic uint64_t retries_after_cancel;
    _Atomic uint64_t stopped_canceled, stopped_deadline;
} process;

/* pool[TETHER_METRICS_NAMES] is the overflow series. */
static struct tether__series pool[TETHER_METRICS_NAMES + 1];
static _Atomic(struct tether__series *) table[TABLE_SLOTS];
static _Atomic unsigned registered; /* pool entries published */
static _Atomic bool overflow_used;  /* a scope counted into the overflow */
static pthread_mutex_t registry_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t series_init = PTHREAD_ONCE_INIT;

static void init_series_locks(void)
{
    for (size_t i = 0; i <= TETHER_METRICS_NAMES; i++)
        pthread_mutex_init(&pool[i].mu, NULL);
    tether__fork_once();
}

/* FNV-1a over the name. */
static uint32_t hash_name(const char *name)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

/* Find name's series from slot i on; NULL with *i at the free slot when it
 * is not there. */
static struct tether__series *probe(const char *name, uint32_t *i)
{
    for (;; *i = (*i + 1) & (TABLE_SLOTS - 1)) {
        struct tether__series *m = atomic_load_explicit(&table[*i], memory_order_acquire);
        if (!m || strcmp(m->name, name) == 0)
            return m;
    }
}

static struct tether__series *insert(const char *name, uint32_t h)
{
    tether__lock(&registry_mu);
    uint32_t i = h;
    struct tether__series *m = probe(name, &i); /* another thread may have won */
    if (!m) {
        unsigned n = atomic_load_explicit(&registered, memory_order_relaxed);
        if (n < TETHER_METRICS_NAMES) {
            m = &pool[n];
            memcpy(m->name, name, strlen(name) + 1);
            atomic_store_explicit(&table[i], m, memory_order_release);
            atomic_store_explicit(&registered, n + 1, memory_order_release);
        } else {
            m = &pool[TETHER_METRICS_NAMES];
        }
    }
    tether__unlock(&registry_mu);
    return m;
}

struct tether__series *tether__metrics_open(const char *name)
{
    if (!atomic_load_explicit(&metrics_on, memory_order_relaxed))
        return NULL;
    pthread_once(&series_init, init_series_locks);
    uint32_t h = hash_name(name) & (TABLE_SLOTS - 1), i = h;
    struct tether__series *m = probe(name, &i);
    if (!m)
        m = insert(name, h);
    if (m == &pool[TETHER_METRICS_NAMES] &&
        !atomic_load_explicit(&overflow_used, memory_order_relaxed))
        atomic_store_explicit(&overflow_used, true, memory_order_relaxed);
    atomic_fetch_add_explicit(&m->opened, 1, memory_order_relaxed);
    return m;
}

static unsigned bucket_of(int64_t ns)
{
    unsigned b = 0;
    while (b < TETHER_METRICS_BUCKETS && ns > bucket_le_ns[b])
        b++;
    return b; /* TETHER_METRICS_BUCKETS: only in +Inf */
}

void tether__metrics_joined(struct tether__series *m, const tether_result *r,
                            const struct tether__scope_tally *tally)
{
    if (!m)
        return;
    unsigned outcome = (unsigned)r->outcome, cause = (unsigned)r->cause;
    bool converged = r->cause != TETHER_CAUSE_NONE;
    unsigned b = converged ? bucket_of(r->convergence_ns) : 0;
    tether__lock(&m->mu);
    struct tether__fold *f = &m->fold;
    f->joined++;
    if (outcome < TETHER_METRICS_OUTCOMES)
        f->outcomes[outcome]++;
    if (converged && cause < TETHER_METRICS_CAUSES) {
        f->causes[cause]++;
        if (b < TETHER_METRICS_BUCKETS)
            f->buckets[b]++;
        f->conv_count++;
        f->conv_sum_ns += (uint64_t)r->convergence_ns;
    }
    f->causes[TETHER_CAUSE_HALTED] += tally->halts;
    f->hostages += tally->hostages;
    f->late += r->late_succeeded;
    f->left_running += tally->left_running;
    tether__unlock(&m->mu);
}

void tether__metrics_retry_after_cancel(void)
{
    if (atomic_load_explicit(&metrics_on, memory_order_relaxed))
        atomic_fetch_add_explicit(&process.retries_after_cancel, 1, memory_order_relaxed);
}

void tether__metrics_call_stopped(int err)
{
    if (!atomic_load_explicit(&metrics_on, memory_order_relaxed))
        return;
    if (err == ECANCELED)
        atomic_fetch_add_explicit(&process.stopped_canceled, 1, memory_order_relaxed);
    else if (err == ETIMEDOUT)
        atomic_fetch_add_explicit(&process.stopped_deadline, 1, memory_order_relaxed);
}

bool tether_metrics_set_enabled(bool on)
{
    return atomic_exchange_explicit(&metrics_on, on, memory_order_relaxed);
}

bool tether_metrics_enabled(void)
{
    return atomic_load_explicit(&metrics_on, memory_order_relaxed);
}

/* ---------------------------------------------------------------------- */
/* Snapshot                                                               */

/* Copy m into out. The fold is read under the series lock, and `opened`
 * after it: a scope in the fold was opened before, so opened >= joined. */
static void read_series(struct tether__series *m, tether_metrics_series *out)
{
    memset(out, 0, sizeof *out);
    tether__lock(&m->mu);
    struct tether__fold f = m->fold;
    tether__unlock(&m->mu);
    out->scopes_opened = atomic_load_explicit(&m->opened, memory_order_relaxed);
    out->scopes_live = out->scopes_opened - f.joined;
    out->children_live = atomic_load_explicit(&m->children.live, memory_order_relaxed);
    out->children_peak = atomic_load_explicit(&m->children.peak, memory_order_relaxed);
    memcpy(out->outcomes, f.outcomes, sizeof out->outcomes);
    memcpy(out->cancellations, f.causes, sizeof out->cancellations);
    uint64_t below = 0;
    for (unsigned b = 0; b < TETHER_METRICS_BUCKETS; b++)
        out->convergence_le[b] = below += f.buckets[b];
    out->convergence_count = f.conv_count;
    out->convergence_sum_ns = f.conv_sum_ns;
    out->hostages = f.hostages;
    out->late_successes = f.late;
    out->children_left_running = f.left_running;
}

/* Add s's counters and scopes_live into sum (not the gauges). */
static void add_series(tether_metrics_series *sum, const tether_metrics_series *s)
{
    sum->scopes_opened += s->scopes_opened;
    sum->scopes_live += s->scopes_live;
    for (unsigned i = 0; i < TETHER_METRICS_OUTCOMES; i++)
        sum->outcomes[i] += s->outcomes[i];
    for (unsigned i = 0; i < TETHER_METRICS_CAUSES; i++)
        sum->cancellations[i] += s->cancellations[i];
    for (unsigned b = 0; b < TETHER_METRICS_BUCKETS; b++)
        sum->convergence_le[b] += s->convergence_le[b];
    sum->convergence_count += s->convergence_count;
    sum->convergence_sum_ns += s->convergence_sum_ns;
    sum->hostages += s->hostages;
    sum->late_successes += s->late_successes;
    sum->children_left_running += s->children_left_running;
}

int tether_metrics_snapshot_take(tether_metrics_snapshot *snap)
{
    if (!snap)
        return EINVAL;
    memset(snap, 0, sizeof *snap);
    memcpy(snap->bucket_le_ns, bucket_le_ns, sizeof bucket_le_ns);
    snap->enabled = tether_metrics_enabled();
    pthread_once(&series_init, init_series_locks);
    unsigned n = atomic_load_explicit(&registered, memory_order_acquire);
    bool overflow = atomic_load_explicit(&overflow_used, memory_order_relaxed);
    size_t count = n + (overflow ? 1 : 0);
    if (count) {
        snap->series = tether__calloc(count, sizeof *snap->series);
        if (!snap->series)
            return ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        tether_metrics_series *s = &snap->series[i];
        struct tether__series *m = i < n ? &pool[i] : &pool[TETHER_METRICS_NAMES];
        read_series(m, s);
        if (i < n) {
            memcpy(s->scope, m->name, sizeof m->name);
        } else {
            s->overflow = true;
            memcpy(s->scope, TETHER_METRICS_OVERFLOW_NAME, sizeof s->scope);
        }
        add_series(&snap->process, s);
    }
    snap->count = count;
    snap->process.children_live =
        atomic_load_explicit(&tether__process_gauges.live, memory_order_relaxed);
    snap->process.children_peak =
        atomic_load_explicit(&tether__process_gauges.peak, memory_order_relaxed);
    snap->retries_after_cancel =
        atomic_load_explicit(&process.retries_after_cancel, memory_order_relaxed);
    snap->calls_stopped_canceled =
        atomic_load_explicit(&process.stopped_canceled, memory_order_relaxed);
    snap->calls_stopped_deadline =
        atomic_load_explicit(&process.stopped_deadline, memory_order_relaxed);
    return 0;
}

void tether_metrics_snapshot_release(tether_metrics_snapshot *snap)
{
    if (!snap)
        return;
    free(snap->series);
    snap->series = NULL;
    snap->count = 0;
}

/* ---------------------------------------------------------------------- */
/* Fork                                                                   */

void tether__metrics_fork_prepare(void)
{
    tether__lock(&registry_mu);
}

void tether__metrics_fork_parent(void)
{
    tether__unlock(&registry_mu);
}

void tether__metrics_fork_child(void)
{
    /* Another thread of the parent may have held a series' lock (in a
     * join's fold or a snapshot): start every lock and count afresh. The
     * names stay registered. */
    for (size_t i = 0; i <= TETHER_METRICS_NAMES; i++) {
        struct tether__series *m = &pool[i];
        m->mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
        memset(&m->fold, 0, sizeof m->fold);
        atomic_store_explicit(&m->opened, 0, memory_order_relaxed);
        atomic_store_explicit(&m->children.live, 0, memory_order_relaxed);
        atomic_store_explicit(&m->children.peak, 0, memory_order_relaxed);
    }
    atomic_store_explicit(&overflow_used, false, memory_order_relaxed);
    atomic_store_explicit(&tether__process_gauges.live, 0, memory_order_relaxed);
    atomic_store_explicit(&tether__process_gauges.peak, 0, memory_order_relaxed);
    atomic_store_explicit(&process.retries_after_cancel, 0, memory_order_relaxed);
    atomic_store_explicit(&process.stopped_canceled, 0, memory_order_relaxed);
    atomic_store_explicit(&process.stopped_deadline, 0, memory_order_relaxed);
    tether__unlock(&registry_mu);
}
