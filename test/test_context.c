/*
 * Request context (tether/context.h): a value set on a token is what every
 * descendant sees (the nearest one up the tree, looked up when asked):
 * through a plain 3-level tree, a scope's children and background children,
 * nested scopes, pool jobs and tether_with_deadline blocks; replaced while
 * other threads read it (never a torn value); freed with its token in
 * either order; bad input and long values; across fork.
 */
#define _GNU_SOURCE
#include "sanitizer.h"
#include "support.h"

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* What t sees: its value, "<none>" for ENOENT, "<error N>" otherwise. The
 * buffer is the caller's (threads each pass their own). */
static const char *seen_in(const tether_token *t, char buf[TETHER_CONTEXT_MAX])
{
    int rc = tether_token_context(t, buf, TETHER_CONTEXT_MAX);
    if (rc == ENOENT)
        return "<none>";
    if (rc)
        snprintf(buf, TETHER_CONTEXT_MAX, "<error %d>", rc);
    return buf;
}

static const char *seen(const tether_token *t)
{
    static char buf[TETHER_CONTEXT_MAX];
    return seen_in(t, buf);
}

/* What the calling thread's current token sees, into the caller's buffer. */
static const char *current_sees(char buf[TETHER_CONTEXT_MAX])
{
    int rc = tether_context(buf, TETHER_CONTEXT_MAX);
    if (rc == ENOENT)
        return "<none>";
    if (rc)
        snprintf(buf, TETHER_CONTEXT_MAX, "<error %d>", rc);
    return buf;
}

/* ---------------------------------------------------------------------- */
/* Lookup                                                                 */

START_TEST(test_context_three_level_tree)
{
    th_baseline base = th_baseline_take();
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *mid = new_token(root, TETHER_NEVER);
    tether_token *leaf = new_token(mid, tether_deadline_after(DAY));
    ck_assert_str_eq(seen(leaf), "<none>");

    /* Set on the root after the leaf was made: the leaf sees it now. */
    ck_assert_int_eq(tether_token_set_context(root, "req-1"), 0);
    ck_assert_str_eq(seen(root), "req-1");
    ck_assert_str_eq(seen(mid), "req-1");
    ck_assert_str_eq(seen(leaf), "req-1");

    /* The nearest wins; above it nothing changes. */
    ck_assert_int_eq(tether_token_set_context(mid, "span-2"), 0);
    ck_assert_str_eq(seen(leaf), "span-2");
    ck_assert_str_eq(seen(mid), "span-2");
    ck_assert_str_eq(seen(root), "req-1");

    /* Replace, then an empty value, which hides the root's. */
    ck_assert_int_eq(tether_token_set_context(mid, "span-3"), 0);
    ck_assert_str_eq(seen(leaf), "span-3");
    ck_assert_int_eq(tether_token_set_context(mid, ""), 0);
    ck_assert_str_eq(seen(leaf), "");
    ck_assert_str_eq(seen(root), "req-1");

    /* NULL removes mid's own: the root's shows through again. */
    ck_assert_int_eq(tether_token_set_context(mid, NULL), 0);
    ck_assert_str_eq(seen(leaf), "req-1");
    ck_assert_int_eq(tether_token_set_context(mid, NULL), 0); /* nothing to remove: fine */
    ck_assert_int_eq(tether_token_set_context(root, NULL), 0);
    ck_assert_str_eq(seen(leaf), "<none>");

    /* A canceled token takes and shows a value like a live one, and so do
     * its descendants (born canceled or canceled through it). */
    ck_assert_int_eq(tether_token_cancel(mid, 0), 0);
    ck_assert_int_eq(tether_token_set_context(mid, "after-cancel"), 0);
    tether_token *late = new_token(leaf, TETHER_NEVER);
    ck_assert_int_eq(tether_token_check(late), ECANCELED);
    ck_assert_str_eq(seen(late), "after-cancel");

    /* The current token's view. */
    char buf[TETHER_CONTEXT_MAX];
    ck_assert_str_eq(current_sees(buf), "<none>");
    enter(late);
    ck_assert_str_eq(current_sees(buf), "after-cancel");
    enter(root); /* entries nest: the innermost counts */
    ck_assert_str_eq(current_sees(buf), "<none>");
    leave(root);
    leave(late);

    ck_assert_int_eq(tether_token_free(late), 0);
    ck_assert_int_eq(tether_token_free(leaf), 0);
    ck_assert_int_eq(tether_token_free(mid), 0);
    ck_assert_int_eq(tether_token_free(root), 0);
    th_baseline_check(base);
}
END_TEST

