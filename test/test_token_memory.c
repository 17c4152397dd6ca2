/*
 * What tokens hold on to: memory after many creates and frees, and the spare
 * eventfds kept from freed tokens.
 */
#define _GNU_SOURCE
#include "token_fixtures.h"

/* ================================================================= memory */

static void churn(tether_token *parent, long n)
{
    struct counter c = { 0 };
    for (long i = 0; i < n; i++) {
        tether_token *k;
        if (tether_token_new(&k, parent, TETHER_NEVER) != 0)
            ck_abort_msg("tether_token_new failed at %ld", i);
        if (i % 8 == 0) {
            /* Some with a grandchild and a callback left registered. */
            tether_token *g;
            tether_callback *cb;
            if (tether_token_new(&g, k, tether_now() + tether_sec(100)) != 0 ||
                tether_token_on_cancel(g, count_cb, &c, &cb) != 0)
                ck_abort_msg("setup failed at %ld", i);
            if (tether_token_free(g) != 0)
                ck_abort_msg("free grandchild failed at %ld", i);
            bool ran = true;
            if (tether_token_off_cancel(cb, &ran) != 0 || ran)
                ck_abort_msg("off_cancel after free at %ld", i);
        }
        if (tether_token_free(k) != 0)
            ck_abort_msg("tether_token_free failed at %ld", i);
    }
    ck_assert_int_eq(atomic_load(&c.runs), 0);
}

START_TEST(million_children_memory_flat)
{
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    churn(parent, 10000); /* warm up the allocator */
#ifdef TS_SANITIZED
    /* RSS is meaningless under ASan's quarantine: count live heap bytes. */
    size_t before = __sanitizer_get_current_allocated_bytes();
    churn(parent, 1000000);
    size_t after = __sanitizer_get_current_allocated_bytes();
    ck_assert_msg(after <= before + 64 * 1024, "live heap grew from %zu to %zu", before, after);
#else
    long before = rss_bytes();
    churn(parent, 1000000);
    long after = rss_bytes();
    /* A leak of even 8 bytes per child would be 8 MB. */
    ck_assert_msg(after - before < 4 * 1024 * 1024, "RSS grew from %ld to %ld", before, after);
#endif
    /* The parent has no children left. */
    free_token(parent);
}
END_TEST

/* ======================================================================
 * Spare eventfds (tether_trim)
 * ====================================================================== */

/* Open fds without tether_trim (th_fd_count trims). */
static int raw_fd_count(void)
{
    int n = 0;
    for (int fd = 0; fd < 4096; fd++)
        if (fcntl(fd, F_GETFD) >= 0)
            n++;
    return n;
}

/* Give the current token an eventfd: a tether_poll that must wait. */
static void wait_once(int fd, int timeout_ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ck_assert_int_eq(tether_poll(&p, 1, timeout_ms), 0);
}

static int64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

START_TEST(spare_eventfds_reused_drained_and_trimmed)
{
    th_baseline b = th_baseline_take();
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    int base = raw_fd_count();

    /* A canceled token's eventfd (its count is non-zero) is kept... */
    tether_token *a;
    ck_assert_int_eq(tether_token_new(&a, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(a), 0);
    wait_once(p[0], 1);
    ck_assert_int_eq(tether_token_leave(a), 0);
    ck_assert_int_eq(tether_token_cancel(a, 0), 0);
    ck_assert_int_eq(tether_token_free(a), 0);
    ck_assert_int_eq(raw_fd_count(), base + 1);

    /* ...and reused, reset, by the next token: a 100 ms wait on it sleeps
     * (a stale count would make it spin) and opens no new fd. */
    tether_token *c;
    ck_assert_int_eq(tether_token_new(&c, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_enter(c), 0);
    int64_t cpu0 = thread_cpu_ns();
    tether_time_t t0 = tether_now();
    wait_once(p[0], 100);
    ck_assert_int_ge(tether_now() - t0, tether_ms(100));
    ck_assert_int_lt(thread_cpu_ns() - cpu0, tether_ms(50));
    ck_assert_int_eq(raw_fd_count(), base + 1);
    ck_assert_int_eq(tether_token_leave(c), 0);
    ck_assert_int_eq(tether_token_free(c), 0);

    /* At most four are kept; trim closes them. */
    enum { N = 6 };
    tether_token *t[N];
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(tether_token_new(&t[i], NULL, TETHER_NEVER), 0);
        ck_assert_int_eq(tether_token_enter(t[i]), 0);
        wait_once(p[0], 1);
    }
    ck_assert_int_eq(raw_fd_count(), base + N);
    for (int i = N - 1; i >= 0; i--) {
        ck_assert_int_eq(tether_token_leave(t[i]), 0);
        ck_assert_int_eq(tether_token_free(t[i]), 0);
    }
    ck_assert_int_eq(raw_fd_count(), base + 4);
    ck_assert_int_eq(tether_trim(), 4);
    ck_assert_int_eq(raw_fd_count(), base);
    ck_assert_int_eq(tether_trim(), 0);
    close(p[0]);
    close(p[1]);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("token_memory");
    TCase *tc;

    tc = tcase_create("memory");
    tcase_set_timeout(tc, th_timeout_s(60));
    tcase_add_test(tc, million_children_memory_flat);
    suite_add_tcase(s, tc);

    tc = tcase_create("spare_eventfds");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_test(tc, spare_eventfds_reused_drained_and_trimmed);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
