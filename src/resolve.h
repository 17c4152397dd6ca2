/*
 * The resolver's part of the fork handlers (fork.c). tether_getaddrinfo's
 * helper count is guarded by a leaf lock: taken last before fork, released
 * in both processes; the child, which has none of the parent's helper
 * threads, counts none.
 */
#ifndef TETHER__RESOLVE_H
#define TETHER__RESOLVE_H

#include "internal.h"

TETHER_HIDDEN void tether__resolve_fork_prepare(void);
TETHER_HIDDEN void tether__resolve_fork_parent(void);
TETHER_HIDDEN void tether__resolve_fork_child(void);

#endif /* TETHER__RESOLVE_H */
