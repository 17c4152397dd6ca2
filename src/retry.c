/*
 * Retry with backoff and jitter.
 *
 * One call is a loop of: gate (may an attempt start?), attempt, classify,
 * plan the sleep (may it end before the deadline and the budget?), sleep.
 * Everything that can stop the loop is checked at the gate and when the
 * sleep is planned, so no attempt starts late and no sleep is started that
 * could only end in ETIMEDOUT.
 *
 * Time comes from a replaceable clock (opts->clock). The real one reads
 * tether_now and sleeps on the current token's futex through the same wait
 * tether_sleep_until uses, so a canceled backoff wakes exactly as fast as
 * a canceled sleep. A fake clock replaces both, and then this file never
 * sleeps on its own.
 *
 * Randomness comes from a splitmix64 generator owned by the call and
 * seeded from opts->seed, or from a per-thread generator when the seed is 0.
 *
 * tether_retry_after works through a thread-local stack of frames, one per
 * tether_retry running on the thread, innermost first.
 */
#define _GNU_SOURCE
#include "current.h"

#include "clock.h"
#include "metrics.h"

#include <math.h>
#include <unistd.h>

#define DEFAULT_INITIAL_NS tether_ms(100)
#define DEFAULT_MAX_NS     tether_sec(10)
#define DEFAULT_MULTIPLIER 2.0
enum { DEFAULT_ATTEMPTS = 5 };

/* One tether_retry running on this thread. */
struct frame {
    struct frame *outer;
    bool in_attempt; /* the attempt function is running */
    int64_t hint;    /* largest tether_retry_after of this attempt */
};

static _Thread_local struct frame *innermost;

/* The call's state, with the options' defaults applied. */
struct run {
    int (*attempt)(void *arg);
    void *arg;
    tether_retry_opts o;
    tether_token *entered;  /* the current token at the call, or NULL */
    tether_token *token;    /* that, or the process root, or NULL */
    tether_time_t deadline; /* its effective deadline, or TETHER_NEVER */
    tether_time_t start;
    tether_time_t budget_end; /* start + max_elapsed_ns, or TETHER_NEVER */
    uint64_t rng;
    double expo;        /* d(n), before truncation */
    int64_t prev_sleep; /* s(n-1), for decorrelated jitter */
    unsigned retries;   /* n: sleeps planned so far */
};

/* ---------------------------------------------------------------------- */
/* Arithmetic and randomness                                              */

