/*
 * The waiting layer (wait.h): futex sleeps on wake points, the eventfds that
 * pollers wait on, the pool of spare eventfds, and the wake-ups.
 *
 * Sleeping waits on the point's state word as a futex: no file descriptor,
 * so ten thousand sleepers cost no fds. With futex_waitv (Linux 5.16) it
 * waits on its ancestors' words too (TETHER_WAIT_SET in all), so firing a
 * scope's point wakes all its sleeping children with one FUTEX_WAKE on the
 * scope's word, instead of one wake per child. A sleeper sets WAITERS on
 * every word it waits on, so a firer issues FUTEX_WAKE only when someone may
 * be asleep; where futex_waitv is missing (older kernels, valgrind) it waits
 * on its own word alone and says so with SOLO, and firers wake that word
 * directly.
 *
 * The eventfd is made on first need and written once when the point fires;
 * it is never read while the point lives. Its creator and the firer close
 * their race without a lock: the creator publishes the fd and then looks at
 * the state, the firer sets the state and then looks at the fd (both
 * sequentially consistent), so at least one of them writes it.
 *
 * Eventfds of released points are kept (up to SPARE_EFDS) for the next
 * point that needs one, so freeing a scope's children costs no close(2)
 * each; tether_trim empties the pool.
 */
#define _GNU_SOURCE
#include "wait.h"

#include "clock.h"
#include "sys.h"

#include <sched.h>
#include <sys/eventfd.h>

enum { SPARE_EFDS = 4 };
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int spare_efd[SPARE_EFDS]; /* guarded by pool_lock */
static int spare_efds;

/* futex_waitv: 1 works, -1 missing (ENOSYS), 0 not tried yet. */
static _Atomic int waitv_support;

void tether__wake_init(struct tether_wake *w, struct tether_wake *up, uint32_t owner_bits)
{
    atomic_init(&w->state, owner_bits);
    atomic_init(&w->efd, -1);
    w->up = up;
}

uint32_t tether__wake_fire(struct tether_wake *w, uint32_t owner_bits)
{
    return atomic_fetch_or(&w->state, TETHER_WAKE_FIRED | owner_bits);
}

void tether__wake_sleepers(struct tether_wake *w, uint32_t old, unsigned depth)
{
    int efd = atomic_load(&w->efd);
    if (efd >= 0)
        tether__sys_eventfd_signal(efd); /* fails only near overflow: still readable */
    uint32_t wake_if = depth == 0                ? TETHER_WAKE_WAITERS
                       : depth >= TETHER_WAIT_SET ? TETHER_WAKE_WAITERS
                                                  : TETHER_WAKE_SOLO;
    if ((old | atomic_load_explicit(&w->state, memory_order_relaxed)) & wake_if)
        tether__sys_futex_wake(&w->state);
}

