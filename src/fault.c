/*
 * The fault-injection funnel (internal.h): every resource acquisition —
 * memory, threads, descriptors (sys.c) — asks tether__fault_hit first, so
 * that a TETHER_FAULT_INJECTION build can fail the Nth one on demand and the
 * tests can sweep every failure path. Empty in a normal build.
 */
#include "internal.h"

#ifdef TETHER_FAULT_INJECTION
static _Atomic long fault_nth; /* 0: disarmed */
static _Atomic long fault_seen;
static _Atomic long fault_absorbed;

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

void tether__fault_absorbed(void)
{
    atomic_fetch_add(&fault_absorbed, 1);
}

long tether_fault_absorbed_count(void)
{
    return atomic_load(&fault_absorbed);
}
#else
/* ISO C wants a translation unit to declare something. */
typedef int tether__fault_unused;
#endif
