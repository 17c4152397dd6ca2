/*
 * Contract matrix: metrics (tether/metrics.h) and event hooks
 * (tether/events.h). One Check test per function family, one row per
 * documented error and per edge of the contract. Rows are listed in
 * docs/contract-matrix.md.
 */
#define _GNU_SOURCE
#include "contract.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>

START_TEST(contract_tether_metrics_switch)
{
    ct_rows r = { .test = __func__ };
    ct_row(&r, tether_metrics_enabled(), "tether_metrics_enabled/at start: expected true");
    ct_row(&r, tether_metrics_set_enabled(false),
           "tether_metrics_set_enabled/off while on: expected true (was on)");
    ct_row(&r, !tether_metrics_enabled(), "tether_metrics_enabled/after off: expected false");
    ct_row(&r, !tether_metrics_set_enabled(false),
           "tether_metrics_set_enabled/off while off: expected false (was off)");
    ct_row(&r, !tether_metrics_set_enabled(true),
           "tether_metrics_set_enabled/on while off: expected false (was off)");
    ct_row(&r, tether_metrics_enabled(), "tether_metrics_enabled/after on: expected true");
    ct_done(&r);
}
END_TEST

START_TEST(contract_tether_metrics_snapshot)
{
    ct_rows r = { .test = __func__ };
    CT_RC(&r, "tether_metrics_snapshot_take/snap NULL", tether_metrics_snapshot_take(NULL), EINVAL);
    tether_metrics_snapshot snap;
    CT_RC(&r, "tether_metrics_snapshot_take/nothing counted yet",
          tether_metrics_snapshot_take(&snap), 0);
    ct_row(&r, snap.count == 0 && snap.series == NULL && snap.process.scopes_opened == 0,
           "tether_metrics_snapshot_take/nothing counted yet: expected no series, got %zu",
           snap.count);
    tether_metrics_snapshot_release(&snap);
    tether_scope_opts o = { .name = "contract" };
    tether_scope *s;
    ck_assert_int_eq(tether_scope_open(&s, &o), 0);
    ck_assert_int_eq(tether_scope_join(s, NULL), 0);
    ck_assert_int_eq(tether_scope_free(s), 0);
    CT_RC(&r, "tether_metrics_snapshot_take/one scope", tether_metrics_snapshot_take(&snap), 0);
    ct_row(&r,
           snap.count == 1 && strcmp(snap.series[0].scope, "contract") == 0 &&
               snap.series[0].outcomes[TETHER_OUTCOME_OK] == 1,
           "tether_metrics_snapshot_take/one scope: expected its series with one ok");
    tether_metrics_snapshot_release(&snap);
    ct_row(&r, snap.count == 0 && snap.series == NULL,
           "tether_metrics_snapshot_release/a snapshot: expected emptied");
    tether_metrics_snapshot_release(&snap);
    ct_row(&r, snap.count == 0, "tether_metrics_snapshot_release/twice: expected harmless");
    tether_metrics_snapshot_release(NULL);
    ct_row(&r, 1, "tether_metrics_snapshot_release/NULL: expected ignored");
    ct_done(&r);
}
END_TEST

START_TEST(contract_tether_metrics_format)
{
    ct_rows r = { .test = __func__ };
    tether_metrics_snapshot snap;
    ck_assert_int_eq(tether_metrics_snapshot_take(&snap), 0);
    char small[8];
    size_t len = 0;
    CT_RC(&r, "tether_metrics_format/snap NULL", tether_metrics_format(NULL, small, 8, &len),
          EINVAL);
    CT_RC(&r, "tether_metrics_format/buf NULL, size 8", tether_metrics_format(&snap, NULL, 8, &len),
          EINVAL);
    CT_RC(&r, "tether_metrics_format/buf NULL, size 0", tether_metrics_format(&snap, NULL, 0, &len),
          ERANGE);
    ct_row(&r, len > 0, "tether_metrics_format/size 0: expected the length needed, got %zu", len);
    size_t need = len;
    char *buf = malloc(need + 1);
    ck_assert_ptr_nonnull(buf);
    CT_RC(&r, "tether_metrics_format/size == length", tether_metrics_format(&snap, buf, need, &len),
          ERANGE);
    ct_row(&r, len == need && buf[need - 1] == '\0' && strlen(buf) == need - 1,
           "tether_metrics_format/size == length, truncated: expected the first size - 1 bytes "
           "and a NUL");
    CT_RC(&r, "tether_metrics_format/size == length + 1",
          tether_metrics_format(&snap, buf, need + 1, &len), 0);
    ct_row(&r, len == need && strlen(buf) == need,
           "tether_metrics_format/size == length + 1: expected the text NUL-ended");
    CT_RC(&r, "tether_metrics_format/length NULL",
          tether_metrics_format(&snap, buf, need + 1, NULL), 0);
    free(buf);
    tether_metrics_snapshot_release(&snap);
    ct_done(&r);
}
END_TEST

