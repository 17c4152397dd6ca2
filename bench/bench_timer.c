/*
 * bench_timer.c — deadlines that fire with nobody waiting (the timer
 * thread): how late a deadline's cancel callback runs when no thread waits
 * under the token, against a thread sleeping with clock_nanosleep to the
 * same kind of deadline (the kernel's own lateness, the floor); what
 * arming and disarming add to tether_token_new + tether_token_free; and how
 * late a cancel hook (tether_hook_on_cancel) starts on its runner thread
 * after a tether_token_cancel, and after a deadline with nobody waiting,
 * against a thread woken from sem_wait (the hand-off floor).
 */
#include "bench_common.h"

#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <time.h>

/* The distance of each round's deadline from its start. */
#define LATENESS_AHEAD_NS tether_ms(2)

struct fire {
    sem_t done;
    tether_time_t at;
};

static void on_fire(void *arg)
{
    struct fire *f = arg;
    f->at = tether_now();
    sem_post(&f->done);
}

static void sem_wait_ok(sem_t *s)
{
    while (sem_wait(s) != 0)
        need_ok(errno == EINTR, "sem_wait");
}

/* tether: a root token with its own deadline and a callback; nobody waits
 * under it (this thread waits on a semaphore the callback posts). */
static double round_lateness_tether(void *ctx)
{
    struct fire *f = ctx;
    tether_token *t;
    tether_callback *cb;
    tether_time_t d = tether_now() + LATENESS_AHEAD_NS;
    need_rc(tether_token_new(&t, NULL, d), "tether_token_new");
    need_rc(tether_token_on_cancel(t, on_fire, f, &cb), "tether_token_on_cancel");
    sem_wait_ok(&f->done);
    if (tether_token_cause(t) != TETHER_CAUSE_DEADLINE)
        die("the deadline's callback ran for another cause");
    need_rc(tether_token_off_cancel(cb, NULL), "tether_token_off_cancel");
    need_rc(tether_token_free(t), "tether_token_free");
    if (f->at < d)
        die("a deadline fired %lld ns early", (long long)(d - f->at));
    return (double)(f->at - d);
}

/* Raw: this thread sleeps to the deadline itself. */
static double round_lateness_raw(void *ctx)
{
    (void)ctx;
    tether_time_t d = tether_now() + LATENESS_AHEAD_NS;
    struct timespec ts = { .tv_sec = (time_t)(d / 1000000000), .tv_nsec = (long)(d % 1000000000) };
    int rc;
    while ((rc = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL)) == EINTR)
        ;
    need_rc(rc, "clock_nanosleep");
    return (double)(tether_now() - d);
}

/* A cancel hook: when it started. Its runner is idle between rounds (the
 * steady state of a program that cancels now and then). */
static double round_hook_cancel(void *ctx)
{
    struct fire *f = ctx;
    tether_token *t;
    tether_hook *h;
    need_rc(tether_token_new(&t, NULL, TETHER_NEVER), "tether_token_new");
    need_rc(tether_hook_on_cancel(t, on_fire, f, &h), "tether_hook_on_cancel");
    tether_time_t t0 = tether_now();
    need_rc(tether_token_cancel(t, 0), "tether_token_cancel");
    sem_wait_ok(&f->done);
    need_rc(tether_hook_off(h, NULL), "tether_hook_off");
    need_rc(tether_token_free(t), "tether_token_free");
    return (double)(f->at - t0);
}

static double round_hook_deadline(void *ctx)
{
    struct fire *f = ctx;
    tether_token *t;
    tether_hook *h;
    tether_time_t d = tether_now() + LATENESS_AHEAD_NS;
    need_rc(tether_token_new(&t, NULL, d), "tether_token_new");
    need_rc(tether_hook_on_cancel(t, on_fire, f, &h), "tether_hook_on_cancel");
    sem_wait_ok(&f->done);
    need_rc(tether_hook_off(h, NULL), "tether_hook_off");
    need_rc(tether_token_free(t), "tether_token_free");
    if (f->at < d)
        die("a hook ran %lld ns before its deadline", (long long)(d - f->at));
    return (double)(f->at - d);
}

/* The floor: a parked thread woken by sem_post, as a runner is. */
struct handoff {
    sem_t go;
    struct fire f;
    bool stop;
};

static void *handoff_main(void *arg)
{
    struct handoff *h = arg;
    for (;;) {
        sem_wait_ok(&h->go);
        if (h->stop)
            return NULL;
        on_fire(&h->f);
    }
}

