/*
 * Cancel hooks (hook.c): what the token tree, tether_trim and the fork
 * handlers ask of them.
 */
#ifndef TETHER__HOOK_H
#define TETHER__HOOK_H

#include "token.h"

/* t is being freed: its hooks that have not started never run; if `wait`,
 * wait until its running hooks (on other threads) have returned. Takes the
 * hook lock, a leaf: callable with the tree lock held when !wait. */
TETHER_HIDDEN void tether__hook_token_free(tether_token *t, bool wait);
/* Whether one of t's hooks is running on the calling thread (a hook about
 * to free its own token). Takes the hook lock: callable under the tree lock. */
TETHER_HIDDEN bool tether__hook_runs_here(tether_token *t);
/* Release every idle runner and wait until each has exited; how many. */
TETHER_HIDDEN int tether__hook_trim(void);
/* The hooks' part of the fork handlers (fork.c): the hook lock is taken
 * last. In the child the runners are gone: forgotten, the queue dropped. */
TETHER_HIDDEN void tether__hook_fork_prepare(void);
TETHER_HIDDEN void tether__hook_fork_parent(void);
TETHER_HIDDEN void tether__hook_fork_child(void);

#endif /* TETHER__HOOK_H */
