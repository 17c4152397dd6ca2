/*
 * One funnel for every resource acquisition (memory, threads, eventfds), so
 * that a fault-injection build can fail the Nth one on demand and the tests
 * can sweep every failure path. Without TETHER_FAULT_INJECTION only the
 * eventfd wrapper is compiled, and it is a plain eventfd(2).
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/eventfd.h>

#ifdef TETHER_FAULT_INJECTION
static _Atomic long fault_nth; /* 0: disarmed */
static _Atomic long fault_seen;

bool tether__fault_hit(void)
{
    if (atomic_load_explicit(&fault_nth, memory_order_relaxed) == 0)
        return false;
    long n = atomic_fetch_add(&fault_seen, 1) + 1;
    return n == atomic_load(&fault_nth);
}

void tether_fault_arm(long nth)
{
    atomic_store(&fault_seen, 0);
    atomic_store(&fault_nth, nth);
}

long tether_fault_seen(void)
{
    return atomic_load(&fault_seen);
}
#endif

int tether__eventfd(int flags)
{
    if (tether__fault_hit()) {
        errno = EMFILE;
        return -1;
    }
    return eventfd(0, flags);
}
