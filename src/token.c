/*
 * The token tree: creation, freeing, cancellation and its propagation, and
 * cancellation callbacks.
 *
 * Cancelling is two steps, both under the tree lock. The first canceller
 * *claims* the token (an atomic exchange, so exactly one wins and its cause
 * is the one kept), writes the cause and error, then *publishes* the
 * CANCELLED bit with a release store, so anyone who sees the bit also sees
 * the cause. Publishing wakes the token's eventfd; sleepers are woken with
 * one futex wake per cancellation (see propagate).
 *
 * Propagation to descendants walks the tree under the same process-wide
 * lock, which also guards linking and unlinking, so the walk needs no
 * recursion (deep trees cannot overflow a small thread stack) and a token
 * cannot be freed while it is being visited. Invariant, whenever the lock is
 * free: a cancelled token's descendants are all cancelled, and a new child
 * of a cancelled token is born cancelled.
 * Callbacks are collected during the walk and run after the lock is dropped.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/eventfd.h>
#include <unistd.h>

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;

/* Eventfds of freed tokens, kept for the next token that needs one so that
 * freeing a scope's children costs no close(2) each (tether_trim empties
 * it). Guarded by the tree lock. A freed token's eventfd has no user left:
 * waiters have the token entered, which forbids freeing it, and publishing
 * happens under the tree lock. */
enum { SPARE_EFDS = 4 };
static int spare_efd[SPARE_EFDS];
static int spare_efds;
/* Signalled (under tree_lock) when a running callback finishes. */
static pthread_cond_t callback_done = PTHREAD_COND_INITIALIZER;

enum callback_state {
    CB_REGISTERED, /* on its token's list */
    CB_TAKEN,      /* on a canceller's run list; `runner` has not started it */
    CB_RUNNING,    /* `runner` is running it */
    CB_SKIPPED,    /* unregistered while taken: the runner frees it unrun */
    CB_DONE,
    CB_DETACHED    /* its token was freed before it ran */
};

struct tether_callback {
    tether_callback *next, *prev; /* token's list, while registered */
    tether_callback *run_next;    /* canceller's run list, while running */
    tether_token *token;
    void (*fn)(void *arg);
    void *arg;
    enum callback_state state;
    pthread_t runner;
    bool free_when_done;          /* it unregistered itself while running */
};

void tether__tree_lock(void)
{
    int rc = pthread_mutex_lock(&tree_lock);
    TETHER_ASSERT(rc == 0);
}

void tether__tree_unlock(void)
{
    int rc = pthread_mutex_unlock(&tree_lock);
    TETHER_ASSERT(rc == 0);
}

int tether_token_new(tether_token **out, tether_token *parent, tether_time_t deadline)
{
    if (!out)
        return EINVAL;
    tether_token *t = tether__calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    atomic_init(&t->efd, -1);
    t->deadline = deadline;
    t->deadline_owner = deadline == TETHER_NEVER ? NULL : t;
    if (parent && parent->deadline <= deadline) {
        t->deadline = parent->deadline;
        t->deadline_owner = parent->deadline_owner;
    }
    atomic_init(&t->state, t->deadline != TETHER_NEVER ? TOKEN_HAS_DEADLINE : 0u);
    if (!parent) {
        *out = t;
        return 0;
    }

    tether__tree_lock();
    t->parent = parent;
    t->next_sibling = parent->first_child;
    if (parent->first_child)
        parent->first_child->prev_sibling = t;
    parent->first_child = t;
    if (tether__token_cancelled(parent)) {
        /* Born cancelled. Nobody else can see t yet, so no claim race. */
        atomic_store_explicit(&t->claimed, 1, memory_order_relaxed);
        t->error = parent->error;
        t->cancel_errno = parent->cancel_errno;
        t->root_cause = parent->root_cause;
        t->cancelled_at = parent->cancelled_at;
        t->callbacks_fired = true;
        atomic_fetch_or_explicit(&t->state,
                                 TOKEN_CANCELLED | (uint32_t)TETHER_CAUSE_PARENT << TOKEN_CAUSE_SHIFT,
                                 memory_order_release);
    }
    tether__tree_unlock();
    *out = t;
    return 0;
}

