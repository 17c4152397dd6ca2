/*
 * Soak: many scopes of 8 children each, with random policies, cancels,
 * timeouts (the scope's and the children's own), failures, nested scopes,
 * blocked readers and background children. At the end the live threads
 * (/proc/self/task), open fds (/proc/self/fd) and resident memory are back
 * at the baseline taken after a warm-up.
 *
 * Size: 10,000 scopes in a plain build (two owner threads, 5,000 each);
 * 1,000 under a sanitizer or valgrind, whose cost per thread is far higher;
 * both times TETHER_STRESS. TETHER_SOAK_SCOPES=<n> sets it exactly (CI runs
 * a short one under valgrind memcheck --track-fds=yes). The seed is printed
 * (TETHER_TEST_SEED replays the choices).
 */
#define _GNU_SOURCE
#include "support.h"

#include <malloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#define SOAK_ON_VALGRIND() RUNNING_ON_VALGRIND
#endif
#endif
#ifndef SOAK_ON_VALGRIND
#define SOAK_ON_VALGRIND() 0
#endif

enum { KIDS = 8, OWNERS = 2 };

/* ------------------------------------------------------------ small tools */

static long soak_scopes(void)
{
    const char *exact = getenv("TETHER_SOAK_SCOPES");
    if (exact && atol(exact) > 0)
        return atol(exact);
    bool slow = SOAK_ON_VALGRIND();
#ifdef TS_SANITIZED
    slow = true;
#endif
    const char *f = getenv("TETHER_STRESS");
    long factor = f && atol(f) > 1 ? atol(f) : 1;
    return (slow ? 1000 : 10000) * factor;
}

