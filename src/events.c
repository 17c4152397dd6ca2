/*
 * Event hooks: one registration per process, read without a lock.
 *
 * The registration is a heap copy published through one atomic pointer.
 * A report runs the hook inside a read section: it picks a reader slot by
 * the parity of `epoch`, counts itself in that slot, then loads the
 * pointer. tether_events_set swaps the pointer, then flips the epoch and
 * waits for the old slot to drain, twice (once per slot), before it frees
 * the old copy. A report that could still hold the old copy counted itself
 * before the swap, in the slot of the epoch's parity then; each replacement
 * flips twice, so that parity is one of the two slots waited for, and a
 * report that starts after a flip counts in the other slot, so neither wait
 * can be starved by new reports. All of it is sequentially consistent.
 */
#define _GNU_SOURCE
#include "events.h"

#include "sys.h"
#include "wait.h"

#include <string.h>

struct tether__events_reg {
    tether_events ev;
};

_Atomic(struct tether__events_reg *) tether__events_reg;
static _Atomic unsigned epoch;
static _Atomic long readers[2];
static pthread_mutex_t set_mu = PTHREAD_MUTEX_INITIALIZER;
/* Read sections of this thread, by slot (depth > 0: inside a hook). */
static _Thread_local long mine[2];
static _Thread_local unsigned depth;

/* Enter a read section; the registration (NULL: none) and its slot. */
static const tether_events *read_begin(unsigned *slot)
{
    *slot = atomic_load(&epoch) & 1u;
    atomic_fetch_add(&readers[*slot], 1);
    mine[*slot]++;
    depth++;
    struct tether__events_reg *reg = atomic_load(&tether__events_reg);
    return reg ? &reg->ev : NULL;
}

static void read_end(unsigned slot)
{
    depth--;
    mine[slot]--;
    atomic_fetch_sub(&readers[slot], 1);
}

/* Wait until no read section counts in `slot`. set_mu held. */
static void drain(unsigned slot)
{
    static const struct timespec nap = { .tv_nsec = 50000 };
    while (atomic_load(&readers[slot]) != 0)
        tether__sys_clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
}

int tether_events_set(const tether_events *ev)
{
    if (depth)
        return EDEADLK;
    struct tether__events_reg *reg = NULL;
    if (ev) {
        reg = tether__malloc(sizeof *reg);
        if (!reg)
            return ENOMEM;
        reg->ev = *ev;
    }
    tether__fork_once();
    tether__lock(&set_mu);
    struct tether__events_reg *old = atomic_exchange(&tether__events_reg, reg);
    for (int flip = 0; flip < 2; flip++)
        drain(atomic_fetch_add(&epoch, 1) & 1u);
    tether__unlock(&set_mu);
    free(old);
    return 0;
}

void tether__events_fork_child(void)
{
    /* Only this thread is left: the parent's other readers are gone, and
     * a tether_events_set in progress there ended with its thread. */
    set_mu = (pthread_mutex_t)PTHREAD_MUTEX_INITIALIZER;
    atomic_store(&readers[0], mine[0]);
    atomic_store(&readers[1], mine[1]);
}

void tether__event_scope_opened(tether_scope *s, const char *name, tether_token *t)
{
    unsigned slot;
    const tether_events *ev = read_begin(&slot);
    if (ev && ev->scope_opened)
        ev->scope_opened(ev->arg, s, name, t);
    read_end(slot);
}

void tether__event_scope_joined(tether_scope *s, const char *name, tether_token *t,
                                const tether_result *r)
{
    unsigned slot;
    const tether_events *ev = read_begin(&slot);
    if (ev && ev->scope_joined)
        ev->scope_joined(ev->arg, s, name, t, r);
    read_end(slot);
}

void tether__event_child_started(tether_scope *s, int index, const char *name, tether_token *t)
{
    unsigned slot;
    const tether_events *ev = read_begin(&slot);
    if (ev && ev->child_started)
        ev->child_started(ev->arg, s, index, name, t);
    read_end(slot);
}

void tether__event_child_exited(tether_scope *s, int index, const char *name, tether_token *t,
                                int rc)
{
    unsigned slot;
    const tether_events *ev = read_begin(&slot);
    if (ev && ev->child_exited)
        ev->child_exited(ev->arg, s, index, name, t, rc);
    read_end(slot);
}

void tether__event_token_canceled(tether_token *t, tether_cause cause, int error)
{
    unsigned slot;
    const tether_events *ev = read_begin(&slot);
    if (ev && ev->token_canceled)
        ev->token_canceled(ev->arg, t, cause, error);
    read_end(slot);
}
