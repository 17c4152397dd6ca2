/*
 * tether_getaddrinfo: getaddrinfo(3) on a helper thread, waited for
 * cancellably.
 *
 * glibc's resolver talks to name servers through internal calls that no
 * interposer and no tether primitive can reach, so the lookup itself cannot
 * be interrupted. Instead it runs on a detached helper thread and the caller
 * waits for its answer with tether_cond_wait. A cancel or deadline ends the
 * wait, not the lookup: the helper finishes when getaddrinfo(3) does (the
 * resolver's own timeouts bound that), frees the answer nobody wants and
 * exits. The request is reference counted (caller and helper); the last one
 * out frees it. Helpers are counted, bounded and can be drained.
 */
#define _GNU_SOURCE
#include "resolve.h"

#include "current.h"

#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct gai_request {
    pthread_mutex_t lock;
    pthread_cond_t done_cond;
    int refs;  /* caller + helper; guarded by lock */
    bool done; /* the helper has stored the answer */
    char *node, *service;
    struct addrinfo hints;
    bool has_hints;
    struct addrinfo *res;
    int rc;  /* getaddrinfo's return */
    int err; /* its errno, for EAI_SYSTEM */
} gai_request;

/* Helpers running now, and the condition tether_getaddrinfo_drain waits on. */
static pthread_mutex_t helpers_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t helpers_idle;
static pthread_once_t helpers_once = PTHREAD_ONCE_INIT;
static int helpers_running;

/* fork (fork.c's handlers, resolve.h): the lock is taken around it so the
 * child never inherits it held; the child has none of the parent's helper
 * threads, so it counts none. */
void tether__resolve_fork_prepare(void)
{
    pthread_mutex_lock(&helpers_lock);
}

void tether__resolve_fork_parent(void)
{
    pthread_mutex_unlock(&helpers_lock);
}

void tether__resolve_fork_child(void)
{
    helpers_running = 0;
    pthread_mutex_unlock(&helpers_lock);
}

static void helpers_init(void)
{
    tether__fork_once();
    (void)tether__cond_init_monotonic(&helpers_idle); /* glibc: cannot fail */
}

/* A copy of s owned by the request (NULL stays NULL). */
static int copy_str(char **out, const char *s)
{
    *out = NULL;
    if (!s)
        return 0;
    size_t n = strlen(s) + 1;
    char *c = tether__malloc(n);
    if (!c)
        return -1;
    memcpy(c, s, n);
    *out = c;
    return 0;
}

static void request_free(gai_request *r)
{
    if (r->res)
        freeaddrinfo(r->res); /* an abandoned answer */
    free(r->node);
    free(r->service);
    pthread_cond_destroy(&r->done_cond);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Drop one reference; the last one frees the request. */
static void request_put(gai_request *r)
{
    pthread_mutex_lock(&r->lock);
    bool last = --r->refs == 0;
    pthread_mutex_unlock(&r->lock);
    if (last)
        request_free(r);
}

static void *helper_main(void *arg)
{
    gai_request *r = arg;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(r->node, r->service, r->has_hints ? &r->hints : NULL, &res);
    int err = errno;

    pthread_mutex_lock(&r->lock);
    r->rc = rc;
    r->err = err;
    r->res = rc == 0 ? res : NULL;
    r->done = true;
    pthread_cond_broadcast(&r->done_cond);
    pthread_mutex_unlock(&r->lock);
    request_put(r);

    pthread_mutex_lock(&helpers_lock);
    if (--helpers_running == 0)
        pthread_cond_broadcast(&helpers_idle);
    pthread_mutex_unlock(&helpers_lock);
    return NULL;
}

/* Reserve a helper slot: false when TETHER_GETADDRINFO_MAX_HELPERS run. */
static bool helper_reserve(void)
{
    pthread_once(&helpers_once, helpers_init);
    pthread_mutex_lock(&helpers_lock);
    bool ok = helpers_running < TETHER_GETADDRINFO_MAX_HELPERS;
    if (ok)
        helpers_running++;
    pthread_mutex_unlock(&helpers_lock);
    return ok;
}

static void helper_unreserve(void)
{
    pthread_mutex_lock(&helpers_lock);
    if (--helpers_running == 0)
        pthread_cond_broadcast(&helpers_idle);
    pthread_mutex_unlock(&helpers_lock);
}

/* Start the detached helper with every signal blocked (signals are for the
 * caller's threads, not for a lookup nobody may be waiting for). */
static int helper_start(gai_request *r)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc)
        return rc;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_t th;
    rc = tether__thread_create(&th, &attr, helper_main, r);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc;
}

