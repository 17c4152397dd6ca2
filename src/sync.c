/*
 * Cancellable condition-variable and semaphore waits.
 *
 * Condition variables: a cancellation callback on the current token wakes
 * the waiter by broadcasting the condvar. A broadcast can only be lost in
 * the waiter's window: after it looked at the token (mutex held) and before
 * pthread_cond_wait has queued it, which is also when it releases the mutex.
 * So the callback takes the mutex only when the waiter is the one holding
 * it (glibc records a mutex's owner; the waiter then cannot be waiting for
 * the canceler, and lets go of the mutex as it enters the wait). Whenever
 * anyone else holds the mutex -- the canceler itself, as when a waiter that
 * woke at the deadline expires the token and runs the others' callbacks, or
 * a thread that cancels under the mutex -- the waiter is either queued
 * already or will look at the token (fired before the callback ran) and not
 * sleep, so the broadcast is issued without the mutex. A canceler therefore
 * never blocks on a mutex it holds. Where the owner is not recorded (lock
 * elision, another libc) the callback always locks, and a canceler must
 * not hold the mutex (documented).
 * A small state word decides who touches the mutex when the waiter leaves:
 * if the waiter wins, the callback does nothing; if the callback won, the
 * waiter lets go of the mutex while it waits for the callback to finish.
 * A waiter that was woken (perhaps by a pthread_cond_signal meant for
 * someone) and then reports cancellation passes the wake-up on, so a signal
 * is never lost.
 *
 * Semaphores cannot be woken from outside without posting a unit, and an
 * injected unit could be taken by another waiter (a unit invented) or leave
 * this one asleep. So the wait sleeps in short slices of sem_clockwait and
 * checks the token between them; a unit is only ever taken by a successful
 * sem_trywait/sem_clockwait, which is then returned.
 */
#define _GNU_SOURCE
#include "dropin.h"

#include "clock.h"
#include "metrics.h"

#include <semaphore.h>

enum cond_state {
    CW_IDLE,    /* registering: the callback must not touch the mutex */
    CW_WAITING, /* the callback may wake the waiter */
    CW_WAKING,  /* the callback took it: it is locking/broadcasting */
    CW_DONE,    /* the callback finished with the mutex */
    CW_LEAVING  /* the waiter took it: the callback does nothing */
};

struct cond_waiter {
    pthread_cond_t *cond;
    pthread_mutex_t *mutex;
    pthread_t waiter;
    int waiter_tid; /* the mutex's recorded owner while the waiter holds it; 0: unknown */
    _Atomic int state;
};

/* The thread id glibc records as the owner of a locked mutex, 0 if none or
 * not recorded (lock elision) or not known (another libc). */
static int mutex_owner(pthread_mutex_t *mutex)
{
#ifdef __GLIBC__
    return __atomic_load_n(&mutex->__data.__owner, __ATOMIC_SEQ_CST);
#else
    (void)mutex;
    return 0;
#endif
}

static void cond_on_cancel(void *arg)
{
    struct cond_waiter *w = arg;
    /* Run by the waiter itself (its own check noticed a passed deadline and
     * canceled the token): it holds the mutex and is not waiting. */
    if (pthread_equal(pthread_self(), w->waiter))
        return;
    int expected = CW_WAITING;
    if (!atomic_compare_exchange_strong(&w->state, &expected, CW_WAKING))
        return;
    /* The token fired before this ran; pairs with the waiter's fence. */
    atomic_thread_fence(memory_order_seq_cst);
    if (w->waiter_tid == 0 || mutex_owner(w->mutex) == w->waiter_tid) {
        /* The waiter may be in its window: wait until it is queued. */
        pthread_mutex_lock(w->mutex);
        pthread_cond_broadcast(w->cond);
        pthread_mutex_unlock(w->mutex);
    } else {
        pthread_cond_broadcast(w->cond); /* queued, or it will see the token */
    }
    atomic_store(&w->state, CW_DONE);
}

/* Wait under t until woken, canceled, or the monotonic instant `until`.
 * The mutex is held on entry and on return. */
