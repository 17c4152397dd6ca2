/*
 * The timer thread (timer.h): a binary min-heap of the armed deadlines,
 * keyed by the tokens that own them, and one thread that sleeps on a futex
 * with an absolute CLOCK_MONOTONIC timeout until the earliest one and
 * cancels each expired owner with cause deadline.
 *
 * Arming costs O(log n) under the timer lock and no system call unless the
 * new deadline is the earliest (then one FUTEX_WAKE) or no thread runs yet
 * (then the thread is created, once). Disarming costs O(log n) and never a
 * system call: the thread may wake for a deadline that is gone and sleeps
 * again.
 *
 * The thread is created lazily, through the fault funnel, with every signal
 * blocked. If it cannot be created, deadlines are enforced by waiters only,
 * as before there was a timer thread (a callback then runs when some thread
 * sees the deadline), and the next arm tries again. It exits only through
 * tether_trim when nothing is armed; a fork child has none and starts one at
 * its next kick.
 */
#define _GNU_SOURCE
#include "timer.h"

#include "clock.h"
#include "sys.h"

#include <signal.h>
#include <string.h>

struct entry {
    tether_time_t at;
    tether_token *t;
};

static pthread_mutex_t timer_lock = PTHREAD_MUTEX_INITIALIZER;
/* Guarded by timer_lock. */
static struct entry *heap; /* heap[0] is the earliest */
static size_t heap_len, heap_cap;
static pthread_t thread;
static bool running;         /* `thread` exists (and is not joined) */
static bool stopping;        /* a tether_trim is joining it */
static bool sleeping;        /* it sleeps on `seq` */
static tether_token *firing; /* picked by the thread, not claimed yet */
/* Set (under the lock) when a kick has work: start or wake the thread. */
static _Atomic bool kick_pending;
/* The thread's futex word: bumped (under the lock) to wake it. */
static _Atomic uint32_t seq;
static _Atomic bool stop;

static void place(size_t i, struct entry e)
{
    heap[i] = e;
    e.t->timer_pos = i + 1;
}

static void sift_up(size_t i, struct entry e)
{
    while (i > 0 && heap[(i - 1) / 2].at > e.at) {
        place(i, heap[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    place(i, e);
}

static void sift_down(size_t i, struct entry e)
{
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= heap_len)
            break;
        if (c + 1 < heap_len && heap[c + 1].at < heap[c].at)
            c++;
        if (heap[c].at >= e.at)
            break;
        place(i, heap[c]);
        i = c;
    }
    place(i, e);
}

/* Take the entry at i out of the heap. Timer lock held. */
static void remove_at(size_t i)
{
    heap[i].t->timer_pos = 0;
    struct entry last = heap[--heap_len];
    if (i == heap_len)
        return;
    if (i > 0 && heap[(i - 1) / 2].at > last.at)
        sift_up(i, last);
    else
        sift_down(i, last);
}

static bool grow(void)
{
    size_t cap = heap_cap ? heap_cap * 2 : 16;
    struct entry *h = tether__realloc(heap, cap * sizeof *h);
    if (!h)
        return false;
    heap = h;
    heap_cap = cap;
    return true;
}

int tether__timer_arm(tether_token *t)
{
    TETHER_ASSERT(t->deadline_owner == t && t->deadline != TETHER_NEVER);
    tether__lock(&timer_lock);
    if (heap_len == heap_cap && !grow()) {
        tether__unlock(&timer_lock);
        return ENOMEM;
    }
    sift_up(heap_len++, (struct entry){ .at = t->deadline, .t = t });
    /* Only a new earliest deadline (or a missing thread) needs the kick's
     * system call; any other deadline is found when the thread wakes. */
    if (!running || (t->timer_pos == 1 && sleeping))
        atomic_store_explicit(&kick_pending, true, memory_order_relaxed);
    tether__unlock(&timer_lock);
    return 0;
}

void tether__timer_disarm(tether_token *t)
{
    if (t->deadline_owner != t)
        return; /* never armed: an inherited deadline or none */
    tether__lock(&timer_lock);
    if (t->timer_pos)
        remove_at(t->timer_pos - 1);
    if (firing == t)
        firing = NULL;
    tether__unlock(&timer_lock);
}

bool tether__timer_claim(tether_token *t)
{
    tether__lock(&timer_lock);
    bool stands = firing == t;
    if (stands) {
        firing = NULL;
        TETHER_ASSERT(t->timer_pos != 0);
        remove_at(t->timer_pos - 1);
    }
    tether__unlock(&timer_lock);
    return stands;
}

/* Wake the thread if it sleeps. Timer lock held; true if the caller must
 * then FUTEX_WAKE `seq` (outside the lock). */
static bool bump(void)
{
    atomic_fetch_add_explicit(&seq, 1, memory_order_release);
    return sleeping;
}

static void *timer_main(void *arg)
{
    (void)arg;
    (void)pthread_setname_np(pthread_self(), "tether-timer");
    tether__lock(&timer_lock);
    while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
        tether_time_t next = heap_len ? heap[0].at : TETHER_NEVER;
        if (next <= tether_now()) {
            tether_token *t = firing = heap[0].t;
            tether__unlock(&timer_lock);
            tether__token_expire_timer(t);
            tether__lock(&timer_lock);
            continue;
        }
        uint32_t seen = atomic_load_explicit(&seq, memory_order_acquire);
        sleeping = true;
        tether__unlock(&timer_lock);
        struct timespec ts = tether__timespec(next);
        /* Returns at `next`, on a bump, or spuriously: look again. */
        (void)tether__sys_futex_wait(&seq, seen, next == TETHER_NEVER ? NULL : &ts);
        tether__lock(&timer_lock);
        sleeping = false;
    }
    tether__unlock(&timer_lock);
    return NULL;
}

