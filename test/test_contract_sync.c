/*
 * Contract matrix: condition variables and semaphores (tether_cond_wait,
 * _cond_timedwait, _cond_clockwait, tether_sem_wait, _sem_timedwait).
 * One Check test per function, one row per documented error and per
 * difference from the raw call. Many threads on one condvar or semaphore
 * are in test_shared_objects.c. Rows are listed in docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <pthread.h>
#include <stdatomic.h>
#include <semaphore.h>
#include <time.h>

static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };

/* An error-checking mutex, so "held on return" can be asked of unlock. */
static void errcheck_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_ERRORCHECK);
    ck_assert_int_eq(pthread_mutex_init(m, &a), 0);
    pthread_mutexattr_destroy(&a);
}

static struct timespec abs_on(clockid_t clk, int64_t from_now_ns)
{
    struct timespec ts;
    clock_gettime(clk, &ts);
    int64_t ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + from_now_ns;
    return (struct timespec){ (time_t)(ns / 1000000000), (long)(ns % 1000000000) };
}

/* 0 cond_wait, 1 cond_timedwait, 2 cond_clockwait(MONOTONIC). */
static int t_cw(int kind, pthread_cond_t *c, pthread_mutex_t *m, const struct timespec *ts)
{
    switch (kind) {
    case 0: return tether_cond_wait(c, m);
    case 1: return tether_cond_timedwait(c, m, ts);
    default: return tether_cond_clockwait(c, m, CLOCK_MONOTONIC, ts);
    }
}

static void cond_rows(ct_rows *r, int kind)
{
    static const char *fns[] = { "tether_cond_wait", "tether_cond_timedwait",
                                 "tether_cond_clockwait" };
    const char *fn = fns[kind];
    clockid_t clk = kind == 1 ? CLOCK_REALTIME : CLOCK_MONOTONIC;
    pthread_mutex_t m;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    errcheck_mutex(&m);
    char name[128];
    /* Already canceled / expired: the error at once, mutex held again. */
    for (size_t i = 0; i < 2; i++) {
        struct timespec far = abs_on(clk, tether_sec(30));
        pthread_mutex_lock(&m);
        tether_token *t = ct_enter(dead[i], 0);
        int rc = t_cw(kind, &c, &m, &far);
        snprintf(name, sizeof name, "%s/%s", fn, ct_state_name(dead[i]));
        CT_RC(r, name, rc, ct_expected(dead[i]));
        int un = pthread_mutex_unlock(&m);
        ct_row(r, un == 0, "%s/mutex on return: expected held (unlock gave %d)", name, un);
        ct_leave(t);
    }
    /* A token deadline that passes while waiting: ETIMEDOUT, mutex held. */
    {
        struct timespec far = abs_on(clk, tether_sec(30));
        pthread_mutex_lock(&m);
        tether_token *t;
        ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
        ck_assert_int_eq(tether_token_enter(t), 0);
        int rc = t_cw(kind, &c, &m, &far);
        snprintf(name, sizeof name, "%s/token deadline while waiting", fn);
        CT_RC(r, name, rc, ETIMEDOUT);
        int un = pthread_mutex_unlock(&m);
        ct_row(r, un == 0, "%s/mutex on return: expected held (unlock gave %d)", name, un);
        ct_leave(t);
    }
    if (kind == 0) {
        pthread_mutex_destroy(&m);
        return;
    }
    /* The abstime rows, side by side with the raw call. */
    struct timespec past = abs_on(clk, -tether_ms(1)), badns = abs_on(clk, 0), negs = { -1, 0 };
    badns.tv_nsec = 1000000000;
    struct {
        const char *what;
        const struct timespec *ts;
    } rows[] = { { "abstime past", &past },
                 { "tv_nsec 1e9", &badns },
                 { "negative tv_sec", &negs } };
    const ct_state st2[] = { CT_NONE, CT_LIVE };
    for (size_t k = 0; k < sizeof rows / sizeof rows[0]; k++) {
        for (size_t i = 0; i < 2; i++) {
            pthread_mutex_lock(&m);
            int rr = kind == 1 ? pthread_cond_timedwait(&c, &m, rows[k].ts)
                               : pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, rows[k].ts);
            tether_token *t = ct_enter(st2[i], 0);
            int tr = t_cw(kind, &c, &m, rows[k].ts);
            ct_leave(t);
            int un = pthread_mutex_unlock(&m);
            snprintf(name, sizeof name, "%s/%s/%s", fn, rows[k].what, ct_state_name(st2[i]));
            ct_row(r, tr == rr && un == 0,
                   "%s: expected as the raw call (%s), mutex held, got %s (unlock %d)", name,
                   rr ? strerrorname_np(rr) : "0", tr ? strerrorname_np(tr) : "0", un);
        }
    }
    if (kind == 2) {
        struct timespec ts = abs_on(CLOCK_MONOTONIC, 0);
        for (size_t i = 0; i < 2; i++) {
            pthread_mutex_lock(&m);
            int rr = pthread_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &ts);
            tether_token *t = ct_enter(st2[i], 0);
            int tr = tether_cond_clockwait(&c, &m, CLOCK_PROCESS_CPUTIME_ID, &ts);
            ct_leave(t);
            pthread_mutex_unlock(&m);
            snprintf(name, sizeof name, "%s/clock CPUTIME/%s", fn, ct_state_name(st2[i]));
            ct_row(r, tr == rr && tr == EINVAL, "%s: expected EINVAL as the raw call (%s), got %s",
                   name, rr ? strerrorname_np(rr) : "0", tr ? strerrorname_np(tr) : "0");
        }
        /* CLOCK_REALTIME is accepted. */
        struct timespec rt = abs_on(CLOCK_REALTIME, tether_ms(5));
        pthread_mutex_lock(&m);
        tether_token *t = ct_enter(CT_LIVE, 0);
        int tr = tether_cond_clockwait(&c, &m, CLOCK_REALTIME, &rt);
        ct_leave(t);
        pthread_mutex_unlock(&m);
        ct_row(r, tr == ETIMEDOUT, "%s/CLOCK_REALTIME abstime: expected ETIMEDOUT got %d", fn, tr);
    }
    pthread_mutex_destroy(&m);
}

