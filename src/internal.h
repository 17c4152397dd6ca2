/*
 * Internal interface shared by tether's source files. Nothing here is API.
 *
 * Map of the sources:
 *   time.c      clocks and the outcome/cause names
 *   token.c     the token tree: create/free, cancel propagation, callbacks
 *   current.c   the calling thread's current token (enter/leave, check)
 *   wait.c      the two ways a thread blocks: futex on a token, poll with
 *               the token's eventfd
 *   io.c        cancellable sleep/read/write/poll
 *   scope.c     scopes, tasks, policies, join
 *   sigcancel.c the signal-safe cancel relay
 */
#ifndef TETHER_INTERNAL_H
#define TETHER_INTERNAL_H

#include "tether.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define TETHER_HIDDEN __attribute__((visibility("hidden")))

/* Token state word, also the futex sleepers wait on. */
enum {
    TOKEN_CANCELLED = 1u << 0, /* sticky */
    TOKEN_WAITERS = 1u << 1,   /* someone may sleep on the futex: wake on cancel */
    TOKEN_HAS_DEADLINE = 1u << 2,
    TOKEN_SOLO_WAITERS = 1u << 3, /* someone sleeps on this word alone (no futex_waitv) */
    TOKEN_CAUSE_SHIFT = 8      /* tether_cause lives in bits 8..15 */
};

struct tether_token {
    _Atomic uint32_t state;
    _Atomic int claimed;        /* the first canceller wins this, then publishes */
    int error;                  /* tether_token_error; written before publishing */
    int cancel_errno;           /* ECANCELED or ETIMEDOUT: what primitives report */
    tether_cause root_cause;
    tether_time_t cancelled_at; /* when the cancellation started (root's time) */
    tether_time_t deadline;     /* effective: min over ancestors */
    tether_token *deadline_owner; /* the ancestor-or-self whose deadline it is */
    tether_token *parent;
    /* Tree links and the callback list are guarded by the tree lock. */
    tether_token *first_child, *next_sibling, *prev_sibling;
    tether_callback *callbacks;
    _Atomic int efd;            /* eventfd for I/O waits, -1 until first needed */
    _Atomic int entered;        /* threads that have it entered */
    bool callbacks_fired;       /* a canceller took the callback list (tree lock) */
};

/* token.c */
TETHER_HIDDEN void tether__tree_lock(void);
TETHER_HIDDEN void tether__tree_unlock(void);
/* Cancel t with an explicit cause; 0 if this call won, EALREADY if not. */
TETHER_HIDDEN int tether__token_cancel_cause(tether_token *t, tether_cause cause, int error);
/* The slow path of every check: cancelled or past the deadline. */
TETHER_HIDDEN int tether__token_poll(tether_token *t);
/* Called when a wait saw the effective deadline pass: cancel its owner. */
TETHER_HIDDEN int tether__token_expire(tether_token *t);
/* The token's eventfd, created on first use; -1 and errno on failure. */
TETHER_HIDDEN int tether__token_efd(tether_token *t);
/* Whether `t` is `ancestor` or below it. */
TETHER_HIDDEN bool tether__token_descends(const tether_token *t, const tether_token *ancestor);

static inline bool tether__token_cancelled(const tether_token *t)
{
    return atomic_load_explicit(&t->state, memory_order_acquire) & TOKEN_CANCELLED;
}

/* Fail the POSIX way: errno = e, -1. */
static inline int tether__fail(int e)
{
    errno = e;
    return -1;
}

/* The entry check of every cancellable call that stands in for a POSIX one:
 * -1 with errno set if t (the current token) is cancelled or past its
 * deadline, else 0. */
static inline int tether__check_or_fail(tether_token *t)
{
    int c = tether__token_poll(t);
    return c ? tether__fail(c) : 0;
}

/* current.c */
/* Exported, though not public API, for one reader outside libtether:
 * libtether_interpose.so tests it on every call it forwards, and a load is
 * what keeps that path free (a call to tether_current costs a few percent of
 * a poll). Nothing but libtether writes it. */
TETHER_API extern _Thread_local tether_token *tether__current
    __attribute__((tls_model("initial-exec")));

/* wait.c */
/* A sleeper waits on its token's word and those of its nearest ancestors,
 * up to this many in all (futex_waitv), so a cancel need wake only the word
 * of the token it started at (see propagate in token.c). */
enum { TETHER_WAIT_SET = 16 };
/* Sleep on t's futex until it is cancelled or `until` passes. Returns 0 at
 * `until`, ECANCELED/ETIMEDOUT on cancellation/deadline, EINTR. */
TETHER_HIDDEN int tether__wait_token(tether_token *t, tether_time_t until);
/* Poll fds (with one spare slot at the end for the token's eventfd), with
 * `sigmask` in force if not NULL, until one is ready, t is cancelled or
 * `until` passes; a passed `until` still gets one look. Returns the number
 * ready (0 at `until`), or -1 with errno. */
TETHER_HIDDEN int tether__wait_fds(tether_token *t, struct pollfd *fds, nfds_t nfds,
                                   tether_time_t until, const sigset_t *sigmask);
TETHER_HIDDEN int tether__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                                     tether_time_t until);
TETHER_HIDDEN void tether__futex_wake_all(_Atomic uint32_t *word);

/* time.c */
static inline tether_time_t tether__min_time(tether_time_t a, tether_time_t b)
{
    return a < b ? a : b;
}

/* Nanoseconds (an instant or a duration) as a timespec; negative gives 0. */
static inline struct timespec tether__timespec(int64_t ns)
{
    if (ns < 0)
        ns = 0;
    return (struct timespec){ .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 };
}

/* Resource acquisition, routed through one place so that a build with
 * TETHER_FAULT_INJECTION can make the Nth acquisition fail on demand (see
 * fault.c). Without it, tether__fault_hit is a constant false. */
#ifdef TETHER_FAULT_INJECTION
TETHER_HIDDEN bool tether__fault_hit(void);
/* Test-only controls, exported only from a fault-injection build: the nth
 * acquisition from now fails (0 disarms); how many were seen since arming. */
TETHER_API void tether_fault_arm(long nth);
TETHER_API long tether_fault_seen(void);
#else
static inline bool tether__fault_hit(void)
{
    return false;
}
#endif

static inline void *tether__calloc(size_t n, size_t size)
{
    return tether__fault_hit() ? NULL : calloc(n, size);
}

static inline void *tether__malloc(size_t size)
{
    return tether__fault_hit() ? NULL : malloc(size);
}

static inline int tether__thread_create(pthread_t *thread, const pthread_attr_t *attr,
                                        void *(*fn)(void *), void *arg)
{
    return tether__fault_hit() ? EAGAIN : pthread_create(thread, attr, fn, arg);
}

/* eventfd(0, flags), failing with EMFILE under injection. */
TETHER_HIDDEN int tether__eventfd(int flags);

/* Internal invariant broken: always on, never compiled out. */
#define TETHER_ASSERT(cond) \
    ((cond) ? (void)0 : tether__assert_fail(#cond, __FILE__, __LINE__))
TETHER_HIDDEN _Noreturn void tether__assert_fail(const char *what, const char *file, int line);

#endif /* TETHER_INTERNAL_H */
