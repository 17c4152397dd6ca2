/*
 * Scope and task structures, shared by scope.c (open, children, spawn) and
 * join.c (waiting, join, free). Locking rules: see scope.c.
 */
#ifndef TETHER__SCOPE_H
#define TETHER__SCOPE_H

#include "current.h"
#include "events.h"
#include "metrics.h"
#include "reuse.h"

struct tether_task {
    tether_scope *scope;
    tether_task *prev, *next; /* s->tasks: every task not yet reaped */
    tether_task *zombie_next; /* s->zombies: finished, no handle, to reap */
    pthread_t thread;
    bool started; /* thread is valid (set under s->mu) */
    bool pooled;  /* runs on a reused thread (reuse.c): never
                                 * joined, `done` is its completion */
    tether_token *token;
    int (*fn)(void *arg);
    void *arg;
    int index;
    bool background, has_handle;
    bool done;   /* under s->mu */
    bool joined; /* join took its thread (under s->mu) */
    bool late;   /* returned 0 after being canceled (under s->mu) */
    int result;
    char name[TETHER_NAME_MAX];
    _Atomic int tid;     /* kernel id, stored by the child as it starts */
    _Atomic bool exited; /* its function returned (for the dump) */
    /* Hostage watch (hostage.c), by the joining thread, under s->mu. */
    bool hostage_held, hostage_released;
    unsigned hostage_attempts;
    tether_time_t hostage_next; /* the next escalation attempt */
    /* Scopes this child's thread opened and has not freed: their `opener`
     * is this task until it exits. Under the lineage lock; opened_live lets
     * the exiting child skip the lock when it opened none. */
    tether_scope *opened;
    _Atomic unsigned opened_live;
};

enum scope_phase { PHASE_OPEN, PHASE_JOINING, PHASE_JOINED };
enum { CANCELS_WAITED = 1u << 31 };

struct tether_scope {
    pthread_mutex_t mu;
    pthread_cond_t changed; /* a child exited, a spawn settled, a slot freed */
    tether_token *token;
    tether_token *bg_token; /* parent of background children, lazily made */
    tether_policy policy;
    unsigned max_children;
    char name[TETHER_NAME_MAX];
    pthread_t owner; /* the thread that opened it */
    /* The child task whose thread opened the scope, or NULL (a thread
     * tether did not start, or that child has exited). The calling thread's
     * lineage runs task -> scope -> opener -> scope ...: under the lineage
     * lock, with opened_next linking the opener's `opened`. */
    tether_task *opener;
    tether_scope *opened_next;
    bool opened_by_child; /* opener was set at open (immutable) */
    bool reuse_threads;   /* opts.reuse_threads (immutable) */

    tether_task *tasks;
    tether_task *zombies;
    unsigned spawned, live_fg, live_bg, spawning;
    unsigned task_callers; /* threads inside tether_task_wait/halt */
    /* tether_scope_cancel calls in flight (counted under mu before the
     * scope is joined), plus CANCELS_WAITED once free waits for them. */
    _Atomic unsigned cancels;
    int next_index;
    enum scope_phase phase;
    bool closing; /* foreground done in join: no more spawns */
    bool bg_halted;

    /* Outcome bookkeeping. */
    unsigned succeeded, failed, canceled;
    unsigned late_succeeded; /* of the succeeded: canceled before they returned */
    int first_error, first_error_task;
    char first_error_name[TETHER_NAME_MAX];
    bool failure_decided; /* fail-fast: a failure canceled the scope */
    int winner, cause_task;
    int body_error;    /* tether_scope_run: the body failed ... */
    bool body_decided; /* ... and its cancel was the first */
    tether_time_t last_exit_at;

    /* Hostage watchdog options (immutable after open). */
    int64_t hostage_grace_ns;
    void (*hostage_hook)(const tether_hostage_report *report, void *arg);
    void *hostage_arg;
    int hostage_signal; /* 0: no escalation */
    unsigned gen;       /* the process generation that opened it */