int tether_token_free(tether_token *t)
{
    if (!t)
        return EINVAL;
    tether__tree_lock();
    if (t->first_child || atomic_load_explicit(&t->entered, memory_order_acquire) > 0) {
        tether__tree_unlock();
        return EBUSY;
    }
    if (t->parent) {
        if (t->prev_sibling)
            t->prev_sibling->next_sibling = t->next_sibling;
        else
            t->parent->first_child = t->next_sibling;
        if (t->next_sibling)
            t->next_sibling->prev_sibling = t->prev_sibling;
    }
    for (tether_callback *cb = t->callbacks; cb; cb = cb->next) {
        cb->state = CB_DETACHED;
        cb->token = NULL;
    }
    int efd = atomic_load_explicit(&t->efd, memory_order_relaxed);
    if (efd >= 0 && spare_efds < SPARE_EFDS) {
        spare_efd[spare_efds++] = efd;
        efd = -1;
    }
    tether__tree_unlock();
    if (efd >= 0)
        close(efd);
    free(t);
    return 0;
}

int tether_trim(void)
{
    int fds[SPARE_EFDS];
    tether__tree_lock();
    int n = spare_efds;
    for (int i = 0; i < n; i++)
        fds[i] = spare_efd[i];
    spare_efds = 0;
    tether__tree_unlock();
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return n;
}

/* At exit, so that fd-tracking tools (valgrind --track-fds) see none left. */
__attribute__((destructor)) static void close_spare_efds(void)
{
    tether_trim();
}

static bool claim(tether_token *t)
{
    return atomic_exchange_explicit(&t->claimed, 1, memory_order_acq_rel) == 0;
}

/* Mark t cancelled; returns its previous state. Wakes its I/O waiters
 * (eventfd); its sleepers are woken by the caller (see propagate). */
static uint32_t publish(tether_token *t, tether_cause cause, int error, int cancel_errno,
                        tether_cause root_cause, tether_time_t at)
{
    t->cancelled_at = at;
    t->error = error;
    t->cancel_errno = cancel_errno;
    t->root_cause = root_cause;
    /* Release: whoever sees CANCELLED sees the fields above. The eventfd
     * is created under the tree lock, as this runs, so either it exists now
     * or its creator will see CANCELLED and write it itself. */
    uint32_t old = atomic_fetch_or_explicit(&t->state,
                                            TOKEN_CANCELLED | (uint32_t)cause << TOKEN_CAUSE_SHIFT,
                                            memory_order_release);
    int efd = atomic_load_explicit(&t->efd, memory_order_relaxed);
    if (efd >= 0) {
        uint64_t one = 1;
        /* Can only fail if the counter is near overflow: still readable. */
        ssize_t n = write(efd, &one, sizeof one);
        (void)n;
    }
    return old;
}

/* Move t's registered callbacks to the run list. Tree lock held. */
static void take_callbacks(tether_token *t, tether_callback **run)
{
    t->callbacks_fired = true;
    pthread_t self = pthread_self();
    for (tether_callback *cb = t->callbacks; cb; cb = cb->next) {
        cb->state = CB_TAKEN;
        cb->runner = self;
        cb->token = NULL;
        cb->run_next = *run;
        *run = cb;
    }
    t->callbacks = NULL;
}

/*
 * Cancel every descendant of root that nobody else has claimed, iteratively
 * over the first-child/next-sibling links. Tree lock held.
 *
 * Sleepers wait on their token's word and on the words of up to
 * TETHER_WAIT_SET - 1 ancestors (wait.c), so a descendant fewer than
 * TETHER_WAIT_SET levels below root needs no wake of its own: the one wake
 * of root's word, after this walk, reaches it. Deeper descendants, and words
 * with solo sleepers (no futex_waitv), are woken here.
 */
