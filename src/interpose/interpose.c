/*
 * libtether_interpose.so: the blocking calls of unmodified code, routed to
 * tether when the calling thread has a current token (layer.h says how an
 * entry point is shaped; io.c and wait.c hold the entry points).
 *
 * This file: resolving the next definitions, the per-thread counters, the
 * way into and out of the layer (enter/leave/cut), the public
 * tether_interpose_* controls, the environment, fork handlers, init/exit.
 */
#define _GNU_SOURCE
#undef _FORTIFY_SOURCE /* the layer defines read, recv, poll...: not their fortified inlines */

#include "layer.h"

#include <tether/interpose.h>

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ----------------------------------------------------------------------
 * Entry points: names, next definitions, counters
 * ---------------------------------------------------------------------- */

static const char *const entry_name[E_COUNT] = {
    [E_READ] = "read",
    [E_READV] = "readv",
    [E_RECV] = "recv",
    [E_RECVFROM] = "recvfrom",
    [E_RECVMSG] = "recvmsg",
    [E_WRITE] = "write",
    [E_WRITEV] = "writev",
    [E_SEND] = "send",
    [E_SENDTO] = "sendto",
    [E_SENDMSG] = "sendmsg",
    [E_CONNECT] = "connect",
    [E_ACCEPT] = "accept",
    [E_ACCEPT4] = "accept4",
    [E_POLL] = "poll",
    [E_PPOLL] = "ppoll",
    [E_SELECT] = "select",
    [E_PSELECT] = "pselect",
    [E_EPOLL_WAIT] = "epoll_wait",
    [E_EPOLL_PWAIT] = "epoll_pwait",
    [E_EPOLL_PWAIT2] = "epoll_pwait2",
    [E_NANOSLEEP] = "nanosleep",
    [E_CLOCK_NANOSLEEP] = "clock_nanosleep",
    [E_USLEEP] = "usleep",
    [E_SLEEP] = "sleep",
    [E_READ_CHK] = "__read_chk",
    [E_RECV_CHK] = "__recv_chk",
    [E_RECVFROM_CHK] = "__recvfrom_chk",
    [E_POLL_CHK] = "__poll_chk",
    [E_PPOLL_CHK] = "__ppoll_chk",
    [E_GETADDRINFO] = "getaddrinfo",
};

void *_Atomic tether__layer_next_fn[E_COUNT];
_Thread_local int tether__layer_depth __attribute__((tls_model("initial-exec")));
static pthread_once_t next_once = PTHREAD_ONCE_INIT;

/*
 * Counters. Each thread that makes a call under a token counts into its own
 * block (a plain load and store, no locked instruction on the routed path);
 * the blocks are listed so a reader can sum them, and a thread's counts are
 * folded into `retired` when it exits. A thread whose block could not be
 * allocated counts into `shared` with atomic additions instead.
 */
typedef struct count_block {
    _Atomic uint64_t seen[E_COUNT], stopped[E_COUNT];
    struct count_block *prev, *next;
} count_block;

static pthread_mutex_t blocks_lock = PTHREAD_MUTEX_INITIALIZER;
static count_block *blocks;                                      /* guarded by blocks_lock */
static uint64_t retired_seen[E_COUNT], retired_stopped[E_COUNT]; /* likewise */
static count_block shared;
static pthread_key_t block_key;
static pthread_once_t block_key_once = PTHREAD_ONCE_INIT;
static _Thread_local count_block *my_block __attribute__((tls_model("initial-exec")));

static atomic_bool shutdown_on_cut = true;
static bool print_at_exit;

static void resolve_all(void)
{
    for (int e = 0; e < E_COUNT; e++)
        atomic_store_explicit(&tether__layer_next_fn[e], dlsym(RTLD_NEXT, entry_name[e]),
                              memory_order_release);
}

__attribute__((noinline, cold)) void *tether__layer_next_slow(enum entry e)
{
    pthread_once(&next_once, resolve_all);
    void *p = atomic_load_explicit(&tether__layer_next_fn[e], memory_order_acquire);
    if (!p) {
        /* Every required name is in any libc the layer can load with; only
         * the fortified ones may be missing, and their callers check. */
        static const char msg[] = "tether-interpose: a libc function is missing\n";
        ssize_t (*w)(int, const void *, size_t) = dlsym(RTLD_NEXT, "write");
        if (w)
            (void)w(2, msg, sizeof msg - 1);
        abort();
    }
    return p;
}

/* At thread exit: fold the thread's counts into the totals. */
static void block_retire(void *arg)
{
    count_block *b = arg;
    pthread_mutex_lock(&blocks_lock);
    for (int e = 0; e < E_COUNT; e++) {
        retired_seen[e] += atomic_load_explicit(&b->seen[e], memory_order_relaxed);
        retired_stopped[e] += atomic_load_explicit(&b->stopped[e], memory_order_relaxed);
    }
    if (b->prev)
        b->prev->next = b->next;
    else
        blocks = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&blocks_lock);
    my_block = NULL;
    free(b);
}

static void block_key_init(void)
{
    if (pthread_key_create(&block_key, block_retire) != 0)
        block_key = (pthread_key_t)-1;
}

/* The calling thread's block, created on its first counted call; NULL if
 * that failed (then `shared` counts for it). */