START_TEST(contract_tether_metrics_write_prometheus)
{
    th_baseline base = th_baseline_take();
    ct_rows r = { .test = __func__ };
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    CT_RC(&r, "tether_metrics_write_prometheus/fd -1", tether_metrics_write_prometheus(-1), EBADF);
    int closed = dup(p[1]);
    close(closed);
    CT_RC(&r, "tether_metrics_write_prometheus/closed fd", tether_metrics_write_prometheus(closed),
          EBADF);
    CT_RC(&r, "tether_metrics_write_prometheus/read-only fd", tether_metrics_write_prometheus(p[0]),
          EBADF);
    errno = 1234;
    CT_RC(&r, "tether_metrics_write_prometheus/pipe", tether_metrics_write_prometheus(p[1]), 0);
    ct_row(&r, errno == 1234, "tether_metrics_write_prometheus/errno: expected untouched");
    char text[1 << 15];
    ssize_t n = read(p[0], text, sizeof text - 1);
    ct_row(&r, n > 0 && strncmp(text, "# HELP tether_", 14) == 0,
           "tether_metrics_write_prometheus/pipe: expected the text in the pipe");
    /* A cancellation point: the current token's state decides first. */
    static const ct_state dead[] = { CT_CANCELED, CT_EXPIRED };
    for (size_t i = 0; i < 2; i++) {
        tether_token *t = ct_enter(dead[i], 0);
        char name[96];
        snprintf(name, sizeof name, "tether_metrics_write_prometheus/%s current token",
                 ct_state_name(dead[i]));
        CT_RC(&r, name, tether_metrics_write_prometheus(p[1]), ct_expected(dead[i]));
        ct_leave(t);
    }
    ct_row(&r, read(p[0], text, sizeof text) < 0 && errno == EAGAIN,
           "tether_metrics_write_prometheus/dead current token: expected nothing written");
    char fill[4096] = { 0 };
    while (write(p[1], fill, sizeof fill) > 0) {
    }
    CT_RC(&r, "tether_metrics_write_prometheus/full non-blocking pipe",
          tether_metrics_write_prometheus(p[1]), EAGAIN);
    close(p[0]);
    struct sigaction ign = { .sa_handler = SIG_IGN }, old_pipe;
    ck_assert_int_eq(sigaction(SIGPIPE, &ign, &old_pipe), 0);
    CT_RC(&r, "tether_metrics_write_prometheus/pipe without reader",
          tether_metrics_write_prometheus(p[1]), EPIPE);
    ck_assert_int_eq(sigaction(SIGPIPE, &old_pipe, NULL), 0);
    close(p[1]);
    ct_done(&r);
    th_baseline_check(base);
}
END_TEST

static _Atomic int from_hook_set = -1, from_hook_free = -1;

static void set_from_hook(void *arg, tether_token *t, tether_cause cause, int error)
{
    (void)arg, (void)cause, (void)error;
    atomic_store(&from_hook_set, tether_events_set(NULL));
    atomic_store(&from_hook_free, tether_token_free(t));
}

START_TEST(contract_tether_events_set)
{
    ct_rows r = { .test = __func__ };
    CT_RC(&r, "tether_events_set/NULL with none set", tether_events_set(NULL), 0);
    tether_events none = { 0 };
    CT_RC(&r, "tether_events_set/no hook set", tether_events_set(&none), 0);
    tether_events ev = { .token_canceled = set_from_hook };
    CT_RC(&r, "tether_events_set/hooks", tether_events_set(&ev), 0);
    tether_token *t;
    ck_assert_int_eq(tether_token_new(&t, NULL, TETHER_NEVER), 0);
    ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ct_row(&r, atomic_load(&from_hook_set) == EDEADLK,
           "tether_events_set/from inside a hook: expected EDEADLK got %d",
           atomic_load(&from_hook_set));
    ct_row(&r, atomic_load(&from_hook_free) == EBUSY,
           "tether_token_free/from the token_canceled hook reporting it: expected EBUSY got %d",
           atomic_load(&from_hook_free));
    CT_RC(&r, "tether_token_free/after its token_canceled hook", tether_token_free(t), 0);
    CT_RC(&r, "tether_events_set/NULL clears", tether_events_set(NULL), 0);
    ct_done(&r);
}
END_TEST

static Suite *contract_observe_suite(void)
{
    Suite *s = suite_create("contract_observe");
    TCase *tc = tcase_create("contract_observe");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, contract_tether_metrics_switch);
    tcase_add_test(tc, contract_tether_metrics_snapshot);
    tcase_add_test(tc, contract_tether_metrics_format);
    tcase_add_test(tc, contract_tether_metrics_write_prometheus);
    tcase_add_test(tc, contract_tether_events_set);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(contract_observe_suite());
}
