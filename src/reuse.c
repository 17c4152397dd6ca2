/*
 * Thread reuse: a scope opened with reuse_threads runs each child on a
 * parked thread when one with the same stack size request is idle, instead
 * of creating a thread and joining it.
 *
 * A worker runs one job (a child's whole life: child_main in scope.c, which
 * ends by reporting the child finished), then parks on its own condition
 * variable under the pool lock. It joins the idle list already just before
 * the job reports the child finished (tether__reuse_park_early): a join
 * returning at that report and a spawn right after it (a loop of short
 * scopes) find the thread in the pool instead of creating another; the
 * job it is handed then waits until the worker is back, which costs no
 * sleep. The hand-off takes it off the idle list,
 * stores the next job under that lock and signals it, so every write the
 * spawner made before the hand-off is visible to the job (and to TSan).
 * Before a handed-off job the worker takes the child's thread name (or the
 * spawner's, as a new thread would) and the spawner's signal mask; the
 * child's own cleanup leaves no current token and no entries (scope.c
 * aborts otherwise), which the worker asserts before parking.
 *
 * Bounds: at most TETHER__REUSE_MAX_IDLE (16) threads park at once; a
 * worker that finds the pool full exits, and a parked one that gets no job
 * within TETHER__REUSE_IDLE_NS (1 s) exits. Both detach themselves first.
 * tether_trim releases every parked worker and joins it. The pool lock is a
 * leaf: nothing else is ever taken under it.
 *
 * Fork: the child has none of the parent's threads, so its handler forgets
 * every worker; a worker thread that itself forked ends, in the child, when
 * its job returns, as a new thread would.
 */
#define _GNU_SOURCE
#include "reuse.h"

#include "clock.h"
#include "current.h"
#include "hook.h"
#include "timer.h"

#include <signal.h>
#include <string.h>

/* What the kernel keeps of a thread name: 15 bytes and the NUL. */
enum { NAME_BYTES = 16 };