static count_block *block_get(void)
{
    count_block *b = my_block;
    if (__builtin_expect(b != NULL, 1))
        return b;
    pthread_once(&block_key_once, block_key_init);
    if (block_key == (pthread_key_t)-1 || !(b = calloc(1, sizeof *b)))
        return NULL;
    if (pthread_setspecific(block_key, b) != 0) {
        free(b);
        return NULL;
    }
    pthread_mutex_lock(&blocks_lock);
    b->next = blocks;
    if (blocks)
        blocks->prev = b;
    blocks = b;
    pthread_mutex_unlock(&blocks_lock);
    my_block = b;
    return b;
}

/* Add one to a counter only its own thread writes (or to a shared one). */
static inline void count(_Atomic uint64_t *mine, _Atomic uint64_t *fallback)
{
    if (mine)
        atomic_store_explicit(mine, atomic_load_explicit(mine, memory_order_relaxed) + 1,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(fallback, 1, memory_order_relaxed);
}

void tether__layer_enter(enum entry e)
{
    tether__layer_depth++;
    count_block *b = block_get();
    count(b ? &b->seen[e] : NULL, &shared.seen[e]);
}

bool tether__layer_leave(enum entry e, bool failed)
{
    tether__layer_depth--;
    if (!failed)
        return false;
    int err = errno;
    if (err != EINTR && err != ECANCELED && err != ETIMEDOUT)
        return false;
    int c = tether_check();
    if (c == 0) {
        errno = err; /* a real EINTR (a handler ran), or the raw call's ETIMEDOUT */
        return false;
    }
    if (err == EINTR)
        err = c;
    count_block *b = block_get();
    count(b ? &b->stopped[e] : NULL, &shared.stopped[e]);
    errno = err;
    return true;
}

void tether__layer_cut(int fd)
{
    if (fd < 0 || !atomic_load_explicit(&shutdown_on_cut, memory_order_relaxed))
        return;
    int saved = errno;
    int type = 0;
    socklen_t len = sizeof type;
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_STREAM &&
        getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
        (void)shutdown(fd, SHUT_RDWR);
    errno = saved;
}

/* ----------------------------------------------------------------------
 * Controls
 * ---------------------------------------------------------------------- */

/* Sum every thread's counts: live blocks, exited threads', the shared ones. */
static void counts_sum(uint64_t seen[E_COUNT], uint64_t stopped[E_COUNT])
{
    pthread_mutex_lock(&blocks_lock);
    for (int e = 0; e < E_COUNT; e++) {
        seen[e] = retired_seen[e] + atomic_load_explicit(&shared.seen[e], memory_order_relaxed);
        stopped[e] =
            retired_stopped[e] + atomic_load_explicit(&shared.stopped[e], memory_order_relaxed);
    }
    for (count_block *b = blocks; b; b = b->next) {
        for (int e = 0; e < E_COUNT; e++) {
            seen[e] += atomic_load_explicit(&b->seen[e], memory_order_relaxed);
            stopped[e] += atomic_load_explicit(&b->stopped[e], memory_order_relaxed);
        }
    }
    pthread_mutex_unlock(&blocks_lock);
}

size_t tether_interpose_counters(tether_interpose_counter *out, size_t max)
{
    if (max == 0)
        return E_COUNT;
    uint64_t seen[E_COUNT], stopped[E_COUNT];
    counts_sum(seen, stopped);
    for (size_t e = 0; e < E_COUNT && e < max; e++) {
        out[e].name = entry_name[e];
        out[e].seen = seen[e];
        out[e].stopped = stopped[e];
    }
    return E_COUNT;
}

bool tether_interpose_set_shutdown(bool on)
{
    return atomic_exchange(&shutdown_on_cut, on);
}

void tether_interpose_print_counters(void)
{
    uint64_t seen[E_COUNT], stopped[E_COUNT];
    counts_sum(seen, stopped);
    for (int e = 0; e < E_COUNT; e++) {
        if (seen[e])
            fprintf(stderr, "tether-interpose: %s seen %llu stopped %llu\n", entry_name[e],
                    (unsigned long long)seen[e], (unsigned long long)stopped[e]);
    }
}

static bool env_is(const char *name, const char *value)
{
    /* Only from the constructor, before the program's threads run. */
    const char *v = getenv(name); // NOLINT(concurrency-mt-unsafe)
    return v && strcmp(v, value) == 0;
}

/* fork: the counters' lock is taken around it so the child never inherits
 * it held (the child keeps the counts so far). */
static void blocks_prefork(void)
{
    pthread_mutex_lock(&blocks_lock);
}

static void blocks_postfork(void)
{
    pthread_mutex_unlock(&blocks_lock);
}

__attribute__((constructor)) static void layer_init(void)
{
    pthread_atfork(blocks_prefork, blocks_postfork, blocks_postfork);
    pthread_once(&next_once, resolve_all);
    if (env_is("TETHER_INTERPOSE_SHUTDOWN", "0"))
        atomic_store(&shutdown_on_cut, false);
    print_at_exit = env_is("TETHER_INTERPOSE_STATS", "1");
}

__attribute__((destructor)) static void layer_fini(void)
{
    if (print_at_exit)
        tether_interpose_print_counters();
}
