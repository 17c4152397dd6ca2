/*
 * SIGINT/SIGTERM to a graceful cancellation (tether_signals_install):
 * the first signal cancels the token (cause TETHER_CAUSE_SIGNAL), later
 * ones are ignored or, with escalation, kill the process as the default
 * disposition would; restoring puts the previous dispositions back.
 */
#define _GNU_SOURCE
#include "legacy.h"

#include <sys/wait.h>

static void prior_handler(int sig)
{
    (void)sig;
}

/* Waits under tok until it is canceled (the relay does it a moment after
 * the signal): the handshake, no sleep. */
static void wait_canceled(tether_token *tok)
{
    ck_assert_int_eq(tether_token_enter(tok), 0);
    errno = 0;
    ck_assert_int_eq(tether_sleep_for(tether_sec(30)), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(tether_token_leave(tok), 0);
}

START_TEST(signals_graceful_cancel_and_restore)
{
    th_baseline base = th_baseline_take();
    struct sigaction prior;
    memset(&prior, 0, sizeof prior);
    prior.sa_handler = prior_handler;
    sigemptyset(&prior.sa_mask);
    ck_assert_int_eq(sigaction(SIGINT, &prior, NULL), 0);
    struct sigaction term_before;
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &term_before), 0);

    tether_token *tok = lu_token(TETHER_NEVER);
    tether_signals *h;
    ck_assert_int_eq(tether_signals_install(&h, tok, NULL), 0);
    tether_signals *h2;
    ck_assert_int_eq(tether_signals_install(&h2, tok, NULL), EBUSY);
    ck_assert_int_eq(raise(SIGTERM), 0);
    wait_canceled(tok);
    ck_assert_int_eq(tether_token_cause(tok), TETHER_CAUSE_SIGNAL);
    ck_assert_int_eq(tether_token_error(tok), ECANCELED);
    ck_assert_int_eq(raise(SIGINT), 0); /* a second one: ignored, we live */
    ck_assert_uint_eq(tether_signals_fired(h), 2);
    ck_assert_int_eq(tether_signals_restore(h), 0);

    struct sigaction now;
    ck_assert_int_eq(sigaction(SIGINT, NULL, &now), 0);
    ck_assert_ptr_eq(now.sa_handler, prior_handler);
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &now), 0);
    ck_assert_ptr_eq(now.sa_handler, term_before.sa_handler);
    lu_free(tok);
    ck_assert_uint_eq(tether_signals_fired(NULL), 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(signals_custom_list_and_error)
{
    th_baseline base = th_baseline_take();
    tether_token *tok = lu_token(TETHER_NEVER);
    tether_signals *h;
    int sigs[] = { SIGUSR2 };
    tether_signals_opts o = { .signals = sigs, .nsignals = 1, .error = ESHUTDOWN };
    ck_assert_int_eq(tether_signals_install(&h, tok, &o), 0);
    ck_assert_int_eq(raise(SIGUSR2), 0);
    wait_canceled(tok);
    ck_assert_int_eq(tether_token_error(tok), ESHUTDOWN);
    ck_assert_int_eq(tether_signals_restore(h), 0);
    lu_free(tok);

    tok = lu_token(TETHER_NEVER);
    struct sigaction term_before;
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &term_before), 0);
    int bad[] = { SIGTERM, SIGKILL };
    o = (tether_signals_opts){ .signals = bad, .nsignals = 2 };
    ck_assert_int_eq(tether_signals_install(&h, tok, &o), EINVAL);
    o = (tether_signals_opts){ .signals = bad, .nsignals = 0 };
    ck_assert_int_eq(tether_signals_install(&h, tok, &o), EINVAL);
    ck_assert_int_eq(tether_signals_install(NULL, tok, NULL), EINVAL);
    ck_assert_int_eq(tether_signals_install(&h, NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_signals_restore(NULL), EINVAL);
    struct sigaction now;
    ck_assert_int_eq(sigaction(SIGTERM, NULL, &now), 0);
    ck_assert_ptr_eq(now.sa_handler, term_before.sa_handler); /* nothing left installed */
    /* The slot is free again. */
    ck_assert_int_eq(tether_signals_install(&h, tok, NULL), 0);
    ck_assert_int_eq(tether_signals_restore(h), 0);
    ck_assert_int_eq(tether_token_check(tok), 0);
    lu_free(tok);
    th_baseline_check(base);
}
END_TEST

/* With escalation, the second signal kills the process as the default
 * disposition would (checked in a child process). */
START_TEST(signals_escalate_second_kills)
{
    th_baseline base = th_baseline_take();
    int ready[2];
    ck_assert_int_eq(pipe(ready), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        tether_token *tok;
        if (tether_token_new(&tok, NULL, TETHER_NEVER))
            _exit(10);
        tether_signals *h;
        tether_signals_opts o = { .escalate = true };
        if (tether_signals_install(&h, tok, &o))
            _exit(11);
        raise(SIGTERM);
        tether_token_enter(tok);
        if (tether_sleep_for(tether_sec(30)) == 0 || errno != ECANCELED)
            _exit(12); /* the first signal must cancel, not kill */
        raise(SIGTERM);
        _exit(13); /* not reached: the second one kills */
    }
    close(ready[0]);
    close(ready[1]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert_msg(WIFSIGNALED(st), "child exited with %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    ck_assert_int_eq(WTERMSIG(st), SIGTERM);
    th_baseline_check(base);
}
END_TEST

static Suite *signals_suite(void)
{
    Suite *s = suite_create("signals");
    TCase *tc = tcase_create("signals");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, signals_graceful_cancel_and_restore);
    tcase_add_test(tc, signals_custom_list_and_error);
    tcase_add_test(tc, signals_escalate_second_kills);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(signals_suite());
}