/* A waiter canceled by another thread while blocked: ECANCELED with the
 * mutex held, and the token's user error does not leak into the return. */
static pthread_mutex_t cm;
static pthread_cond_t cc = PTHREAD_COND_INITIALIZER;
static _Atomic pid_t waiter_tid;
static tether_token *waiter_tok;
static int waiter_kind;
static void *cond_waiter(void *arg)
{
    int *res = arg;
    pthread_mutex_lock(&cm);
    ck_assert_int_eq(tether_token_enter(waiter_tok), 0);
    atomic_store(&waiter_tid, th_gettid());
    struct timespec far =
        abs_on(waiter_kind == 1 ? CLOCK_REALTIME : CLOCK_MONOTONIC, tether_sec(30));
    res[0] = t_cw(waiter_kind, &cc, &cm, &far);
    res[1] = pthread_mutex_unlock(&cm);
    ck_assert_int_eq(tether_token_leave(waiter_tok), 0);
    return NULL;
}

static void cond_cancel_row(ct_rows *r, int kind)
{
    static const char *fns[] = { "tether_cond_wait", "tether_cond_timedwait",
                                 "tether_cond_clockwait" };
    errcheck_mutex(&cm);
    ck_assert_int_eq(tether_token_new(&waiter_tok, NULL, TETHER_NEVER), 0);
    waiter_kind = kind;
    atomic_store(&waiter_tid, 0);
    int res[2] = { -1, -1 };
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cond_waiter, res), 0);
    while (atomic_load(&waiter_tid) == 0) {
    }
    th_wait_blocked(atomic_load(&waiter_tid));
    ck_assert_int_eq(tether_token_cancel(waiter_tok, EPIPE), 0);
    pthread_join(th, NULL);
    ct_row(r, res[0] == ECANCELED && res[1] == 0,
           "%s/canceled while blocked (user error EPIPE): expected ECANCELED, mutex held; got %d, "
           "unlock %d",
           fns[kind], res[0], res[1]);
    ck_assert_int_eq(tether_token_free(waiter_tok), 0);
    pthread_mutex_destroy(&cm);
}

