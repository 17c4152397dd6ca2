/*
 * The cancellable primitives under cancellation: canceled before the call
 * (fails at once, moves nothing, even when ready), canceled while blocked (by
 * the token or an ancestor), siblings untouched, EINTR from signal handlers,
 * and bytes already moved returned before the cancel is reported.
 */
#define _GNU_SOURCE
#include "io_fixtures.h"

/* The success result of a ready op (as the raw call would give it). */
static void op_check_ready_success(struct op *o, ssize_t r, int err)
{
    switch (o->kind) {
    case OP_SLEEP_FOR:
    case OP_SLEEP_UNTIL:
        ck_assert_msg(r == 0, "%s: %zd errno %s", op_name[o->kind], r, strerror(err));
        break;
    case OP_READ:
        ck_assert_int_eq(r, sizeof ready_data);
        ck_assert_mem_eq(o->buf, ready_data, sizeof ready_data);
        ck_assert_int_eq(pending(o->p[0]), 0);
        break;
    case OP_WRITE:
        ck_assert_int_eq(r, 1);
        ck_assert_int_eq(pending(o->p[0]), 1);
        break;
    case OP_POLL:
        ck_assert_int_eq(r, 1);
        ck_assert_int_eq(o->revents, POLLIN);
        break;
    case OP_COUNT: break;
    }
}

/* ======================================================================
 * Each primitive under a token: ready, canceled, blocked, deadlines
 * ====================================================================== */

