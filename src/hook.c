/*
 * Cancel hooks: functions that may block, run once a token is canceled, on
 * runner threads of their own.
 *
 * A hook rides on a plain cancellation callback (token.c) whose only work
 * is to queue the hook and wake a runner, so the canceler (a user thread,
 * the timer thread) never waits for it. Runners are created lazily, at most
 * MAX_RUNNERS, each running one hook at a time; idle ones park on their own
 * condition variable and exit after IDLE_NS (detaching themselves) or when
 * tether_trim releases them (it joins them).
 *
 * The owner of a token waits for its hooks: every hook is listed on its
 * token (t->hooks) and tether_token_free calls tether__hook_token_free,
 * which first detaches every hook of t that has not started (so a callback
 * still on its way to queue one finds it detached) and then waits for the
 * running ones.
 *
 * The hook lock is a leaf: nothing is taken under it (the callback's
 * unregistration, which takes the tree lock, happens before it). Fork: the
 * runners stay in the parent; the child forgets them, drops the queue, and
 * never waits for a hook that ran on a parent's runner (run_gen).
 */
#define _GNU_SOURCE
#include "hook.h"

#include "clock.h"
#include "current.h"

#include <signal.h>

enum { MAX_RUNNERS = 64 };
/* A runner given no hook within this time exits. */
#define IDLE_NS ((tether_time_t)2000000000)

enum hook_state {
    HOOK_REGISTERED, /* waiting for its token's cancel */
    HOOK_QUEUED,     /* canceled: waiting for a runner */
    HOOK_RUNNING,
    HOOK_DONE,
    HOOK_DETACHED /* its token was freed, or it was removed, before it ran */
};

struct tether_hook {
    tether_hook *tnext; /* its token's list, while token != NULL */
    tether_hook *qnext; /* the queue, while queued */
    tether_token *token;
    void (*fn)(void *arg);
    void *arg;
    tether_callback *cb; /* the callback that queues it */
    enum hook_state state;
    pthread_t runner;    /* while running ... */
    unsigned run_gen;    /* ... in this process generation */
    bool free_when_done; /* it unregistered itself while running */
};

struct runner {
    struct runner *next; /* the idle list */
    pthread_t thread;    /* set by the runner itself, under hook_lock */
    pthread_cond_t wake;
    bool woken;   /* handed the queue */
    bool release; /* tether_trim took it: exit, trim joins */
    unsigned gen;
};

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_done = PTHREAD_COND_INITIALIZER; /* a hook finished */
static tether_hook *queue_head, *queue_tail;
static struct runner *idle;
static unsigned runners; /* alive in this process, idle or not */
/* A runner could not be created for a queued hook: the next registration,
 * unregistration or queued hook tries again (none may be alive to run it). */
static bool starved;
static _Atomic bool hooks_used;

/* A token's hooks are few: a singly linked list, searched to unlink. */
static void link_token(tether_hook *h, tether_token *t)
{
    h->token = t;
    h->tnext = t->hooks;
    t->hooks = h;
}

static void unlink_token(tether_hook *h)
{
    if (!h->token)
        return;
    tether_hook **pp = &h->token->hooks;
    while (*pp != h)
        pp = &(*pp)->tnext;
    *pp = h->tnext;
    h->token = NULL;
}

static void queue_remove(tether_hook *h)
{
    tether_hook **pp = &queue_head, *prev = NULL;
    while (*pp != h) {
        prev = *pp;
        pp = &(*pp)->qnext;
    }
    *pp = h->qnext;
    if (queue_tail == h)
        queue_tail = prev;
}

/* Whether h runs now on a runner this process has (not one of a parent's). */
static bool running_here(const tether_hook *h)
{
    return h->state == HOOK_RUNNING && h->run_gen == tether__fork_generation();
}

/* A hook is done: wake whoever waits, free it if it asked. Lock held. */
static void finish(tether_hook *h)
{
    h->state = HOOK_DONE;
    if (h->free_when_done) {
        unlink_token(h);
        free(h);
    }
    pthread_cond_broadcast(&hook_done);
}

/* Run queued hooks until the queue is empty. Lock held (dropped around each
 * hook). False if this thread is a fork child's copy of a runner. */