/* What a scope's child saw, by role. */
enum { SAW_FG, SAW_BG, SAW_NESTED, SAW_DEADLINE_BLOCK, SAW_N };
typedef struct scope_probe {
    char saw[SAW_N][TETHER_CONTEXT_MAX];
    sem_t bg_started;
} scope_probe;

static int nested_child(void *arg)
{
    scope_probe *p = arg;
    current_sees(p->saw[SAW_NESTED]);
    return 0;
}

static int in_deadline_block(void *arg)
{
    scope_probe *p = arg;
    current_sees(p->saw[SAW_DEADLINE_BLOCK]);
    return 0;
}

static int fg_child(void *arg)
{
    scope_probe *p = arg;
    current_sees(p->saw[SAW_FG]);
    /* A scope opened in the child (parent: the current token) and a
     * tether_with_deadline block both see the value from above. */
    tether_scope *s;
    int rc = tether_scope_open(&s, NULL);
    if (rc)
        return rc;
    rc = tether_spawn(s, nested_child, p, NULL, NULL);
    tether_scope_join(s, NULL);
    tether_scope_free(s);
    if (rc)
        return rc;
    return tether_with_timeout(tether_sec(60), in_deadline_block, p, NULL);
}

static int bg_child(void *arg)
{
    scope_probe *p = arg;
    current_sees(p->saw[SAW_BG]);
    sem_post(&p->bg_started);
    return sleep_forever() == ECANCELED ? 0 : EPROTO; /* halted at join */
}

/* One scope under `parent` whose own value is `own` (NULL: none): what each
 * kind of child sees. */
static void scope_run(tether_token *parent, const char *own, scope_probe *p)
{
    memset(p, 0, sizeof *p);
    ck_assert_int_eq(sem_init(&p->bg_started, 0, 0), 0);
    tether_scope_opts o = { .name = "request", .parent = parent };
    tether_scope *s = open_scope(&o);
    ck_assert_int_eq(tether_token_set_context(tether_scope_token(s), own), 0);
    tether_spawn_opts bg = { .name = "bg", .background = true };
    ck_assert_int_eq(tether_spawn(s, bg_child, p, &bg, NULL), 0);
    sem_wait_ok(&p->bg_started);
    spawn_ok(s, fg_child, p, "fg", NULL);
    tether_result r = join_and_free(s);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    sem_destroy(&p->bg_started);
}

START_TEST(test_context_scope_children_and_background)
{
    th_baseline base = th_baseline_take();
    tether_token *server = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(server, "server-a"), 0);
    scope_probe p;

    /* The scope's own value, set after open and before the spawns. */
    scope_run(server, "req-42", &p);
    for (int k = 0; k < SAW_N; k++)
        ck_assert_msg(strcmp(p.saw[k], "req-42") == 0, "role %d saw '%s'", k, p.saw[k]);
    ck_assert_str_eq(seen(server), "server-a"); /* the parent's is untouched */

    /* No value of its own: the parent's. */
    scope_run(server, NULL, &p);
    for (int k = 0; k < SAW_N; k++)
        ck_assert_msg(strcmp(p.saw[k], "server-a") == 0, "role %d saw '%s'", k, p.saw[k]);

    /* A scope opened under the current token (no opts.parent) sees it too. */
    enter(server);
    scope_run(NULL, NULL, &p);
    leave(server);
    ck_assert_str_eq(p.saw[SAW_FG], "server-a");
    ck_assert_str_eq(p.saw[SAW_NESTED], "server-a");
    ck_assert_int_eq(tether_token_free(server), 0);
    th_baseline_check(base);
}
END_TEST

typedef struct job_probe {
    char saw[TETHER_CONTEXT_MAX], own[TETHER_CONTEXT_MAX];
} job_probe;

static int job_reads_then_sets(void *arg)
{
    job_probe *j = arg;
    current_sees(j->saw);
    /* The job's own value is on its own token, freed with it. */
    int rc = tether_token_set_context(tether_current(), "job-own");
    if (rc)
        return rc;
    current_sees(j->own);
    return 0;
}

