/*
 * Scopes: one thread per child, policies, strict background children, and a
 * join that classifies how the scope ended.
 *
 * Locking: s->mu guards the scope's counters, lists and outcome bookkeeping.
 * It may be held while taking the tree lock (creating tokens), never the
 * other way round, and no token is ever canceled while s->mu is held,
 * because canceling runs user callbacks that may call back into the scope.
 *
 * Spawning reserves a slot under the lock (live_fg or live_bg, and spawning)
 * and creates the thread outside it; join waits until nothing is live and no
 * spawn is half-done, so it never reads a thread id that is still being
 * written.
 */
#define _GNU_SOURCE
#include "scope.h"

#include "clock.h"
#include "sys.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* What the kernel keeps of a thread name: 15 bytes and the NUL. */
enum { THREAD_NAME_BYTES = 16 };

/* Keep at most TETHER_NAME_MAX - 1 bytes of src and never read past its
 * first NUL or past those bytes: a name need not be terminated within
 * them, and may end right before an unmapped page. */
static void copy_name(char dst[TETHER_NAME_MAX], const char *src)
{
    size_t n = src ? strnlen(src, TETHER_NAME_MAX - 1) : 0;
    if (n)
        memcpy(dst, src, n);
    dst[n] = '\0';
}

/* ---------------------------------------------------------------------- */
/* Lineage: which thread is whose child                                   */

/* The task the calling thread runs, if tether started it. */
static _Thread_local tether_task *self_task;

/* Guards every scope's `opener` and opened_next and every task's
 * `opened` after the scope was published. Taken only by threads tether
 * started (open, join, free, task_wait/halt, exit) and when freeing a
 * scope such a thread opened; never with another lock held. */
static pthread_mutex_t lineage_mu = PTHREAD_MUTEX_INITIALIZER;

static void lineage_link(tether_scope *s)
{
    tether_task *t = self_task;
    if (!t)
        return;
    s->opened_by_child = true;
    tether__lock(&lineage_mu);
    s->opener = t;
    s->opened_next = t->opened;
    t->opened = s;
    atomic_fetch_add_explicit(&t->opened_live, 1, memory_order_relaxed);
    tether__unlock(&lineage_mu);
}

void tether__scope_forget_opener(tether_scope *s)
{
    if (!s->opened_by_child)
        return;
    tether__lock(&lineage_mu);
    tether_task *t = s->opener;
    if (t) {
        /* A child keeps few scopes open at once: a walk is cheap. */
        tether_scope **pp = &t->opened;
        while (*pp != s)
            pp = &(*pp)->opened_next;
        *pp = s->opened_next;
        atomic_fetch_sub_explicit(&t->opened_live, 1, memory_order_relaxed);
        s->opener = NULL;
    }
    tether__unlock(&lineage_mu);
}

/* The calling child is exiting: scopes it opened and did not free outlive
 * it and are no longer any scope's descendants (its own join no longer
 * waits for them). Only this thread adds to its list, so a zero count is
 * final. */
static void lineage_exit(tether_task *t)
{
    if (atomic_load_explicit(&t->opened_live, memory_order_relaxed) == 0)
        return;
    tether__lock(&lineage_mu);
    for (tether_scope *s = t->opened; s; s = s->opened_next)
        s->opener = NULL;
    t->opened = NULL;
    atomic_store_explicit(&t->opened_live, 0, memory_order_relaxed);
    tether__unlock(&lineage_mu);
}

void tether__lineage_fork_prepare(void)
{
    tether__lock(&lineage_mu);
}

void tether__lineage_fork_release(void)
{
    tether__unlock(&lineage_mu);
}

bool tether__caller_descends(const tether_scope *s, const tether_task *task)
{
    tether_task *t = self_task;
    if (!t)
        return false;
    bool found = false;
    /* Each link is alive: the calling thread's task and its scope while it
     * runs, an opener while a scope it opened lists it (lineage_exit). */
    tether__lock(&lineage_mu);
    for (; t && !found; t = t->scope->opener)
        found = t == task || t->scope == s;
    tether__unlock(&lineage_mu);
    return found;
}