/* Resident set size in KiB. */
static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return -1;
    long size = 0, resident = -1;
    if (fscanf(f, "%ld %ld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 ? -1 : resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void spin_ns(int64_t ns)
{
    tether_time_t end = tether_now() + ns;
    while (tether_now() < end) {
    }
}

/* ------------------------------------------------------------- children */

enum kind {
    K_QUICK,       /* sleeps a few µs, succeeds */
    K_FAIL,        /* sleeps a few µs, fails with EIO */
    K_BLOCK,       /* sleeps until canceled */
    K_READ,        /* blocks in tether_read until canceled */
    K_OWN_TIMEOUT, /* sleeps past its own deadline: ETIMEDOUT, a failure */
    K_NESTED,      /* opens a scope of two quick children */
    K_KINDS
};

struct kid {
    enum kind kind;
    int64_t ns;
    int fd;
};

static int quick_main(void *arg)
{
    (void)arg;
    return tether_sleep_for(tether_us(5)) == 0 ? 0 : errno;
}

static int kid_main(void *arg)
{
    struct kid *k = arg;
    char c;
    switch (k->kind) {
    case K_QUICK: return tether_sleep_for(k->ns) == 0 ? 0 : errno;
    case K_FAIL: return tether_sleep_for(k->ns) == 0 ? EIO : errno;
    case K_BLOCK:
    case K_OWN_TIMEOUT: return tether_sleep_until(TETHER_NEVER) == 0 ? 0 : errno;
    case K_READ: return tether_read(k->fd, &c, 1) < 0 ? errno : 0;
    case K_NESTED: {
        tether_scope *s;
        int rc = tether_scope_open(&s, NULL);
        if (rc)
            return rc;
        for (int i = 0; i < 2 && rc == 0; i++)
            rc = tether_spawn(s, quick_main, NULL, NULL, NULL);
        EXPECT(rc == 0 || rc == ECANCELED || rc == ETIMEDOUT, "nested spawn: %d", rc);
        tether_result r;
        EXPECT(tether_scope_join(s, &r) == 0, "nested join");
        EXPECT(tether_scope_free(s) == 0, "nested free");
        return r.outcome == TETHER_OUTCOME_OK ? 0 : r.error;
    }
    case K_KINDS: break;
    }
    return EINVAL;
}

/* ---------------------------------------------------------------- owners */

struct owner {
    pthread_t th;
    uint64_t rng;
    long scopes;
    int pipe[2];
    long outcomes[5];
    long spawned, refused;
};

static void one_scope(struct owner *o)
{
    uint64_t *rng = &o->rng;
    uint64_t r = th_rand(rng);
    tether_scope_opts so = { .policy = (tether_policy)(r % 3) };
    bool timeout = (r >> 8) % 3 == 0;
    if (timeout)
        so.timeout_ns = tether_us(500 + (int64_t)((r >> 16) % 2500));
    if ((r >> 24) % 8 == 0)
        so.max_children = 3;
    bool cancel = (r >> 32) % 4 == 0;
    int64_t cancel_at = (int64_t)((r >> 40) % 100001);
    /* Something must end a blocked foreground child. */
    bool can_block = timeout || cancel;

    tether_scope *s;
    int rc = tether_scope_open(&s, &so);
    if (rc) {
        bad("open: %d", rc);
        return;
    }
    struct kid kid[KIDS];
    unsigned spawned = 0;
    tether_time_t t0 = tether_now();
    for (int i = 0; i < KIDS; i++) {
        uint64_t x = th_rand(rng);
        /* Mostly work that ends by itself; failures rarer, so that most
         * scopes get all 8 children before fail-fast stops them. */
        static const enum kind mix[20] = {
            K_QUICK,       K_QUICK,       K_QUICK,  K_QUICK,  K_QUICK,  K_QUICK,  K_FAIL,
            K_FAIL,        K_BLOCK,       K_BLOCK,  K_BLOCK,  K_READ,   K_READ,   K_READ,
            K_OWN_TIMEOUT, K_OWN_TIMEOUT, K_NESTED, K_NESTED, K_NESTED, K_NESTED,
        };
        kid[i] = (struct kid){ .kind = mix[x % 20],
                               .ns = (int64_t)((x >> 8) % 200000),
                               .fd = o->pipe[0] };
        tether_spawn_opts po = { .background = (x >> 20) % 8 == 0 };
        if (kid[i].kind == K_OWN_TIMEOUT)
            po.timeout_ns = tether_us(100 + (int64_t)((x >> 24) % 400));
        bool blocks = kid[i].kind == K_BLOCK || kid[i].kind == K_READ;
        if (blocks && !can_block && !po.background)
            kid[i].kind = K_QUICK;
        if ((x >> 32) % 2)
            po.stack_size = 64 * 1024;
        /* A full scope's slot wait ends only at its deadline (blocked or
         * background children hold their slots): without one, don't wait. */
        bool may_wait = !so.max_children || timeout;
        rc = may_wait ? tether_spawn(s, kid_main, &kid[i], &po, NULL)
                      : tether_try_spawn(s, kid_main, &kid[i], &po, NULL);
        if (rc == 0)
            spawned++;
        else if (rc == ECANCELED || rc == ETIMEDOUT || (rc == EAGAIN && !may_wait))
            o->refused++; /* fail-fast, first-success, a timeout, the cancel, or full */
        else
            bad("spawn: %s", strerror(rc));
    }
    if (cancel) {
        spin_ns(t0 + cancel_at - tether_now());
        EXPECT(tether_scope_cancel(s) == 0, "cancel");
    }
    tether_result res;
    rc = tether_scope_join(s, &res);
    EXPECT(rc == 0, "join: %d", rc);
    EXPECT(res.spawned == spawned, "spawned %u, not %u", res.spawned, spawned);
    EXPECT(res.succeeded + res.failed + res.canceled == spawned, "%u+%u+%u != %u", res.succeeded,
           res.failed, res.canceled, spawned);
    if (res.outcome == TETHER_OUTCOME_FAILED || res.outcome == TETHER_OUTCOME_PARTIAL)
        EXPECT(res.error == EIO || res.error == ETIMEDOUT, "failed with %d", res.error);
    if (res.outcome == TETHER_OUTCOME_DEADLINE_EXCEEDED)
        EXPECT(timeout, "deadline exceeded without a timeout");
    if (res.outcome == TETHER_OUTCOME_CANCELED)
        EXPECT(cancel, "canceled without a cancel");
    EXPECT(tether_scope_free(s) == 0, "free");
    if ((unsigned)res.outcome < 5)
        o->outcomes[res.outcome]++;
    o->spawned += spawned;
}

static void *owner_main(void *arg)
{
    struct owner *o = arg;
    for (long i = 0; i < o->scopes && bad_seen() == 0; i++)
        one_scope(o);
    return NULL;
}

static void run_owners(struct owner *o, int n, long scopes_each)
{
    for (int k = 0; k < n; k++) {
        o[k].scopes = scopes_each;
        if (pthread_create(&o[k].th, NULL, owner_main, &o[k]) != 0)
            ck_abort_msg("pthread_create");
    }
    for (int k = 0; k < n; k++)
        ck_assert_int_eq(pthread_join(o[k].th, NULL), 0);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
}

START_TEST(soak)
{
    long total = soak_scopes();
    uint64_t seed = th_seed("soak");
    struct owner o[OWNERS];
    memset(o, 0, sizeof o);
    for (int k = 0; k < OWNERS; k++) {
        o[k].rng = seed ^ (uint64_t)(k + 1) * 0x9E3779B97F4A7C15ull;
        ck_assert_int_eq(pipe(o[k].pipe), 0); /* nobody writes: readers wait for the cancel */
    }

    /* Warm-up: thread stacks cached, malloc arenas made. */
    long warm = total / 50 > 4 ? total / 50 : 4;
    run_owners(o, OWNERS, warm / OWNERS);
    malloc_trim(0);
    th_baseline b = th_baseline_take();
    long rss0 = rss_kib();
    tether_time_t t0 = tether_now();

    run_owners(o, OWNERS, (total - warm) / OWNERS);

    tether_time_t t1 = tether_now();
    th_baseline_check(b);
    malloc_trim(0);
    long rss1 = rss_kib();
    long spawned = 0, refused = 0, outcomes[5] = { 0 };
    for (int k = 0; k < OWNERS; k++) {
        spawned += o[k].spawned;
        refused += o[k].refused;
        for (int i = 0; i < 5; i++)
            outcomes[i] += o[k].outcomes[i];
        close(o[k].pipe[0]);
        close(o[k].pipe[1]);
    }
    fprintf(stderr,
            "soak: %ld scopes, %ld children (%ld spawns refused) in %.1f s; outcomes ok %ld, "
            "partial %ld, failed %ld, canceled %ld, deadline %ld; RSS %ld -> %ld KiB\n",
            total, spawned, refused, (double)(t1 - t0) / 1e9, outcomes[0], outcomes[1], outcomes[2],
            outcomes[3], outcomes[4], rss0, rss1);
    bool check_rss = !SOAK_ON_VALGRIND();
#ifdef TS_SANITIZED
    check_rss = false; /* quarantine and shadow memory grow by design */
#endif
    if (check_rss) {
        /* Back to the baseline, give or take allocator slack. */
        long slack = rss0 / 10 > 8192 ? rss0 / 10 : 8192;
        ck_assert_msg(rss1 <= rss0 + slack, "RSS grew from %ld to %ld KiB", rss0, rss1);
    }
}
END_TEST

static Suite *soak_suite(void)
{
    Suite *s = suite_create("soak");
    TCase *tc = tcase_create("soak");
    /* Generous: about 10 ms per scope is already far slower than seen. */
    long per = soak_scopes() / 100;
    tcase_set_timeout(tc, th_timeout_s(60 + (int)per));
    tcase_add_test(tc, soak);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(soak_suite());
}