static gai_request *request_new(const char *node, const char *service, const struct addrinfo *hints)
{
    gai_request *r = tether__calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (copy_str(&r->node, node) || copy_str(&r->service, service)) {
        free(r->node);
        free(r);
        return NULL;
    }
    if (hints) {
        /* getaddrinfo(3) reads only these four; the rest must be 0/NULL. */
        r->hints.ai_flags = hints->ai_flags;
        r->hints.ai_family = hints->ai_family;
        r->hints.ai_socktype = hints->ai_socktype;
        r->hints.ai_protocol = hints->ai_protocol;
        r->has_hints = true;
    }
    pthread_mutex_init(&r->lock, NULL);
    pthread_cond_init(&r->done_cond, NULL);
    r->refs = 2;
    return r;
}

int tether_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                       struct addrinfo **res)
{
    if (!tether__current_or_root())
        return getaddrinfo(node, service, hints, res);
    int c = tether_check();
    if (c) {
        errno = c;
        return EAI_SYSTEM;
    }
    if (!res || (!node && !service))
        return getaddrinfo(node, service, hints, res); /* its own error, at once */

    gai_request *r = request_new(node, service, hints);
    if (!r)
        return EAI_MEMORY;
    if (!helper_reserve()) {
        r->refs = 1;
        request_put(r);
        return EAI_AGAIN;
    }
    int rc = helper_start(r);
    if (rc) {
        helper_unreserve();
        r->refs = 1;
        request_put(r);
        errno = rc;
        return EAI_SYSTEM;
    }

    int stop = 0;
    pthread_mutex_lock(&r->lock);
    while (!r->done) {
        int w = tether_cond_wait(&r->done_cond, &r->lock);
        if (w == ECANCELED || w == ETIMEDOUT) {
            stop = w;
            break;
        }
        if (w == ENOMEM) {
            /* No memory to register the cancellation callback: wait for the
             * answer in slices, checking the token between them. */
            pthread_mutex_unlock(&r->lock);
            int s = tether_sleep_for(tether_ms(1));
            pthread_mutex_lock(&r->lock);
            if (s < 0 && (errno == ECANCELED || errno == ETIMEDOUT)) {
                stop = errno;
                break;
            }
        }
    }
    int out;
    int err = 0;
    if (r->done) {
        /* An answer that arrived is returned, even if a cancel came meanwhile. */
        out = r->rc;
        err = r->err;
        if (out == 0) {
            *res = r->res;
            r->res = NULL;
        }
    } else {
        out = EAI_SYSTEM;
        err = stop;
    }
    pthread_mutex_unlock(&r->lock);
    request_put(r);
    if (out == EAI_SYSTEM)
        errno = err;
    return out;
}

int tether_getaddrinfo_drain(tether_time_t deadline)
{
    pthread_once(&helpers_once, helpers_init);
    int rc = 0;
    pthread_mutex_lock(&helpers_lock);
    while (helpers_running > 0) {
        if (deadline == TETHER_NEVER) {
            pthread_cond_wait(&helpers_idle, &helpers_lock);
            continue;
        }
        struct timespec ts = { .tv_sec = deadline / 1000000000, .tv_nsec = deadline % 1000000000 };
        if (pthread_cond_timedwait(&helpers_idle, &helpers_lock, &ts) == ETIMEDOUT) {
            rc = helpers_running > 0 ? ETIMEDOUT : 0;
            break;
        }
    }
    pthread_mutex_unlock(&helpers_lock);
    return rc;
}

int tether_getaddrinfo_running(void)
{
    pthread_mutex_lock(&helpers_lock);
    int n = helpers_running;
    pthread_mutex_unlock(&helpers_lock);
    return n;
}
