/*
 * The waiting layer (wait.h): futex sleeps on wake points, the eventfds that
 * pollers wait on, the pool of spare eventfds, and the wake-ups.
 *
 * Sleeping waits on the point's state word as a futex: no file descriptor,
 * so ten thousand sleepers cost no fds. A sleeper waits on its own word
 * alone, always with a timeout, so that a signal handler ends the sleep with
 * EINTR as nanosleep(2) does, SA_RESTART or not (futex_waitv on the
 * ancestors' words too would let one wake reach a whole subtree, but the
 * kernel restarts it under SA_RESTART). It sets WAITERS and SOLO on its word,
 * so a firer issues FUTEX_WAKE only when someone may be asleep, and firing a
 * scope's point costs one FUTEX_WAKE per sleeping child.
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

#include <sys/eventfd.h>

enum { SPARE_EFDS = 4 };
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static int spare_efd[SPARE_EFDS]; /* guarded by pool_lock */
static int spare_efds;

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

int tether_trim(void)
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
    tether_trim();
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

/* A timeout past any deadline, for a sleep that has none: the futex wait
 * must always have one (see tether__wake_sleep). */
static const struct timespec far_future = { .tv_sec = (time_t)1 << 40 };

/*
 * Sleep on w's word alone. The wait always has a timeout: FUTEX_WAIT with a
 * timeout ends with EINTR when a signal handler runs, SA_RESTART or not, as
 * nanosleep(2) does (the kernel resumes it through restart_syscall only when
 * no handler ran), whereas a futex wait without one, and futex_waitv, are
 * restarted under SA_RESTART and would hide the signal. A sleeper marks the
 * word SOLO, so firers wake its word directly.
 */
int tether__wake_sleep(struct tether_wake *w, tether_time_t end)
{
    uint32_t s = mark_waiting(w, TETHER_WAKE_WAITERS | TETHER_WAKE_SOLO);
    if (s & TETHER_WAKE_FIRED)
        return 0;
    struct timespec ts;
    const struct timespec *abs = abs_timeout(&ts, end);
    int r = tether__sys_futex_wait(&w->state, s, abs ? abs : &far_future);
    return r < 0 && errno == EINTR ? EINTR : 0; /* EAGAIN: the word changed; ETIMEDOUT */
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