static bool drain(unsigned gen)
{
    while (queue_head) {
        tether_hook *h = queue_head;
        queue_head = h->qnext;
        if (!queue_head)
            queue_tail = NULL;
        h->state = HOOK_RUNNING;
        h->runner = pthread_self();
        h->run_gen = gen;
        tether__unlock(&hook_lock);
        h->fn(h->arg);
        tether__lock(&hook_lock);
        if (gen != tether__fork_generation())
            return false; /* the hook forked and this is the child */
        finish(h);
    }
    return true;
}

static void *runner_main(void *arg)
{
    struct runner *r = arg;
    (void)pthread_setname_np(pthread_self(), "tether-hook");
    tether__outside_root = true; /* a hook is clean-up: an inherited deadline does not stop it */
    tether__lock(&hook_lock);
    r->thread = pthread_self();
    for (;;) {
        if (!drain(r->gen)) {
            tether__unlock(&hook_lock);
            return NULL;
        }
        r->woken = false;
        r->next = idle;
        idle = r;
        struct timespec until = tether__timespec(tether_deadline_after(IDLE_NS));
        while (!r->woken && !r->release) {
            if (pthread_cond_timedwait(&r->wake, &hook_lock, &until) == ETIMEDOUT && !r->woken &&
                !r->release) {
                struct runner **pp = &idle;
                while (*pp != r)
                    pp = &(*pp)->next;
                *pp = r->next;
                runners--;
                tether__unlock(&hook_lock);
                pthread_detach(pthread_self());
                pthread_cond_destroy(&r->wake);
                free(r);
                return NULL;
            }
        }
        if (r->release) {
            tether__unlock(&hook_lock);
            return NULL; /* trim joins and frees it */
        }
    }
}

/* Create a runner (a slot in `runners` is reserved); with every signal
 * blocked, as a runner must never run a handler meant for the program. */
static void start_runner(void)
{
    struct runner *r = tether__calloc(1, sizeof *r);
    int rc = r ? tether__cond_init_monotonic(&r->wake) : ENOMEM;
    if (rc == 0) {
        r->gen = tether__fork_generation();
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t th;
        rc = tether__thread_create(&th, NULL, runner_main, r);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc)
            pthread_cond_destroy(&r->wake);
    }
    if (rc == 0)
        return;
    free(r);
    tether__lock(&hook_lock);
    runners--; /* the hook stays queued for the next runner */
    starved = true;
    tether__unlock(&hook_lock);
    tether__fault_absorbed();
}

/* After a runner could not be created: whether to try again now (a slot is
 * then reserved; the caller calls start_runner once the lock is dropped). A
 * busy runner would drain the queue too, but only once its own hook
 * returns. Lock held. */
static bool retry_locked(void)
{
    if (!starved || !queue_head || idle || runners >= MAX_RUNNERS)
        return false;
    starved = false;
    runners++;
    return true;
}

/* The cancellation callback: queue the hook, wake or start a runner. Never
 * blocks (pthread_create at worst). */
static void queue_hook(void *arg)
{
    tether_hook *h = arg;
    bool start = false;
    tether__lock(&hook_lock);
    if (h->state == HOOK_REGISTERED) {
        h->state = HOOK_QUEUED;
        h->qnext = NULL;
        *(queue_tail ? &queue_tail->qnext : &queue_head) = h;
        queue_tail = h;
        if (idle) {
            struct runner *r = idle;
            idle = r->next;
            r->woken = true;
            pthread_cond_signal(&r->wake);
        } else if (runners < MAX_RUNNERS) {
            runners++;
            starved = false;
            start = true;
        }
    }
    tether__unlock(&hook_lock);
    if (start)
        start_runner();
}

int tether_hook_on_cancel(tether_token *t, void (*fn)(void *arg), void *arg, tether_hook **out)
{
    if (!t || !fn || !out)
        return EINVAL;
    tether__fork_once();
    tether_hook *h = tether__calloc(1, sizeof *h);
    if (!h)
        return ENOMEM;
    h->fn = fn;
    h->arg = arg;
    atomic_store_explicit(&hooks_used, true, memory_order_relaxed);
    tether__lock(&hook_lock);
    h->state = HOOK_REGISTERED;
    link_token(h, t);
    bool retry = retry_locked();
    tether__unlock(&hook_lock);
    if (retry)
        start_runner();
    /* Set first: the hook may run (and read it) before the next line returns. */
    *out = h;
    /* Runs queue_hook at once if t is already canceled. */
    int rc = tether_token_on_cancel(t, queue_hook, h, &h->cb);
    if (rc) {
        tether__lock(&hook_lock);
        unlink_token(h);
        tether__unlock(&hook_lock);
        free(h);
        *out = NULL;
    }
    return rc;
}