static void propagate(tether_token *root, tether_callback **run)
{
    tether_token *n = root->first_child;
    int depth = 1;
    while (n) {
        if (claim(n)) {
            tether_token *p = n->parent;
            uint32_t old = publish(n, TETHER_CAUSE_PARENT, p->error, p->cancel_errno,
                                   p->root_cause, p->cancelled_at);
            uint32_t wake_if = depth >= TETHER_WAIT_SET ? TOKEN_WAITERS : TOKEN_SOLO_WAITERS;
            if (old & wake_if)
                tether__futex_wake_all(&n->state);
            take_callbacks(n, run);
            if (n->first_child) {
                n = n->first_child;
                depth++;
                continue;
            }
        }
        /* A subtree claimed by another canceller is that canceller's job. */
        while (n != root && !n->next_sibling) {
            n = n->parent;
            depth--;
        }
        n = n == root ? NULL : n->next_sibling;
    }
}

static void run_callbacks(tether_callback *cb)
{
    while (cb) {
        tether_callback *next = cb->run_next;
        tether__tree_lock();
        if (cb->state == CB_SKIPPED) {
            tether__tree_unlock();
            free(cb);
            cb = next;
            continue;
        }
        cb->state = CB_RUNNING;
        tether__tree_unlock();
        cb->fn(cb->arg);
        tether__tree_lock();
        cb->state = CB_DONE;
        if (cb->free_when_done)
            free(cb);
        pthread_cond_broadcast(&callback_done);
        tether__tree_unlock();
        cb = next;
    }
}

int tether__token_cancel_cause(tether_token *t, tether_cause cause, int error)
{
    /* Claim under the tree lock: then a token found already claimed by the
     * walk has had its whole subtree published by the canceller that claimed
     * it, and when this returns every descendant is cancelled. */
    tether__tree_lock();
    if (!claim(t)) {
        tether__tree_unlock();
        return EALREADY;
    }
    int cancel_errno = cause == TETHER_CAUSE_DEADLINE ? ETIMEDOUT : ECANCELED;
    publish(t, cause, error ? error : cancel_errno, cancel_errno, cause, tether_now());

    tether_callback *run = NULL;
    take_callbacks(t, &run);
    propagate(t, &run);
    tether__tree_unlock();
    /* One wake for t's sleepers and its near descendants' (see propagate),
     * once the whole subtree is published, so they wake to a settled tree.
     * t is the caller's, alive until this returns. */
    if (atomic_load(&t->state) & TOKEN_WAITERS)
        tether__futex_wake_all(&t->state);
    run_callbacks(run);
    return 0;
}

int tether_token_cancel(tether_token *t, int error)
{
    if (!t)
        return EINVAL;
    tether__token_cancel_cause(t, TETHER_CAUSE_EXPLICIT, error);
    return 0;
}

int tether__token_expire(tether_token *t)
{
    TETHER_ASSERT(t->deadline_owner != NULL);
    /* Won or lost, t (below the owner) is published when this returns. */
    tether__token_cancel_cause(t->deadline_owner, TETHER_CAUSE_DEADLINE, ETIMEDOUT);
    TETHER_ASSERT(tether__token_cancelled(t));
    return t->cancel_errno;
}

int tether__token_poll(tether_token *t)
{
    uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
    if (s & TOKEN_CANCELLED)
        return t->cancel_errno;
    if ((s & TOKEN_HAS_DEADLINE) && tether_now() >= t->deadline)
        return tether__token_expire(t);
    return 0;
}

int tether_token_check(tether_token *t)
{
    if (!t)
        return EINVAL;
    return tether__token_poll(t);
}

tether_cause tether_token_cause(const tether_token *t)
{
    if (!t)
        return TETHER_CAUSE_NONE;
    uint32_t s = atomic_load_explicit(&t->state, memory_order_acquire);
    if (!(s & TOKEN_CANCELLED))
        return TETHER_CAUSE_NONE;
    return (tether_cause)((s >> TOKEN_CAUSE_SHIFT) & 0xff);
}

