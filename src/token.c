/*
 * The token tree: creation, freeing, cancellation and its propagation,
 * cancellation callbacks (the waits under a token are in token_wait.c).
 *
 * Canceling is two steps, both under the tree lock. The first canceler
 * *claims* the token (an atomic exchange, so exactly one wins and its cause
 * is the one kept), writes the cause and error, then *publishes* by firing
 * the token's wake point (wait.h), so anyone who sees it fired also sees the
 * cause. The waiting layer then wakes the waiters: one call per token,
 * tether__wake_sleepers, which issues a futex wake only where someone sleeps.
 * This file calls the waiting layer; the waiting layer knows no token.
 *
 * Propagation to descendants walks the tree under the same process-wide
 * lock, which also guards linking and unlinking, so the walk needs no
 * recursion (deep trees cannot overflow a small thread stack) and a token
 * cannot be freed while it is being visited. Invariant, whenever the lock is
 * free: a canceled token's descendants are all canceled, and a new child
 * of a canceled token is born canceled.
 * Callbacks are collected during the walk and run after the lock is dropped.
 */
#define _GNU_SOURCE
#include "token.h"

#include "clock.h"
#include "hook.h"
#include "events.h"
#include "timer.h"

static pthread_mutex_t tree_lock = PTHREAD_MUTEX_INITIALIZER;
/* Every root token (no parent), linked through its sibling links, which a
 * root does not otherwise use: the dump starts here (tether__token_visit). */
static tether_token *roots;
/* Signalled (under tree_lock) when a running callback finishes. */
static pthread_cond_t callback_done = PTHREAD_COND_INITIALIZER;

enum callback_state {
    CB_REGISTERED, /* on its token's list */
    CB_TAKEN,      /* on a canceler's run list; `runner` has not started it */
    CB_RUNNING,    /* `runner` is running it */
    CB_SKIPPED,    /* unregistered while taken: the runner frees it unrun */
    CB_DONE,
    CB_DETACHED /* its token was freed before it ran */
};

struct tether_callback {
    tether_callback *next, *prev; /* token's list, while registered */
    tether_callback *run_next;    /* canceler's run list, while running */
    tether_token *token;
    void (*fn)(void *arg);
    void *arg;
    enum callback_state state;
    pthread_t runner;
    bool free_when_done;   /* it unregistered itself while running */
    pthread_t owner;       /* the thread that registered it ... */
    unsigned gen, run_gen; /* ... in this generation; runner's likewise */
};

/*
 * After fork, a callback registered by a thread the child does not have
 * (say, a parent thread blocked in tether_cond_wait) must not run there: it
 * would act on that thread's objects, whose locks and waiters are gone. A
 * thread is in this process if it was here when it registered (or ran) the
 * callback and has been here since: only the thread that forked survives a
 * fork, so it must be the forker, known here since that generation or
 * earlier. `known_since` is the first generation in which a thread touched
 * callbacks, plus one (0: never); fork keeps it for the forker.
 */
static _Thread_local unsigned known_since;
static pthread_t forker; /* set in the fork child, read under the lock */
static unsigned forker_since;

static void note_thread(void)
{
    if (!known_since)
        known_since = tether__fork_generation() + 1;
}

/* Whether thread `who`, seen in generation `gen`, exists in this process. */
static bool thread_here(pthread_t who, unsigned gen)
{
    if (gen == tether__fork_generation())
        return true;
    return pthread_equal(who, forker) && forker_since <= gen;
}

static void tree_lock_take(void)
{
    tether__fork_once();
    tether__lock(&tree_lock);
}

static void tree_lock_drop(void)
{
    tether__unlock(&tree_lock);
}

/* Take t out of its parent's child list, or a root out of the roots. Tree
 * lock held. */
static void unlink_token(tether_token *t)
{
    tether_token *parent = tether__token_parent(t);
    *(t->prev_sibling ? &t->prev_sibling->next_sibling
      : parent        ? &parent->first_child
                      : &roots) = t->next_sibling;
    if (t->next_sibling)
        t->next_sibling->prev_sibling = t->prev_sibling;
}