static int cond_wait_token(tether_token *t, pthread_cond_t *cond, pthread_mutex_t *mutex,
                           tether_time_t until)
{
    int c = tether__token_poll(t);
    if (c)
        return c;
    struct cond_waiter w = { .cond = cond,
                             .mutex = mutex,
                             .waiter = pthread_self(),
                             .waiter_tid = mutex_owner(mutex),
                             .state = CW_IDLE };
    tether_callback *cb;
    int rc = tether_token_on_cancel(t, cond_on_cancel, &w, &cb);
    if (rc)
        return rc;
    atomic_store(&w.state, CW_WAITING);
    /* The owner recorded (when we locked) is visible before we look at the
     * token: a canceler that fires later sees us as the holder. */
    atomic_thread_fence(memory_order_seq_cst);

    rc = tether__token_poll(t);
    if (!rc) {
        tether_time_t end = tether__min_time(until, t->deadline);
        if (end == TETHER_NEVER) {
            rc = pthread_cond_wait(cond, mutex);
        } else {
            struct timespec ts = tether__timespec(end);
            rc = pthread_cond_clockwait(cond, mutex, CLOCK_MONOTONIC, &ts);
        }
        c = tether__token_poll(t);
        if (c)
            tether__metrics_call_stopped(c); /* it waited: a blocking call stopped */
        if (c && rc == 0)
            pthread_cond_signal(cond); /* the wake-up may have been someone's: pass it on */
        if (c)
            rc = c; /* canceled, or the token's deadline ended the wait */
        else if (rc == ETIMEDOUT && tether_now() < until)
            rc = 0; /* cannot happen (no early timeouts); be a spurious wakeup */
    }

    int expected = CW_WAITING;
    if (!atomic_compare_exchange_strong(&w.state, &expected, CW_LEAVING) &&
        atomic_load(&w.state) != CW_DONE) {
        /* The callback is on its way to the mutex we hold: let it through. */
        pthread_mutex_unlock(mutex);
        tether_token_off_cancel(cb, NULL);
        pthread_mutex_lock(mutex);
    } else {
        tether_token_off_cancel(cb, NULL);
    }
    return rc;
}

int tether_cond_wait(pthread_cond_t *cond, pthread_mutex_t *mutex)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return pthread_cond_wait(cond, mutex);
    return cond_wait_token(t, cond, mutex, TETHER_NEVER);
}

/* An absolute time on `clock` to a CLOCK_MONOTONIC instant; EINVAL for a
 * bad timespec or clock. */
static int to_monotonic(clockid_t clock, const struct timespec *abstime, tether_time_t *out)
{
    if (!abstime || abstime->tv_nsec < 0 || abstime->tv_nsec >= TETHER_NS_PER_SEC)
        return EINVAL;
    if (clock != CLOCK_MONOTONIC && clock != CLOCK_REALTIME)
        return EINVAL;
    if (abstime->tv_sec < 0) {
        *out = tether_now() - 1; /* long past */
        return 0;
    }
    int64_t when = tether__timespec_ns(abstime);
    if (clock == CLOCK_MONOTONIC) {
        *out = when;
        return 0;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t left = when == INT64_MAX ? INT64_MAX : when - tether__timespec_ns(&now);
    *out = tether_deadline_after(left);
    return 0;
}

int tether_cond_clockwait(pthread_cond_t *cond, pthread_mutex_t *mutex, clockid_t clock,
                          const struct timespec *abstime)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return pthread_cond_clockwait(cond, mutex, clock, abstime);
    tether_time_t until;
    int rc = to_monotonic(clock, abstime, &until);
    if (rc)
        return rc;
    return cond_wait_token(t, cond, mutex, until);
}

int tether_cond_timedwait(pthread_cond_t *cond, pthread_mutex_t *mutex,
                          const struct timespec *abstime)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return pthread_cond_timedwait(cond, mutex, abstime);
    return tether_cond_clockwait(cond, mutex, CLOCK_REALTIME, abstime);
}

/* How long one sleep of a semaphore wait may last before the token is
 * looked at again: the cancellation latency. */
#define SEM_SLICE_NS tether_ms(10)

static int sem_wait_token(tether_token *t, sem_t *sem, tether_time_t until)
{
    if (tether__check_or_fail(t) < 0)
        return -1;
    for (;;) {
        if (sem_trywait(sem) == 0)
            return 0;
        if (errno != EAGAIN)
            return -1;
        tether_time_t now = tether_now();
        if (now >= until)
            return tether__fail(ETIMEDOUT);
        tether_time_t end =
            tether__min_time(tether__min_time(until, t->deadline), now + SEM_SLICE_NS);
        struct timespec ts = tether__timespec(end);
        if (sem_clockwait(sem, CLOCK_MONOTONIC, &ts) == 0)
            return 0; /* a unit taken is returned, canceled or not */
        if (errno != ETIMEDOUT)
            return -1; /* EINTR, EINVAL */
        int c = tether__token_poll(t);
        if (c) {
            tether__metrics_call_stopped(c); /* it waited: a blocking call stopped */
            return tether__fail(c);
        }
    }
}

int tether_sem_wait(sem_t *sem)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return sem_wait(sem);
    return sem_wait_token(t, sem, TETHER_NEVER);
}

int tether_sem_timedwait(sem_t *sem, const struct timespec *abstime)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return sem_timedwait(sem, abstime);
    if (tether__check_or_fail(t) < 0)
        return -1;
    /* As sem_timedwait: abstime is not looked at when a unit is there. */
    if (sem_trywait(sem) == 0)
        return 0;
    if (errno != EAGAIN)
        return -1;
    tether_time_t until;
    if (to_monotonic(CLOCK_REALTIME, abstime, &until))
        return tether__fail(EINVAL);
    return sem_wait_token(t, sem, until);
}
