/*
 * The dump (tether_dump, tether_dump_on_signal): a three-level tree of
 * scopes and children, with names, thread ids, what the blocked threads are
 * blocked in and the deadlines, as text and as JSON that a strict checker
 * accepts; the dump written by the relay when the signal arrives.
 */
#define _GNU_SOURCE
#include "json_check.h"
#include "support.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { DUMP_MAX = 64 * 1024 };

/* Read what is in fd until `want` appears or a bound passes; NUL-ended. */
static size_t read_until(int fd, char *buf, size_t cap, const char *want)
{
    size_t n = 0;
    buf[0] = '\0';
    tether_time_t end = tether_now() + th_bound_ns(5000);
    while (n < cap - 1 && !strstr(buf, want) && tether_now() < end) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 50) <= 0)
            continue;
        ssize_t got = read(fd, buf + n, cap - 1 - n);
        if (got <= 0)
            break;
        n += (size_t)got;
        buf[n] = '\0';
    }
    return n;
}

/* ---------------------------------------------------------------------- */
/* The tree: top -> mid -> inner -> leaf (plain read of a pipe)           */

typedef struct tree {
    int leaf_pipe[2];
    sem_t leaf_ready, mid_ready;
    atomic_int leaf_tid, mid_tid;
    tether_time_t inner_deadline;
} tree;

static int leaf_main(void *arg)
{
    tree *t = arg;
    atomic_store(&t->leaf_tid, (int)th_gettid());
    sem_post(&t->leaf_ready);
    char c;
    return read(t->leaf_pipe[0], &c, 1) == 1 ? 0 : errno;
}

static int mid_main(void *arg)
{
    tree *t = arg;
    atomic_store(&t->mid_tid, (int)th_gettid());
    tether_scope_opts o = { .name = "inner",
                            .policy = TETHER_POLICY_SUPERVISOR,
                            .timeout_ns = tether_sec(30) };
    tether_scope *s;
    int rc = tether_scope_open(&s, &o);
    if (rc)
        return rc;
    t->inner_deadline = tether_token_deadline(tether_scope_token(s));
    tether_spawn_opts so = { .name = "leaf" };
    rc = tether_spawn(s, leaf_main, t, &so, NULL);
    sem_post(&t->mid_ready);
    tether_scope_join(s, NULL);
    tether_scope_free(s);
    return rc;
}

