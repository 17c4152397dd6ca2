/*
 * Scopes, second half: waiting for a task, join (which classifies how the
 * scope ended), free, tether_scope_run and the block guard. See scope.c for
 * the locking rules.
 */
#define _GNU_SOURCE
#include "scope.h"

#include "clock.h"

#include <string.h>

/* ---------------------------------------------------------------------- */
/* Waiting                                                                */

/* Wait for a change, or until `wake_at` (the hostage watch's next look);
 * if the scope's deadline passes meanwhile, cancel the scope (through the
 * deadline's owner). s->mu held. */
static void wait_for_change(tether_scope *s, tether_time_t wake_at)
{
    tether_time_t dl = tether__token_canceled(s->token) ? TETHER_NEVER : s->token->deadline;
    if (dl != TETHER_NEVER && tether_now() >= dl) {
        tether__scope_unlock(s);
        tether__token_expire(s->token);
        tether__scope_lock(s);
        return;
    }
    tether_time_t until = tether__min_time(dl, wake_at);
    if (until == TETHER_NEVER) {
        pthread_cond_wait(&s->changed, &s->mu);
        return;
    }
    struct timespec ts = tether__timespec(until);
    pthread_cond_timedwait(&s->changed, &s->mu, &ts);
}

/* Wake the joining thread when the scope is canceled, so that its hostage
 * watch can time the grace from the cancellation. */
static void wake_joiner(void *arg)
{
    tether_scope *s = arg;
    tether__scope_lock(s);
    pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
}

/*
 * Wait for a task (halting it first if asked). A thread inside this call is
 * counted in task_callers: join waits for the count to drain before it
 * frees the tasks, so a wait that started before join returned is safe.
 */
static int task_call(tether_task *task, int *result, bool halt)
{
    if (!task)
        return EINVAL;
    if (tether__scope_inherited(task->scope))
        return ECHILD;
    if (tether__caller_descends(NULL, task))
        return EDEADLK;
    tether_scope *s = task->scope;
    tether__scope_lock(s);
    /* The owner's wait on a background task before join: only join halts
     * the background, so this wait could never end (a halt ends it). */
    if (!halt && task->background && !s->closing && pthread_equal(s->owner, pthread_self())) {
        tether__scope_unlock(s);
        return EDEADLK;
    }
    s->task_callers++;
    if (halt) {
        s->tally.halts++;
        tether__scope_unlock(s);
        tether__token_cancel_cause(task->token, TETHER_CAUSE_HALTED, 0);
        tether__scope_lock(s);
    }
    while (!task->done)
        wait_for_change(s, TETHER_NEVER);
    if (result)
        *result = task->result;
    if (--s->task_callers == 0)
        pthread_cond_broadcast(&s->changed);
    tether__scope_unlock(s);
    return 0;
}

int tether_task_wait(tether_task *task, int *result)
{
    return task_call(task, result, false);
}

int tether_task_halt(tether_task *task, int *result)
{
    return task_call(task, result, true);
}

bool tether_task_late(const tether_task *task)
{
    /* An inherited scope's lock may have been held by a thread that stayed
     * in the parent: do not take it. */
    if (!task || tether__scope_inherited(task->scope))
        return false;
    tether_scope *s = task->scope;
    tether__scope_lock(s);
    bool late = task->done && task->late;
    tether__scope_unlock(s);
    return late;
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
    r->late_succeeded = s->late_succeeded;
    r->winner = s->winner;
    r->cause_task = s->cause_task;
    r->error_task = -1;

    bool canceled = tether__token_canceled(s->token);
    if (canceled)
        r->cause = tether_token_cause(s->token);
    else if (s->bg_halted)
        r->cause = TETHER_CAUSE_SCOPE_FINISHED;

    /* Convergence starts at the first cancellation: the scope's, or the
     * background halt (the background token descends from the scope's). */
    tether_time_t at = 0;
    if (s->bg_token && tether__token_canceled(s->bg_token))
        at = s->bg_token->canceled_at;
    if (canceled && (at == 0 || s->token->canceled_at < at))
        at = s->token->canceled_at;
    if (at && s->last_exit_at > at)
        r->convergence_ns = s->last_exit_at - at;

    bool have_failure = s->first_error != 0;
    bool externally = canceled && r->cause != TETHER_CAUSE_SIBLING_FAILED &&
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
        outcome = tether__token_errno(s->token) == ETIMEDOUT ? TETHER_OUTCOME_DEADLINE_EXCEEDED
                                                             : TETHER_OUTCOME_CANCELED;
        /* The cancel's own error: a user's (tether_token_cancel on the
         * scope's token or an ancestor), ETIMEDOUT, or ECANCELED. */
        r->error = tether_token_error(s->token);
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
 * A reused thread (task->pooled) is not joined: its child's `done` is the
 * completion, which the caller's wait on `changed` sees.
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
        if (!t->started || t->joined || t->pooled || (t->background && !s->closing))
            continue;
        t->joined = true;
        tether__scope_unlock(s);
        pthread_join(t->thread, NULL);
        tether__scope_lock(s);
        any = true;
    }
    return any;
}