    /* Metrics (metrics.h): the name's series (NULL: not counted; set at
     * open, immutable) and what join folds into it (under mu). */
    struct tether__series *metrics;
    struct tether__scope_tally tally;
};

/* Whether s was opened before a fork (its children are the parent's
 * threads): then only cancel and free work on it, without s->mu. */
static inline bool tether__scope_inherited(const tether_scope *s)
{
    return s->gen != tether__fork_generation();
}

/* tether_scope_free of an inherited scope (fork.c): free its tasks and
 * their tokens without waiting for threads the child does not have, then
 * the scope's token (EBUSY as for tether_scope_free) and the handle. */
TETHER_HIDDEN int tether__scope_free_inherited(tether_scope *s);

/* Release a reaped child's thread: join it, unless it was a reused one,
 * which went back to the pool once its `done` was set. */
static inline void tether__task_release_thread(tether_task *t)
{
    if (!t->pooled)
        pthread_join(t->thread, NULL);
}

/* Take s->mu. */
static inline void tether__scope_lock(tether_scope *s)
{
    tether__lock(&s->mu);
}

/* Drop s->mu. */
static inline void tether__scope_unlock(tether_scope *s)
{
    tether__unlock(&s->mu);
}

/* Children reserved or running, foreground and background. s->mu held. */
static inline unsigned tether__scope_live(const tether_scope *s)
{
    return s->live_fg + s->live_bg;
}

/* Whether the calling thread runs under t (it has t or a descendant of t
 * as its current token). */
static inline bool tether__called_from_inside(const tether_token *t)
{
    return tether__current && tether__token_descends(tether__current, t);
}

/* Hostage watchdog (hostage.c). */
/* Check o's hostage fields and, for escalation, install the signal's
 * handler (once per signal, for good); 0, EINVAL or EBUSY (or sigaction's
 * error). Stores the escalation signal (0: none) in *sig. */
TETHER_HIDDEN int tether__hostage_check(const tether_scope_opts *o, int *sig);
/* One round of the watch over s's started children: report new hostages,
 * send due escalation signals, report releases. s->mu held; dropped around
 * each report. Returns when to look again (TETHER_NEVER: nothing due). */
TETHER_HIDDEN tether_time_t tether__hostage_watch(tether_scope *s);
/* What thread `tid` of this process is blocked in, into buf: a system call's
 * name, "syscall N", "running", "exited" or "unknown". Returns buf. */
TETHER_HIDDEN const char *tether__blocked_in(int tid, char *buf, size_t n);
/* Whether the calling thread is, by identity, `task` or a child of `s`, or
 * a descendant child of either (a child of a scope opened by such a
 * thread, recursively): then waiting for `task` or joining `s` could never
 * return. Either may be NULL. Takes the lineage lock only on a thread that
 * tether started. */
TETHER_HIDDEN bool tether__caller_descends(const tether_scope *s, const tether_task *task);
/* Wait until no tether_scope_cancel is inside s (s is joined: none can
 * start any more). s->mu held. */
TETHER_HIDDEN void tether__scope_wait_cancels(tether_scope *s);
/* The lineage lock's part of the fork handlers (fork.c): take it before
 * every other tether lock; release it in the parent and the child. */
TETHER_HIDDEN void tether__lineage_fork_prepare(void);
TETHER_HIDDEN void tether__lineage_fork_release(void);
/* Take s off its opener's `opened` list (s is being freed). */
TETHER_HIDDEN void tether__scope_forget_opener(tether_scope *s);

/* The dump's part of the fork child handler (fork.c): an installation of
 * tether_dump_on_signal made in the parent no longer holds the single slot. */
TETHER_HIDDEN void tether__dump_fork_child(void);

/* Free a token the scope made for its children (a child's own, or the
 * background children's parent). Still busy means a child left a token or
 * scope derived from it alive after returning: a broken structure that no
 * caller could handle, so it is reported loudly. */
static inline void tether__free_child_token(tether_token *tok, const char *whose)
{
    tether__free_or_die(tok, "child", whose);
}

#endif /* TETHER__SCOPE_H */