int tether_hook_off(tether_hook *h, bool *ran)
{
    if (!h)
        return EINVAL;
    /* First the callback: once it is off, it never queues h any more. */
    int rc = tether_token_off_cancel(h->cb, NULL);
    TETHER_ASSERT(rc == 0);
    bool did_run = true;
    tether__lock(&hook_lock);
    switch (h->state) {
    case HOOK_QUEUED: queue_remove(h); /* fall through */
    case HOOK_REGISTERED:
    case HOOK_DETACHED: did_run = false; break;
    case HOOK_RUNNING:
        if (pthread_equal(h->runner, pthread_self()) && running_here(h)) {
            h->free_when_done = true; /* from inside itself: the runner frees it */
            tether__unlock(&hook_lock);
            if (ran)
                *ran = true;
            return 0;
        }
        while (running_here(h))
            pthread_cond_wait(&hook_done, &hook_lock);
        break;
    case HOOK_DONE: break;
    }
    unlink_token(h);
    bool retry = retry_locked();
    tether__unlock(&hook_lock);
    free(h);
    if (retry)
        start_runner();
    if (ran)
        *ran = did_run;
    return 0;
}

void tether__hook_token_free(tether_token *t, bool wait)
{
    if (!atomic_load_explicit(&hooks_used, memory_order_relaxed))
        return;
    tether__lock(&hook_lock);
    /* Nothing of t's that has not started will: a callback still on its way
     * to queue one finds it detached. */
    for (tether_hook *h = t->hooks; h; h = h->tnext) {
        if (h->state == HOOK_QUEUED)
            queue_remove(h);
        if (h->state == HOOK_QUEUED || h->state == HOOK_REGISTERED)
            h->state = HOOK_DETACHED;
    }
    for (;;) {
        bool busy = false;
        for (tether_hook *h = t->hooks; h && wait && !busy; h = h->tnext)
            busy = running_here(h) && !pthread_equal(h->runner, pthread_self());
        if (!busy)
            break;
        pthread_cond_wait(&hook_done, &hook_lock);
    }
    while (t->hooks)
        unlink_token(t->hooks);
    tether__unlock(&hook_lock);
}

bool tether__hook_runs_here(tether_token *t)
{
    if (!atomic_load_explicit(&hooks_used, memory_order_relaxed))
        return false;
    bool mine = false;
    tether__lock(&hook_lock);
    for (tether_hook *h = t->hooks; h && !mine; h = h->tnext)
        mine = running_here(h) && pthread_equal(h->runner, pthread_self());
    tether__unlock(&hook_lock);
    return mine;
}

int tether__hook_trim(void)
{
    tether__lock(&hook_lock);
    struct runner *list = idle;
    idle = NULL;
    int n = 0;
    for (struct runner *r = list; r; r = r->next, n++) {
        r->release = true;
        runners--;
        pthread_cond_signal(&r->wake);
    }
    tether__unlock(&hook_lock);
    /* A released runner touches r no more once it saw `release`. */
    while (list) {
        struct runner *next = list->next;
        pthread_join(list->thread, NULL);
        pthread_cond_destroy(&list->wake);
        free(list);
        list = next;
    }
    return n;
}

void tether__hook_fork_prepare(void)
{
    tether__lock(&hook_lock);
}

void tether__hook_fork_parent(void)
{
    tether__unlock(&hook_lock);
}

void tether__hook_fork_child(void)
{
    /* The runners stayed in the parent: forget them (their condition
     * variables may count those waiters: freed, not destroyed), and the
     * hooks they would have run. */
    for (struct runner *r = idle, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    idle = NULL;
    runners = 0;
    starved = false;
    for (tether_hook *h = queue_head; h; h = h->qnext)
        h->state = HOOK_DETACHED;
    queue_head = queue_tail = NULL;
    hook_done = (pthread_cond_t)PTHREAD_COND_INITIALIZER;
    tether__unlock(&hook_lock);
}