int tether_scope_join(tether_scope *s, tether_result *result)
{
    if (!s)
        return EINVAL;
    if (tether__scope_inherited(s))
        return ECHILD;
    if (tether__caller_descends(s, NULL))
        return EDEADLK;
    /* The hostage watch times its grace from the cancellation: be woken
     * for it (registered before s->mu: it may run at once and take it). */
    bool watch = s->hostage_grace_ns > 0;
    tether_callback *woken = NULL;
    if (watch && tether_token_on_cancel(s->token, wake_joiner, s, &woken) != 0)
        woken = NULL; /* out of memory: then the watch looks at each change */
    tether__scope_lock(s);
    if (s->phase != PHASE_OPEN) {
        tether__scope_unlock(s);
        if (woken)
            tether_token_off_cancel(woken, NULL);
        return EINVAL;
    }
    s->phase = PHASE_JOINING;
    /* With a deadline, join must stay awake to enforce it (a child blocked
     * outside tether may rely on a cancel callback), and with a hostage
     * watch to keep it, so it waits on `changed` with a timeout; otherwise
     * it joins threads directly. */
    bool direct = s->token->deadline == TETHER_NEVER && !watch;
    for (;;) {
        if (direct && join_threads(s))
            continue;
        if (s->live_fg == 0 && s->spawning == 0 && !s->closing) {
            /* Foreground done: strict structured concurrency halts the
             * background, then still waits for its cleanup. */
            s->closing = true;
            if (s->live_bg > 0) {
                s->bg_halted = true;
                tether__scope_unlock(s);
                tether__token_cancel_cause(s->bg_token, TETHER_CAUSE_SCOPE_FINISHED, 0);
                tether__scope_lock(s);
                continue;
            }
        }
        tether_time_t look_again = watch ? tether__hostage_watch(s) : TETHER_NEVER;
        if (tether__scope_live(s) == 0 && s->spawning == 0) {
            if (watch)
                tether__hostage_watch(s); /* releases seen while it reported */
            break;
        }
        wait_for_change(s, look_again);
    }
    /* Threads still inside tether_task_wait/halt read their task: let them
     * leave before the tasks are freed (they return at once, all done). */
    while (s->task_callers)
        pthread_cond_wait(&s->changed, &s->mu);
    tether_task *tasks = s->tasks;
    s->tasks = NULL;
    s->zombies = NULL;
    /* The result is needed for the metrics and the event hook even when
     * the caller does not ask for it. */
    tether_result own = { .outcome = TETHER_OUTCOME_OK };
    bool report = tether__events_on();
    tether_result *r = NULL;
    if (result || s->metrics || report) {
        r = result ? result : &own;
        fill_result(s, r);
    }
    if (s->metrics) /* where join would notice a child it did not wait for */
        for (tether_task *t = tasks; t; t = t->next)
            s->tally.left_running += !t->done;
    struct tether__scope_tally tally = s->tally;
    tether__scope_unlock(s);

    /* Everything has exited; reap threads and release what they used. */
    while (tasks) {
        tether_task *next = tasks->next;
        if (!tasks->joined)
            tether__task_release_thread(tasks);
        tether__free_child_token(tasks->token, tasks->name);
        free(tasks);
        tasks = next;
    }
    if (s->bg_token) {
        tether__free_child_token(s->bg_token, "(background)");
        s->bg_token = NULL;
    }
    if (woken)
        tether_token_off_cancel(woken, NULL);
    tether__scope_lock(s);
    s->phase = PHASE_JOINED;
    tether__scope_unlock(s);
    /* After the phase: a snapshot that counts this join sees the scope
     * no longer live. */
    tether__metrics_joined(s->metrics, r, &tally);
    if (report)
        tether__event_scope_joined(s, s->name, s->token, r);
    return 0;
}

int tether_scope_free(tether_scope *s)
{
    if (!s)
        return EINVAL;
    if (tether__scope_inherited(s))
        return tether__scope_free_inherited(s);
    tether__scope_lock(s);
    enum scope_phase phase = s->phase;
    tether__scope_unlock(s);
    if (phase != PHASE_JOINED) {
        if (tether__caller_descends(s, NULL))
            return EDEADLK;
        /* The caller runs under the scope's token: it could not be freed
         * after the join, so nothing is done (decision: EBUSY). */
        if (tether__called_from_inside(s->token))
            return EBUSY;
        tether_scope_cancel(s);
        int rc = tether_scope_join(s, NULL);
        if (rc)
            return rc;
    }
    /* A cancel that started before free may still be inside the scope or
     * its token: let it leave first. */
    tether__scope_lock(s);
    tether__scope_wait_cancels(s);
    tether__scope_unlock(s);
    /* A token the caller derived from the scope's, or an entry left on the
     * scope's token, keeps the (joined) scope alive: the caller can fix it. */
    if (tether_token_free(s->token) != 0)
        return EBUSY;
    tether__scope_forget_opener(s);
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
    /* The body runs inside the scope: its own blocking calls are canceled
     * with the scope, and scopes it opens nest under it. */
    rc = tether_token_enter(s->token);
    int berr = rc ? rc : body(s, arg);
    if (!rc)
        tether__leave_or_die(s->token, "scope body", NULL);
    if (berr) {
        bool won = tether__token_cancel_cause(s->token, TETHER_CAUSE_EXPLICIT, berr) == 0;
        tether__scope_lock(s);
        s->body_error = berr;
        s->body_decided = won && !s->failure_decided;
        tether__scope_unlock(s);
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
