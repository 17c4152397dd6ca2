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
