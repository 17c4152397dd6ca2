/*
 * The waiting layer: how a thread sleeps until a wake point fires, and how
 * whoever fires it wakes the sleepers. It knows nothing of tokens; a token
 * embeds one wake point and fires it when it is canceled.
 *
 * A wake point is a state word (a futex) plus an eventfd made on first need.
 * Sleepers wait on the word and those of the nearest points above it
 * (futex_waitv), so firing a point needs one FUTEX_WAKE for itself and the
 * TETHER_WAIT_SET - 1 levels below it. Pollers wait on the eventfd, which a
 * fired point leaves readable for good (level-triggered).
 */
#ifndef TETHER__WAIT_H
#define TETHER__WAIT_H

#include "internal.h"

#include <signal.h>
#include <time.h>

/* The bits of the state word this layer owns; bits from 8 up are the
 * owner's. */
enum {
    TETHER_WAKE_FIRED = 1u << 0,   /* sticky: the point has fired */
    TETHER_WAKE_WAITERS = 1u << 1, /* someone may sleep on the word */
    TETHER_WAKE_SOLO = 1u << 3,    /* someone sleeps on this word alone */
    TETHER_WAKE_OWNER_SHIFT = 8
};

/* How many words (a point and its nearest ancestors) one sleep covers. */
enum { TETHER_WAIT_SET = 16 };

struct tether_wake {
    _Atomic uint32_t state;
    _Atomic int efd;              /* -1 until first needed */
    struct tether_wake *up;       /* the next point up, or NULL */
};

/* Initialise a point below `up` (or NULL), not fired, with owner bits. */
TETHER_HIDDEN void tether__wake_init(struct tether_wake *w, struct tether_wake *up,
                                     uint32_t owner_bits);
/* Whether w has fired (acquire: what was written before firing is visible). */
static inline bool tether__wake_fired(const struct tether_wake *w)
{
    return atomic_load_explicit(&w->state, memory_order_acquire) & TETHER_WAKE_FIRED;
}
/* Fire w (with extra owner bits); returns the previous state. Never blocks.
 * The caller then calls tether__wake_sleepers. */
TETHER_HIDDEN uint32_t tether__wake_fire(struct tether_wake *w, uint32_t owner_bits);
/* Wake w's pollers, and its sleepers unless a wake of the point `depth`
 * levels above (0: itself) reaches them; `old` is w's state before firing.
 * Never blocks. */
TETHER_HIDDEN void tether__wake_sleepers(struct tether_wake *w, uint32_t old, unsigned depth);
/* Sleep until w (or one of its nearest ancestors) fires, `end` passes, or a
 * spurious wake: 0 (look again) or EINTR. Blocks; hold no lock. */
TETHER_HIDDEN int tether__wake_sleep(struct tether_wake *w, tether_time_t end);
/* One ppoll of fds[0..nfds) plus w's eventfd in the spare slot fds[nfds],
 * with `sigmask` if not NULL, for at most `timeout` (NULL: no limit).
 * Returns what ppoll returns (fds[nfds].revents says whether w fired), or
 * -1 with errno (also when no eventfd could be made). Blocks. */
TETHER_HIDDEN int tether__wake_poll(struct tether_wake *w, struct pollfd *fds, nfds_t nfds,
                                    const struct timespec *timeout, const sigset_t *sigmask);
/* w is gone: keep its eventfd for the next point or close it. Never blocks
 * for long; no sleeper or poller may remain. */
TETHER_HIDDEN void tether__wake_release(struct tether_wake *w);

/* Close the spare eventfds; how many (tether_trim's eventfd part). */
TETHER_HIDDEN int tether__wake_trim(void);

#endif /* TETHER__WAIT_H */
