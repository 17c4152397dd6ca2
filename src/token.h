/*
 * The token structure and what other files may do with a token. The tree
 * lock is private to token.c; the waiting layer (wait.h) is below it.
 */
#ifndef TETHER__TOKEN_H
#define TETHER__TOKEN_H

#include "internal.h"
#include "wait.h"

#include <signal.h>

/* Owner bits of the token's state word (above the waiting layer's). */
enum {
    TOKEN_HAS_DEADLINE = 1u << 2,
    TOKEN_CAUSE_SHIFT = TETHER_WAKE_OWNER_SHIFT, /* tether_cause lives in bits 8..15 */
    TOKEN_CAUSE_MASK = 0xffu
};

struct tether_token {
    struct tether_wake wake; /* state word, eventfd, and the parent's (wake.up) */
    _Atomic int claimed;     /* the first canceler wins this, then publishes */
    int error;               /* tether_token_error; written before publishing */
    tether_cause root_cause;
    tether_time_t canceled_at;    /* when the cancellation started (root's time) */
    tether_time_t deadline;       /* effective: min over ancestors */
    tether_token *deadline_owner; /* the ancestor-or-self whose deadline it is */
    /* Tree links and the callback list are guarded by the tree lock. */
    tether_token *first_child, *next_sibling, *prev_sibling;
    tether_callback *callbacks;
    tether_hook *hooks;  /* its cancel hooks (hook.c, under the hook lock) */
    _Atomic int entered; /* threads that have it entered */
    size_t timer_pos;    /* 1 + its slot in the timer's heap; 0: not armed
                                 * (timer.c, under the timer lock) */
    /* Who made it, for the dump: a scope (its token), a task (a child's
     * token) or a scope's background parent; NULL for a user's token.
     * Published once with a release store after the owner's name is
     * written; the owner outlives the token's place in the tree. */
    _Atomic(void *) owner;
    unsigned char owner_kind; /* enum tether__owner_kind, written before owner */
    /* Its own request context (context.c): an immutable copy, swapped and
     * followed only under the context lock; NULL: none. */
    _Atomic(char *) context;
    /* Its token_canceled event hook is running in `event_runner` (seen in
     * generation event_gen): free waits for it. Under the tree lock. */
    bool event_busy;
    unsigned event_gen;
    pthread_t event_runner;
};

enum tether__owner_kind { OWNER_NONE, OWNER_SCOPE, OWNER_TASK, OWNER_BACKGROUND };

/* Record who made t (see the owner field); call once, before t is shared. */
static inline void tether__token_set_owner(tether_token *t, enum tether__owner_kind kind,
                                           void *owner)
{
    t->owner_kind = (unsigned char)kind;
    atomic_store_explicit(&t->owner, owner, memory_order_release);
}

/* t's parent, or NULL: the token whose wake point is above t's. */
static inline tether_token *tether__token_parent(const tether_token *t)
{
    _Static_assert(offsetof(tether_token, wake) == 0, "the wake point opens the token");
    return (tether_token *)(void *)t->wake.up;
}

/* Whether t is canceled (acquire: its cause and error are visible). */
static inline bool tether__token_canceled(const tether_token *t)
{
    return tether__wake_fired(&t->wake);
}

/* What t's blocking calls report once it is canceled: ETIMEDOUT when the
 * cancellation started at a deadline, else ECANCELED. */
static inline int tether__token_errno(const tether_token *t)
{
    return t->root_cause == TETHER_CAUSE_DEADLINE ? ETIMEDOUT : ECANCELED;
}

/* tether_token_new as it was before the process root: a NULL parent makes
 * a root of the tree (a shield, a detached scope, the process root itself).
 * out must not be NULL. */
TETHER_HIDDEN int tether__token_new(tether_token **out, tether_token *parent,
                                    tether_time_t deadline);
/* Cancel t with an explicit cause; 0 if this call won, EALREADY if not. May
 * run callbacks; hold no lock a callback could take. */