START_TEST(test_dump_three_level_tree_text_and_json)
{
    th_baseline base = th_baseline_take();
    tree t;
    memset(&t, 0, sizeof t);
    ck_assert_int_eq(pipe(t.leaf_pipe), 0);
    ck_assert_int_eq(sem_init(&t.leaf_ready, 0, 0), 0);
    ck_assert_int_eq(sem_init(&t.mid_ready, 0, 0), 0);
    tether_scope_opts o = { .name = "top", .timeout_ns = tether_sec(60) };
    tether_scope *top = open_scope(&o);
    tether_time_t top_deadline = tether_token_deadline(tether_scope_token(top));
    spawn_ok(top, mid_main, &t, "mid", NULL);
    sem_wait_ok(&t.leaf_ready);
    sem_wait_ok(&t.mid_ready);
    ck_assert_int_eq(th_wait_blocked((pid_t)atomic_load(&t.leaf_tid)), 0);
    ck_assert_int_eq(th_wait_blocked((pid_t)atomic_load(&t.mid_tid)), 0);
    tether_token *user = new_token(NULL, TETHER_NEVER); /* a user's token, canceled */
    ck_assert_int_eq(tether_token_cancel(user, 0), 0);

    /* mid may pass through another sleep on its way into join's wait: dump
     * until it shows it there (a bound), then check everything. */
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    static char text[DUMP_MAX], json[DUMP_MAX];
    char mid_line[128];
    snprintf(mid_line, sizeof mid_line, "child 'mid' #0 tid %d running, blocked in futex,",
             atomic_load(&t.mid_tid));
    tether_time_t give_up = tether_now() + th_bound_ns(2000);
    do {
        ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_TEXT), 0);
        read_until(out[0], text, sizeof text, "child 'leaf'");
    } while (!strstr(text, mid_line) && tether_now() < give_up);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_JSON), 0);
    close(out[1]);
    size_t jn = 0;
    for (ssize_t got; (got = read(out[0], json + jn, sizeof json - 1 - jn)) > 0;)
        jn += (size_t)got;
    json[jn] = '\0';
    close(out[0]);

    /* Release the leaf, end everything. */
    ck_assert_int_eq(write(t.leaf_pipe[1], "x", 1), 1);
    tether_result r = join_and_free(top);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_int_eq(tether_token_free(user), 0);

    /* Text: the nesting, the names, the thread ids, the deadlines. */
    char want[256];
    ck_assert_msg(strncmp(text, "tether dump: pid ", 17) == 0, "dump:\n%s", text);
    ck_assert_msg(strstr(text, "2 scopes, 2 children (2 running), 5 tokens"), "dump:\n%s", text);
    snprintf(want, sizeof want, "\nscope 'top' fail-fast, live, deadline %lld ns (",
             (long long)top_deadline);
    ck_assert_msg(strstr(text, want), "no [%s] in:\n%s", want, text);
    snprintf(want, sizeof want,
             "\n  child 'mid' #0 tid %d running, blocked in futex, live, "
             "deadline %lld ns (",
             atomic_load(&t.mid_tid), (long long)top_deadline);
    ck_assert_msg(strstr(text, want), "no [%s] in:\n%s", want, text);
    snprintf(want, sizeof want, "\n    scope 'inner' supervisor, live, deadline %lld ns (",
             (long long)t.inner_deadline);
    ck_assert_msg(strstr(text, want), "no [%s] in:\n%s", want, text);
    snprintf(want, sizeof want,
             "\n      child 'leaf' #0 tid %d running, blocked in read, live, "
             "deadline %lld ns (",
             atomic_load(&t.leaf_tid), (long long)t.inner_deadline);
    ck_assert_msg(strstr(text, want), "no [%s] in:\n%s", want, text);
    ck_assert_msg(strstr(text, "\ntoken entered 0, canceled (explicit, "), "dump:\n%s", text);
    ck_assert_msg(strstr(text, " ms left)\n"), "dump:\n%s", text);

    /* JSON: strict, nested as the tree (object > tree > top > children >
     * mid > children > inner > children > leaf > children), same facts. */
    size_t at = 0;
    int depth = 0;
    ck_assert_msg(json_check(json, jn, &at, &depth), "invalid JSON at byte %zu:\n%s", at, json);
    ck_assert_int_eq(depth, 10);
    snprintf(want, sizeof want,
             "{\"kind\":\"child\",\"name\":\"leaf\",\"index\":0,\"tid\":%d,"
             "\"inherited\":false,\"running\":true,\"blocked_in\":\"read\"",
             atomic_load(&t.leaf_tid));
    ck_assert_msg(strstr(json, want), "no [%s] in:\n%s", want, json);
    snprintf(want, sizeof want, "\"deadline_ns\":%lld,", (long long)t.inner_deadline);
    ck_assert_msg(strstr(json, want), "no [%s] in:\n%s", want, json);
    snprintf(want, sizeof want, "\"deadline_ns\":%lld,", (long long)top_deadline);
    ck_assert_msg(strstr(json, want), "no [%s] in:\n%s", want, json);
    ck_assert_msg(strstr(json, "\"name\":\"top\",\"policy\":\"fail-fast\""), "%s", json);
    ck_assert_msg(strstr(json, "\"state\":\"canceled\",\"cause\":\"explicit\""), "%s", json);

    close(t.leaf_pipe[0]);
    close(t.leaf_pipe[1]);
    sem_destroy(&t.leaf_ready);
    sem_destroy(&t.mid_ready);
    th_baseline_check(base);
}
END_TEST

/* Names with quotes, backslashes, control and non-ASCII bytes still make
 * valid JSON. */
START_TEST(test_dump_json_escapes_names)
{
    th_baseline base = th_baseline_take();
    tether_scope_opts o = { .name = "q\"b\\s\tn\xc3\xa9" };
    tether_scope *s = open_scope(&o);
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_JSON), 0);
    close(out[1]);
    static char json[DUMP_MAX];
    size_t n = 0;
    for (ssize_t got; (got = read(out[0], json + n, sizeof json - 1 - n)) > 0;)
        n += (size_t)got;
    json[n] = '\0';
    close(out[0]);
    size_t at = 0;
    ck_assert_msg(json_check(json, n, &at, NULL), "invalid JSON at byte %zu:\n%s", at, json);
    ck_assert_msg(strstr(json, "\"name\":\"q\\\"b\\\\s\\u0009n\\u00c3\\u00a9\""), "%s", json);
    join_and_free(s);
    th_baseline_check(base);
}
END_TEST

