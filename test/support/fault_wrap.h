/*
 * The fault suites' link-time wrappers (test/support/fault_wrap.c; the
 * binaries link with -Wl,--wrap=malloc,calloc,realloc,free,
 * tether__fault_hit,pthread_create,tether__sys_eventfd,tether__sys_pidfd_open, see test/CMakeLists.txt):
 * every heap block allocated through the wrappers is counted until freed,
 * and an allocation that did not pass tether's injection funnel first is
 * counted (and its call site kept) while probing.
 */
#ifndef TETHER_TEST_FAULT_WRAP_H
#define TETHER_TEST_FAULT_WRAP_H

#include <stdatomic.h>

/* Heap blocks allocated through the wrappers and not yet freed. */
extern atomic_long live_blocks;

/* While true, allocations that bypassed the funnel are counted. */
extern atomic_bool probing;

/* How many allocations bypassed the funnel while probing. */
extern atomic_long probe_unfunnelled;

/* The return address of the first one (NULL if none). */
extern void *_Atomic probe_site;

#endif