static int64_t add_sat(int64_t a, int64_t b)
{
    /* Both non-negative here. */
    return a > INT64_MAX - b ? INT64_MAX : a + b;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform in [lo, hi], both non-negative, lo <= hi. */
static int64_t random_between(uint64_t *rng, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1; /* hi - lo < 2^63: no wrap */
    return lo + (int64_t)(splitmix64(rng) % span);
}

static _Thread_local uint64_t thread_rng;
static _Thread_local bool thread_rng_ready;

static uint64_t call_seed(uint64_t seed)
{
    if (seed)
        return seed;
    if (!thread_rng_ready) {
        /* The TLS address tells threads apart; the clock and pid tell
         * processes and runs apart. Mixed by the generator's first steps. */
        thread_rng = (uint64_t)tether_now() ^ ((uint64_t)getpid() << 32) ^
                     (uint64_t)(uintptr_t)&thread_rng * 0x9E3779B97F4A7C15ull;
        thread_rng_ready = true;
    }
    uint64_t s = splitmix64(&thread_rng);
    return s ? s : 1;
}

/* The next sleep s(n) before any hint; advances n. */
static int64_t next_sleep(struct run *r)
{
    int64_t cap = r->o.max_delay_ns;
    int64_t d = r->expo >= (double)cap ? cap : (int64_t)r->expo;
    int64_t s;
    switch (r->o.jitter) {
    case TETHER_RETRY_JITTER_NONE: s = d; break;
    case TETHER_RETRY_JITTER_EQUAL: {
        int64_t half = d / 2;
        s = half + random_between(&r->rng, 0, d - half);
        break;
    }
    case TETHER_RETRY_JITTER_DECORRELATED: {
        int64_t hi = r->prev_sleep > INT64_MAX / 3 ? INT64_MAX : r->prev_sleep * 3;
        s = random_between(&r->rng, r->o.initial_delay_ns, hi);
        if (s > cap)
            s = cap;
        r->prev_sleep = s;
        break;
    }
    case TETHER_RETRY_JITTER_FULL:
    default: s = random_between(&r->rng, 0, d); break;
    }
    /* d(n+1); once at the cap it stays there. */
    if (r->expo < (double)cap)
        r->expo *= r->o.multiplier;
    r->retries++;
    return s;
}

/* ---------------------------------------------------------------------- */
/* The real clock                                                         */

static tether_time_t real_now(void *ctx)
{
    (void)ctx;
    return tether_now();
}

/* The backoff sleep: the wait tether_sleep_until uses, except that a signal
 * handler does not end it. */
static int real_sleep_until(void *ctx, tether_time_t when)
{
    (void)ctx;
    while (tether_sleep_until(when) != 0)
        if (errno != EINTR)
            return errno;
    return 0;
}

static tether_time_t now_of(const struct run *r)
{
    return r->o.clock.now(r->o.clock.ctx);
}

/* ---------------------------------------------------------------------- */
/* Options                                                                */

static int apply_defaults(tether_retry_opts *o)
{
    if (o->initial_delay_ns < 0 || o->max_delay_ns < 0 || o->max_elapsed_ns < 0 ||
        o->attempt_timeout_ns < 0)
        return EINVAL;
    if ((unsigned)o->jitter > TETHER_RETRY_JITTER_DECORRELATED)
        return EINVAL;
    if (!isfinite(o->multiplier) || (o->multiplier != 0.0 && o->multiplier < 1.0))
        return EINVAL;
    if (!o->clock.now != !o->clock.sleep_until)
        return EINVAL;
    if (o->initial_delay_ns == 0)
        o->initial_delay_ns = DEFAULT_INITIAL_NS;
    if (o->max_delay_ns == 0)
        o->max_delay_ns =
            o->initial_delay_ns > DEFAULT_MAX_NS ? o->initial_delay_ns : DEFAULT_MAX_NS;
    if (o->max_delay_ns < o->initial_delay_ns)
        return EINVAL;
    if (o->multiplier == 0.0)
        o->multiplier = DEFAULT_MULTIPLIER;
    if (o->max_attempts == 0)
        o->max_attempts = DEFAULT_ATTEMPTS;
    if (!o->clock.now) {
        o->clock.now = real_now;
        o->clock.sleep_until = real_sleep_until;
        o->clock.ctx = NULL;
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* The loop                                                               */

static tether_retry_stop stop_for_token_error(int c)
{
    return c == ETIMEDOUT ? TETHER_RETRY_STOP_DEADLINE : TETHER_RETRY_STOP_CANCELED;
}

/* Run one attempt, under a child token if it has its own timeout.
 * Returns 0 with the attempt's result in *rc, or ENOMEM if it could not be
 * started. */
static int run_attempt(struct run *r, struct frame *f, int *rc, bool *timed_out)
{
    static const char who[] = "tether_retry attempt";
    *timed_out = false;
    f->hint = 0;
    f->in_attempt = true;
    /* The gate checked the token just before: counted only if a cancel
     * landed in between (the metric is there to show it never matters). */
    if (r->token && tether__token_canceled(r->token))
        tether__metrics_retry_after_cancel();
    int e = 0;
    if (r->o.attempt_timeout_ns) {
        /* DEADLINE on the child itself means its own deadline fired; an
         * earlier outer deadline would show as PARENT. */
        e = tether__run_under(tether_deadline_after(r->o.attempt_timeout_ns), r->attempt, r->arg,
                              rc, timed_out, who);
    } else {
        *rc = r->attempt(r->arg);
        if (tether__current != r->entered)
            tether__misuse(who, NULL,
                           "returned with a token still entered "
                           "(tether_token_enter without tether_token_leave)");
    }
    f->in_attempt = false;
    return e;
}

static int finish(tether_retry_result *res, tether_retry_stop stop, int error)
{
    res->stop = stop;
    res->error = error;
    return error;
}

static int loop(struct run *r, struct frame *f, tether_retry_result *res)
{
    bool (*retryable)(int, void *) = r->o.retryable;
    for (;;) {
        /* The gate: may an attempt start now? */
        if (r->token) {
            int c = tether_token_check(r->token);
            if (c)
                return finish(res, stop_for_token_error(c), c);
        }
        tether_time_t now = now_of(r);
        if (now >= r->deadline)
            return finish(res, TETHER_RETRY_STOP_DEADLINE, ETIMEDOUT);
        if (res->attempts > 0 && now >= r->budget_end)
            return finish(res, TETHER_RETRY_STOP_BUDGET, res->last_error);

        int rc;
        bool timed_out;
        int e = run_attempt(r, f, &rc, &timed_out);
        if (e)
            return finish(res, TETHER_RETRY_STOP_PERMANENT, e);
        if (res->attempts < TETHER_RETRY_UNLIMITED)
            res->attempts++;
        res->last_error = rc;
        if (rc == 0)
            return finish(res, TETHER_RETRY_STOP_SUCCEEDED, 0);

        /* A cancel or deadline of our own token is never retried. */
        if (r->token) {
            int c = tether_token_check(r->token);
            if (c)
                return finish(res, stop_for_token_error(c), c);
        }
        bool again = retryable ? retryable(rc, r->o.ctx) : tether_retry_transient(rc);
        if (!again)
            return finish(res, TETHER_RETRY_STOP_PERMANENT, rc);
        if (r->o.max_attempts != TETHER_RETRY_UNLIMITED && res->attempts >= r->o.max_attempts)
            return finish(res, TETHER_RETRY_STOP_EXHAUSTED, rc);

        /* Plan the sleep; refuse one that could only end past a limit. */
        int64_t sleep = next_sleep(r);
        if (f->hint > sleep)
            sleep = f->hint;
        now = now_of(r);
        tether_time_t when = add_sat(now, sleep);
        tether_time_t limit = tether__min_time(r->deadline, r->budget_end);
        if (limit != TETHER_NEVER && when >= limit) {
            if (r->deadline <= r->budget_end)
                return finish(res, TETHER_RETRY_STOP_DEADLINE, ETIMEDOUT);
            return finish(res, TETHER_RETRY_STOP_BUDGET, rc);
        }

        if (r->o.on_retry) {
            tether_retry_event ev = {
                .attempt = res->attempts,
                .error = rc,
                .attempt_timed_out = timed_out,
                .retry_after_ns = f->hint,
                .delay_ns = sleep,
                .elapsed_ns = now - r->start,
            };
            r->o.on_retry(&ev, r->o.ctx);
        }

        tether_time_t before = now_of(r);
        int s = r->o.clock.sleep_until(r->o.clock.ctx, when);
        tether_time_t after = now_of(r);
        if (after > before)
            res->slept_ns = add_sat(res->slept_ns, after - before);
        if (s) {
            int c = r->token ? tether_token_check(r->token) : 0;
            if (c)
                return finish(res, stop_for_token_error(c), c);
            return finish(res, stop_for_token_error(s), s);
        }
    }
}

int tether_retry(int (*attempt)(void *arg), void *arg, const tether_retry_opts *opts,
                 tether_retry_result *result)
{
    static const tether_retry_opts defaults;
    tether_retry_result scratch = { 0 };
    tether_retry_result *res = result ? result : &scratch;
    *res = (tether_retry_result){ .stop = TETHER_RETRY_STOP_PERMANENT };

    struct run r = { .attempt = attempt, .arg = arg, .o = opts ? *opts : defaults };
    if (!attempt || apply_defaults(&r.o) != 0)
        return finish(res, TETHER_RETRY_STOP_PERMANENT, EINVAL);

    r.entered = tether__current;
    r.token = tether__current_or_root();
    r.deadline = tether_token_deadline(r.token);
    r.start = now_of(&r);
    r.budget_end = r.o.max_elapsed_ns ? add_sat(r.start, r.o.max_elapsed_ns) : TETHER_NEVER;
    r.rng = call_seed(r.o.seed);
    r.expo = (double)r.o.initial_delay_ns;
    r.prev_sleep = r.o.initial_delay_ns;

    struct frame f = { .outer = innermost };
    innermost = &f;
    int rc = loop(&r, &f, res);
    innermost = f.outer;

    tether_time_t end = now_of(&r);
    res->elapsed_ns = end > r.start ? end - r.start : 0;
    return rc;
}

int tether_retry_after(int64_t min_delay_ns)
{
    if (min_delay_ns < 0)
        return EINVAL;
    struct frame *f = innermost;
    if (!f || !f->in_attempt)
        return EPERM;
    if (min_delay_ns > f->hint)
        f->hint = min_delay_ns;
    return 0;
}

bool tether_retry_transient(int error)
{
    switch (error) {
    case EAGAIN:
#if EWOULDBLOCK != EAGAIN
    case EWOULDBLOCK:
#endif
    case EINTR:
    case EBUSY:
    case ETIMEDOUT:
    case ECONNREFUSED:
    case ECONNRESET:
    case ECONNABORTED:
    case EPIPE:
    case ENETDOWN:
    case ENETUNREACH:
    case ENETRESET:
    case EHOSTDOWN:
    case EHOSTUNREACH:
    case EADDRNOTAVAIL:
    case ENOBUFS: return true;
    default: return false;
    }
}

const char *tether_retry_stop_name(tether_retry_stop stop)
{
    switch (stop) {
    case TETHER_RETRY_STOP_SUCCEEDED: return "succeeded";
    case TETHER_RETRY_STOP_PERMANENT: return "permanent";
    case TETHER_RETRY_STOP_EXHAUSTED: return "exhausted";
    case TETHER_RETRY_STOP_BUDGET: return "budget";
    case TETHER_RETRY_STOP_CANCELED: return "canceled";
    case TETHER_RETRY_STOP_DEADLINE: return "deadline";
    }
    return "unknown";
}
