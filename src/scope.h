/*
 * Scope and task structures, shared by scope.c (open, children, spawn) and
 * join.c (waiting, join, free). Locking rules: see scope.c.
 */
#ifndef TETHER__SCOPE_H
#define TETHER__SCOPE_H

#include "current.h"

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
    char name[TETHER_NAME_MAX];
    _Atomic int tid;            /* kernel id, stored by the child as it starts */
    _Atomic bool exited;        /* its function returned (for the dump) */
    /* Hostage watch (hostage.c), by the joining thread, under s->mu. */
    bool hostage_held, hostage_released;
    unsigned hostage_attempts;
    tether_time_t hostage_next;  /* the next escalation attempt */
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
    bool failure_decided;       /* fail-fast: a failure canceled the scope */
    int winner, cause_task;
    int body_error;             /* tether_scope_run: the body failed ... */
    bool body_decided;          /* ... and its cancel was the first */
    tether_time_t last_exit_at;

    /* Hostage watchdog options (immutable after open). */
    int64_t hostage_grace_ns;
    void (*hostage_hook)(const tether_hostage_report *report, void *arg);
    void *hostage_arg;
    int hostage_signal;         /* 0: no escalation */
};

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

/* Whether the calling thread runs under t (waiting for t would deadlock). */
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

/* Free a token the scope made for its children (a child's own, or the
 * background children's parent). Still busy means a child left a token or
 * scope derived from it alive after returning: a broken structure that no
 * caller could handle, so it is reported loudly. */
static inline void tether__free_child_token(tether_token *tok, const char *whose)
{
    tether__free_or_die(tok, "child", whose);
}

#endif /* TETHER__SCOPE_H */