START_TEST(test_context_pool_job)
{
    th_baseline base = th_baseline_take();
    tether_token *request = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(request, "req-7"), 0);
    job_probe j;
    memset(&j, 0, sizeof j);
    tether_job_result r;
    ck_assert_int_eq(tether_job_run(request, TETHER_NEVER, job_reads_then_sets, &j, &r), 0);
    ck_assert_int_eq(r.outcome, TETHER_OUTCOME_OK);
    ck_assert_str_eq(j.saw, "req-7");
    ck_assert_str_eq(j.own, "job-own");
    ck_assert_str_eq(seen(request), "req-7");
    ck_assert_int_eq(tether_token_free(request), 0);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Replacing while others read                                            */

enum { READERS = 4 };

/* Value k (1..127): k bytes, each 'A' + k % 26, so a reader can tell a
 * whole value from a torn one by its length and bytes alone. */
static void value_k(char *v, int k)
{
    memset(v, 'A' + k % 26, (size_t)k);
    v[k] = '\0';
}

static bool whole(const char *v)
{
    size_t n = strlen(v);
    if (n < 1 || n >= TETHER_CONTEXT_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (v[i] != 'A' + (int)(n % 26))
            return false;
    return true;
}

typedef struct race {
    tether_token *up[READERS], *leaf[READERS];
    atomic_bool stop;
    atomic_long reads, values;
} race;

typedef struct reader_arg {
    race *r;
    int i;
} reader_arg;

static void *reader(void *arg)
{
    reader_arg *a = arg;
    char buf[TETHER_CONTEXT_MAX];
    long reads = 0, values = 0;
    while (!atomic_load(&a->r->stop)) {
        /* Half the readers ask through their current token. */
        int rc = a->i % 2 ? tether_token_context(a->r->leaf[a->i], buf, sizeof buf)
                          : tether_context(buf, sizeof buf);
        reads++;
        if (rc == ENOENT)
            continue;
        EXPECT(rc == 0, "lookup: %d", rc);
        EXPECT(rc != 0 || whole(buf), "a torn value: '%s'", buf);
        values++;
    }
    atomic_fetch_add(&a->r->reads, reads);
    atomic_fetch_add(&a->r->values, values);
    return NULL;
}

static void *entered_reader(void *arg)
{
    reader_arg *a = arg;
    enter(a->r->leaf[a->i]);
    reader(arg);
    leave(a->r->leaf[a->i]);
    return NULL;
}

START_TEST(test_context_replace_while_readers_read)
{
    th_baseline base = th_baseline_take();
    race r = { .stop = false };
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *mid = new_token(root, TETHER_NEVER);
    pthread_t th[READERS];
    reader_arg args[READERS];
    for (int i = 0; i < READERS; i++) {
        r.up[i] = new_token(mid, TETHER_NEVER);
        r.leaf[i] = new_token(r.up[i], TETHER_NEVER);
        args[i] = (reader_arg){ &r, i };
        th[i] = thread_start(entered_reader, &args[i]);
    }
    /* Replace the root's and mid's values (and remove them now and then)
     * while the readers read three and four levels below. */
    int rounds = stress(20000);
    char v[TETHER_CONTEXT_MAX];
    for (int n = 0; n < rounds; n++) {
        int k = 1 + n % (TETHER_CONTEXT_MAX - 1);
        value_k(v, k);
        tether_token *target = n % 3 ? root : mid;
        ck_assert_int_eq(tether_token_set_context(target, n % 17 == 0 ? NULL : v), 0);
    }
    atomic_store(&r.stop, true);
    for (int i = 0; i < READERS; i++)
        thread_join(th[i]);
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    ck_assert_int_gt(atomic_load(&r.values), 0);
    fprintf(stderr, "context race: %d sets, %ld reads, %ld values seen whole\n", rounds,
            atomic_load(&r.reads), atomic_load(&r.values));
    for (int i = 0; i < READERS; i++) {
        ck_assert_int_eq(tether_token_free(r.leaf[i]), 0);
        ck_assert_int_eq(tether_token_free(r.up[i]), 0);
    }
    ck_assert_int_eq(tether_token_free(mid), 0);
    ck_assert_int_eq(tether_token_free(root), 0);
    th_baseline_check(base);
}
END_TEST

START_TEST(test_context_free_ordering)
{
    th_baseline base = th_baseline_take();
    tether_token *parent = new_token(NULL, TETHER_NEVER);
    tether_token *child = new_token(parent, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(parent, "outer"), 0);
    ck_assert_int_eq(tether_token_set_context(child, "inner"), 0);

    /* The parent cannot go while the child can read up through it. */
    ck_assert_int_eq(tether_token_free(parent), EBUSY);
    ck_assert_int_eq(tether_token_set_context(child, NULL), 0);
    ck_assert_str_eq(seen(child), "outer");

    /* Child first (with a value of its own again), then the parent: each
     * copy goes with its token (LeakSanitizer checks at exit). */
    ck_assert_int_eq(tether_token_set_context(child, "inner-2"), 0);
    ck_assert_int_eq(tether_token_free(child), 0);
    ck_assert_str_eq(seen(parent), "outer");
    ck_assert_int_eq(tether_token_free(parent), 0);

    /* A scope's token freed with a value on it: join and free take it. */
    tether_scope *s = open_scope(NULL);
    ck_assert_int_eq(tether_token_set_context(tether_scope_token(s), "scope-value"), 0);
    join_and_free(s);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* Bad input and long values                                              */

START_TEST(test_context_bad_input_and_long_values)
{
    th_baseline base = th_baseline_take();
    tether_token *t = new_token(NULL, TETHER_NEVER);
    tether_token *c = new_token(t, TETHER_NEVER);
    char buf[TETHER_CONTEXT_MAX];

    /* 127 bytes: the longest value; it fits TETHER_CONTEXT_MAX exactly. */
    char v127[TETHER_CONTEXT_MAX];
    value_k(v127, TETHER_CONTEXT_MAX - 1);
    ck_assert_int_eq(tether_token_set_context(t, v127), 0);
    ck_assert_int_eq(tether_token_context(c, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, v127);

    /* 128 bytes with no NUL, in a block of exactly 128: ERANGE, read no
     * further (ASan would see it), the old value kept. */
    char *v128 = malloc(TETHER_CONTEXT_MAX);
    ck_assert_ptr_nonnull(v128);
    memset(v128, 'x', TETHER_CONTEXT_MAX);
    ck_assert_int_eq(tether_token_set_context(t, v128), ERANGE);
    free(v128);
    char v4k[4096];
    memset(v4k, 'y', sizeof v4k - 1);
    v4k[sizeof v4k - 1] = '\0';
    ck_assert_int_eq(tether_token_set_context(t, v4k), ERANGE);
    ck_assert_str_eq(seen(c), v127);

    /* A buffer one byte short: ERANGE, untouched; exactly enough: 0. */
    ck_assert_int_eq(tether_token_set_context(t, "abcd"), 0);
    memset(buf, '#', sizeof buf);
    ck_assert_int_eq(tether_token_context(c, buf, 4), ERANGE);
    ck_assert_int_eq(tether_token_context(c, buf, 0), ERANGE);
    ck_assert_int_eq(buf[0], '#');
    ck_assert_int_eq(tether_token_context(c, buf, 5), 0);
    ck_assert_str_eq(buf, "abcd");
    ck_assert_int_eq(buf[5], '#');
    enter(c);
    memset(buf, '#', sizeof buf);
    ck_assert_int_eq(tether_context(buf, 4), ERANGE);
    ck_assert_int_eq(buf[0], '#');
    ck_assert_int_eq(tether_context(buf, 5), 0);
    ck_assert_str_eq(buf, "abcd");
    leave(c);

    /* Every byte but NUL is a value's byte, kept as given. */
    char all[TETHER_CONTEXT_MAX];
    for (int k = 0; k < TETHER_CONTEXT_MAX - 1; k++)
        all[k] = (char)(k % 255 + 1);
    all[TETHER_CONTEXT_MAX - 1] = '\0';
    ck_assert_int_eq(tether_token_set_context(c, all), 0);
    ck_assert_int_eq(tether_token_context(c, buf, sizeof buf), 0);
    ck_assert_int_eq(memcmp(buf, all, sizeof all), 0);

    /* NULLs. */
    ck_assert_int_eq(tether_token_set_context(NULL, "x"), EINVAL);
    ck_assert_int_eq(tether_token_set_context(NULL, NULL), EINVAL);
    ck_assert_int_eq(tether_token_context(NULL, buf, sizeof buf), EINVAL);
    ck_assert_int_eq(tether_token_context(c, NULL, 16), EINVAL);
    ck_assert_int_eq(tether_context(NULL, 16), EINVAL);
    memset(buf, '#', sizeof buf);
    ck_assert_int_eq(tether_context(buf, sizeof buf), ENOENT); /* no current token */
    ck_assert_int_eq(buf[0], '#');

    ck_assert_int_eq(tether_token_free(c), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
    th_baseline_check(base);
}
END_TEST

/* ---------------------------------------------------------------------- */
/* fork                                                                   */

/* Keep setting values on `t` until told to stop, so that fork happens
 * while a thread is inside the context lock now and then. */
typedef struct setter {
    tether_token *t;
    atomic_bool stop;
    atomic_long sets;
} setter;

static void *keep_setting(void *arg)
{
    setter *s = arg;
    char v[TETHER_CONTEXT_MAX];
    for (int n = 0; !atomic_load(&s->stop); n++) {
        value_k(v, 1 + n % (TETHER_CONTEXT_MAX - 1));
        EXPECT(tether_token_set_context(s->t, v) == 0, "set");
        atomic_fetch_add(&s->sets, 1);
    }
    return NULL;
}

/* The child: inherited values are there, its own changes are its own. */
static int child_side(tether_token *root, tether_token *leaf, tether_token *busy)
{
    char buf[TETHER_CONTEXT_MAX];
    if (tether_token_context(leaf, buf, sizeof buf) != 0 || strcmp(buf, "leaf-v") != 0)
        return 2;
    if (tether_token_context(root, buf, sizeof buf) != 0 || strcmp(buf, "root-v") != 0)
        return 3;
    /* The setter stayed in the parent: its token's value is whole, and the
     * lock it may have held is free here. */
    if (tether_token_context(busy, buf, sizeof buf) != 0 || !whole(buf))
        return 4;
    if (tether_token_set_context(busy, "child-own") != 0)
        return 5;
    if (tether_token_set_context(leaf, NULL) != 0)
        return 6;
    if (tether_token_context(leaf, buf, sizeof buf) != 0 || strcmp(buf, "root-v") != 0)
        return 7;
    if (tether_token_set_context(root, "root-child") != 0)
        return 8;
    if (tether_token_free(leaf) != 0 || tether_token_free(root) != 0)
        return 9;
    return 0;
}

/* ASan's allocator is not fork-safe (test_dump.c says why), and TSan hangs
 * now and then in a child forked among running threads (test_fork.c): the
 * setter runs across the fork only in the plain builds. */
#if defined(TS_SANITIZED)
enum { SETTER_ACROSS_FORK = 0 };
#else
enum { SETTER_ACROSS_FORK = 1 };
#endif

START_TEST(test_context_across_fork)
{
    th_baseline base = th_baseline_take();
    tether_token *root = new_token(NULL, TETHER_NEVER);
    tether_token *leaf = new_token(root, TETHER_NEVER);
    tether_token *busy = new_token(NULL, TETHER_NEVER);
    ck_assert_int_eq(tether_token_set_context(root, "root-v"), 0);
    ck_assert_int_eq(tether_token_set_context(leaf, "leaf-v"), 0);
    char first[TETHER_CONTEXT_MAX];
    value_k(first, 1);
    ck_assert_int_eq(tether_token_set_context(busy, first), 0);
    setter st = { .t = busy };
    pthread_t th = { 0 };
    if (SETTER_ACROSS_FORK) {
        th = thread_start(keep_setting, &st);
        while (atomic_load(&st.sets) < 1000)
            sched_yield();
    }
    int forks = SETTER_ACROSS_FORK ? stress(20) : 1;
    for (int k = 0; k < forks; k++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0)
            _exit(child_side(root, leaf, busy));
        int status;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d: child status %#x", k,
                      status);
    }
    if (SETTER_ACROSS_FORK) {
        atomic_store(&st.stop, true);
        thread_join(th);
    }
    ck_assert_msg(bad_seen() == 0, "%s", bad_first());
    /* The child's changes stayed in the child. */
    ck_assert_str_eq(seen(leaf), "leaf-v");
    ck_assert_str_eq(seen(root), "root-v");
    ck_assert_int_eq(tether_token_free(leaf), 0);
    ck_assert_int_eq(tether_token_free(root), 0);
    ck_assert_int_eq(tether_token_free(busy), 0);
    th_baseline_check(base);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("context");
    TCase *tc = tcase_create("context");
    tcase_set_timeout(tc, th_timeout_s(30));
    tcase_add_test(tc, test_context_three_level_tree);
    tcase_add_test(tc, test_context_scope_children_and_background);
    tcase_add_test(tc, test_context_pool_job);
    tcase_add_test(tc, test_context_replace_while_readers_read);
    tcase_add_test(tc, test_context_free_ordering);
    tcase_add_test(tc, test_context_bad_input_and_long_values);
    tcase_add_test(tc, test_context_across_fork);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return th_run_suite(suite());
}
