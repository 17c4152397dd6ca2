/*
 * The waiting layer: how a thread sleeps until a wake point fires, and how
 * whoever fires it wakes the sleepers. It knows nothing of tokens; a token
 * embeds one wake point and fires it when it is canceled.
 *
 * A wake point is a state word (a futex) plus an eventfd made on first need.
 * Sleepers wait on their own word, so firing a point and its descendants
 * costs one FUTEX_WAKE per word that has sleepers.
 * Pollers wait on the eventfd, which a fired point leaves readable for good
 * (level-triggered).
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
    TETHER_WAKE_OWNER_SHIFT = 8
};

struct tether_wake {
    _Atomic uint32_t state;
    /* The eventfd (low 32 bits, -1 until first needed) and the process
     * generation that made it (high 32 bits): one made before a fork is the
     * parent's too, so the child never writes or polls it. */
    _Atomic uint64_t efd;
    struct tether_wake *up; /* the next point up, or NULL */
};

/* The process generation: 0 in the process that loaded tether, one more in
 * each fork child (the atfork child handler counts it). What was made in an
 * earlier generation (an eventfd, a scope's threads, a relay) belongs to an
 * ancestor process. */
TETHER_HIDDEN extern _Atomic unsigned tether__fork_gen;
/* This process's generation: one relaxed load. */
static inline unsigned tether__fork_generation(void)
{
    return atomic_load_explicit(&tether__fork_gen, memory_order_relaxed);
}
/* Register tether's fork handlers (fork.c) on first use of a process-wide
 * lock: prepare takes every such lock, parent and child release them, and
 * the child starts a new generation. Cheap after the first call. */
TETHER_HIDDEN void tether__fork_once(void);
/* The waiting layer's part of the fork handlers: take the eventfd pool's
 * lock (prepare), release it (parent), or release it, count the new
 * generation and close the spare eventfds, the parent's too (child). */
TETHER_HIDDEN void tether__wake_fork_prepare(void);
TETHER_HIDDEN void tether__wake_fork_parent(void);
TETHER_HIDDEN void tether__wake_fork_child(void);
/* Close the spare eventfds (tether_trim's part here); how many. */
TETHER_HIDDEN int tether__wake_trim(void);

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
/* Wake w's pollers and sleepers; `old` is w's state before firing.
 * Never blocks. */
TETHER_HIDDEN void tether__wake_sleepers(struct tether_wake *w, uint32_t old);
/* Sleep until w fires, `end` passes, or a spurious wake: 0 (look again) or
 * EINTR when a signal handler ran (SA_RESTART or not). Blocks; hold no lock. */
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

#endif /* TETHER__WAIT_H */