tether_cause tether_token_root_cause(const tether_token *t)
{
    if (!t || !tether__token_cancelled(t))
        return TETHER_CAUSE_NONE;
    return t->root_cause;
}

int tether_token_error(const tether_token *t)
{
    if (!t || !tether__token_cancelled(t))
        return 0;
    return t->error;
}

tether_time_t tether_token_deadline(const tether_token *t)
{
    return t ? t->deadline : TETHER_NEVER;
}

bool tether__token_descends(const tether_token *t, const tether_token *ancestor)
{
    for (; t; t = t->parent)
        if (t == ancestor)
            return true;
    return false;
}

int tether__token_efd(tether_token *t)
{
    int fd = atomic_load_explicit(&t->efd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    tether__tree_lock();
    fd = atomic_load_explicit(&t->efd, memory_order_relaxed);
    if (fd < 0) {
        if (spare_efds > 0) {
            /* A spare one: reset the count its old token's cancel left. */
            fd = spare_efd[--spare_efds];
            uint64_t count;
            ssize_t n = read(fd, &count, sizeof count);
            (void)n; /* EAGAIN when it was never written */
        } else if ((fd = tether__eventfd(EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
            int e = errno;
            tether__tree_unlock();
            errno = e;
            return -1;
        }
        atomic_store(&t->efd, fd);
        if (atomic_load(&t->state) & TOKEN_CANCELLED) {
            uint64_t one = 1;
            ssize_t n = write(fd, &one, sizeof one);
            (void)n;
        }
    }
    tether__tree_unlock();
    return fd;
}

int tether_token_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg,
                           tether_callback **out)
{
    if (!t || !fn || !out)
        return EINVAL;
    tether_callback *cb = tether__calloc(1, sizeof *cb);
    if (!cb)
        return ENOMEM;
    cb->fn = fn;
    cb->arg = arg;
    *out = cb;

    tether__tree_lock();
    if (!t->callbacks_fired) {
        cb->state = CB_REGISTERED;
        cb->token = t;
        cb->next = t->callbacks;
        if (t->callbacks)
            t->callbacks->prev = cb;
        t->callbacks = cb;
        tether__tree_unlock();
        return 0;
    }
    /* Already cancelled and its callbacks already taken: run it here. */
    cb->state = CB_TAKEN;
    cb->runner = pthread_self();
    tether__tree_unlock();
    run_callbacks(cb);
    return 0;
}

int tether_token_off_cancel(tether_callback *cb, bool *ran)
{
    if (!cb)
        return EINVAL;
    bool did_run = true;
    tether__tree_lock();
    switch (cb->state) {
    case CB_REGISTERED: {
        tether_token *t = cb->token;
        if (cb->prev)
            cb->prev->next = cb->next;
        else
            t->callbacks = cb->next;
        if (cb->next)
            cb->next->prev = cb->prev;
        did_run = false;
        break;
    }
    case CB_DETACHED:
        did_run = false;
        break;
    case CB_TAKEN:
        /* Not started yet: it never will; its runner frees it. */
        cb->state = CB_SKIPPED;
        tether__tree_unlock();
        if (ran)
            *ran = false;
        return 0;
    case CB_SKIPPED:
        TETHER_ASSERT(!"callback unregistered twice");
        break;
    case CB_RUNNING:
        if (pthread_equal(cb->runner, pthread_self())) {
            /* Unregistering itself: the runner frees it when fn returns. */
            cb->free_when_done = true;
            tether__tree_unlock();
            if (ran)
                *ran = true;
            return 0;
        }
        while (cb->state == CB_RUNNING)
            pthread_cond_wait(&callback_done, &tree_lock);
        break;
    case CB_DONE:
        break;
    }
    tether__tree_unlock();
    free(cb);
    if (ran)
        *ran = did_run;
    return 0;
}
