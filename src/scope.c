/*
 * Scopes: one thread per child, policies, strict background children, and a
 * join that classifies how the scope ended.
 *
 * Locking: s->mu guards the scope's counters, lists and outcome bookkeeping.
 * It may be held while taking the tree lock (creating tokens), never the
 * other way round, and no token is ever cancelled while s->mu is held,
 * because cancelling runs user callbacks that may call back into the scope.
 *
 * Spawning reserves a slot under the lock (live_fg or live_bg, and spawning)
 * and creates the thread outside it; join waits until nothing is live and no
 * spawn is half-done, so it never reads a thread id that is still being
 * written.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <limits.h>
#include <string.h>
#include <time.h>

enum task_status { TASK_RUNNING, TASK_SUCCEEDED, TASK_FAILED, TASK_CANCELED };

struct tether_task {
    tether_scope *scope;
    tether_task *prev, *next;   /* s->tasks: every task not yet reaped */
    tether_task *zombie_next;   /* s->zombies: finished, no handle, to reap */
    pthread_t thread;
    bool started;               /* thread is valid (set under s->mu) */
    tether_token *token;
    int (*fn)(void *arg);
    void *arg;
    int index;
    bool background, has_handle;
    bool done;                  /* under s->mu */
    bool joined;                /* join took its thread (under s->mu) */
    int result;
    enum task_status status;
    char name[TETHER_NAME_MAX];
};

enum scope_phase { PHASE_OPEN, PHASE_JOINING, PHASE_JOINED };

struct tether_scope {
    pthread_mutex_t mu;
    pthread_cond_t changed;     /* a child exited, a spawn settled, a slot freed */
    tether_token *token;
    tether_token *bg_token;     /* parent of background children, lazily made */
    tether_policy policy;
    unsigned max_children;
    char name[TETHER_NAME_MAX];

    tether_task *tasks;
    tether_task *zombies;
    unsigned spawned, live_fg, live_bg, spawning;
    int next_index;
    enum scope_phase phase;
    bool closing;               /* foreground done in join: no more spawns */
    bool bg_halted;

    /* Outcome bookkeeping. */
    unsigned succeeded, failed, canceled;
    int first_error, first_error_task;
    char first_error_name[TETHER_NAME_MAX];
    bool failure_decided;       /* fail-fast: a failure cancelled the scope */
    int winner, cause_task;
    int body_error;             /* tether_scope_run: the body failed ... */
    bool body_decided;          /* ... and its cancel was the first */
    tether_time_t last_exit_at;
};

static void lock(tether_scope *s)
{
    int rc = pthread_mutex_lock(&s->mu);
    TETHER_ASSERT(rc == 0);
}

static void unlock(tether_scope *s)
{
    int rc = pthread_mutex_unlock(&s->mu);
    TETHER_ASSERT(rc == 0);
}

/* Children reserved or running, foreground and background. s->mu held. */
static unsigned live(const tether_scope *s)
{
    return s->live_fg + s->live_bg;
}

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
    int rc = pthread_cond_init(&s->changed, &ca);
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
    s->first_error_task = s->winner = s->cause_task = -1;
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
    /* Cancelled from above (scope, background halt, halt, explicit) rather
     * than by its own per-child deadline: then ECANCELED/ETIMEDOUT is not a
     * failure of the child. */
    tether_cause tc = tether_token_cause(task->token);
    bool canceled = is_cancel_error(rc) && tc != TETHER_CAUSE_NONE && tc != TETHER_CAUSE_DEADLINE;
    tether_cause fire = TETHER_CAUSE_NONE;

    lock(s);
    task->result = rc;
    if (canceled) {
        task->status = TASK_CANCELED;
        s->canceled++;
    } else if (rc == 0) {
        task->status = TASK_SUCCEEDED;
        s->succeeded++;
        if (s->policy == TETHER_POLICY_FIRST_SUCCESS && !task->background && s->winner < 0) {
            s->winner = task->index;
            fire = TETHER_CAUSE_SIBLING_SUCCEEDED;
        }
    } else {
        task->status = TASK_FAILED;
        s->failed++;
        if (s->first_error == 0) {
            s->first_error = rc;
            s->first_error_task = task->index;
            memcpy(s->first_error_name, task->name, TETHER_NAME_MAX);
            if (s->policy == TETHER_POLICY_FAIL_FAST && !tether__token_cancelled(s->token)) {
                s->failure_decided = true;
                fire = TETHER_CAUSE_SIBLING_FAILED;
            }
        }
    }
    if (fire != TETHER_CAUSE_NONE) {
        /* Cancel outside the lock: callbacks may call back into the scope. */
        unlock(s);
        bool won = tether__token_cancel_cause(s->token, fire,
                                              fire == TETHER_CAUSE_SIBLING_FAILED ? rc : 0) == 0;
        lock(s);
        if (won)
            s->cause_task = task->index;
        else if (fire == TETHER_CAUSE_SIBLING_FAILED)
            s->failure_decided = false; /* someone else cancelled first */
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
    unlock(s);
}