/* The point's eventfd, made (or taken from the pool) on first use. */
static int wake_efd(struct tether_wake *w)
{
    int fd = atomic_load_explicit(&w->efd, memory_order_acquire);
    if (fd >= 0)
        return fd;
    tether__lock(&pool_lock);
    fd = spare_efds > 0 ? spare_efd[--spare_efds] : -1;
    tether__unlock(&pool_lock);
    if (fd >= 0)
        tether__sys_eventfd_drain(fd); /* EAGAIN when its old point never fired */
    else if ((fd = tether__sys_eventfd(EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return -1;
    int none = -1;
    if (!atomic_compare_exchange_strong(&w->efd, &none, fd)) {
        /* Another poller of w made one first: keep theirs. */
        struct tether_wake spare = { .efd = fd };
        tether__wake_release(&spare);
        return none;
    }
    if (atomic_load(&w->state) & TETHER_WAKE_FIRED)
        tether__sys_eventfd_signal(fd); /* the firer may have missed it */
    return fd;
}

void tether__wake_release(struct tether_wake *w)
{
    int fd = atomic_load_explicit(&w->efd, memory_order_relaxed);
    if (fd < 0)
        return;
    tether__lock(&pool_lock);
    if (spare_efds < SPARE_EFDS) {
        spare_efd[spare_efds++] = fd;
        fd = -1;
    }
    tether__unlock(&pool_lock);
    if (fd >= 0)
        tether__sys_close(fd);
}

int tether__wake_trim(void)
{
    int fds[SPARE_EFDS];
    tether__lock(&pool_lock);
    int n = spare_efds;
    for (int i = 0; i < n; i++)
        fds[i] = spare_efd[i];
    spare_efds = 0;
    tether__unlock(&pool_lock);
    for (int i = 0; i < n; i++)
        tether__sys_close(fds[i]);
    return n;
}

/* At exit, so that fd-tracking tools (valgrind --track-fds) see none left. */
__attribute__((destructor)) static void close_spare_efds(void)
{
    tether__wake_trim();
}

/* Set `bits` on w's word if missing; the word's value with them. */
static uint32_t mark_waiting(struct tether_wake *w, uint32_t bits)
{
    uint32_t s = atomic_load_explicit(&w->state, memory_order_acquire);
    if ((s & bits) != bits)
        s = atomic_fetch_or(&w->state, bits) | bits;
    return s;
}

/* An absolute CLOCK_MONOTONIC timeout for the futex calls; NULL for never. */
static const struct timespec *abs_timeout(struct timespec *ts, tether_time_t end)
{
    if (end == TETHER_NEVER)
        return NULL;
    *ts = tether__timespec(end);
    return ts;
}

/* Sleep on w's word alone. 0 to re-evaluate, or EINTR. */
static int sleep_solo(struct tether_wake *w, tether_time_t end)
{
    uint32_t s = mark_waiting(w, TETHER_WAKE_WAITERS | TETHER_WAKE_SOLO);
    if (s & TETHER_WAKE_FIRED)
        return 0;
    struct timespec ts;
    int r = tether__sys_futex_wait(&w->state, s, abs_timeout(&ts, end));
    return r < 0 && errno == EINTR ? EINTR : 0;
}

/* Sleep on w's word and its nearest ancestors'. 0 to re-evaluate, EINTR, or
 * ENOSYS when the kernel has no futex_waitv. */
static int sleep_set(struct tether_wake *w, tether_time_t end)
{
    struct futex_waitv set[TETHER_WAIT_SET];
    unsigned n = 0;
    for (struct tether_wake *a = w; a && n < TETHER_WAIT_SET; a = a->up) {
        uint32_t s = mark_waiting(a, TETHER_WAKE_WAITERS);
        if (s & TETHER_WAKE_FIRED) {
            /* An ancestor fired, so w is about to: its firer is walking the
             * tree right now. Let it run. */
            sched_yield();
            return 0;
        }
        set[n++] = (struct futex_waitv){ .val = s, .uaddr = (uintptr_t)&a->state,
                                         .flags = FUTEX_32 | FUTEX_PRIVATE_FLAG };
    }
    struct timespec ts;
    if (tether__sys_futex_waitv(set, n, abs_timeout(&ts, end)) >= 0)
        return 0;
    if (errno == ENOSYS || errno == EPERM)
        return ENOSYS;
    return errno == EINTR ? EINTR : 0; /* EAGAIN: a word changed; ETIMEDOUT */
}

int tether__wake_sleep(struct tether_wake *w, tether_time_t end)
{
    int r = ENOSYS;
    if (atomic_load_explicit(&waitv_support, memory_order_relaxed) >= 0) {
        r = sleep_set(w, end);
        if (r == ENOSYS)
            atomic_store_explicit(&waitv_support, -1, memory_order_relaxed);
    }
    return r == ENOSYS ? sleep_solo(w, end) : r;
}

int tether__wake_poll(struct tether_wake *w, struct pollfd *fds, nfds_t nfds,
                      const struct timespec *timeout, const sigset_t *sigmask)
{
    int efd = wake_efd(w);
    if (efd < 0)
        return -1;
    fds[nfds] = (struct pollfd){ .fd = efd, .events = POLLIN };
    return tether__sys_ppoll(fds, nfds + 1, timeout, sigmask);
}