static double round_hook_raw(void *ctx)
{
    struct handoff *h = ctx;
    tether_time_t t0 = tether_now();
    sem_post(&h->go);
    sem_wait_ok(&h->f.done);
    return (double)(h->f.at - t0);
}

static void bench_hook(const struct config *cfg)
{
    struct fire f;
    struct handoff raw = { .stop = false };
    need_ok(sem_init(&f.done, 0, 0) == 0 && sem_init(&raw.go, 0, 0) == 0 &&
                sem_init(&raw.f.done, 0, 0) == 0,
            "sem_init");
    pthread_t th;
    need_rc(pthread_create(&th, NULL, handoff_main, &raw), "pthread_create");
    struct variant v[3] = {
        { .fn = round_hook_raw, .ctx = &raw },
        { .fn = round_hook_cancel, .ctx = &f },
        { .fn = round_hook_deadline, .ctx = &f },
    };
    interleave("hook_lateness", v, 3, cfg->timer_rounds, cfg->timer_warmup, cfg);
    report_latency("hook_lateness_raw", &v[0].s);
    double p50 = report_latency("hook_lateness", &v[1].s);
    report("hook_lateness_us", p50 / 1000.0, "us", 1);
    report("hook_lateness_p99_us", percentile(&v[1].s, 99) / 1000.0, "us", 1);
    p50 = report_latency("hook_deadline_lateness", &v[2].s);
    report("hook_deadline_lateness_us", p50 / 1000.0, "us", 1);
    report("hook_deadline_lateness_p99_us", percentile(&v[2].s, 99) / 1000.0, "us", 1);
    for (int i = 0; i < 3; i++)
        samples_free(&v[i].s);
    raw.stop = true;
    sem_post(&raw.go);
    need_rc(pthread_join(th, NULL), "pthread_join");
    sem_destroy(&raw.go);
    sem_destroy(&raw.f.done);
    sem_destroy(&f.done);
}

static long g_token_iters;

/* Create and free g_token_iters root tokens with `deadline`; ns per pair. */
static double token_pairs(tether_time_t deadline)
{
    tether_time_t t0 = tether_now();
    for (long i = 0; i < g_token_iters; i++) {
        tether_token *t;
        need_rc(tether_token_new(&t, NULL, deadline), "tether_token_new");
        need_rc(tether_token_free(t), "tether_token_free");
    }
    return (double)(tether_now() - t0) / (double)g_token_iters;
}

static double round_token_plain(void *ctx)
{
    (void)ctx;
    return token_pairs(TETHER_NEVER);
}

static double round_token_deadline(void *ctx)
{
    (void)ctx;
    return token_pairs(tether_deadline_after(tether_sec(3600)));
}

void bench_timer(const struct config *cfg)
{
    struct fire f;
    need_ok(sem_init(&f.done, 0, 0) == 0, "sem_init");
    struct variant v[2] = {
        { .fn = round_lateness_raw },
        { .fn = round_lateness_tether, .ctx = &f },
    };
    interleave("timer_lateness", v, 2, cfg->timer_rounds, cfg->timer_warmup, cfg);
    report_latency("timer_lateness_raw", &v[0].s);
    double p50 = report_latency("timer_lateness", &v[1].s);
    report("timer_lateness_us", p50 / 1000.0, "us", 1);
    report("timer_lateness_p99_us", percentile(&v[1].s, 99) / 1000.0, "us", 1);
    for (int i = 0; i < 2; i++)
        samples_free(&v[i].s);
    sem_destroy(&f.done);

    /* With one other deadline armed, as a program with a few timeouts has:
     * an arm is then not the earliest and costs no wake-up. */
    tether_token *other;
    need_rc(tether_token_new(&other, NULL, tether_deadline_after(tether_sec(60))),
            "tether_token_new");
    g_token_iters = cfg->token_iters;
    struct variant w[2] = {
        { .fn = round_token_plain },
        { .fn = round_token_deadline },
    };
    interleave("token_new_free", w, 2, cfg->token_rounds, 1, cfg);
    double plain = median(&w[0].s), dl = median(&w[1].s);
    report("token_new_free_ns", plain, "ns", 1);
    report("token_new_free_deadline_ns", dl, "ns", 1);
    report("token_new_free_deadline_added_ns", dl - plain, "ns", 1);
    report("token_new_free_deadline_ratio", ratio(dl, plain), "x", 3);
    for (int i = 0; i < 2; i++)
        samples_free(&w[i].s);
    need_rc(tether_token_free(other), "tether_token_free");
    bench_hook(cfg);
    tether_trim(); /* the scale section forks: leave no timer or hook thread behind */
}