/* Create the thread with every signal blocked (it must never run a signal
 * handler meant for the program's threads). Timer lock held. */
static void start_locked(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = tether__thread_create(&thread, NULL, timer_main, NULL);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc == 0)
        running = true;
    else
        tether__fault_absorbed(); /* waiters enforce deadlines; next arm retries */
}

void tether__timer_kick(void)
{
    if (!atomic_load_explicit(&kick_pending, memory_order_relaxed))
        return;
    bool wake = false;
    tether__lock(&timer_lock);
    atomic_store_explicit(&kick_pending, false, memory_order_relaxed);
    if (!running && heap_len)
        start_locked();
    else if (running)
        wake = bump();
    tether__unlock(&timer_lock);
    if (wake)
        tether__sys_futex_wake(&seq);
}

void tether__timer_stop_idle(void)
{
    tether__lock(&timer_lock);
    if (heap_len || stopping || (running && pthread_equal(thread, pthread_self()))) {
        tether__unlock(&timer_lock);
        return;
    }
    free(heap);
    heap = NULL;
    heap_cap = 0;
    if (!running) {
        tether__unlock(&timer_lock);
        return;
    }
    stopping = true;
    atomic_store_explicit(&stop, true, memory_order_relaxed);
    bool wake = bump();
    pthread_t th = thread;
    tether__unlock(&timer_lock);
    if (wake)
        tether__sys_futex_wake(&seq);
    int rc = pthread_join(th, NULL);
    TETHER_ASSERT(rc == 0);

    tether__lock(&timer_lock);
    running = stopping = false;
    atomic_store_explicit(&stop, false, memory_order_relaxed);
    /* Deadlines armed while it was stopping need a new thread. */
    if (heap_len)
        atomic_store_explicit(&kick_pending, true, memory_order_relaxed);
    tether__unlock(&timer_lock);
    tether__timer_kick();
}

void tether__timer_fork_prepare(void)
{
    tether__lock(&timer_lock);
}

void tether__timer_fork_parent(void)
{
    tether__unlock(&timer_lock);
}

void tether__timer_fork_child(void)
{
    /* The thread stayed in the parent. A token it had picked is still in
     * the heap (claiming removes it), so the child's thread fires it. */
    running = stopping = sleeping = false;
    firing = NULL;
    atomic_store_explicit(&stop, false, memory_order_relaxed);
    atomic_store_explicit(&kick_pending, heap_len != 0, memory_order_relaxed);
    tether__unlock(&timer_lock);
}
