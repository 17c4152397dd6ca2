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

static void copy_name(char dst[TETHER_NAME_MAX], const char *src)
{
    dst[0] = '\0';
    if (src)
        snprintf(dst, TETHER_NAME_MAX, "%s", src);
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
    tether_token *parent = o->detached ? NULL : o->parent ? o->parent : tether__current;

    tether_scope *s = tether__calloc(1, sizeof *s);
    if (!s)
        return ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    rc = pthread_cond_init(&s->changed, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        goto fail_free;
    rc = pthread_mutex_init(&s->mu, NULL);
    if (rc)
        goto fail_cond;
    rc = tether_token_new(&s->token, parent, deadline);
    if (rc)
        goto fail_mutex;
    s->policy = o->policy;
    s->max_children = o->max_children;
    copy_name(s->name, o->name);
    tether__token_set_owner(s->token, OWNER_SCOPE, s);
    s->first_error_task = s->winner = s->cause_task = -1;
    s->hostage_grace_ns = o->hostage_grace_ns;
    s->hostage_hook = o->hostage_hook;
    s->hostage_arg = o->hostage_arg;
    s->hostage_signal = hostage_signal;
    *out = s;
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
    bool canceled = is_cancel_error(rc) && tc != TETHER_CAUSE_NONE && tc != TETHER_CAUSE_DEADLINE;
    tether_cause fire = TETHER_CAUSE_NONE;

    tether__scope_lock(s);
    task->result = rc;
    if (canceled) {
        s->canceled++;
    } else if (rc == 0) {
        s->succeeded++;
        if (s->policy == TETHER_POLICY_FIRST_SUCCESS && !task->background && s->winner < 0) {
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
    task->done = true;
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
    int rc = tether_token_enter(task->token);
    TETHER_ASSERT(rc == 0); /* depth 1 of a fresh thread: no allocation */
    if (task->name[0]) {
        char short_name[THREAD_NAME_BYTES];
        memcpy(short_name, task->name, sizeof short_name - 1);
        short_name[sizeof short_name - 1] = '\0';
        pthread_setname_np(pthread_self(), short_name);
    }
    rc = task->fn(task->arg);
    atomic_store_explicit(&task->exited, true, memory_order_relaxed);
    tether__leave_or_die(task->token, "child", task->name);
    child_finished(task, rc);
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
        pthread_join(list->thread, NULL);
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
    tether_token *ct = tether__current;
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
    if (!rc) {
        tether__token_set_owner(task->token, OWNER_TASK, task);
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

int tether_try_spawn(tether_scope *s, int (*fn)(void *), void *arg,
                     const tether_spawn_opts *opts, tether_task **task)
{
    return spawn(s, fn, arg, opts, task, false);
}

tether_token *tether_task_token(tether_task *task)
{
    return task ? task->token : NULL;
}

tether_token *tether_scope_token(tether_scope *s)
{
    return s ? s->token : NULL;
}

int tether_scope_cancel(tether_scope *s)
{
    if (!s)
        return EINVAL;
    tether__scope_lock(s);
    bool joined = s->phase == PHASE_JOINED;
    tether__scope_unlock(s);
    if (joined)
        return EINVAL;
    tether__token_cancel_cause(s->token, TETHER_CAUSE_EXPLICIT, 0);
    return 0;
}