int tether_scope_open(tether_scope **out, const tether_scope_opts *opts)
{
    static const tether_scope_opts defaults;
    if (!out)
        return EINVAL;
    *out = NULL;
    const tether_scope_opts *o = opts ? opts : &defaults;
    if ((unsigned)o->policy > TETHER_POLICY_FIRST_SUCCESS || o->timeout_ns < 0 || o->deadline < 0)
        return EINVAL;
    int hostage_signal;
    int rc = tether__hostage_check(o, &hostage_signal);
    if (rc)
        return rc;

    tether_time_t deadline = o->deadline ? o->deadline : TETHER_NEVER;
    if (o->timeout_ns)
        deadline = tether__min_time(deadline, tether_deadline_after(o->timeout_ns));
    tether_token *parent = o->detached ? NULL : o->parent ? o->parent : tether__current_or_root();

    tether_scope *s = tether__calloc(1, sizeof *s);
    if (!s)
        return ENOMEM;
    rc = tether__cond_init_monotonic(&s->changed);
    if (rc)
        goto fail_free;
    rc = pthread_mutex_init(&s->mu, NULL);
    if (rc)
        goto fail_cond;
    rc = tether__token_new(&s->token, parent, deadline);
    if (rc)
        goto fail_mutex;
    s->policy = o->policy;
    s->max_children = o->max_children;
    s->reuse_threads = o->reuse_threads;
    copy_name(s->name, o->name);
    tether__token_set_owner(s->token, OWNER_SCOPE, s);
    s->first_error_task = s->winner = s->cause_task = -1;
    s->hostage_grace_ns = o->hostage_grace_ns;
    s->hostage_hook = o->hostage_hook;
    s->hostage_arg = o->hostage_arg;
    s->hostage_signal = hostage_signal;
    s->gen = tether__fork_generation();
    s->owner = pthread_self();
    s->metrics = tether__metrics_open(s->name);
    lineage_link(s);
    *out = s;
    if (tether__events_on())
        tether__event_scope_opened(s, s->name, s->token);
    return 0;

fail_mutex:
    pthread_mutex_destroy(&s->mu);
fail_cond:
    pthread_cond_destroy(&s->changed);
fail_free:
    free(s);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* Children                                                               */

static bool is_cancel_error(int rc)
{
    return rc == ECANCELED || rc == ETIMEDOUT;
}

/* A child's exit: classify it, apply the policy, free its slot. */
static void child_finished(tether_task *task, int rc)
{
    tether_scope *s = task->scope;
    /* Canceled from above (scope, background halt, halt, explicit) rather
     * than by its own per-child deadline: then ECANCELED/ETIMEDOUT is not a
     * failure of the child. */
    tether_cause tc = tether_token_cause(task->token);
    bool from_above = tc != TETHER_CAUSE_NONE && tc != TETHER_CAUSE_DEADLINE;
    bool canceled = is_cancel_error(rc) && from_above;
    /* Late: a foreground child that returned 0 although it had been told to
     * stop from above. Its effect happened after the scope (or the halter)
     * gave up on it, so it is reported (and never wins). A background child
     * is halted as its normal end: its 0 then is not late. */
    bool late = rc == 0 && from_above && !task->background;
    tether_cause fire = TETHER_CAUSE_NONE;

    tether__scope_lock(s);
    task->result = rc;
    task->late = late;
    if (canceled) {
        s->canceled++;
    } else if (rc == 0) {
        s->succeeded++;
        if (late) {
            s->late_succeeded++;
        } else if (s->policy == TETHER_POLICY_FIRST_SUCCESS && !task->background && s->winner < 0) {
            s->winner = task->index;
            fire = TETHER_CAUSE_SIBLING_SUCCEEDED;
        }
    } else {
        s->failed++;
        if (s->first_error == 0) {
            s->first_error = rc;
            s->first_error_task = task->index;
            memcpy(s->first_error_name, task->name, TETHER_NAME_MAX);
            if (s->policy == TETHER_POLICY_FAIL_FAST && !tether__token_canceled(s->token)) {
                s->failure_decided = true;
                fire = TETHER_CAUSE_SIBLING_FAILED;
            }
        }
    }
    if (fire != TETHER_CAUSE_NONE) {
        /* Cancel outside the lock: callbacks may call back into the scope. */
        tether__scope_unlock(s);
        bool won = tether__token_cancel_cause(s->token, fire,
                                              fire == TETHER_CAUSE_SIBLING_FAILED ? rc : 0) == 0;
        tether__scope_lock(s);
        if (won)
            s->cause_task = task->index;
        else if (fire == TETHER_CAUSE_SIBLING_FAILED)
            s->failure_decided = false; /* someone else canceled first */
    }
    if (task->pooled)
        tether__reuse_park_early(); /* no user code runs after this */
    task->done = true;
    if (!tether__scope_inherited(s)) /* a fork child counts from zero */
        tether__metrics_child_down(s->metrics);
    if (task->background)
        s->live_bg--;
    else
        s->live_fg--;
    s->last_exit_at = tether_now();
    if (!task->has_handle) {
        task->zombie_next = s->zombies;
        s->zombies = task;
    }
    pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
}

static void *child_main(void *arg)
{
    tether_task *task = arg;
    atomic_store_explicit(&task->tid, tether__sys_gettid(), memory_order_relaxed);
    self_task = task;
    int rc = tether_token_enter(task->token);
    TETHER_ASSERT(rc == 0);               /* depth 1 of a fresh thread: no allocation */
    if (task->name[0] && !task->pooled) { /* reuse.c names its threads */
        char short_name[THREAD_NAME_BYTES];
        memcpy(short_name, task->name, sizeof short_name - 1);
        short_name[sizeof short_name - 1] = '\0';
        pthread_setname_np(pthread_self(), short_name);
    }
    if (tether__events_on())
        tether__event_child_started(task->scope, task->index, task->name, task->token);
    rc = task->fn(task->arg);
    if (tether__events_on())
        tether__event_child_exited(task->scope, task->index, task->name, task->token, rc);
    atomic_store_explicit(&task->exited, true, memory_order_relaxed);
    /* The child may have left the entry made for it (back at no current
     * token); anything else unbalanced is reported. */
    if (tether__current)
        tether__leave_or_die(task->token, "child", task->name);
    lineage_exit(task);
    child_finished(task, rc);
    /* A reused thread runs another scope's child next. The cancel callbacks
     * child_finished may run still saw this child as the caller. */
    self_task = NULL;
    return NULL;
}

static void unlink_task(tether_scope *s, tether_task *t)
{
    if (t->prev)
        t->prev->next = t->next;
    else
        s->tasks = t->next;
    if (t->next)
        t->next->prev = t->prev;
}

/* Join and free finished handle-less children whose threads are known. */
static void reap(tether_task *list)
{
    while (list) {
        tether_task *next = list->zombie_next;
        tether__task_release_thread(list);
        tether__free_child_token(list->token, list->name);
        free(list);
        list = next;
    }
}

/* Take the reapable zombies off the scope's lists. s->mu held. Once join
 * has begun it reaps everything itself, walking the list: leave it alone. */
static tether_task *take_zombies(tether_scope *s)
{
    if (s->phase != PHASE_OPEN)
        return NULL;
    tether_task *ready = NULL, **pp = &s->zombies;
    while (*pp) {
        tether_task *t = *pp;
        if (t->started) {
            *pp = t->zombie_next;
            unlink_task(s, t);
            t->zombie_next = ready;
            ready = t;
        } else {
            pp = &t->zombie_next;
        }
    }
    return ready;
}

/* Wake slot waiters when the waiting caller's token is canceled. */
static void wake_waiters(void *arg)
{
    tether_scope *s = arg;
    tether__scope_lock(s);
    pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
}

/* Why the scope takes no more children, or 0. s->mu held. */
static int spawn_refusal(tether_scope *s)
{
    if (s->phase == PHASE_JOINED)
        return EINVAL;
    if (s->closing)
        return ECANCELED;
    if (tether__token_canceled(s->token))
        return tether__token_errno(s->token);
    return 0;
}

/* Wait for a free slot under the caller's token. s->mu held; may drop it. */
static int wait_for_slot(tether_scope *s, bool may_wait)
{
    if (tether__scope_live(s) < s->max_children || s->max_children == 0)
        return 0;
    if (!may_wait)
        return EAGAIN;
    /* Wake when the caller's token or the scope is canceled (either may be
     * unrelated to the other). The callbacks may run at once and take s->mu. */
    tether_token *ct = tether__current_or_root();
    tether_callback *cb = NULL, *scope_cb = NULL;
    tether__scope_unlock(s);
    int rc = tether_token_on_cancel(s->token, wake_waiters, s, &scope_cb);
    if (!rc && ct)
        rc = tether_token_on_cancel(ct, wake_waiters, s, &cb);
    tether__scope_lock(s);
    while (!rc && tether__scope_live(s) >= s->max_children) {
        if ((rc = spawn_refusal(s)) != 0)
            break;
        if (ct && tether__token_canceled(ct)) {
            rc = tether__token_errno(ct);
            break;
        }
        tether_time_t dl = tether__min_time(ct ? ct->deadline : TETHER_NEVER, s->token->deadline);
        if (dl == TETHER_NEVER) {
            pthread_cond_wait(&s->changed, &s->mu);
            continue;
        }
        if (tether_now() >= dl) {
            /* Observe the passed deadline so its owner is canceled too. */
            tether__scope_unlock(s);
            rc = tether__token_poll(ct && ct->deadline == dl ? ct : s->token);
            tether__scope_lock(s);
            if (!rc)
                rc = ETIMEDOUT;
            break;
        }
        struct timespec ts = tether__timespec(dl);
        pthread_cond_timedwait(&s->changed, &s->mu, &ts);
    }
    if (cb || scope_cb) {
        tether__scope_unlock(s);
        if (cb)
            tether_token_off_cancel(cb, NULL);
        if (scope_cb)
            tether_token_off_cancel(scope_cb, NULL);
        tether__scope_lock(s);
    }
    return rc;
}

static int spawn(tether_scope *s, int (*fn)(void *), void *arg, const tether_spawn_opts *opts,
                 tether_task **out, bool may_wait)
{
    static const tether_spawn_opts defaults;
    if (out)
        *out = NULL;
    if (!s || !fn)
        return EINVAL;
    if (tether__scope_inherited(s))
        return ECHILD;
    const tether_spawn_opts *o = opts ? opts : &defaults;
    if (o->timeout_ns < 0 || (o->stack_size && o->stack_size < (size_t)PTHREAD_STACK_MIN))
        return EINVAL;
    /* Observe a passed deadline outside the lock (it may cancel). */
    tether__token_poll(s->token);

    tether_task *task = tether__calloc(1, sizeof *task);
    if (!task)
        return ENOMEM;
    task->scope = s;
    task->fn = fn;
    task->arg = arg;
    task->background = o->background;
    task->has_handle = out != NULL;
    copy_name(task->name, o->name);

    tether__scope_lock(s);
    int rc = spawn_refusal(s);
    if (!rc)
        rc = wait_for_slot(s, may_wait);
    if (!rc)
        rc = spawn_refusal(s);
    if (!rc && task->background && !s->bg_token) {
        rc = tether_token_new(&s->bg_token, s->token, TETHER_NEVER);
        if (!rc)
            tether__token_set_owner(s->bg_token, OWNER_BACKGROUND, s);
    }
    if (rc) {
        tether__scope_unlock(s);
        free(task);
        return rc;
    }
    /* Reserve the slot; join waits for `spawning` to drain. */
    task->index = s->next_index++;
    s->spawning++;
    tether__metrics_child_up(s->metrics);
    if (task->background)
        s->live_bg++;
    else
        s->live_fg++;
    task->next = s->tasks;
    if (s->tasks)
        s->tasks->prev = task;
    s->tasks = task;
    tether_token *parent = task->background ? s->bg_token : s->token;
    tether_task *zombies = take_zombies(s);
    tether__scope_unlock(s);

    reap(zombies);
    rc = tether_token_new(&task->token, parent,
                          o->timeout_ns ? tether_deadline_after(o->timeout_ns) : TETHER_NEVER);
    pthread_t thread;
    if (!rc)
        tether__token_set_owner(task->token, OWNER_TASK, task);
    if (!rc && s->reuse_threads) {
        task->pooled = true;
        rc = tether__reuse_run(&thread, o->stack_size, task->name, child_main, task);
        if (rc)
            tether_token_free(task->token);
    } else if (!rc) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        if (o->stack_size)
            rc = pthread_attr_setstacksize(&attr, o->stack_size);
        if (!rc)
            rc = tether__thread_create(&thread, &attr, child_main, task);
        pthread_attr_destroy(&attr);
        if (rc)
            tether_token_free(task->token);
    }

    tether__scope_lock(s);
    s->spawning--;
    if (rc) {
        tether__metrics_child_down(s->metrics);
        if (task->background)
            s->live_bg--;
        else
            s->live_fg--;
        unlink_task(s, task);
    } else {
        task->thread = thread;
        task->started = true;
        s->spawned++;
    }
    pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
    if (rc) {
        free(task);
        return rc;
    }
    if (out)
        *out = task;
    return 0;
}