TETHER_HIDDEN int tether__token_cancel_cause(tether_token *t, tether_cause cause, int error);
/* 0, or ECANCELED/ETIMEDOUT if t is canceled or past its deadline (which it
 * then cancels, so may run callbacks). */
TETHER_HIDDEN int tether__token_poll(tether_token *t);
/* t's effective deadline passed: cancel its owner; returns ETIMEDOUT or the
 * error of an earlier cancellation. */
TETHER_HIDDEN int tether__token_expire(tether_token *t);
/* tether__token_poll the POSIX way: -1 with errno set when t is canceled or
 * past its deadline, else 0. */
static inline int tether__check_or_fail(tether_token *t)
{
    int c = tether__token_poll(t);
    return c ? tether__fail(c) : 0;
}
/* Call fn(ctx, t, depth) for every token in the process, depth-first, each
 * root (a token without parent) at depth 0 followed by its subtree, under
 * the tree lock: fn must not block, take a lock (but the context lock, a
 * leaf: tether__context_own) or touch any token's links.
 * Stops at fn's first nonzero return and returns it; 0 after the last. */
TETHER_HIDDEN int tether__token_visit(int (*fn)(void *ctx, const tether_token *t, unsigned depth),
                                      void *ctx);
/* Whether `t` is `ancestor` or below it. */
TETHER_HIDDEN bool tether__token_descends(const tether_token *t, const tether_token *ancestor);
/* Sleep under t until `until`: 0 then, ECANCELED/ETIMEDOUT on cancellation
 * or deadline, EINTR on a signal. Blocks. */
TETHER_HIDDEN int tether__token_sleep(tether_token *t, tether_time_t until);
/* Poll fds (with one spare slot at the end for t's eventfd), with `sigmask`
 * if not NULL, until one is ready, t is canceled or `until` passes; a passed
 * `until` still gets one look. The number ready (0 at `until`), or -1 with
 * errno. Blocks. */
TETHER_HIDDEN int tether__token_wait_fds(tether_token *t, struct pollfd *fds, nfds_t nfds,
                                         tether_time_t until, const sigset_t *sigmask);
/* One descriptor under t: 1 ready, 0 at `until`, -1 with errno. Blocks. */
TETHER_HIDDEN int tether__token_wait_fd(tether_token *t, int fd, short events, tether_time_t until);
/* A backoff nap under t while a condition cannot be polled for: 1 ms
 * doubling to TETHER_BACKOFF_CAP_NS; 0 when the nap ended, else -1 with
 * errno ECANCELED, ETIMEDOUT or EINTR. *step_ns starts at 0. Blocks. */
TETHER_HIDDEN int tether__token_backoff(tether_token *t, int64_t *step_ns);

/* Unlink t and free it with all its descendants, whatever their entries
 * and children: only for what a fork child inherited from threads it does
 * not have (their callbacks never run). */
TETHER_HIDDEN void tether__token_free_tree(tether_token *t);
/* Request context (context.c). Copy t's own value (not an ancestor's) into
 * buf; false if it has none. Takes the context lock, a leaf: callable under
 * the tree lock. */
TETHER_HIDDEN bool tether__context_own(const tether_token *t, char buf[TETHER_CONTEXT_MAX]);
/* Free t's own value: t is unlinked and nobody else can reach it. */
TETHER_HIDDEN void tether__context_release(tether_token *t);
/* The context lock across fork (fork.c): taken after the tree lock,
 * released in both processes; the child keeps every inherited value. */
TETHER_HIDDEN void tether__context_fork_prepare(void);
TETHER_HIDDEN void tether__context_fork_release(void);

/* The token tree's part of the fork handlers (fork.c): take the tree lock
 * (prepare), release it (parent, child). */
TETHER_HIDDEN void tether__token_fork_prepare(void);
TETHER_HIDDEN void tether__token_fork_parent(void);
TETHER_HIDDEN void tether__token_fork_child(void);
/* signals.c's part of the child's fork handler: the inherited
 * tether_signals installation no longer holds the process's single slot. */
TETHER_HIDDEN void tether__signals_fork_child(void);

#endif /* TETHER__TOKEN_H */