static void *child_main(void *arg)
{
    tether_task *task = arg;
    int rc = tether_token_enter(task->token);
    TETHER_ASSERT(rc == 0); /* depth 1 of a fresh thread: no allocation */
    if (task->name[0]) {
        char short_name[16]; /* the kernel keeps 15 bytes of a thread name */
        memcpy(short_name, task->name, sizeof short_name - 1);
        short_name[sizeof short_name - 1] = '\0';
        pthread_setname_np(pthread_self(), short_name);
    }
    rc = task->fn(task->arg);
    if (tether_token_leave(task->token) != 0) {
        fprintf(stderr, "tether: child '%s' returned with a token still entered "
                        "(tether_token_enter without tether_token_leave)\n", task->name);
        abort();
    }
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

/* Free a token the scope made for its children (a child's own, or the
 * background children's parent). Still busy means a child left a token or
 * scope derived from it alive after returning: a broken structure that no
 * caller could handle, so it is reported loudly. */
static void free_child_token(tether_token *tok, const char *whose)
{
    if (tether_token_free(tok) != 0) {
        fprintf(stderr, "tether: child '%s' left a token or scope derived from its own "
                        "token alive after returning\n", whose);
        abort();
    }
}

/* Join and free finished handle-less children whose threads are known. */
static void reap(tether_task *list)
{
    while (list) {
        tether_task *next = list->zombie_next;
        pthread_join(list->thread, NULL);
        free_child_token(list->token, list->name);
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

/* Wake slot waiters when the waiting caller's token is cancelled. */
static void wake_waiters(void *arg)
{
    tether_scope *s = arg;
    lock(s);
    pthread_cond_broadcast(&s->changed);
    unlock(s);
}

/* Why the scope takes no more children, or 0. s->mu held. */
static int spawn_refusal(tether_scope *s)
{
    if (s->phase == PHASE_JOINED)
        return EINVAL;
    if (s->closing)
        return ECANCELED;
    if (tether__token_cancelled(s->token))
        return s->token->cancel_errno;
    return 0;
}

/* Wait for a free slot under the caller's token. s->mu held; may drop it. */
static int wait_for_slot(tether_scope *s, bool may_wait)
{
    if (live(s) < s->max_children || s->max_children == 0)
        return 0;
    if (!may_wait)
        return EAGAIN;
    /* Wake when the caller's token or the scope is cancelled (either may be
     * unrelated to the other). The callbacks may run at once and take s->mu. */
    tether_token *ct = tether__current;
    tether_callback *cb = NULL, *scope_cb = NULL;
    unlock(s);
    int rc = tether_token_on_cancel(s->token, wake_waiters, s, &scope_cb);
    if (!rc && ct)
        rc = tether_token_on_cancel(ct, wake_waiters, s, &cb);
    lock(s);
    while (!rc && live(s) >= s->max_children) {
        if ((rc = spawn_refusal(s)) != 0)
            break;
        if (ct && tether__token_cancelled(ct)) {
            rc = ct->cancel_errno;
            break;
        }
        tether_time_t dl = tether__min_time(ct ? ct->deadline : TETHER_NEVER, s->token->deadline);
        if (dl == TETHER_NEVER) {
            pthread_cond_wait(&s->changed, &s->mu);
            continue;
        }
        if (tether_now() >= dl) {
            /* Observe the passed deadline so its owner is cancelled too. */
            unlock(s);
            rc = tether__token_poll(ct && ct->deadline == dl ? ct : s->token);
            lock(s);
            if (!rc)
                rc = ETIMEDOUT;
            break;
        }
        struct timespec ts = tether__timespec(dl);
        pthread_cond_timedwait(&s->changed, &s->mu, &ts);
    }
    if (cb || scope_cb) {
        unlock(s);
        if (cb)
            tether_token_off_cancel(cb, NULL);
        if (scope_cb)
            tether_token_off_cancel(scope_cb, NULL);
        lock(s);
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

    lock(s);
    int rc = spawn_refusal(s);
    if (!rc)
        rc = wait_for_slot(s, may_wait);
    if (!rc)
        rc = spawn_refusal(s);
    if (!rc && task->background && !s->bg_token) {
        rc = tether_token_new(&s->bg_token, s->token, TETHER_NEVER);
    }
    if (rc) {
        unlock(s);
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
    unlock(s);

    reap(zombies);
    rc = tether_token_new(&task->token, parent,
                          o->timeout_ns ? tether_deadline_after(o->timeout_ns) : TETHER_NEVER);
    pthread_t thread;
    if (!rc) {
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

    lock(s);
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
    unlock(s);
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

/* ---------------------------------------------------------------------- */
/* Waiting                                                                */

/* Wait for a change; if the scope's deadline passes meanwhile, cancel the
 * scope (through the deadline's owner). s->mu held. */
static void wait_for_change(tether_scope *s)
{
    tether_time_t dl = s->token->deadline;
    if (dl == TETHER_NEVER || tether__token_cancelled(s->token)) {
        pthread_cond_wait(&s->changed, &s->mu);
        return;
    }
    if (tether_now() >= dl) {
        unlock(s);
        tether__token_expire(s->token);
        lock(s);
        return;
    }
    struct timespec ts = tether__timespec(dl);
    pthread_cond_timedwait(&s->changed, &s->mu, &ts);
}

static bool called_from_inside(const tether_token *t)
{
    return tether__current && tether__token_descends(tether__current, t);
}

int tether_task_wait(tether_task *task, int *result)
{
    if (!task)
        return EINVAL;
    if (called_from_inside(task->token))
        return EDEADLK;
    tether_scope *s = task->scope;
    lock(s);
    while (!task->done)
        wait_for_change(s);
    if (result)
        *result = task->result;
    unlock(s);
    return 0;
}

int tether_task_halt(tether_task *task, int *result)
{
    if (!task)
        return EINVAL;
    if (called_from_inside(task->token))
        return EDEADLK;
    tether__token_cancel_cause(task->token, TETHER_CAUSE_HALTED, 0);
    return tether_task_wait(task, result);
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
    lock(s);
    bool joined = s->phase == PHASE_JOINED;
    unlock(s);
    if (joined)
        return EINVAL;
    tether__token_cancel_cause(s->token, TETHER_CAUSE_EXPLICIT, 0);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Join                                                                   */

static void fill_result(tether_scope *s, tether_result *r)
{
    memset(r, 0, sizeof *r);
    r->spawned = s->spawned;
    r->succeeded = s->succeeded;
    r->failed = s->failed;
    r->canceled = s->canceled;
    r->winner = s->winner;
    r->cause_task = s->cause_task;
    r->error_task = -1;

    bool cancelled = tether__token_cancelled(s->token);
    if (cancelled)
        r->cause = tether_token_cause(s->token);
    else if (s->bg_halted)
        r->cause = TETHER_CAUSE_SCOPE_FINISHED;

    /* Convergence starts at the first cancellation: the scope's, or the
     * background halt (the background token descends from the scope's). */
    tether_time_t at = 0;
    if (s->bg_token && tether__token_cancelled(s->bg_token))
        at = s->bg_token->cancelled_at;
    if (cancelled && (at == 0 || s->token->cancelled_at < at))
        at = s->token->cancelled_at;
    if (at && s->last_exit_at > at)
        r->convergence_ns = s->last_exit_at - at;

    bool have_failure = s->first_error != 0;
    bool externally = cancelled && r->cause != TETHER_CAUSE_SIBLING_FAILED &&
                      r->cause != TETHER_CAUSE_SIBLING_SUCCEEDED;
    tether_outcome outcome;
    if (s->failure_decided) {
        outcome = TETHER_OUTCOME_FAILED;
    } else if (s->body_decided) {
        outcome = TETHER_OUTCOME_FAILED;
        r->error = s->body_error;
        r->outcome = outcome;
        return;
    } else if (s->policy == TETHER_POLICY_FIRST_SUCCESS && s->winner >= 0) {
        outcome = TETHER_OUTCOME_OK;
        have_failure = false;
    } else if (externally) {
        outcome = s->token->cancel_errno == ETIMEDOUT ? TETHER_OUTCOME_DEADLINE_EXCEEDED
                                                      : TETHER_OUTCOME_CANCELED;
        r->error = s->token->cancel_errno;
        have_failure = false;
    } else if (s->failed == 0) {
        outcome = TETHER_OUTCOME_OK;
    } else if (s->policy == TETHER_POLICY_SUPERVISOR && s->succeeded > 0) {
        outcome = TETHER_OUTCOME_PARTIAL;
    } else {
        outcome = TETHER_OUTCOME_FAILED;
    }
    r->outcome = outcome;
    if (have_failure) {
        r->error = s->first_error;
        r->error_task = s->first_error_task;
        memcpy(r->error_task_name, s->first_error_name, TETHER_NAME_MAX);
    }
}

/*
 * Join, directly, every started thread the current stage waits for that is
 * not joined yet: foreground threads until the foreground is done, then all.
 * pthread_join sleeps until the thread is gone, so this costs no extra
 * wake-up per child (waiting on `changed` first would add one). Returns
 * whether it joined any. s->mu held, dropped around each join. While the
 * scope is joining no task is unlinked but an unstarted one whose spawn
 * failed, and a started task's `next` is read under the lock, so the walk
 * stays valid.
 */
static bool join_threads(tether_scope *s)
{
    bool any = false;
    for (tether_task *t = s->tasks; t; t = t->next) {
        if (!t->started || t->joined || (t->background && !s->closing))
            continue;
        t->joined = true;
        unlock(s);
        pthread_join(t->thread, NULL);
        lock(s);
        any = true;
    }
    return any;
}

int tether_scope_join(tether_scope *s, tether_result *result)
{
    if (!s)
        return EINVAL;
    if (called_from_inside(s->token))
        return EDEADLK;
    lock(s);
    if (s->phase != PHASE_OPEN) {
        unlock(s);
        return EINVAL;
    }
    s->phase = PHASE_JOINING;
    /* With a deadline, join must stay awake to enforce it (a child blocked
     * outside tether may rely on a cancel callback), so it waits on
     * `changed` with a timeout; without one it joins threads directly. */
    bool direct = s->token->deadline == TETHER_NEVER;
    for (;;) {
        if (direct && join_threads(s))
            continue;
        if (s->live_fg == 0 && s->spawning == 0 && !s->closing) {
            /* Foreground done: strict structured concurrency halts the
             * background, then still waits for its cleanup. */
            s->closing = true;
            if (s->live_bg > 0) {
                s->bg_halted = true;
                unlock(s);
                tether__token_cancel_cause(s->bg_token, TETHER_CAUSE_SCOPE_FINISHED, 0);
                lock(s);
                continue;
            }
        }
        if (live(s) == 0 && s->spawning == 0)
            break;
        wait_for_change(s);
    }
    tether_task *tasks = s->tasks;
    s->tasks = NULL;
    s->zombies = NULL;
    if (result)
        fill_result(s, result);
    unlock(s);

    /* Everything has exited; reap threads and release what they used. */
    while (tasks) {
        tether_task *next = tasks->next;
        if (!tasks->joined)
            pthread_join(tasks->thread, NULL);
        free_child_token(tasks->token, tasks->name);
        free(tasks);
        tasks = next;
    }
    if (s->bg_token) {
        free_child_token(s->bg_token, "(background)");
        s->bg_token = NULL;
    }
    lock(s);
    s->phase = PHASE_JOINED;
    unlock(s);
    return 0;
}

int tether_scope_free(tether_scope *s)
{
    if (!s)
        return EINVAL;
    lock(s);
    enum scope_phase phase = s->phase;
    unlock(s);
    if (phase != PHASE_JOINED) {
        if (called_from_inside(s->token))
            return EDEADLK;
        tether_scope_cancel(s);
        int rc = tether_scope_join(s, NULL);
        if (rc)
            return rc;
    }
    /* A token the caller derived from the scope's, or an entry left on the
     * scope's token, keeps the (joined) scope alive: the caller can fix it. */
    if (tether_token_free(s->token) != 0)
        return EBUSY;
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->changed);
    free(s);
    return 0;
}

int tether_scope_run(const tether_scope_opts *opts, int (*body)(tether_scope *s, void *arg),
                     void *arg, tether_result *result)
{
    if (!body)
        return EINVAL;
    tether_scope *s;
    int rc = tether_scope_open(&s, opts);
    if (rc)
        return rc;
    /* The body runs inside the scope: its own blocking calls are cancelled
     * with the scope, and scopes it opens nest under it. */
    rc = tether_token_enter(s->token);
    int berr = rc ? rc : body(s, arg);
    if (!rc && tether_token_leave(s->token) != 0) {
        fprintf(stderr, "tether: scope body returned with a token still entered\n");
        abort();
    }
    if (berr) {
        bool won = tether__token_cancel_cause(s->token, TETHER_CAUSE_EXPLICIT, berr) == 0;
        lock(s);
        s->body_error = berr;
        s->body_decided = won && !s->failure_decided;
        unlock(s);
    }
    tether_scope_join(s, result);
    tether_scope_free(s);
    return 0;
}

tether_scope *tether__scope_guard_begin(const tether_scope_opts *opts)
{
    tether_scope *s;
    return tether_scope_open(&s, opts) == 0 ? s : NULL;
}

void tether__scope_guard_end(tether_scope **s)
{
    if (!*s)
        return;
    /* Leaving the block waits for the children, as the end of a scope does;
     * a join already made inside the block makes this one a no-op. */
    tether_scope_join(*s, NULL);
    tether_scope_free(*s);
}
