/*
 * The cancellable primitives racing cancellation at random moments: every
 * call either completes or reports the cancel, and no byte is lost.
 */
#define _GNU_SOURCE
#include "io_fixtures.h"

static void busy_wait_ns(int64_t ns)
{
    tether_time_t end = tether_now() + ns;
    while (tether_now() < end) {
    }
}

/* ======================================================================
 * Races: cancel at a random moment around the wait
 * ====================================================================== */

/* A thread that, once per round, enters the round's token and makes one call. */
struct waiter {
    struct op *op;
    tether_token *tok;
    sem_t go, done;
    bool stop;
    ssize_t ret;
    int err;
    tether_time_t called_at; /* just before the call */
    pthread_t thread;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    for (;;) {
        sem_wait_ok(&w->go);
        if (w->stop)
            break;
        enter(w->tok);
        w->called_at = tether_now();
        w->ret = op_call(w->op, &w->err);
        leave(w->tok);
        sem_post(&w->done);
    }
    return NULL;
}

static void waiter_start(struct waiter *w, struct op *o)
{
    memset(w, 0, sizeof *w);
    w->op = o;
    ck_assert_int_eq(sem_init(&w->go, 0, 0), 0);
    ck_assert_int_eq(sem_init(&w->done, 0, 0), 0);
    ck_assert_int_eq(pthread_create(&w->thread, NULL, waiter_main, w), 0);
}

static void waiter_stop(struct waiter *w)
{
    w->stop = true;
    sem_post(&w->go);
    ck_assert_int_eq(pthread_join(w->thread, NULL), 0);
    sem_destroy(&w->go);
    sem_destroy(&w->done);
}

START_TEST(test_race_cancel)
{
    /* Thousands of rounds: the waiter enters a blocking call while the
     * cancel lands 0-100 us later (busy-waited): before the call, during its
     * set-up, or while it sleeps. Every round ends in ECANCELED; a lost
     * wakeup would hang (bounded wait, then the Check timeout). */
    th_baseline b = th_baseline_take();
    char name[64];
    snprintf(name, sizeof name, "race_cancel(%s)", op_name[_i]);
    uint64_t rng = th_seed(name);
    int rounds = 3000 * stress(1);
    struct op o;
    op_setup(&o, _i, false);
    struct waiter w;
    waiter_start(&w, &o);
    int late = 0; /* rounds where the call began before the cancel */
    for (int i = 0; i < rounds; i++) {
        w.tok = new_token(NULL, TETHER_NEVER);
        sem_post(&w.go);
        busy_wait_ns(tether_us((int64_t)(th_rand(&rng) % 101)));
        tether_time_t cancel_at = tether_now();
        ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        ck_assert_msg(sem_wait_bounded(&w.done, th_bound_ns(5000)),
                      "%s: round %d: waiter never woke", op_name[_i], i);
        ck_assert_msg(w.ret == -1 && w.err == ECANCELED, "%s: round %d: %zd errno %s", op_name[_i],
                      i, w.ret, strerror(w.err));
        late += w.called_at < cancel_at;
        token_free(w.tok);
    }
    waiter_stop(&w);
    /* Coverage, not a requirement: a slow machine may shift the mix. */
    fprintf(stderr, "%s: %d rounds, %d with the call begun before the cancel\n", name, rounds,
            late);
    op_check_untouched(&o);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_race_conservation)
{
    /* Data and cancel race a blocked read (_i 0) or write (_i 1): whatever
     * the interleaving, every byte is either reported by the call or still
     * in the pipe, never lost nor counted twice. */
    th_baseline b = th_baseline_take();
    bool reading = _i == 0;
    uint64_t rng = th_seed(reading ? "race_conservation(read)" : "race_conservation(write)");
    int rounds = 1000 * stress(1);
    struct op o;
    op_setup(&o, reading ? OP_READ : OP_WRITE, false);
    enum { WMAX = 3 * 4096 };
    unsigned char *wsrc = pattern(WMAX);
    o.wsrc = wsrc;
    struct waiter w;
    waiter_start(&w, &o);
    unsigned char src[sizeof o.buf], got[sizeof o.buf];
    static unsigned char sink[8192];
    int moved_rounds = 0, partial_rounds = 0;
    for (int i = 0; i < rounds; i++) {
        size_t before = (size_t)pending(o.p[0]);
        size_t n = 1 + th_rand(&rng) % sizeof src;    /* read: bytes written */
        size_t k = th_rand(&rng) % (sizeof sink + 1); /* write: bytes drained */
        if (reading) {
            for (size_t j = 0; j < n; j++)
                src[j] = (unsigned char)th_rand(&rng);
        } else {
            o.wlen = 1 + th_rand(&rng) % WMAX;
        }
        bool data_first = th_rand(&rng) % 2;
        int64_t d1 = tether_us((int64_t)(th_rand(&rng) % 101));
        int64_t d2 = tether_us((int64_t)(th_rand(&rng) % 51));
        w.tok = new_token(NULL, TETHER_NEVER);
        sem_post(&w.go);
        busy_wait_ns(d1);
        if (!data_first)
            ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        if (reading)
            ck_assert_int_eq(write(o.p[1], src, n), n);
        else
            read_exact(o.p[0], sink, k);
        busy_wait_ns(d2);
        if (data_first)
            ck_assert_int_eq(tether_token_cancel(w.tok, 0), 0);
        ck_assert_msg(sem_wait_bounded(&w.done, th_bound_ns(5000)), "round %d: never woke", i);
        ck_assert_msg(w.ret > 0 || (w.ret == -1 && w.err == ECANCELED), "round %d: %zd errno %s", i,
                      w.ret, strerror(w.err));
        size_t moved = w.ret > 0 ? (size_t)w.ret : 0;
        moved_rounds += moved > 0;
        partial_rounds += moved > 0 && moved < (reading ? n : o.wlen);
        size_t now = (size_t)pending(o.p[0]);
        if (reading) {
            /* n <= PIPE_BUF arrives whole: read all of it or none. */
            ck_assert_msg(moved == 0 || moved == n, "round %d: read %zu of %zu", i, moved, n);
            if (moved)
                ck_assert_mem_eq(o.buf, src, n);
            ck_assert_msg(moved + now == n, "round %d: read %zu + left %zu != written %zu", i,
                          moved, now, n);
            if (now) {
                ck_assert_int_eq(read(o.p[0], got, sizeof got), now);
                ck_assert_mem_eq(got, src, n);
            }
        } else {
            ck_assert_msg(moved <= o.wlen, "round %d: wrote %zu of %zu", i, moved, o.wlen);
            ck_assert_msg(now == before - k + moved,
                          "round %d: pipe holds %zu; expected %zu - %zu drained + %zu written", i,
                          now, before, k, moved);
            fill(o.p[1]);
        }
        token_free(w.tok);
    }
    waiter_stop(&w);
    fprintf(
        stderr, "race_conservation(%s): %d rounds: %d moved bytes (%d partially), %d canceled\n",
        reading ? "read" : "write", rounds, moved_rounds, partial_rounds, rounds - moved_rounds);
    free(wsrc);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("io_races");
    TCase *tc;

    tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1));
    tcase_add_loop_test(tc, test_race_cancel, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_race_conservation, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
