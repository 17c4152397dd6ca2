/*
 * Races between children finishing, failing and being canceled, and the
 * scope joining them.
 */
#define _GNU_SOURCE
#include "scope_fixtures.h"

/* ---------------------------------------------------------------------- */
/* Races                                                                  */

typedef struct completion_race {
    pthread_barrier_t bar;
    unsigned child_spin, cancel_spin;
    tether_scope *s;
    int cancel_rc;
    atomic_int cleanups;
} completion_race;

/* Returns 0 unless it sees the cancellation at its last check. */
static int finish_racing_cancel(void *arg)
{
    completion_race *c = arg;
    pthread_barrier_wait(&c->bar);
    busy_spin(c->child_spin);
    int rc = tether_check();
    atomic_fetch_add(&c->cleanups, 1);
    return rc;
}

static void *cancel_thread(void *arg)
{
    completion_race *c = arg;
    pthread_barrier_wait(&c->bar);
    busy_spin(c->cancel_spin);
    c->cancel_rc = tether_scope_cancel(c->s);
    return NULL;
}

START_TEST(test_cancel_races_child_completion)
{
    th_baseline base = th_baseline_take();
    uint64_t rng = th_seed("cancel_races_child_completion");
    int iters = stress(600);
    int outcomes[2][2] = { { 0 } }; /* [canceled by owner?][outcome canceled?] */
    for (int i = 0; i < iters; i++) {
        /* Even iterations: the owner cancels, then joins. Odd: another thread
         * cancels while the owner joins. */
        bool by_owner = i % 2 == 0;
        completion_race c = { .child_spin = (unsigned)(th_rand(&rng) % 4000),
                              .cancel_spin = (unsigned)(th_rand(&rng) % 4000) };
        pthread_barrier_init(&c.bar, NULL, by_owner ? 2 : 3);
        c.s = open_scope(NULL);
        spawn_ok(c.s, finish_racing_cancel, &c, NULL, NULL);
        pthread_t canceler;
        if (by_owner) {
            pthread_barrier_wait(&c.bar);
            busy_spin(c.cancel_spin);
            c.cancel_rc = tether_scope_cancel(c.s);
        } else {
            ck_assert_int_eq(pthread_create(&canceler, NULL, cancel_thread, &c), 0);
            pthread_barrier_wait(&c.bar);
        }
        tether_result r;
        ck_assert_int_eq(tether_scope_join(c.s, &r), 0);
        if (!by_owner)
            ck_assert_int_eq(pthread_join(canceler, NULL), 0);
        ck_assert_int_eq(tether_scope_free(c.s), 0);
        pthread_barrier_destroy(&c.bar);

        ck_assert_int_eq(atomic_load(&c.cleanups), 1);
        ck_assert_uint_eq(r.spawned, 1);
        ck_assert_uint_eq(r.failed, 0);
        ck_assert_uint_eq(r.succeeded + r.canceled, 1);
        ck_assert_msg(r.outcome == TETHER_OUTCOME_OK || r.outcome == TETHER_OUTCOME_CANCELED,
                      "iteration %d: outcome %s", i, tether_outcome_name(r.outcome));
        ck_assert(c.cancel_rc == 0 || c.cancel_rc == EINVAL);
        if (by_owner)
            ck_assert_int_eq(c.cancel_rc, 0);
        if (r.outcome == TETHER_OUTCOME_OK) {
            ck_assert_uint_eq(r.succeeded, 1);
            ck_assert_int_eq(r.cause, TETHER_CAUSE_NONE);
            ck_assert_int_eq(r.error, 0);
        } else {
            ck_assert_int_eq(c.cancel_rc, 0);
            ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
        }
        if (r.canceled)
            ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
        outcomes[by_owner][r.outcome == TETHER_OUTCOME_CANCELED]++;
    }
    printf("cancel_races_child_completion: owner cancels: ok %d canceled %d; "
           "other thread cancels: ok %d canceled %d\n",
           outcomes[1][0], outcomes[1][1], outcomes[0][0], outcomes[0][1]);
    fflush(stdout);
    th_baseline_check(base);
}
END_TEST

typedef struct spawner {
    tether_scope *s;
    atomic_bool owner_joining;
    pid_t owner_tid;
    atomic_int ran;
    int spawn_rc[3];
} spawner;

static int count_run(void *arg)
{
    spawner *sp = arg;
    atomic_fetch_add(&sp->ran, 1);
    return 0;
}

static int spawn_during_join(void *arg)
{
    spawner *sp = arg;
    while (!atomic_load(&sp->owner_joining))
        sched_yield();
    if (th_wait_blocked(sp->owner_tid) != 0)
        return EPROTO;
    for (int i = 0; i < 3; i++)
        sp->spawn_rc[i] = tether_spawn(sp->s, count_run, sp, NULL, NULL);
    return 0;
}

START_TEST(test_child_spawns_siblings_during_join)
{
    th_baseline base = th_baseline_take();
    spawner sp = { .owner_tid = th_gettid() };
    sp.s = open_scope(NULL);
    spawn_ok(sp.s, spawn_during_join, &sp, NULL, NULL);
    atomic_store(&sp.owner_joining, true);
    tether_result r = join_and_free(sp.s);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(sp.spawn_rc[i], 0);
    ck_assert_int_eq(atomic_load(&sp.ran), 3);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_uint_eq(r.spawned, 4);
    ck_assert_uint_eq(r.succeeded, 4);
    th_baseline_check(base);
}
END_TEST

/* The other order: the scope is canceled before its children block. */
typedef struct late_blocker {
    enum block_kind kind;
    sem_t *gate;
    int err;
    int64_t blocked_for;
} late_blocker;

static int late_blocker_main(void *arg)
{
    late_blocker *l = arg;
    int fds[2];
    if (pipe(fds) != 0)
        return errno;
    sem_wait_ok(l->gate);
    tether_time_t t0 = tether_now();
    char c;
    if (l->kind == BLOCK_READ)
        l->err = tether_read(fds[0], &c, 1) < 0 ? errno : NOT_CANCELED;
    else
        l->err = tether_sleep_for(DAY) < 0 ? errno : NOT_CANCELED;
    l->blocked_for = tether_now() - t0;
    close(fds[0]);
    close(fds[1]);
    return l->err;
}

START_TEST(test_children_block_after_scope_canceled)
{
    th_baseline base = th_baseline_take();
    sem_t gate;
    sem_init(&gate, 0, 0);
    late_blocker l[2] = { { .kind = BLOCK_SLEEP, .gate = &gate },
                          { .kind = BLOCK_READ, .gate = &gate } };
    tether_scope *s = open_scope(NULL);
    spawn_ok(s, late_blocker_main, &l[0], NULL, NULL);
    spawn_ok(s, late_blocker_main, &l[1], NULL, NULL);
    ck_assert_int_eq(tether_scope_cancel(s), 0);
    sem_post(&gate);
    sem_post(&gate);
    tether_result r = join_and_free(s);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(l[i].err, ECANCELED);
        ck_assert_int_le(l[i].blocked_for, th_bound_ns(500)); /* failed without blocking */
    }
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_CANCELED);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_EXPLICIT);
    ck_assert_uint_eq(r.canceled, 2);
    sem_destroy(&gate);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("scope_races");
    TCase *tc;

    tc = tcase_create("races");
    tcase_set_timeout(tc, th_timeout_s(30) * stress(1)); /* iteration counts scale too */
    tcase_add_test(tc, test_cancel_races_child_completion);
    tcase_add_test(tc, test_child_spawns_siblings_during_join);
    tcase_add_test(tc, test_children_block_after_scope_canceled);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
