/*
 * The signal-safe cancel relay. A signal handler may only make
 * async-signal-safe calls, and cancelling walks the token tree under a lock,
 * so the handler writes to an eventfd and a relay thread does the walk.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <sys/eventfd.h>
#include <unistd.h>

struct tether_sigcancel {
    tether_token *token;
    int error;
    int efd;
    _Atomic int fired, stopping;
    pthread_t relay;
};

static void *relay_main(void *arg)
{
    tether_sigcancel *sc = arg;
    for (;;) {
        struct pollfd p = { .fd = sc->efd, .events = POLLIN };
        if (poll(&p, 1, -1) < 0)
            continue; /* EINTR: a signal landed on this thread */
        uint64_t n;
        ssize_t r = read(sc->efd, &n, sizeof n);
        (void)r;
        if (atomic_load(&sc->fired))
            tether__token_cancel_cause(sc->token, TETHER_CAUSE_SIGNAL, sc->error);
        if (atomic_load(&sc->stopping))
            return NULL;
    }
}

int tether_sigcancel_new(tether_sigcancel **out, tether_token *t, int error)
{
    if (!out || !t)
        return EINVAL;
    *out = NULL;
    tether_sigcancel *sc = tether__calloc(1, sizeof *sc);
    if (!sc)
        return ENOMEM;
    sc->token = t;
    sc->error = error;
    sc->efd = tether__eventfd(EFD_CLOEXEC | EFD_NONBLOCK);
    if (sc->efd < 0) {
        int e = errno;
        free(sc);
        return e;
    }
    /* The relay must not take the signals it relays: block them all in it. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int rc = tether__thread_create(&sc->relay, NULL, relay_main, sc);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc) {
        close(sc->efd);
        free(sc);
        return rc;
    }
    *out = sc;
    return 0;
}

void tether_sigcancel_fire(tether_sigcancel *sc)
{
    if (!sc)
        return;
    int saved = errno;
    atomic_store(&sc->fired, 1);
    uint64_t one = 1;
    ssize_t r = write(sc->efd, &one, sizeof one);
    (void)r;
    errno = saved;
}

int tether_sigcancel_free(tether_sigcancel *sc)
{
    if (!sc)
        return EINVAL;
    atomic_store(&sc->stopping, 1);
    uint64_t one = 1;
    ssize_t r = write(sc->efd, &one, sizeof one);
    (void)r;
    pthread_join(sc->relay, NULL);
    close(sc->efd);
    free(sc);
    return 0;
}