int tether__token_new(tether_token **out, tether_token *parent, tether_time_t deadline)
{
    if (!out)
        return EINVAL;
    tether__timer_kick(); /* a fork child's inherited deadlines (timer.h) */
    tether_token *t = tether__calloc(1, sizeof *t);
    if (!t)
        return ENOMEM;
    t->deadline = deadline;
    t->deadline_owner = deadline == TETHER_NEVER ? NULL : t;
    if (parent && parent->deadline <= deadline) {
        t->deadline = parent->deadline;
        t->deadline_owner = parent->deadline_owner;
    }
    tether__wake_init(&t->wake, parent ? &parent->wake : NULL,
                      t->deadline != TETHER_NEVER ? TOKEN_HAS_DEADLINE : 0u);
    bool arm = t->deadline_owner == t;

    tree_lock_take();
    tether_token **head = parent ? &parent->first_child : &roots;
    t->next_sibling = *head;
    if (*head)
        (*head)->prev_sibling = t;
    *head = t;
    if (parent && tether__token_canceled(parent)) {
        /* Born canceled. Nobody else can see t yet, so no claim race. */
        atomic_store_explicit(&t->claimed, 1, memory_order_relaxed);
        t->error = parent->error;
        t->root_cause = parent->root_cause;
        t->canceled_at = parent->canceled_at;
        tether__wake_fire(&t->wake, (uint32_t)TETHER_CAUSE_PARENT << TOKEN_CAUSE_SHIFT);
    } else if (arm && tether__timer_arm(t) != 0) {
        unlink_token(t);
        tree_lock_drop();
        tether__wake_release(&t->wake);
        free(t);
        return ENOMEM;
    }
    tree_lock_drop();
    tether__timer_kick();
    *out = t;
    return 0;
}

/* t is going: its registered callbacks will never run. Tree lock held. */
static void detach_callbacks(tether_token *t)
{
    for (tether_callback *cb = t->callbacks; cb; cb = cb->next) {
        cb->state = CB_DETACHED;
        cb->token = NULL;
    }
}

int tether_token_free(tether_token *t)
{
    if (!t)
        return EINVAL;
    tree_lock_take();
    /* Its token_canceled hook holds it: wait, unless the hook is the caller
     * (it would wait for itself) or stayed in the parent of a fork. */
    while (t->event_busy && thread_here(t->event_runner, t->event_gen)) {
        if (pthread_equal(t->event_runner, pthread_self())) {
            tree_lock_drop();
            return EBUSY;
        }
        pthread_cond_wait(&callback_done, &tree_lock);
    }
    /* From inside one of t's own cancel hooks: t is still its owner's (who
     * may be using it, or about to free it); as for the event hook, EBUSY. */
    if (t->first_child || atomic_load_explicit(&t->entered, memory_order_acquire) > 0 ||
        tether__hook_runs_here(t)) {
        tree_lock_drop();
        return EBUSY;
    }
    unlink_token(t);
    tether__timer_disarm(t); /* under the tree lock, where the timer claims */
    detach_callbacks(t);
    tree_lock_drop();
    tether__hook_token_free(t, true); /* its running hooks end first */
    /* Unlinked: no canceler can reach t's wake point any more. */
    tether__wake_release(&t->wake);
    tether__context_release(t);
    free(t);
    return 0;
}

void tether__token_free_tree(tether_token *t)
{
    tree_lock_take();
    unlink_token(t);
    tether_token *n = t;
    for (;;) {
        while (n->first_child)
            n = n->first_child;
        /* n is a leaf and its parent's first child (or t itself). */
        tether_token *up = n == t ? NULL : tether__token_parent(n);
        if (up) {
            up->first_child = n->next_sibling;
            if (n->next_sibling)
                n->next_sibling->prev_sibling = NULL;
        }
        tether__timer_disarm(n);
        detach_callbacks(n);
        tether__hook_token_free(n, false);
        tether__wake_release(&n->wake);
        tether__context_release(n);
        free(n);
        if (!up)
            break;
        n = up;
    }
    tree_lock_drop();
}

static bool claim(tether_token *t)
{
    return atomic_exchange_explicit(&t->claimed, 1, memory_order_acq_rel) == 0;
}

/* Mark t canceled (firing its wake point: whoever sees it fired sees the
 * fields written before); returns its previous state. Its waiters are woken
 * by the caller (see propagate). Tree lock held. */
static uint32_t publish(tether_token *t, tether_cause cause, int error, tether_cause root_cause,
                        tether_time_t at)
{
    t->canceled_at = at;
    t->error = error;
    t->root_cause = root_cause;
    return tether__wake_fire(&t->wake, (uint32_t)cause << TOKEN_CAUSE_SHIFT);
}

/* Move t's registered callbacks to the run list. Tree lock held, t claimed:
 * a claimed token's callbacks are taken (tether_token_on_cancel looks). */
static void take_callbacks(tether_token *t, tether_callback **run)
{
    pthread_t self = pthread_self();
    for (tether_callback *cb = t->callbacks; cb; cb = cb->next) {
        cb->token = NULL;
        if (!thread_here(cb->owner, cb->gen)) {
            cb->state = CB_DETACHED; /* its thread stayed in the parent */
            continue;
        }
        cb->state = CB_TAKEN;
        cb->runner = self;
        cb->run_gen = tether__fork_generation();
        cb->run_next = *run;
        *run = cb;
    }
    t->callbacks = NULL;
}

