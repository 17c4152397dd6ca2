/*
 * The waiting layer (wait.h): futex sleeps on wake points, the eventfds that
 * pollers wait on, the pool of spare eventfds, and the wake-ups.
 *
 * Sleeping waits on the point's state word as a futex: no file descriptor,
 * so ten thousand sleepers cost no fds. A sleeper waits on its own word
 * alone, always with a timeout, so that a signal handler ends the sleep with
 * EINTR as nanosleep(2) does, SA_RESTART or not (futex_waitv on the
 * ancestors' words too would let one wake reach a whole subtree, but the
 * kernel restarts it under SA_RESTART). It sets WAITERS on its word, so a
 * firer issues FUTEX_WAKE only when someone may be asleep, and firing a
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
 *
 * fork: an eventfd is one kernel object shared by parent and child, so a
 * cancel in one process would leave the other's pollers readable for good
 * (spinning). Each eventfd is tagged with the process generation that made
 * it; the child's fork handler drops the pool, and a point whose eventfd is
 * from an earlier generation gets a fresh one on its first use in the child
 * (the old one is closed there, never written).
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

_Atomic unsigned tether__fork_gen;

enum { EFD_NONE = -1 };

/* A wake point's efd word: the fd and the generation that made it. */
static uint64_t efd_word(int fd, unsigned gen)
{
    return (uint64_t)gen << 32 | (uint32_t)fd;
}

static int efd_fd(uint64_t word)
{
    return (int)(int32_t)(uint32_t)word;
}

/* The fd in `word` if this process made it, else -1. */
static int efd_own(uint64_t word)
{
    return (unsigned)(word >> 32) == tether__fork_generation() ? efd_fd(word) : EFD_NONE;
}

static void pool_lock_take(void)
{
    tether__fork_once();
    tether__lock(&pool_lock);
}

void tether__wake_init(struct tether_wake *w, struct tether_wake *up, uint32_t owner_bits)
{
    atomic_init(&w->state, owner_bits);
    atomic_init(&w->efd, efd_word(EFD_NONE, 0));
    w->up = up;
}

uint32_t tether__wake_fire(struct tether_wake *w, uint32_t owner_bits)
{
    return atomic_fetch_or(&w->state, TETHER_WAKE_FIRED | owner_bits);
}

void tether__wake_sleepers(struct tether_wake *w, uint32_t old)
{
    int efd = efd_own(atomic_load(&w->efd));
    if (efd >= 0)
        tether__sys_eventfd_signal(efd); /* fails only near overflow: still readable */
    if ((old | atomic_load_explicit(&w->state, memory_order_relaxed)) & TETHER_WAKE_WAITERS)
        tether__sys_futex_wake(&w->state);
}

/* Close an eventfd made in an earlier generation (the parent's too): this
 * process's copy of the descriptor only. */
static void close_inherited(uint64_t word)
{
    if (efd_fd(word) >= 0)
        tether__sys_close(efd_fd(word));
}

/* The point's eventfd, made (or taken from the pool) on first use, and
 * again on first use after a fork. */
static int wake_efd(struct tether_wake *w)
{
    uint64_t word = atomic_load_explicit(&w->efd, memory_order_acquire);
    int fd = efd_own(word);
    if (fd >= 0)
        return fd;
    pool_lock_take();
    fd = spare_efds > 0 ? spare_efd[--spare_efds] : -1;
    tether__unlock(&pool_lock);
    if (fd >= 0)
        tether__sys_eventfd_drain(fd); /* EAGAIN when its old point never fired */
    else if ((fd = tether__sys_eventfd(EFD_CLOEXEC | EFD_NONBLOCK)) < 0)
        return -1;
    unsigned gen = tether__fork_generation();
    while (!atomic_compare_exchange_strong(&w->efd, &word, efd_word(fd, gen))) {
        if (efd_own(word) >= 0) {
            /* Another poller of w made one first: keep theirs. */
            struct tether_wake spare = { .efd = efd_word(fd, gen) };
            tether__wake_release(&spare);
            return efd_own(word);
        }
    }
    close_inherited(word);
    if (atomic_load(&w->state) & TETHER_WAKE_FIRED)
        tether__sys_eventfd_signal(fd); /* the firer may have missed it */
    return fd;
}

void tether__wake_release(struct tether_wake *w)
{
    uint64_t word = atomic_load_explicit(&w->efd, memory_order_relaxed);
    int fd = efd_own(word);
    if (fd < 0) {
        close_inherited(word);
        return;
    }
    pool_lock_take();
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
    pool_lock_take();
    int n = spare_efds;
    for (int i = 0; i < n; i++)
        fds[i] = spare_efd[i];
    spare_efds = 0;
    tether__unlock(&pool_lock);
    for (int i = 0; i < n; i++)
        tether__sys_close(fds[i]);
    return n;
}

void tether__wake_fork_prepare(void)
{
    tether__lock(&pool_lock);
}

void tether__wake_fork_parent(void)
{
    tether__unlock(&pool_lock);
}

void tether__wake_fork_child(void)
{
    /* Only this thread runs: the spares are the parent's eventfds too. */
    atomic_fetch_add_explicit(&tether__fork_gen, 1, memory_order_relaxed);
    for (int i = 0; i < spare_efds; i++)
        tether__sys_close(spare_efd[i]);
    spare_efds = 0;
    tether__unlock(&pool_lock);
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

/* A timeout past any deadline, for a sleep that has none: the futex wait
 * must always have one (see tether__wake_sleep). */
static const struct timespec far_future = { .tv_sec = (time_t)1 << 40 };

/*
 * Sleep on w's word alone. The wait always has a timeout: FUTEX_WAIT with a
 * timeout ends with EINTR when a signal handler runs, SA_RESTART or not, as
 * nanosleep(2) does (the kernel resumes it through restart_syscall only when
 * no handler ran), whereas a futex wait without one, and futex_waitv, are
 * restarted under SA_RESTART and would hide the signal.
 */
int tether__wake_sleep(struct tether_wake *w, tether_time_t end)
{
    uint32_t s = mark_waiting(w, TETHER_WAKE_WAITERS);
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