START_TEST(test_live_token_ready)
{
    /* With a live token a ready call succeeds as the raw one. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    enter(t);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(t);
    op_check_ready_success(&o, r, err);
    ck_assert_int_eq(tether_token_check(t), 0);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_canceled_before_call)
{
    /* Already canceled: -1/ECANCELED at once, even though the call could
     * complete, and nothing moves. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    enter(t);
    int err;
    tether_time_t t0 = tether_now();
    ssize_t r = op_call(&o, &err);
    tether_time_t el = tether_now() - t0;
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    /* Sticky: again, and a blocking variant too. */
    o.ready = false;
    if (o.kind == OP_WRITE)
        o.in_pipe += fill(o.p[1]);
    r = op_call(&o, &err);
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    ck_assert_int_le(tether_now() - t0, th_bound_ns(500));
    ck_assert_int_le(el, th_bound_ns(500));
    op_check_untouched(&o);
    leave(t);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_canceled_by_parent_before_call)
{
    /* A token born under a canceled grandparent is canceled too. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, true);
    tether_token *g = new_token(NULL, TETHER_NEVER), *p = new_token(g, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(g, 0), 0);
    tether_token *c = new_token(p, TETHER_NEVER);
    enter(c);
    int err;
    ssize_t r = op_call(&o, &err);
    leave(c);
    ck_assert_msg(r == -1 && err == ECANCELED, "%s: %zd errno %s", op_name[_i], r, strerror(err));
    op_check_untouched(&o);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_canceled_while_blocked)
{
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(t), TETHER_CAUSE_EXPLICIT);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_parent_canceled_while_blocked)
{
    /* The blocked thread's token is a grandchild of the one canceled. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *g = new_token(NULL, TETHER_NEVER), *p = new_token(g, TETHER_NEVER),
                 *c = new_token(p, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, c);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(g, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    ck_assert_int_eq(tether_token_cause(c), TETHER_CAUSE_PARENT);
    ck_assert_int_eq(tether_token_root_cause(c), TETHER_CAUSE_EXPLICIT);
    token_free(c);
    token_free(p);
    token_free(g);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_sibling_cancel_leaves_waiter)
{
    /* Canceling a sibling or a child of the waiter's token does not wake it;
     * canceling its own token then does. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, _i, false);
    tether_token *p = new_token(NULL, TETHER_NEVER), *mine = new_token(p, TETHER_NEVER),
                 *sib = new_token(p, TETHER_NEVER), *kid = new_token(mine, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, mine);
    runner_wait_blocked(&r);
    ck_assert_int_eq(tether_token_cancel(sib, 0), 0);
    ck_assert_int_eq(tether_token_cancel(kid, 0), 0);
    ck_assert_msg(!sem_wait_bounded(&r.done, tether_ms(50)), "%s: woken by a sibling's cancel",
                  op_name[_i]);
    ck_assert_int_eq(th_wait_blocked(r.tid), 0);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(mine, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    token_free(kid);
    token_free(sib);
    token_free(mine);
    token_free(p);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

static atomic_int signals_seen;

static void on_signal(int sig)
{
    (void)sig;
    atomic_fetch_add(&signals_seen, 1);
}

/* A handler for SIGUSR1 installed without SA_RESTART. */
static void install_handler(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
}

START_TEST(test_signal_eintr)
{
    /* A handler (no SA_RESTART) interrupting a blocked call: -1/EINTR, with
     * or without a token (_i / OP_COUNT), and the token is not canceled. */
    th_baseline b = th_baseline_take();
    install_handler();
    int kind = _i % OP_COUNT;
    bool with_token = _i >= OP_COUNT;
    struct op o;
    op_setup(&o, kind, false);
    tether_token *t = with_token ? new_token(NULL, TETHER_NEVER) : NULL;
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(pthread_kill(r.thread, SIGUSR1), 0);
    runner_expect_fail(&r, EINTR, at);
    ck_assert_int_eq(atomic_load(&signals_seen), 1);
    op_check_untouched(&o);
    if (t) {
        ck_assert_int_eq(tether_token_check(t), 0);
        token_free(t);
    }
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_uses_innermost_token)
{
    /* The current token is the innermost entered one. */
    th_baseline b = th_baseline_take();
    tether_token *dead = new_token(NULL, TETHER_NEVER), *live = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(dead, 0), 0);
    int p[2];
    xpipe(p);
    char buf[8];
    ck_assert_int_eq(write(p[1], "abcd", 4), 4);

    enter(dead);
    enter(live);
    ck_assert_ptr_eq(tether_current(), live);
    ck_assert_int_eq(tether_read(p[0], buf, 2), 2);
    leave(live);
    ASSERT_FAILS(tether_read(p[0], buf, 2), ECANCELED);
    ASSERT_FAILS(tether_sleep_for(tether_ms(1)), ECANCELED);
    leave(dead);
    ck_assert_ptr_null(tether_current());
    ck_assert_int_eq(tether_read(p[0], buf, 2), 2);
    ck_assert_mem_eq(buf, "cd", 2);

    close_pair(p);
    token_free(live);
    token_free(dead);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_user_error_still_ecanceled)
{
    /* The error given to tether_token_cancel is the token's, not errno: the
     * primitives report ECANCELED. */
    th_baseline b = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, ENOENT), 0);
    enter(t);
    ASSERT_FAILS(tether_read(-1, NULL, 0), ECANCELED);
    ASSERT_FAILS(tether_sleep_for(1), ECANCELED);
    leave(t);
    ck_assert_int_eq(tether_token_error(t), ENOENT);
    token_free(t);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_read_keeps_bytes_on_cancel)
{
    /* A canceled read takes nothing: the bytes stay in the pipe. */
    th_baseline b = th_baseline_take();
    int p[2];
    xpipe(p);
    unsigned char *src = pattern(100);
    char buf[200];

    /* Data first, then the cancel, then the call. */
    ck_assert_int_eq(write(p[1], src, 100), 100);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    enter(t);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    leave(t);
    ck_assert_int_eq(pending(p[0]), 100);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 100);
    ck_assert_mem_eq(buf, src, 100);
    token_free(t);

    /* Blocked, canceled, then data arrives: the read failed, the data waits. */
    struct op o;
    memset(&o, 0, sizeof o);
    o.kind = OP_READ;
    o.p[0] = p[0];
    o.p[1] = p[1];
    t = new_token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    ck_assert_int_eq(write(p[1], src, 100), 100);
    enter(t);
    ASSERT_FAILS(tether_read(p[0], buf, sizeof buf), ECANCELED);
    leave(t);
    ck_assert_int_eq(read(p[0], buf, sizeof buf), 100);
    ck_assert_mem_eq(buf, src, 100);
    token_free(t);

    free(src);
    close_pair(p);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_write_partial_on_cancel)
{
    /* A write of 4x the pipe's capacity with a slow reader, canceled midway:
     * it returns exactly the bytes that went in (> 0), the reader gets those
     * bytes in order, and the next call reports the cancellation. */
    th_baseline b = th_baseline_take();
    struct op o;
    op_setup(&o, OP_WRITE, true);
    size_t cap = (size_t)fcntl(o.p[1], F_GETPIPE_SZ);
    size_t len = 4 * cap;
    unsigned char *src = pattern(len);
    o.wsrc = src;
    o.wlen = len;
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);

    /* The slow reader: a few pages, letting the writer block again. */
    unsigned char buf[5000];
    size_t got = 0;
    for (int k = 0; k < 3; k++) {
        read_exact(o.p[0], buf, sizeof buf);
        ck_assert(pattern_ok(buf, got, sizeof buf));
        got += sizeof buf;
        ck_assert_int_eq(th_wait_blocked(r.tid), 0);
    }
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_int_le(r.returned_at - at, th_bound_ns(1000));
    ck_assert_msg(r.ret >= (ssize_t)cap && r.ret < (ssize_t)len,
                  "returned %zd (errno %s); expected a partial count in [%zu, %zu)", r.ret,
                  strerror(r.err), cap, len);
    got += drain(o.p[0], got, true);
    ck_assert_int_eq(got, r.ret);

    enter(t);
    ASSERT_FAILS(tether_write(o.p[1], src, 1), ECANCELED);
    leave(t);
    ck_assert_int_eq(pending(o.p[0]), 0);

    free(src);
    token_free(t);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_write_interrupted_returns_partial)
{
    /* A signal after some bytes went in: the count, not -1/EINTR, with or
     * without a token (as write(2)). */
    th_baseline b = th_baseline_take();
    install_handler();
    struct op o;
    op_setup(&o, OP_WRITE, true);
    size_t cap = (size_t)fcntl(o.p[1], F_GETPIPE_SZ);
    unsigned char *src = pattern(2 * cap);
    o.wsrc = src;
    o.wlen = 2 * cap;
    tether_token *t = _i == MODE_NONE ? NULL : new_token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    ck_assert_int_eq(pthread_kill(r.thread, SIGUSR1), 0);
    ck_assert(sem_wait_bounded(&r.done, th_bound_ns(5000)));
    runner_join(&r);
    ck_assert_int_eq(atomic_load(&signals_seen), 1);
    ck_assert_msg(r.ret > 0 && r.ret < (ssize_t)(2 * cap), "returned %zd errno %s", r.ret,
                  strerror(r.err));
    ck_assert_int_eq(drain(o.p[0], 0, true), r.ret);
    if (t) {
        ck_assert_int_eq(tether_token_check(t), 0);
        token_free(t);
    }
    free(src);
    op_teardown(&o);
    th_baseline_check(b);
}
END_TEST

