/*
 * Real fd exhaustion (RLIMIT_NOFILE, enforced for root): the calls that need
 * an eventfd fail with the documented error and leave nothing behind.
 */
#define _GNU_SOURCE
#include "fault_fixtures.h"

/* ====================================================================== */
/* Real fd exhaustion: RLIMIT_NOFILE is enforced for root                  */
/* ====================================================================== */

enum { FD_LIMIT = 128 };

static struct {
    struct rlimit old;
    int fds[FD_LIMIT];
    int n;
} F;

/* Lower the soft limit and fill the table up to it, leaving `spare` free. */
static void fill_fds(int spare)
{
    ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &F.old), 0);
    ck_assert_int_lt(th_fd_count() + 16, FD_LIMIT);
    struct rlimit lim = F.old;
    lim.rlim_cur = FD_LIMIT;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &lim), 0);
    int base = open("/dev/null", O_RDONLY | O_CLOEXEC);
    ck_assert_int_ge(base, 0);
    F.n = 0;
    F.fds[F.n++] = base;
    for (;;) {
        int fd = fcntl(base, F_DUPFD_CLOEXEC, 0);
        if (fd < 0) {
            ck_assert_int_eq(errno, EMFILE);
            break;
        }
        ck_assert_int_lt(F.n, FD_LIMIT);
        F.fds[F.n++] = fd;
    }
    while (spare-- > 0)
        close(F.fds[--F.n]);
}

static void unfill_fds(void)
{
    while (F.n > 0)
        close(F.fds[--F.n]);
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &F.old), 0);
}

static int exhausted_reader(void *arg)
{
    char c;
    ssize_t n = tether_read(*(int *)arg, &c, 1);
    return n < 0 ? errno : 0;
}