/*
 * Cancel every descendant of root that nobody else has claimed, iteratively
 * over the first-child/next-sibling links, waking each one's waiters. Tree
 * lock held. Each sleeper waits on its own token's word (wait.h), so each
 * descendant's waiters are woken as it is published.
 */
/* The token after n in a pre-order walk of root's subtree over the
 * first-child/next-sibling links (NULL after the last), skipping n's
 * descendants unless `descend`; *depth follows it. Tree lock held. */
static tether_token *walk_next(const tether_token *root, tether_token *n, unsigned *depth,
                               bool descend)
{
    if (descend && n->first_child) {
        (*depth)++;
        return n->first_child;
    }
    while (n != root && !n->next_sibling) {
        n = tether__token_parent(n);
        (*depth)--;
    }
    return n == root ? NULL : n->next_sibling;
}

static void propagate(tether_token *root, tether_callback **run)
{
    tether_token *n = root->first_child;
    unsigned depth = 1;
    while (n) {
        bool claimed = claim(n);
        if (claimed) {
            tether_token *p = tether__token_parent(n);
            uint32_t old = publish(n, TETHER_CAUSE_PARENT, p->error, p->root_cause, p->canceled_at);
            tether__wake_sleepers(&n->wake, old);
            take_callbacks(n, run);
        }
        /* A subtree claimed by another canceler is that canceler's job. */
        n = walk_next(root, n, &depth, claimed);
    }
}

int tether__token_visit(int (*fn)(void *ctx, const tether_token *t, unsigned depth), void *ctx)
{
    int rc = 0;
    tree_lock_take();
    for (tether_token *root = roots; root && !rc; root = root->next_sibling) {
        tether_token *n = root;
        unsigned depth = 0;
        while (n && !(rc = fn(ctx, n, depth)))
            n = walk_next(root, n, &depth, true);
    }
    tree_lock_drop();
    return rc;
}

static void run_callbacks(tether_callback *cb)
{
    while (cb) {
        tether_callback *next = cb->run_next;
        tree_lock_take();
        if (cb->state == CB_SKIPPED) {
            tree_lock_drop();
            free(cb);
            cb = next;
            continue;
        }
        cb->state = CB_RUNNING;
        tree_lock_drop();
        cb->fn(cb->arg);
        tree_lock_take();
        cb->state = CB_DONE;
        if (cb->free_when_done)
            free(cb);
        pthread_cond_broadcast(&callback_done);
        tree_lock_drop();
        cb = next;
    }
}

/* Cancel t, claimed under the tree lock, which is held and dropped here. */
static int cancel_locked(tether_token *t, tether_cause cause, int error)
{
    /* Claim under the tree lock: then a token found already claimed by the
     * walk has had its whole subtree published by the canceler that claimed
     * it, and when this returns every descendant is canceled. */
    if (!claim(t)) {
        tree_lock_drop();
        return EALREADY;
    }
    note_thread();
    int cancel_errno = cause == TETHER_CAUSE_DEADLINE ? ETIMEDOUT : ECANCELED;
    uint32_t old = publish(t, cause, error ? error : cancel_errno, cause, tether_now());

    tether_callback *run = NULL;
    take_callbacks(t, &run);
    propagate(t, &run);
    /* The event hook runs after the lock is dropped: mark t so that a free
     * waits for it (the timer thread's cancel has no other hold on t). */
    bool report = tether__events_on();
    if (report) {
        t->event_busy = true;
        t->event_runner = pthread_self();
        t->event_gen = tether__fork_generation();
    }
    /* One wake for t's waiters and its near descendants' sleepers (see
     * propagate), once the whole subtree is published, so they wake to a
     * settled tree. Still under the lock: a woken thread may let its owner
     * free t (a scope's join returns, then free), and freeing unlinks t
     * under this lock, so this is the canceler's last touch of t (the timer
     * thread's cancel relies on it too). */
    tether__wake_sleepers(&t->wake, old);
    tree_lock_drop();
    run_callbacks(run);
    if (report) {
        tether__event_token_canceled(t, cause, t->error);
        tree_lock_take();
        t->event_busy = false;
        pthread_cond_broadcast(&callback_done);
        tree_lock_drop();
    }
    return 0;
}

int tether__token_cancel_cause(tether_token *t, tether_cause cause, int error)
{
    tree_lock_take();
    return cancel_locked(t, cause, error);
}

