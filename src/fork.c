/*
 * fork(2) and tether: the atfork handlers.
 *
 * A child of a multithreaded process has only the thread that forked, so a
 * lock held by any other thread at that instant would stay held for good.
 * The prepare handler takes every process-wide tether lock (the scopes'
 * lineage lock, the tree lock, the context lock, the timer lock, the
 * eventfd pool's, the thread pool's, the cancel hooks', the metrics
 * registry's, then the resolver's helper count's, both leaves: the order
 * in which code nests them) so that no other thread is inside tether's
 * critical sections during fork; the parent and child handlers release
 * them. The child handler also starts a new
 * process generation (wait.h), by which the child tells what it inherited
 * (eventfds, scopes, signal relays) from what it made itself, and forgets
 * the timer thread, which stayed in the parent (timer.h: the child starts
 * its own at its next token, and fires the inherited deadlines too).
 *
 * The handlers are registered once, on first use of any such lock, so a
 * program that never uses tether is not touched. Per-scope mutexes are not
 * process-wide: the child never takes an inherited scope's lock (scope.h),
 * and frees such a scope here, without waiting for its children's threads,
 * which stayed in the parent.
 */
#define _GNU_SOURCE
#include "current.h"
#include "scope.h"
#include "timer.h"

#include "hook.h"
#include "resolve.h"
#include "reuse.h"

static pthread_once_t registered = PTHREAD_ONCE_INIT;

static void prepare(void)
{
    tether__root_fork_prepare(); /* first: it waits for a thread that may take the locks below */
    tether__lineage_fork_prepare();
    tether__token_fork_prepare();
    tether__context_fork_prepare();
    tether__timer_fork_prepare();
    tether__wake_fork_prepare();
    tether__reuse_fork_prepare();
    tether__hook_fork_prepare();
    tether__metrics_fork_prepare();
    tether__resolve_fork_prepare();
}

static void in_parent(void)
{
    tether__resolve_fork_parent();
    tether__metrics_fork_parent();
    tether__hook_fork_parent();
    tether__reuse_fork_parent();
    tether__wake_fork_parent();
    tether__timer_fork_parent();
    tether__context_fork_release();
    tether__token_fork_parent();
    tether__lineage_fork_release();
}

static void in_child(void)
{
    tether__resolve_fork_child();
    tether__metrics_fork_child();
    tether__hook_fork_child();
    tether__events_fork_child();
    tether__reuse_fork_child();
    tether__wake_fork_child();
    tether__timer_fork_child();
    tether__context_fork_release();
    tether__token_fork_child();
    tether__signals_fork_child();
    tether__dump_fork_child();
    tether__lineage_fork_release();
}

static void register_handlers(void)
{
    /* Fails only with ENOMEM; then fork stays unguarded, as before. */
    (void)pthread_atfork(prepare, in_parent, in_child);
}

void tether__fork_once(void)
{
    pthread_once(&registered, register_handlers);
}

int tether__scope_free_inherited(tether_scope *s)
{
    /* Only this process's threads can reach s: no lock. Its mutex and
     * condition variable may count waiters the child does not have, so
     * they are not destroyed, only freed with s. */
    if (s->phase != PHASE_JOINED) {
        tether_task *t = s->tasks;
        while (t) {
            tether_task *next = t->next;
            if (t->token)
                tether__token_free_tree(t->token);
            free(t);
            t = next;
        }
        s->tasks = s->zombies = NULL;
        if (s->bg_token)
            tether__token_free_tree(s->bg_token);
        s->bg_token = NULL;
        s->phase = PHASE_JOINED;
    }
    if (tether_token_free(s->token) != 0)
        return EBUSY;
    free(s);
    return 0;
}