/* Read everything from fd (its write end closed) into buf; NUL-ended. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t n = 0;
    for (ssize_t got; (got = read(fd, buf + n, cap - 1 - n)) > 0;)
        n += (size_t)got;
    buf[n] = '\0';
    return n;
}

/* Request context: each token's own value, in both forms, escaped so that
 * a value cannot break a text line or the JSON. */
START_TEST(test_dump_shows_context)
{
    th_baseline base = th_baseline_take();
    tether_token *request = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(request, "req \"42\"\n\x01'\\\xc3\xa9"), 0);
    tether_scope_opts o = { .name = "handler", .parent = request };
    tether_scope *s = open_scope(&o);
    ck_assert_int_eq(tether_token_set_context(tether_scope_token(s), "span-7"), 0);
    tether_token *below = new_token(tether_scope_token(s), TETHER_NEVER); /* none of its own */

    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_TEXT), 0);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_JSON), 0);
    close(out[1]);
    static char buf[DUMP_MAX];
    read_all(out[0], buf, sizeof buf);
    close(out[0]);
    ck_assert_int_eq(tether_token_free(below), 0);
    join_and_free(s);
    ck_assert_int_eq(tether_token_free(request), 0);

    /* Text: one line per token (the header, 3 tokens, then the JSON line). */
    char *json = strstr(buf, "\n{\"pid\":");
    ck_assert_msg(json, "%s", buf);
    *json++ = '\0';
    int lines = 0;
    for (const char *c = buf; *c; c++)
        lines += *c == '\n';
    ck_assert_msg(lines == 3, "%d newlines in:\n%s", lines, buf); /* the 4th ended at json */
    ck_assert_msg(strstr(buf, "\ntoken entered 0, live, no deadline, context "
                              "'req \"42\"\\x0a\\x01\\'\\\\\\xc3\\xa9'\n"),
                  "%s", buf);
    ck_assert_msg(strstr(buf, "\n  scope 'handler' fail-fast, live, no deadline, context "
                              "'span-7'\n"),
                  "%s", buf);
    ck_assert_msg(strstr(buf, "\n    token entered 0, live, no deadline"), "%s", buf);
    ck_assert_msg(!strstr(buf, "    token entered 0, live, no deadline, context"),
                  "the token below shows a value of its own:\n%s", buf);

    /* JSON: strict, the values escaped, null where a token has none. */
    size_t at = 0;
    size_t jn = strlen(json);
    ck_assert_msg(json_check(json, jn - 1, &at, NULL), "invalid JSON at byte %zu:\n%s", at, json);
    ck_assert_msg(strstr(json, "\"context\":\"req \\\"42\\\"\\u000a\\u0001'\\\\\\u00c3\\u00a9\""),
                  "%s", json);
    ck_assert_msg(strstr(json, "\"name\":\"handler\""), "%s", json);
    ck_assert_msg(strstr(json, "\"context\":\"span-7\",\"children\":[{\"kind\":\"token\""), "%s",
                  json);
    ck_assert_msg(strstr(json, "\"context\":null,\"children\":[]"), "%s", json);
    th_baseline_check(base);
}
END_TEST

/* An empty process: no tokens, still a valid dump. */
START_TEST(test_dump_nothing_alive)
{
    th_baseline base = th_baseline_take();
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_JSON), 0);
    ck_assert_int_eq(tether_dump(out[1], TETHER_DUMP_TEXT), 0);
    close(out[1]);
    static char buf[DUMP_MAX];
    size_t n = 0;
    for (ssize_t got; (got = read(out[0], buf + n, sizeof buf - 1 - n)) > 0;)
        n += (size_t)got;
    buf[n] = '\0';
    close(out[0]);
    char *nl = strchr(buf, '\n');
    ck_assert_ptr_nonnull(nl);
    ck_assert(json_check(buf, (size_t)(nl - buf), NULL, NULL));
    ck_assert_msg(strstr(buf, "\"tokens\":0,\"tree\":[]}"), "%s", buf);
    ck_assert_msg(strstr(nl + 1, "0 scopes, 0 children (0 running), 0 tokens\n"), "%s", nl + 1);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* On a signal                                                            */

