/*
 * The event hooks' internal side (events.c): where scope.c, join.c and
 * token.c report events. Each report site first asks tether__events_on()
 * (one relaxed load); only then does it call the reporter, which reads the
 * registration inside a read section (see events.c) and calls the hook.
 */
#ifndef TETHER__EVENTS_H
#define TETHER__EVENTS_H

#include "internal.h"

struct tether__events_reg;
/* The published registration, or NULL. */
extern TETHER_HIDDEN _Atomic(struct tether__events_reg *) tether__events_reg;

/* Whether any hooks are registered: one relaxed load. */
static inline bool tether__events_on(void)
{
    return atomic_load_explicit(&tether__events_reg, memory_order_relaxed) != NULL;
}

/* The reports, one per event (tether/events.h says in which thread). */
TETHER_HIDDEN void tether__event_scope_opened(tether_scope *s, const char *name, tether_token *t);
TETHER_HIDDEN void tether__event_scope_joined(tether_scope *s, const char *name, tether_token *t,
                                              const tether_result *r);
TETHER_HIDDEN void tether__event_child_started(tether_scope *s, int index, const char *name,
                                               tether_token *t);
TETHER_HIDDEN void tether__event_child_exited(tether_scope *s, int index, const char *name,
                                              tether_token *t, int rc);
TETHER_HIDDEN void tether__event_token_canceled(tether_token *t, tether_cause cause, int error);
/* The fork child's part: readers of the parent's other threads are gone. */
TETHER_HIDDEN void tether__events_fork_child(void);

#endif /* TETHER__EVENTS_H */