void tether__token_expire_timer(tether_token *t)
{
    tree_lock_take();
    /* Still armed means not freed: freeing disarms under this lock. */
    if (!tether__timer_claim(t)) {
        tree_lock_drop();
        return;
    }
    (void)cancel_locked(t, TETHER_CAUSE_DEADLINE, ETIMEDOUT);
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
    TETHER_ASSERT(tether__token_canceled(t));
    return tether__token_errno(t);
}

int tether__token_poll(tether_token *t)
{
    uint32_t s = atomic_load_explicit(&t->wake.state, memory_order_acquire);
    if (s & TETHER_WAKE_FIRED)
        return tether__token_errno(t);
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
    uint32_t s = atomic_load_explicit(&t->wake.state, memory_order_acquire);
    if (!(s & TETHER_WAKE_FIRED))
        return TETHER_CAUSE_NONE;
    return (tether_cause)((s >> TOKEN_CAUSE_SHIFT) & TOKEN_CAUSE_MASK);
}

tether_cause tether_token_root_cause(const tether_token *t)
{
    if (!t || !tether__token_canceled(t))
        return TETHER_CAUSE_NONE;
    return t->root_cause;
}

int tether_token_error(const tether_token *t)
{
    if (!t || !tether__token_canceled(t))
        return 0;
    return t->error;
}

tether_time_t tether_token_deadline(const tether_token *t)
{
    return t ? t->deadline : TETHER_NEVER;
}

bool tether__token_descends(const tether_token *t, const tether_token *ancestor)
{
    for (; t; t = tether__token_parent(t))
        if (t == ancestor)
            return true;
    return false;
}

int tether_token_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg, tether_callback **out)
{
    if (!t || !fn || !out)
        return EINVAL;
    tether_callback *cb = tether__calloc(1, sizeof *cb);
    if (!cb)
        return ENOMEM;
    cb->fn = fn;
    cb->arg = arg;
    note_thread();
    cb->owner = pthread_self();
    cb->gen = cb->run_gen = tether__fork_generation();
    *out = cb;
    tether__timer_kick(); /* a fork child's inherited deadlines (timer.h) */

    tree_lock_take();
    if (!atomic_load_explicit(&t->claimed, memory_order_relaxed)) {
        cb->state = CB_REGISTERED;
        cb->token = t;
        cb->next = t->callbacks;
        if (t->callbacks)
            t->callbacks->prev = cb;
        t->callbacks = cb;
        tree_lock_drop();
        return 0;
    }
    /* Already canceled and its callbacks already taken: run it here. */
    cb->state = CB_TAKEN;
    cb->runner = pthread_self();
    tree_lock_drop();
    run_callbacks(cb);
    return 0;
}

int tether_token_off_cancel(tether_callback *cb, bool *ran)
{
    if (!cb)
        return EINVAL;
    bool did_run = true;
    tree_lock_take();
    switch (cb->state) {
    case CB_REGISTERED:
        *(cb->prev ? &cb->prev->next : &cb->token->callbacks) = cb->next;
        if (cb->next)
            cb->next->prev = cb->prev;
        did_run = false;
        break;
    case CB_DETACHED: did_run = false; break;
    case CB_TAKEN:
        /* Not started yet: it never will; its runner frees it. */
        cb->state = CB_SKIPPED;
        tree_lock_drop();
        if (ran)
            *ran = false;
        return 0;
    case CB_SKIPPED: TETHER_ASSERT(!"callback unregistered twice"); break;
    case CB_RUNNING:
        if (pthread_equal(cb->runner, pthread_self())) {
            /* Unregistering itself: the runner frees it when fn returns. */
            cb->free_when_done = true;
            tree_lock_drop();
            if (ran)
                *ran = true;
            return 0;
        }
        /* A runner that stayed in the parent (fork) never finishes here. */
        while (cb->state == CB_RUNNING && thread_here(cb->runner, cb->run_gen))
            pthread_cond_wait(&callback_done, &tree_lock);
        break;
    case CB_DONE: break;
    }
    tree_lock_drop();
    free(cb);
    if (ran)
        *ran = did_run;
    return 0;
}

void tether__token_fork_prepare(void)
{
    tree_lock_take();
}

void tether__token_fork_parent(void)
{
    tree_lock_drop();
}

void tether__token_fork_child(void)
{
    /* Threads of the parent may have been waiting on callback_done: the
     * child's copy still counts them, so start it afresh. */
    callback_done = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    forker = pthread_self();
    forker_since = known_since ? known_since - 1 : tether__fork_generation();
    if (!known_since)
        known_since = tether__fork_generation() + 1;
    tree_lock_drop();
}
