/*
 * Signals to cancellation: the signal-safe cancel relay (tether_sigcancel)
 * and SIGINT/SIGTERM (or the caller's signals) to a graceful cancellation
 * (tether_signals).
 *
 * A signal handler may only make async-signal-safe calls, and canceling
 * walks the token tree under a lock, so the handler writes to an eventfd and
 * a relay thread does the walk.
 *
 * tether_signals is installed only when the user asks. Its handler is
 * async-signal-safe: the first signal fires a tether_sigcancel (one write to
 * an eventfd; its relay thread does the cancellation); with escalation, the
 * second restores the default disposition and re-raises, and as the signal
 * is blocked while its handler runs, it is delivered — with its default
 * action — as soon as the handler returns.
 *
 * One installation at a time per process: the handler finds it through one
 * atomic pointer. Restoring waits for handlers already running to finish
 * before freeing what they use.
 *
 * fork: a relay's thread does not exist in the child and its eventfd is the
 * parent's too, so a relay made in an earlier process generation is inert
 * there: firing it does nothing (it must never reach the parent's relay) and
 * freeing it only closes the child's copy of the descriptor. An inherited
 * installation keeps its handler (dispositions survive fork) but no longer
 * holds the single slot, so the child may install its own.
 */
#define _GNU_SOURCE
#include "token.h"

#include "sys.h"

#include <sched.h>
#include <string.h>
#include <sys/eventfd.h>

/* ---------------------------------------------------------------------- */
/* The relay                                                              */

struct tether_sigcancel {
    tether_token *token;
    int error;
    int efd;
    _Atomic int fired, stopping;
    pthread_t relay;
    unsigned gen; /* the process generation whose relay this is */
};

/* Whether sc was made before a fork: its relay is the parent's. */
static bool inherited(const tether_sigcancel *sc)
{
    return sc->gen != tether__fork_generation();
}

static void *relay_main(void *arg)
{
    tether_sigcancel *sc = arg;
    for (;;) {
        struct pollfd p = { .fd = sc->efd, .events = POLLIN };
        if (tether__sys_poll(&p, 1, -1) < 0)
            continue; /* EINTR: a signal landed on this thread */
        tether__sys_eventfd_drain(sc->efd);
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
    *sc = (tether_sigcancel){ .token = t,
                              .error = error,
                              .efd = tether__sys_eventfd(EFD_CLOEXEC | EFD_NONBLOCK),
                              .gen = tether__fork_generation() };
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
        tether__sys_close(sc->efd);
        free(sc);
        return rc;
    }
    *out = sc;
    return 0;
}

void tether_sigcancel_fire(tether_sigcancel *sc)
{
    if (!sc || inherited(sc))
        return;
    int saved = errno;
    atomic_store(&sc->fired, 1);
    tether__sys_eventfd_signal(sc->efd);
    errno = saved;
}

int tether_sigcancel_free(tether_sigcancel *sc)
{
    if (!sc)
        return EINVAL;
    if (!inherited(sc)) {
        atomic_store(&sc->stopping, 1);
        tether__sys_eventfd_signal(sc->efd);
        pthread_join(sc->relay, NULL);
    }
    tether__sys_close(sc->efd);
    free(sc);
    return 0;
}

/* ---------------------------------------------------------------------- */
/* SIGINT/SIGTERM handling                                                */

enum { MAX_SIGNALS = 8 };

struct tether_signals {
    tether_sigcancel *sc;
    int sigs[MAX_SIGNALS];
    struct sigaction old[MAX_SIGNALS];
    size_t n;
    bool escalate;
    _Atomic unsigned fired;
};

static _Atomic(tether_signals *) active;
static _Atomic int in_handler;
static _Atomic int installed; /* claims the single slot from install to restore */

_Static_assert(ATOMIC_POINTER_LOCK_FREE == 2, "the handler needs a lock-free pointer");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "the handler needs lock-free ints");

static void on_signal(int sig)
{
    int saved = errno;
    atomic_fetch_add(&in_handler, 1);
    tether_signals *h = atomic_load(&active);
    if (h) {
        unsigned n = atomic_fetch_add(&h->fired, 1);
        if (n == 0) {
            tether_sigcancel_fire(h->sc);
        } else if (h->escalate) {
            struct sigaction dfl;
            memset(&dfl, 0, sizeof dfl);
            dfl.sa_handler = SIG_DFL;
            sigemptyset(&dfl.sa_mask);
            sigaction(sig, &dfl, NULL);
            raise(sig); /* pending until this handler returns */
        }
    }
    atomic_fetch_sub(&in_handler, 1);
    errno = saved;
}

int tether_signals_install(tether_signals **out, tether_token *t, const tether_signals_opts *opts)
{
    static const int defaults[] = { SIGINT, SIGTERM };
    if (!out || !t)
        return EINVAL;
    *out = NULL;
    tether_signals_opts o = opts ? *opts : (tether_signals_opts){ 0 };
    const int *sigs = defaults;
    size_t n = 2;
    if (o.signals) {
        sigs = o.signals;
        n = o.nsignals;
    }
    if (n == 0 || n > MAX_SIGNALS)
        return EINVAL;
    for (size_t i = 0; i < n; i++)
        if (sigs[i] <= 0 || sigs[i] >= NSIG || sigs[i] == SIGKILL || sigs[i] == SIGSTOP)
            return EINVAL;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&installed, &expected, 1))
        return EBUSY;

    tether_signals *h = tether__calloc(1, sizeof *h);
    if (!h) {
        atomic_store(&installed, 0);
        return ENOMEM;
    }
    int rc = tether_sigcancel_new(&h->sc, t, o.error);
    if (rc) {
        free(h);
        atomic_store(&installed, 0);
        return rc;
    }
    h->n = n;
    h->escalate = o.escalate;
    memcpy(h->sigs, sigs, n * sizeof *sigs);
    atomic_store(&active, h);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < n; i++)
        sigaddset(&sa.sa_mask, sigs[i]); /* one handler at a time per thread */
    for (size_t i = 0; i < n; i++) {
        if (sigaction(sigs[i], &sa, &h->old[i]) < 0) {
            rc = errno;
            while (i-- > 0)
                sigaction(sigs[i], &h->old[i], NULL);
            atomic_store(&active, NULL);
            while (atomic_load(&in_handler))
                sched_yield();
            tether_sigcancel_free(h->sc);
            free(h);
            atomic_store(&installed, 0);
            return rc;
        }
    }
    *out = h;
    return 0;
}

unsigned tether_signals_fired(const tether_signals *h)
{
    return h ? atomic_load(&h->fired) : 0;
}

int tether_signals_restore(tether_signals *h)
{
    if (!h)
        return EINVAL;
    /* Inherited across fork: it gave up the slot; while the child has an
     * installation of its own, the dispositions and the handler are that
     * one's. */
    bool mine = !inherited(h->sc);
    tether_signals *now = atomic_load(&active);
    if (mine || now == h || now == NULL) {
        for (size_t i = h->n; i-- > 0;)
            sigaction(h->sigs[i], &h->old[i], NULL);
        atomic_store(&active, NULL);
    }
    while (atomic_load(&in_handler))
        sched_yield(); /* a handler that started before the store is finishing */
    tether_sigcancel_free(h->sc);
    free(h);
    if (mine)
        atomic_store(&installed, 0);
    return 0;
}

void tether__signals_fork_child(void)
{
    atomic_store(&installed, 0);
}