START_TEST(contract_tether_cond_wait)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    cond_rows(&r, 0);
    cond_cancel_row(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_cond_timedwait)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    cond_rows(&r, 1);
    cond_cancel_row(&r, 1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_cond_clockwait)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    cond_rows(&r, 2);
    cond_cancel_row(&r, 2);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static void sem_rows(ct_rows *r, int timed)
{
    const char *fn = timed ? "tether_sem_timedwait" : "tether_sem_wait";
    sem_t s;
    ck_assert_int_eq(sem_init(&s, 0, 1), 0);
    char name[128];
    struct timespec far = abs_on(CLOCK_REALTIME, tether_sec(30));
    /* Already canceled / expired with a unit available: fails, consumes nothing. */
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        errno = 0;
        int rc = timed ? tether_sem_timedwait(&s, &far) : tether_sem_wait(&s);
        snprintf(name, sizeof name, "%s/unit available/%s", fn, ct_state_name(dead[i]));
        CT_ERR(r, name, rc, ct_expected(dead[i]));
        ct_leave(t);
        int v = -1;
        sem_getvalue(&s, &v);
        ct_row(r, v == 1, "%s/semaphore value: expected 1 (nothing consumed), got %d", name, v);
    }
    /* Live token, unit available: 0 and one unit taken. */
    tether_token *t = ct_enter(CT_LIVE, 0);
    int rc = timed ? tether_sem_timedwait(&s, &far) : tether_sem_wait(&s);
    ct_leave(t);
    int v = -1;
    sem_getvalue(&s, &v);
    ct_row(r, rc == 0 && v == 0, "%s/unit available/live: expected 0 value 0, got %d value %d", fn,
           rc, v);
    /* Token deadline while waiting: ETIMEDOUT, nothing consumed. */
    ck_assert_int_eq(tether_token_new(&t, NULL, tether_deadline_after(tether_ms(20))), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    errno = 0;
    rc = timed ? tether_sem_timedwait(&s, &far) : tether_sem_wait(&s);
    snprintf(name, sizeof name, "%s/token deadline while waiting", fn);
    CT_ERR(r, name, rc, ETIMEDOUT);
    ct_leave(t);
    if (timed) {
        struct timespec past = abs_on(CLOCK_REALTIME, -tether_ms(1)), badns = far;
        badns.tv_nsec = 1000000000;
        const ct_state st2[] = { CT_NONE, CT_LIVE };
        for (size_t i = 0; i < 2; i++) {
            CT_SIDE(r, st2[i], sem_timedwait(&s, &past), tether_sem_timedwait(&s, &past),
                    "%s/abstime past, value 0/%s", fn, ct_state_name(st2[i]));
            CT_SIDE(r, st2[i], sem_timedwait(&s, &badns), tether_sem_timedwait(&s, &badns),
                    "%s/tv_nsec 1e9, value 0/%s", fn, ct_state_name(st2[i]));
            sem_post(&s);
            sem_post(&s);
            CT_SIDE(r, st2[i], sem_timedwait(&s, &past), tether_sem_timedwait(&s, &past),
                    "%s/abstime past, value 2/%s", fn, ct_state_name(st2[i]));
        }
    }
    sem_destroy(&s);
}

START_TEST(contract_tether_sem_wait)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    sem_rows(&r, 0);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

START_TEST(contract_tether_sem_timedwait)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    sem_rows(&r, 1);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

/* An unmapped abstime: glibc's own pthread_cond_timedwait/clockwait and
 * sem_timedwait read it in user space and crash; tether behaves the same (a
 * pointer glibc would crash on is the caller's to get right, documented),
 * and never turns it into a hang. Each call runs in a child process. */
struct abstime_call {
    int kind; /* 0 cond_timedwait, 1 cond_clockwait, 2 sem_timedwait */
    bool tether;
    const struct timespec *ts;
};
static long long abstime_call(void *ctx)
{
    struct abstime_call *a = ctx;
    pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t c = PTHREAD_COND_INITIALIZER;
    sem_t s;
    sem_init(&s, 0, 0);
    alarm(5); /* a hang would end as SIGALRM, not as the suite's timeout */
    pthread_mutex_lock(&m);
    switch (a->kind) {
    case 0:
        return a->tether ? tether_cond_timedwait(&c, &m, a->ts)
                         : pthread_cond_timedwait(&c, &m, a->ts);
    case 1:
        return a->tether ? tether_cond_clockwait(&c, &m, CLOCK_MONOTONIC, a->ts)
                         : pthread_cond_clockwait(&c, &m, CLOCK_MONOTONIC, a->ts);
    default: return a->tether ? tether_sem_timedwait(&s, a->ts) : sem_timedwait(&s, a->ts);
    }
}

START_TEST(contract_sync_unmapped_abstime)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    static const char *fns[] = { "tether_cond_timedwait", "tether_cond_clockwait",
                                 "tether_sem_timedwait" };
    void *bad = ct_unmapped();
    for (int k = 0; k < 3; k++) {
        struct abstime_call raw = { k, false, bad }, tc = { k, true, bad };
        int re, rs, te, ts;
        long long rr = ct_in_child(abstime_call, &raw, &re, &rs);
        tether_token *t = ct_enter(CT_LIVE, 0);
        long long tr = ct_in_child(abstime_call, &tc, &te, &ts);
        ct_leave(t);
        ct_row(&r, (rs != 0) == (ts != 0) && ts != SIGALRM && (rs != 0 || (rr == tr && re == te)),
               "%s/unmapped abstime/live: expected as glibc's call (%s), got %s", fns[k],
               rs ? "a crash" : "no crash",
               ts == SIGALRM ? "a hang"
               : ts          ? "a crash"
                             : "no crash");
        (void)rr;
        (void)tr;
    }
    munmap(bad, 4096);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static Suite *contract_sync_suite(void)
{
    Suite *s = suite_create("contract_sync");
    TCase *tc = tcase_create("contract_sync");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_tether_cond_wait);
    tcase_add_test(tc, contract_tether_cond_timedwait);
    tcase_add_test(tc, contract_tether_cond_clockwait);
    tcase_add_test(tc, contract_tether_sem_wait);
    tcase_add_test(tc, contract_tether_sem_timedwait);
    tcase_add_test(tc, contract_sync_unmapped_abstime);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_sync_suite());
}