START_TEST(test_socket_cancel_while_blocked)
{
    th_baseline b = th_baseline_take();
    int s[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s), 0);
    struct op o;
    memset(&o, 0, sizeof o);
    o.p[0] = s[1];
    o.p[1] = s[0];
    o.wsrc = "w";
    o.wlen = 1;
    /* _i 0: read on an empty socket; 1: write to a full one. */
    o.kind = _i == 0 ? OP_READ : OP_WRITE;
    if (o.kind == OP_WRITE)
        o.in_pipe = fill(s[0]);
    tether_token *t = new_token(NULL, TETHER_NEVER);
    struct runner r;
    runner_start(&r, &o, t);
    runner_wait_blocked(&r);
    tether_time_t at = tether_now();
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    runner_expect_fail(&r, ECANCELED, at);
    op_check_untouched(&o);
    token_free(t);
    close_pair(s);
    th_baseline_check(b);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("io_cancel");
    TCase *tc;

    tc = tcase_create("cancellation");
    tcase_set_timeout(tc, th_timeout_s(10));
    tcase_add_loop_test(tc, test_live_token_ready, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_canceled_before_call, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_canceled_by_parent_before_call, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_canceled_while_blocked, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_parent_canceled_while_blocked, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_sibling_cancel_leaves_waiter, 0, OP_COUNT);
    tcase_add_loop_test(tc, test_signal_eintr, 0, 2 * OP_COUNT);
    tcase_add_test(tc, test_uses_innermost_token);
    tcase_add_test(tc, test_user_error_still_ecanceled);
    tcase_add_test(tc, test_read_keeps_bytes_on_cancel);
    tcase_add_test(tc, test_write_partial_on_cancel);
    tcase_add_loop_test(tc, test_write_interrupted_returns_partial, 0, 2);
    tcase_add_loop_test(tc, test_socket_cancel_while_blocked, 0, 2);
    suite_add_tcase(s, tc);

    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