START_TEST(test_dump_on_signal)
{
    th_baseline base = th_baseline_take();
    tether_scope_opts o = { .name = "asked" };
    tether_scope *s = open_scope(&o);
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    tether_dump_signal *h;
    ck_assert_int_eq(tether_dump_on_signal(&h, SIGUSR2, out[1], TETHER_DUMP_TEXT), 0);
    static char buf[DUMP_MAX];
    for (int round = 0; round < 2; round++) { /* each signal gives a dump */
        ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
        read_until(out[0], buf, sizeof buf, "scope 'asked' fail-fast, live, no deadline\n");
        ck_assert_msg(strstr(buf, "scope 'asked' fail-fast, live, no deadline\n"), "got: %s", buf);
        ck_assert_msg(strncmp(buf, "tether dump: pid ", 17) == 0, "got: %s", buf);
    }
    ck_assert_int_eq(tether_dump_signal_free(h), 0);
    /* The old disposition (the default) is back. */
    struct sigaction now;
    ck_assert_int_eq(sigaction(SIGUSR2, NULL, &now), 0);
    ck_assert_ptr_eq((void *)now.sa_handler, (void *)SIG_DFL);
    close(out[0]);
    close(out[1]);
    join_and_free(s);
    th_baseline_check(base);
}
END_TEST

/* Across fork: the parent's installation is inert in the child (the
 * child's signal never wakes the parent's relay), freeing it there returns
 * at once, and the child may install its own. The child reports by its
 * exit status. */
/* TSan refuses new threads in the child of a multithreaded process (the
 * relay of the child's own installation is one): that part is skipped. */
#if defined(TS_TSAN) || defined(TS_ASAN)
/* ASan's allocator is not fork-safe: a CI run saw the child's new relay
 * thread never write its dump. The plain gcc and clang runs cover it. */
enum { CHILD_MAY_START_THREADS = 0 };
#else
enum { CHILD_MAY_START_THREADS = 1 };
#endif

static int fork_child_side(tether_dump_signal *inherited)
{
    if (kill(getpid(), SIGUSR2) != 0) /* the inherited handler: must do nothing */
        return 2;
    if (tether_dump_signal_free(inherited) != 0)
        return 3;
    if (!CHILD_MAY_START_THREADS)
        return 0;
    int p[2];
    if (pipe(p) != 0)
        return 4;
    tether_dump_signal *own;
    if (tether_dump_on_signal(&own, SIGUSR2, p[1], TETHER_DUMP_JSON) != 0)
        return 5;
    if (kill(getpid(), SIGUSR2) != 0)
        return 6;
    static char buf[DUMP_MAX];
    char want[64];
    snprintf(want, sizeof want, "{\"pid\":%d,", (int)getpid());
    read_until(p[0], buf, sizeof buf, "\n");
    if (!strstr(buf, want))
        return 7;
    if (tether_dump_signal_free(own) != 0)
        return 8;
    return 0;
}

START_TEST(test_dump_on_signal_across_fork)
{
    th_baseline base = th_baseline_take();
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    tether_dump_signal *h;
    ck_assert_int_eq(tether_dump_on_signal(&h, SIGUSR2, out[1], TETHER_DUMP_TEXT), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(fork_child_side(h));
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
    /* Nothing reached the parent's relay: no dump within a bound. */
    struct pollfd p = { .fd = out[0], .events = POLLIN };
    ck_assert_int_eq(poll(&p, 1, (int)(th_bound_ns(200) / 1000000)), 0);
    /* The parent's own installation still works. */
    static char buf[DUMP_MAX];
    char want[64];
    snprintf(want, sizeof want, "tether dump: pid %d,", (int)getpid());
    ck_assert_int_eq(kill(getpid(), SIGUSR2), 0);
    read_until(out[0], buf, sizeof buf, want);
    ck_assert_msg(strstr(buf, want), "got: %s", buf);
    ck_assert_int_eq(tether_dump_signal_free(h), 0);
    close(out[0]);
    close(out[1]);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("dump");
    TCase *tc = tcase_create("dump");
    tcase_set_timeout(tc, th_timeout_s(20));
    tcase_add_test(tc, test_dump_three_level_tree_text_and_json);
    tcase_add_test(tc, test_dump_json_escapes_names);
    tcase_add_test(tc, test_dump_shows_context);
    tcase_add_test(tc, test_dump_nothing_alive);
    tcase_add_test(tc, test_dump_on_signal);
    tcase_add_test(tc, test_dump_on_signal_across_fork);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
