/*
 * Link-time wrappers for the fault suites (see fault_wrap.h): count live
 * heap blocks, and find allocations that bypass tether's injection funnel.
 */
#define _GNU_SOURCE
#include "fault_wrap.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/types.h>

/* ------------------------------------------------- heap blocks, counted */

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void __real_free(void *p);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
void __wrap_free(void *p);

/* The blocks allocated through the wrappers and not yet freed, in a small
 * open-addressing set: a free of a block that glibc allocated internally
 * (Check's stdio does that) must not count. */
enum { BLOCK_SLOTS = 1 << 16 };
static void *blocks[BLOCK_SLOTS];
static pthread_mutex_t blocks_mu = PTHREAD_MUTEX_INITIALIZER;
atomic_long live_blocks;

static size_t home_slot(const void *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 29;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 48); /* 16 bits */
}

static void track(void *p)
{
    pthread_mutex_lock(&blocks_mu);
    size_t i = home_slot(p);
    for (size_t n = 0; blocks[i]; n++) {
        if (n == BLOCK_SLOTS)
            abort(); /* more live blocks than the set holds */
        i = (i + 1) % BLOCK_SLOTS;
    }
    blocks[i] = p;
    atomic_fetch_add_explicit(&live_blocks, 1, memory_order_relaxed);
    pthread_mutex_unlock(&blocks_mu);
}

/* Forget p if it is tracked (linear probing, deletion by backward shift). */
static bool untrack(void *p)
{
    pthread_mutex_lock(&blocks_mu);
    size_t i = home_slot(p);
    while (blocks[i] && blocks[i] != p)
        i = (i + 1) % BLOCK_SLOTS;
    bool found = blocks[i] == p;
    if (found) {
        blocks[i] = NULL;
        for (size_t j = (i + 1) % BLOCK_SLOTS; blocks[j]; j = (j + 1) % BLOCK_SLOTS) {
            size_t k = home_slot(blocks[j]);
            /* Move blocks[j] into the hole unless its home lies in (i, j]. */
            bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
            if (!stays) {
                blocks[i] = blocks[j];
                blocks[j] = NULL;
                i = j;
            }
        }
        atomic_fetch_sub_explicit(&live_blocks, 1, memory_order_relaxed);
    }
    pthread_mutex_unlock(&blocks_mu);
    return found;
}

/* Which acquisitions went through the funnel: its check
 * (tether__fault_hit, wrapped too) leaves a mark on the calling thread that
 * the acquisition right after it consumes. An allocation that finds no mark
 * bypassed the funnel; counted while probing (test code then allocates
 * nothing). tether's eventfd and pidfd creation (its raw-syscall layer) and
 * pthread_create are wrapped only to consume marks. */
bool __real_tether__fault_hit(void);
bool __wrap_tether__fault_hit(void);
int __real_tether__sys_eventfd(int flags);
int __wrap_tether__sys_eventfd(int flags);
int __real_tether__sys_pidfd_open(pid_t pid);
int __wrap_tether__sys_pidfd_open(pid_t pid);
int __real_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);
int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *),
                          void *arg);

static _Thread_local bool funnel_mark;
atomic_bool probing;
atomic_long probe_unfunnelled;
void *_Atomic probe_site;

bool __wrap_tether__fault_hit(void)
{
    bool hit = __real_tether__fault_hit();
    funnel_mark = !hit;
    return hit;
}

/* These ask the funnel themselves (which marks), then acquire: clear after. */
int __wrap_tether__sys_eventfd(int flags)
{
    int fd = __real_tether__sys_eventfd(flags);
    funnel_mark = false;
    return fd;
}

int __wrap_tether__sys_pidfd_open(pid_t pid)
{
    int fd = __real_tether__sys_pidfd_open(pid);
    funnel_mark = false;
    return fd;
}

int __wrap_pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*fn)(void *), void *arg)
{
    funnel_mark = false;
    return __real_pthread_create(th, attr, fn, arg);
}

static void allocated(void *p, void *site)
{
    track(p);
    bool marked = funnel_mark;
    funnel_mark = false;
    if (!marked && atomic_load_explicit(&probing, memory_order_relaxed) &&
        atomic_fetch_add(&probe_unfunnelled, 1) == 0)
        atomic_store(&probe_site, site);
}

void *__wrap_malloc(size_t n)
{
    void *p = __real_malloc(n);
    if (p)
        allocated(p, __builtin_return_address(0));
    return p;
}

void *__wrap_calloc(size_t n, size_t size)
{
    void *p = __real_calloc(n, size);
    if (p)
        allocated(p, __builtin_return_address(0));
    return p;
}

void *__wrap_realloc(void *p, size_t n)
{
    bool tracked = p && untrack(p);
    void *q = __real_realloc(p, n);
    if (q && (tracked || !p))
        track(q);
    else if (!q && tracked && n != 0)
        track(p); /* failed: p is still live */
    return q;
}

void __wrap_free(void *p)
{
    if (p)
        untrack(p);
    __real_free(p);
}