struct worker {
    struct worker *next; /* the idle list, under pool_mu */
    bool listed;         /* on it (under pool_mu) */
    pthread_t thread;    /* set by the worker itself, under pool_mu */
    pthread_cond_t wake; /* a job or a release arrived */
    size_t stack_size;   /* the request it was made with; 0 = default */
    unsigned gen;        /* the process generation that made it */
    bool release;        /* trim took it: exit, trim joins */
    /* The next job: the first is set before the thread exists, the others
     * by the hand-off under pool_mu; the worker takes it under pool_mu. */
    void *(*fn)(void *);
    void *arg;
    char name[NAME_BYTES]; /* "" = keep the name (first job only) */
    sigset_t mask;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct worker *idle; /* most recently parked first */
static unsigned idle_count;
/* The worker the calling thread is, or NULL. */
static _Thread_local struct worker *self_worker;

static void idle_push(struct worker *w)
{
    w->thread = pthread_self();
    w->next = idle;
    idle = w;
    idle_count++;
    w->listed = true;
}

/* Take w off the idle list (at most TETHER__REUSE_MAX_IDLE long). */
static void idle_unlink(struct worker *w)
{
    struct worker **pp = &idle;
    while (*pp != w)
        pp = &(*pp)->next;
    *pp = w->next;
    idle_count--;
    w->listed = false;
}

static void worker_free(struct worker *w)
{
    pthread_cond_destroy(&w->wake);
    free(w);
}

void tether__reuse_park_early(void)
{
    struct worker *w = self_worker;
    if (!w || w->gen != tether__fork_generation())
        return;
    tether__lock(&pool_mu);
    if (!w->listed && idle_count < TETHER__REUSE_MAX_IDLE)
        idle_push(w);
    tether__unlock(&pool_mu);
}

/* End the calling worker on its own: nobody holds w any more. pool_mu held. */
static bool leave_pool(struct worker *w)
{
    tether__unlock(&pool_mu);
    pthread_detach(pthread_self());
    worker_free(w);
    return false;
}

/* Wait for the next job, parking w if the job did not park it early.
 * False: the thread must end (w is freed, or trim holds it). */
static bool next_job(struct worker *w, void *(**fn)(void *), void **arg)
{
    /* A fork child's only thread: end as a new thread would. */
    if (w->gen != tether__fork_generation())
        return false;
    tether__lock(&pool_mu);
    if (!w->listed && !w->fn && !w->release) {
        if (idle_count >= TETHER__REUSE_MAX_IDLE)
            return leave_pool(w);
        idle_push(w);
    }
    struct timespec until = tether__timespec(tether_deadline_after(TETHER__REUSE_IDLE_NS));
    while (!w->fn && !w->release) {
        if (pthread_cond_timedwait(&w->wake, &pool_mu, &until) == ETIMEDOUT && !w->fn &&
            !w->release) {
            idle_unlink(w);
            return leave_pool(w);
        }
    }
    if (w->release) {
        tether__unlock(&pool_mu);
        return false;
    }
    *fn = w->fn;
    *arg = w->arg;
    w->fn = NULL;
    tether__unlock(&pool_mu);
    return true;
}

/* Take the hand-off's name and signal mask. w is this thread's alone now. */
static void take_identity(struct worker *w)
{
    pthread_setname_np(pthread_self(), w->name);
    pthread_sigmask(SIG_SETMASK, &w->mask, NULL);
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    self_worker = w;
    void *(*fn)(void *) = w->fn;
    void *job_arg = w->arg;
    w->fn = NULL; /* nobody else sees w before it is listed */
    if (w->name[0])
        pthread_setname_np(pthread_self(), w->name);
    for (;;) {
        fn(job_arg);
        TETHER_ASSERT(tether__current == NULL);
        if (!next_job(w, &fn, &job_arg))
            return NULL;
        take_identity(w);
    }
}

/* Keep at most NAME_BYTES - 1 bytes of name, never reading past them. */
static void copy_name(char dst[NAME_BYTES], const char *name)
{
    dst[0] = '\0';
    if (name)
        strncat(dst, name, NAME_BYTES - 1);
}

static int start_worker(pthread_t *thread, size_t stack_size, const char *name, void *(*fn)(void *),
                        void *arg)
{
    struct worker *w = tether__calloc(1, sizeof *w);
    if (!w)
        return ENOMEM;
    int rc = tether__cond_init_monotonic(&w->wake);
    if (rc) {
        free(w);
        return rc;
    }
    w->stack_size = stack_size;
    w->gen = tether__fork_generation();
    w->fn = fn;
    w->arg = arg;
    copy_name(w->name, name);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    if (stack_size)
        rc = pthread_attr_setstacksize(&attr, stack_size);
    if (!rc)
        rc = tether__thread_create(thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc)
        worker_free(w);
    return rc;
}

int tether__reuse_run(pthread_t *thread, size_t stack_size, const char *name, void *(*fn)(void *),
                      void *arg)
{
    tether__fork_once();
    /* What a new thread would get: the caller's mask, and its name when
     * the child has none. */
    char nm[NAME_BYTES];
    sigset_t mask;
    pthread_sigmask(SIG_BLOCK, NULL, &mask);
    if (name && name[0])
        copy_name(nm, name);
    else if (pthread_getname_np(pthread_self(), nm, sizeof nm) != 0)
        nm[0] = '\0';

    tether__lock(&pool_mu);
    struct worker *w = idle;
    while (w && w->stack_size != stack_size)
        w = w->next;
    if (!w) {
        tether__unlock(&pool_mu);
        return start_worker(thread, stack_size, name, fn, arg);
    }
    idle_unlink(w);
    w->fn = fn;
    w->arg = arg;
    memcpy(w->name, nm, sizeof nm);
    w->mask = mask;
    *thread = w->thread;
    tether__unlock(&pool_mu);
    /* w cannot go away: it has a job and is off the list. */
    pthread_cond_signal(&w->wake);
    return 0;
}

int tether__reuse_trim(void)
{
    tether__lock(&pool_mu);
    struct worker *list = idle;
    int n = (int)idle_count;
    idle = NULL;
    idle_count = 0;
    for (struct worker *w = list; w; w = w->next) {
        w->listed = false;
        w->release = true;
        pthread_cond_signal(&w->wake);
    }
    tether__unlock(&pool_mu);
    /* A released worker touches w no more once it saw `release`. */
    while (list) {
        struct worker *next = list->next;
        pthread_join(list->thread, NULL);
        worker_free(list);
        list = next;
    }
    return n;
}

int tether_trim(void)
{
    tether__reuse_trim();
    tether__hook_trim();
    tether__timer_stop_idle();
    return tether__wake_trim();
}

void tether__reuse_fork_prepare(void)
{
    tether__lock(&pool_mu);
}

void tether__reuse_fork_parent(void)
{
    tether__unlock(&pool_mu);
}

void tether__reuse_fork_child(void)
{
    /* The parked threads stayed in the parent. Their condition variables
     * may count those waiters: freed without being destroyed. */
    while (idle) {
        struct worker *next = idle->next;
        free(idle);
        idle = next;
    }
    idle_count = 0;
    tether__unlock(&pool_mu);
}