START_TEST(rlimit_nofile_eventfd)
{
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    fill_fds(0);

    /* A cancellation point that needs the token's eventfd: EMFILE at once. */
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    char c;
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], &c, 1), -1);
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(tether_token_leave(t), 0);

    /* A relay needs one too. */
    tether_sigcancel *sc = NULL;
    ck_assert_int_eq(tether_sigcancel_new(&sc, t, 0), EMFILE);
    ck_assert_ptr_null(sc);

    /* Children that read: each fails with EMFILE; no hang. */
    tether_scope *s;
    tether_scope_opts so = { .policy = TETHER_POLICY_SUPERVISOR };
    ck_assert_int_eq(tether_scope_open(&s, &so), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(tether_spawn(s, exhausted_reader, &p[0], NULL, NULL), 0);
    tether_result r;
    ck_assert_int_eq(tether_scope_join(s, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_FAILED);
    ck_assert_int_eq(r.error, EMFILE);
    ck_assert_uint_eq(r.failed, 4);
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(tether_token_free(t), 0);

    unfill_fds();
    close_pipe(p);
    th_baseline_check(b);
}
END_TEST

/* A reader whose syscall file is opened before the fd table is filled (no
 * fd to spare for /proc afterwards); it starts reading once released. */
struct fd_reader {
    tether_token *t;
    int fd, sysfd;
    sem_t tid_known, go;
    atomic_int tid, done;
    ssize_t n;
    int err;
};

static void *fd_reader_main(void *arg)
{
    struct fd_reader *r = arg;
    atomic_store(&r->tid, th_gettid());
    sem_post(&r->tid_known);
    while (sem_wait(&r->go) != 0)
        ;
    tether_token_enter(r->t);
    char c;
    r->n = tether_read(r->fd, &c, 1);
    r->err = errno;
    tether_token_leave(r->t);
    atomic_store(&r->done, 1);
    return NULL;
}

static bool fd_reader_blocked(void *arg)
{
    struct fd_reader *r = arg;
    return atomic_load(&r->done) || fd_in_syscall(r->sysfd, SYS_ppoll);
}

START_TEST(rlimit_nofile_last_slots)
{
    enum { K = 2 };
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    struct fd_reader rd[K];
    pthread_t th[K];
    for (int i = 0; i < K; i++) {
        rd[i] = (struct fd_reader){ .fd = p[0] };
        sem_init(&rd[i].tid_known, 0, 0);
        sem_init(&rd[i].go, 0, 0);
        ck_assert_int_eq(tether_token_new(&rd[i].t, NULL, TETHER_NEVER), 0);
        ck_assert_int_eq(pthread_create(&th[i], NULL, fd_reader_main, &rd[i]), 0);
        while (sem_wait(&rd[i].tid_known) != 0)
            ;
        rd[i].sysfd = open_syscall_file(atomic_load(&rd[i].tid));
        ck_assert_int_ge(rd[i].sysfd, 0);
    }
    fill_fds(K);

    /* K tokens get the K free slots, the next one EMFILE... */
    for (int i = 0; i < K; i++) {
        sem_post(&rd[i].go);
        ck_assert(wait_until(fd_reader_blocked, &rd[i]));
        ck_assert_int_eq(atomic_load(&rd[i].done), 0);
    }
    tether_token *extra;
    ck_assert_int_eq(tether_token_new(&extra, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(extra), 0);
    char c;
    errno = 0;
    ck_assert_int_eq(tether_read(p[0], &c, 1), -1);
    ck_assert_int_eq(errno, EMFILE);
    ck_assert_int_eq(tether_token_leave(extra), 0);

    /* ... and the blocked ones still wake on cancel. */
    for (int i = 0; i < K; i++) {
        ck_assert_int_eq(tether_token_cancel(rd[i].t, 0), 0);
        ck_assert_int_eq(pthread_join(th[i], NULL), 0);
        ck_assert_int_eq(rd[i].n, -1);
        ck_assert_int_eq(rd[i].err, ECANCELED);
        ck_assert_int_eq(tether_token_free(rd[i].t), 0); /* closes its eventfd */
    }
    unfill_fds();
    for (int i = 0; i < K; i++) {
        close(rd[i].sysfd);
        sem_destroy(&rd[i].tid_known);
        sem_destroy(&rd[i].go);
    }

    /* The freed slots are usable again: a relay can be made now. */
    tether_sigcancel *sc;
    ck_assert_int_eq(tether_sigcancel_new(&sc, extra, 0), 0);
    tether_sigcancel_fire(sc);
    ck_assert(wait_until(cause_set, extra));
    ck_assert_int_eq(tether_sigcancel_free(sc), 0);
    ck_assert_int_eq(tether_token_free(extra), 0);
    close_pipe(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(rlimit_nofile_process)
{
    th_baseline b = th_baseline_take();
    fill_fds(0);
    char *argv[] = { "true", NULL };
    tether_proc *p = NULL;
    int rc = tether_proc_spawn(&p, "/bin/true", argv, NULL);
    ck_assert_msg(rc == EMFILE, "tether_proc_spawn: %s", strerror(rc));
    ck_assert_ptr_null(p);
    unfill_fds();
    ck_assert(no_zombies());
    th_baseline_check(b);
}
END_TEST

/* tether_poll needs the token's eventfd like tether_read: with none to be
 * had, its errno must be one its header entry lists. */
START_TEST(rlimit_nofile_poll_error_documented)
{
    th_baseline b = th_baseline_take();
    int p[2];
    make_pipe(p);
    fill_fds(0);
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    struct pollfd pf = { .fd = p[0], .events = POLLIN };
    errno = 0;
    int n = tether_poll(&pf, 1, 1000);
    int e = errno;
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    unfill_fds();
    close_pipe(p);
    ck_assert_int_eq(n, -1);
    /* poll(2)'s errors, ECANCELED, ETIMEDOUT, EINTR, ENOMEM, EMFILE/ENFILE. */
    ck_assert_msg(ONE_OF(e, EFAULT, EINTR, EINVAL, ENOMEM, ECANCELED, ETIMEDOUT, EMFILE, ENFILE),
                  "tether_poll failed with %s, which include/tether.h does not list for it",
                  strerror(e));
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("fault_rlimit");
    TCase *tc;

    tc = tcase_create("rlimit");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, rlimit_nofile_eventfd);
    tcase_add_test(tc, rlimit_nofile_last_slots);
    tcase_add_test(tc, rlimit_nofile_process);
    tcase_add_test(tc, rlimit_nofile_poll_error_documented);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