int tether_spawn(tether_scope *s, int (*fn)(void *), void *arg, const tether_spawn_opts *opts,
                 tether_task **task)
{
    return spawn(s, fn, arg, opts, task, true);
}

int tether_try_spawn(tether_scope *s, int (*fn)(void *), void *arg, const tether_spawn_opts *opts,
                     tether_task **task)
{
    return spawn(s, fn, arg, opts, task, false);
}

tether_token *tether_task_token(tether_task *task)
{
    return task ? task->token : NULL;
}

int tether_task_index(const tether_task *task)
{
    return task ? task->index : -1;
}

tether_token *tether_scope_token(tether_scope *s)
{
    return s ? s->token : NULL;
}

/* A tether_scope_cancel call leaves s. Without a waiting free it touches s
 * no more after its decrement; with one, it decrements under s->mu so that
 * free, which waits under s->mu, cannot destroy s before the unlock. */
static void cancel_done(tether_scope *s)
{
    unsigned v = atomic_load_explicit(&s->cancels, memory_order_relaxed);
    while (!(v & CANCELS_WAITED))
        if (atomic_compare_exchange_weak_explicit(&s->cancels, &v, v - 1, memory_order_release,
                                                  memory_order_relaxed))
            return;
    tether__scope_lock(s);
    atomic_fetch_sub_explicit(&s->cancels, 1, memory_order_relaxed);
    pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
}

void tether__scope_wait_cancels(tether_scope *s)
{
    atomic_fetch_or_explicit(&s->cancels, CANCELS_WAITED, memory_order_relaxed);
    while (atomic_load_explicit(&s->cancels, memory_order_acquire) != CANCELS_WAITED)
        pthread_cond_wait(&s->changed, &s->mu);
}

int tether_scope_cancel(tether_scope *s)
{
    if (!s)
        return EINVAL;
    if (tether__scope_inherited(s)) {
        /* A fork child's copy: no thread of it uses s->mu (another thread of
         * the parent may have held it at the fork). */
        if (s->phase == PHASE_JOINED)
            return EINVAL;
        tether__token_cancel_cause(s->token, TETHER_CAUSE_EXPLICIT, 0);
        return 0;
    }
    tether__scope_lock(s);
    bool joined = s->phase == PHASE_JOINED;
    tether_token *tok = s->token;
    if (!joined)
        atomic_fetch_add_explicit(&s->cancels, 1, memory_order_relaxed);
    tether__scope_unlock(s);
    if (joined)
        return EINVAL;
    tether__token_cancel_cause(tok, TETHER_CAUSE_EXPLICIT, 0);
    cancel_done(s);
    return 0;
}
