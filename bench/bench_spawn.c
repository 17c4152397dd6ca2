/*
 * bench_spawn.c — spawn + join: a scope per child (open + spawn + join +
 * free) against pthread_create + pthread_join (spawn_join_*), the same with
 * thread reuse (spawn_join_reuse_*: the child runs on the thread the last
 * round's child parked); and spawn with
 * a handle + tether_task_wait in a long-lived scope against pthread_create +
 * a semaphore the thread posts (spawn_wait_*).
 */
#include "bench_common.h"

#include <errno.h>
#include <semaphore.h>
#include <stdio.h>

/* Raw: nothing. */
static void *raw_empty(void *arg)
{
    return arg;
}

/* tether child: nothing. */
static int child_empty(void *arg)
{
    (void)arg;
    return 0;
}


static double round_spawn_raw(void *ctx)
{
    (void)ctx;
    pthread_t th;
    tether_time_t t0 = tether_now();
    need_rc(pthread_create(&th, NULL, raw_empty, NULL), "pthread_create");
    need_rc(pthread_join(th, NULL), "pthread_join");
    return (double)(tether_now() - t0);
}

/* The structured form: a scope per child. */
static double round_spawn_scope(void *ctx)
{
    (void)ctx;
    tether_scope *s;
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_open(&s, NULL), "tether_scope_open");
    need_rc(tether_spawn(s, child_empty, NULL, NULL, NULL), "tether_spawn");
    need_rc(tether_scope_join(s, NULL), "tether_scope_join");
    need_rc(tether_scope_free(s), "tether_scope_free");
    return (double)(tether_now() - t0);
}

/* The same with reuse_threads: after the first round the child runs on the
 * previous round's parked thread. */
static double round_spawn_scope_reuse(void *ctx)
{
    (void)ctx;
    static const tether_scope_opts reuse = { .reuse_threads = true };
    tether_scope *s;
    tether_time_t t0 = tether_now();
    need_rc(tether_scope_open(&s, &reuse), "tether_scope_open");
    need_rc(tether_spawn(s, child_empty, NULL, NULL, NULL), "tether_spawn");
    need_rc(tether_scope_join(s, NULL), "tether_scope_join");
    need_rc(tether_scope_free(s), "tether_scope_free");
    return (double)(tether_now() - t0);
}

/* One long-lived scope; a child with a handle, waited for. Handles keep
 * their threads until the scope is joined, so the scope is renewed (outside
 * the timing) every few rounds. */
struct spawn_wait_ctx {
    tether_scope *s;
    int used;
};

enum { SPAWN_WAIT_PER_SCOPE = 32 };

static void spawn_wait_close(struct spawn_wait_ctx *c)
{
    if (c->s) {
        need_rc(tether_scope_join(c->s, NULL), "tether_scope_join");
        need_rc(tether_scope_free(c->s), "tether_scope_free");
        c->s = NULL;
    }
}

static double round_spawn_wait(void *ctx)
{
    struct spawn_wait_ctx *c = ctx;
    if (!c->s || c->used == SPAWN_WAIT_PER_SCOPE) {
        spawn_wait_close(c);
        need_rc(tether_scope_open(&c->s, NULL), "tether_scope_open");
        c->used = 0;
    }
    tether_task *task;
    int result;
    tether_time_t t0 = tether_now();
    need_rc(tether_spawn(c->s, child_empty, NULL, NULL, &task), "tether_spawn");
    need_rc(tether_task_wait(task, &result), "tether_task_wait");
    tether_time_t t1 = tether_now();
    c->used++;
    need_rc(result, "child");
    return (double)(t1 - t0);
}

/* Its raw counterpart: the thread posts a semaphore as it finishes, and the
 * threads are joined in batches of the same size, outside the timing. */
struct raw_wait_ctx {
    pthread_t threads[SPAWN_WAIT_PER_SCOPE];
    int used;
    sem_t done;
};

static void *raw_post(void *arg)
{
    sem_post(arg);
    return NULL;
}

static void raw_wait_close(struct raw_wait_ctx *c)
{
    for (int i = 0; i < c->used; i++)
        need_rc(pthread_join(c->threads[i], NULL), "pthread_join");
    c->used = 0;
}

static double round_spawn_raw_wait(void *ctx)
{
    struct raw_wait_ctx *c = ctx;
    if (c->used == SPAWN_WAIT_PER_SCOPE)
        raw_wait_close(c);
    tether_time_t t0 = tether_now();
    need_rc(pthread_create(&c->threads[c->used], NULL, raw_post, &c->done), "pthread_create");
    while (sem_wait(&c->done) < 0)
        need_ok(errno == EINTR, "sem_wait");
    tether_time_t t1 = tether_now();
    c->used++;
    return (double)(t1 - t0);
}

void bench_spawn(const struct config *cfg)
{
    /* The figures: a scope per child, without and with thread reuse,
     * against pthread_create + pthread_join, in one interleaved series. */
    struct variant v[3] = {
        { .fn = round_spawn_raw },
        { .fn = round_spawn_scope },
        { .fn = round_spawn_scope_reuse },
    };
    interleave("spawn_join", v, 3, cfg->spawn_rounds, cfg->spawn_warmup, cfg);
    tether_trim(); /* the parked thread */
    double raw = report_latency("spawn_join_raw", &v[0].s);
    double scope = report_latency("spawn_join", &v[1].s);
    double reuse = report_latency("spawn_join_reuse", &v[2].s);
    report("spawn_join_ratio", ratio(scope, raw), "x", 3);
    report("spawn_join_reuse_ratio", ratio(reuse, raw), "x", 3);
    for (int i = 0; i < 3; i++)
        samples_free(&v[i].s);

    /* Extra: spawn + tether_task_wait in a long-lived scope, against its raw
     * counterpart. It runs apart because both keep threads unjoined for a
     * while, taking glibc's cached stacks from the rounds above. */
    struct spawn_wait_ctx wait_ctx = { 0 };
    struct raw_wait_ctx raw_ctx = { .used = 0 };
    need_ok(sem_init(&raw_ctx.done, 0, 0) == 0, "sem_init");
    struct variant w[2] = {
        { .fn = round_spawn_raw_wait, .ctx = &raw_ctx },
        { .fn = round_spawn_wait, .ctx = &wait_ctx },
    };
    interleave("spawn_wait", w, 2, cfg->spawn_rounds / 2, cfg->spawn_warmup, cfg);
    spawn_wait_close(&wait_ctx);
    raw_wait_close(&raw_ctx);
    sem_destroy(&raw_ctx.done);
    double wraw = report_latency("spawn_wait_raw", &w[0].s);
    double wait = report_latency("spawn_wait", &w[1].s);
    report("spawn_wait_ratio", ratio(wait, wraw), "x", 3);
    for (int i = 0; i < 2; i++)
        samples_free(&w[i].s);
}
