/* The calling thread's current token, and running code under a token. */
#ifndef TETHER__CURRENT_H
#define TETHER__CURRENT_H

#include "token.h"

/* The token the calling thread has entered last, or NULL. Exported, though
 * not API, for one reader outside libtether: libtether_interpose.so tests it
 * on every call it forwards, and a load (not a call to tether_current) is
 * what keeps that path free. Only libtether writes it. */
TETHER_API extern _Thread_local tether_token *tether__current
    __attribute__((tls_model("initial-exec")));

/* The process root (root.c): the token of the deadline inherited in
 * TETHER_DEADLINE, under which a thread without a current token runs.
 * Resolved once, by the first call that needs it. */
enum { TETHER__ROOT_UNRESOLVED, TETHER__ROOT_RESOLVING, TETHER__ROOT_NONE, TETHER__ROOT_ADOPTED };
TETHER_HIDDEN extern _Atomic int tether__root_state;
TETHER_HIDDEN extern tether_token *tether__root_token; /* set before ADOPTED is published */
/* Set by tether's own threads whose user code is clean-up (hook runners):
 * the process root does not apply there. */
TETHER_HIDDEN extern _Thread_local bool tether__outside_root;
/* Resolve the root (or wait for the thread resolving it): the root, or NULL
 * for none (no valid variable, opted out, or no memory this time), on any
 * thread. */
TETHER_HIDDEN tether_token *tether__root_slow(void);

/* The process root, or NULL (also on a thread outside it): one acquire
 * load once resolved. */
static inline tether_token *tether__root(void)
{
    int s = atomic_load_explicit(&tether__root_state, memory_order_acquire);
    if (__builtin_expect(s == TETHER__ROOT_NONE, 1))
        return NULL;
    tether_token *r = s == TETHER__ROOT_ADOPTED ? tether__root_token : tether__root_slow();
    return tether__outside_root ? NULL : r;
}

/* The token a cancellation point of the calling thread runs under: its
 * current token, else the process root, else NULL (the raw call). */
static inline tether_token *tether__current_or_root(void)
{
    tether_token *t = tether__current;
    return __builtin_expect(t != NULL, 1) ? t : tether__root();
}

/* A TETHER_DEADLINE value: 1 to 19 decimal digits, nothing else, within
 * int64_t. 0 with *out set, or EINVAL. */
TETHER_HIDDEN int tether__deadline_parse(const char *s, tether_time_t *out);
/* The environment for a child: envp with TETHER_DEADLINE set to the earlier
 * of `deadline` and every valid value already in envp (all of envp's
 * TETHER_DEADLINE entries dropped). *out is NULL when there is no deadline
 * at all (use envp as it is), else one block to free(). 0 or ENOMEM. */
TETHER_HIDDEN int tether__child_env(char *const *envp, tether_time_t deadline, char ***out);
/* The root's part of the fork prepare handler: wait out a resolution in
 * flight, so the child never inherits one half done. */
TETHER_HIDDEN void tether__root_fork_prepare(void);

/* Leave t after user code `who` (named `name`, or NULL) ran under it; abort
 * naming the misuse if that code left its own entries unbalanced. */
TETHER_HIDDEN void tether__leave_or_die(tether_token *t, const char *who, const char *name);
/* Free a token made for user code `who` (`name` or NULL); abort naming the
 * misuse if that code left a token or scope derived from it alive. */
TETHER_HIDDEN void tether__free_or_die(tether_token *t, const char *who, const char *name);
/* Run fn(arg) under a new child of the current token with `deadline`:
 * *result gets fn's result and *fired (if not NULL) whether that deadline
 * ended it. Returns 0, or ENOMEM when the token could not be made or
 * entered (fn did not run). Aborts on unbalanced entries, naming `who`. */
TETHER_HIDDEN int tether__run_under(tether_time_t deadline, int (*fn)(void *arg), void *arg,
                                    int *result, bool *fired, const char *who);

#endif /* TETHER__CURRENT_H */
