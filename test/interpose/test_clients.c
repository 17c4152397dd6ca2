/*
 * Unmodified real clients under the interposition layer, against real
 * servers on 127.0.0.1 (started once by servers.sh, see CMakeLists.txt):
 *  - hiredis  BLPOP key 0                      (redis-server)
 *  - libcurl  curl_easy_perform                (a server that never answers)
 *  - libpq    SELECT pg_sleep(60)              (a throwaway PostgreSQL cluster)
 *  - GLib     GThreadPool jobs in plain read() and g_usleep
 *
 * Each client call runs in a child of a scope whose deadline is 200 ms, with
 * no change to the client code: the layer (preloaded, or linked ahead of
 * libc) routes its blocking calls to tether. Each test checks that join
 * returns soon after the deadline, that the client reports an error, that
 * the connection then fails cleanly or answers correctly (never with the
 * abandoned request's reply), and that no thread, descriptor or child
 * process is left behind (and, in the ASan build, no byte: LeakSanitizer). Each also runs the same client with no current token, where it
 * must behave exactly as without the layer (and the layer counts nothing).
 *
 * The server ports come from the file named by TETHER_CLIENTS_ENV. A client
 * whose server could not be provided (servers.sh records why) makes its test
 * exit 77, which CTest reports as skipped.
 */
#define _GNU_SOURCE
#include "support.h"

#include <tether/interpose.h>

#include <curl/curl.h>
#include <dirent.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <glib.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ environment */

static char env_text[4096];

/* The value of KEY=VALUE in the servers' env file, or NULL (in a buffer
 * that the next call reuses). */
static const char *server_env(const char *key)
{
    static char val[256];
    size_t klen = strlen(key);
    for (char *line = env_text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            size_t n = nl ? (size_t)(nl - line) - klen - 1 : strlen(line + klen + 1);
            if (n >= sizeof val)
                n = sizeof val - 1;
            memcpy(val, line + klen + 1, n);
            val[n] = '\0';
            return val;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

static void load_env(void)
{
    const char *path = getenv("TETHER_CLIENTS_ENV");
    if (!path) {
        fprintf(stderr, "TETHER_CLIENTS_ENV is not set (run through ctest)\n");
        exit(2);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        perror(path);
        exit(2);
    }
    ssize_t n = read(fd, env_text, sizeof env_text - 1);
    close(fd);
    env_text[n > 0 ? n : 0] = '\0';
}

static int env_port(const char *key)
{
    const char *v = server_env(key);
    ck_assert_msg(v != NULL, "%s missing from the servers' env file", key);
    return atoi(v);
}

/* ------------------------------------------------------------ the layer */

static uint64_t seen_total(void)
{
    size_t (*f)(tether_interpose_counter *, size_t) =
        (size_t(*)(tether_interpose_counter *, size_t))dlsym(RTLD_DEFAULT,
                                                             "tether_interpose_counters");
    ck_assert_msg(f, "libtether_interpose.so is not loaded");
    tether_interpose_counter c[64];
    size_t n = f(c, 64);
    uint64_t sum = 0;
    for (size_t i = 0; i < n && i < 64; i++)
        sum += c[i].seen;
    return sum;
}

/* ------------------------------------------------------------ the scope */

enum { DEADLINE_MS = 200 };

/*
 * Run fn(arg) as the only child of a scope with a 200 ms deadline; return
 * how long after the deadline join returned (ns), and check the scope
 * reports the deadline.
 */
static int64_t run_under_deadline(int (*fn)(void *), void *arg)
{
    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(DEADLINE_MS), .name = "client" };
    tether_time_t deadline = tether_now() + tether_ms(DEADLINE_MS);
    ck_assert_int_eq(tether_scope_open(&s, &o), 0);
    ck_assert_int_eq(tether_spawn(s, fn, arg, NULL, NULL), 0);
    tether_result r;
    tether_scope_join(s, &r);
    int64_t late = tether_now() - deadline;
    ck_assert_int_eq(tether_scope_free(s), 0);
    ck_assert_int_eq(r.cause, TETHER_CAUSE_DEADLINE);
    ck_assert_msg(late < th_bound_ns(300), "join returned %.1f ms after the deadline",
                  (double)late / 1e6);
    printf("lateness %.3f ms\n", (double)late / 1e6);
    return late;
}

/* Processes whose parent is this one (none of the clients may leave one). */
static int child_processes(void)
{
    DIR *d = opendir("/proc");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    pid_t self = getpid();
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        ssize_t len = read(fd, buf, sizeof buf - 1);
        close(fd);
        if (len <= 0)
            continue;
        buf[len] = '\0';
        const char *p = strrchr(buf, ')'); /* "pid (comm) state ppid ..." */
        int ppid = 0;
        char state;
        if (p && sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == self)
            n++;
    }
    closedir(d);
    return n;
}

static th_baseline base;
static int base_children;

static void setup(void)
{
    base = th_baseline_take();
    base_children = child_processes();
}

/* Name the threads still there (a failure then says whose they are). */
static void print_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[64] = "?", wchan[64] = "?";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f) {
            if (!fgets(comm, sizeof comm, f))
                comm[0] = '\0';
            fclose(f);
        }
        snprintf(path, sizeof path, "/proc/self/task/%s/wchan", e->d_name);
        f = fopen(path, "r");
        if (f) {
            if (!fgets(wchan, sizeof wchan, f))
                wchan[0] = '\0';
            fclose(f);
        }
        comm[strcspn(comm, "\n")] = '\0';
        printf("thread %s: %s, in %s\n", e->d_name, comm, wchan);
    }
    closedir(d);
}

static void teardown(void)
{
    if (th_wait_thread_count(base.threads) != base.threads)
        print_threads();
    th_baseline_check(base);
    ck_assert_int_eq(child_processes(), base_children);
}

/* ------------------------------------------------------------ hiredis */

static redisContext *redis_connect(void)
{
    redisContext *c = redisConnect("127.0.0.1", env_port("REDIS_PORT"));
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(c->err == 0, "redisConnect: %s", c->errstr);
    return c;
}

static struct {
    redisContext *c;
    redisReply *reply;
    int err;
    char errstr[128];
} R;

static int redis_blpop(void *arg)
{
    (void)arg;
    R.reply = redisCommand(R.c, "BLPOP tether:blpop 0"); /* unmodified client code */
    R.err = R.c->err;
    snprintf(R.errstr, sizeof R.errstr, "%s", R.c->errstr);
    return R.reply ? 0 : EIO;
}

/* The number of clients the server has blocked in a list command. */
static long long redis_blocked_clients(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO clients");
    ck_assert_ptr_nonnull(r);
    const char *p = strstr(r->str, "blocked_clients:");
    long long n = p ? atoll(p + strlen("blocked_clients:")) : -1;
    freeReplyObject(r);
    return n;
}

START_TEST(redis_blpop_stops_at_deadline)
{
    R.c = redis_connect();
    redisContext *admin = redis_connect();
    redisReply *r = redisCommand(admin, "DEL tether:blpop");
    freeReplyObject(r);

    run_under_deadline(redis_blpop, NULL);
    ck_assert_ptr_null(R.reply);
    ck_assert_int_ne(R.err, 0);
    printf("hiredis error %d: %s\n", R.err, R.errstr);
    /* The context is unusable: a later command fails at once. */
    ck_assert_ptr_null(redisCommand(R.c, "PING"));

    /* The server sees the connection go (it was shut down), so the
     * abandoned BLPOP no longer waits there to swallow the next value. */
    tether_time_t end = tether_now() + th_bound_ns(2000);
    while (redis_blocked_clients(admin) != 0 && tether_now() < end)
        usleep(1000);
    ck_assert_int_eq(redis_blocked_clients(admin), 0);
    r = redisCommand(admin, "RPUSH tether:blpop v");
    ck_assert_int_eq(r->integer, 1);
    freeReplyObject(r);
    r = redisCommand(admin, "LLEN tether:blpop");
    ck_assert_int_eq(r->integer, 1);
    freeReplyObject(r);
    r = redisCommand(admin, "DEL tether:blpop");
    freeReplyObject(r);
    redisFree(admin);
    redisFree(R.c);
}
END_TEST

/* No token: BLPOP with a 1 s server-side timeout answers nil after it, as
 * without the layer, and the layer counts nothing. */
START_TEST(redis_without_token_is_unchanged)
{
    redisContext *c = redis_connect();
    uint64_t seen = seen_total();
    tether_time_t t0 = tether_now();
    redisReply *r = redisCommand(c, "BLPOP tether:none 1");
    int64_t took = tether_now() - t0;
    ck_assert_ptr_nonnull(r);
    ck_assert_int_eq(r->type, REDIS_REPLY_NIL);
    freeReplyObject(r);
    ck_assert_int_ge(took, tether_ms(900));
    r = redisCommand(c, "PING");
    ck_assert_str_eq(r->str, "PONG");
    freeReplyObject(r);
    ck_assert_uint_eq(seen_total(), seen);
    redisFree(c);
}
END_TEST

/* ------------------------------------------------------------ libcurl */

static struct {
    CURL *h;
    CURLcode rc;
    char errbuf[CURL_ERROR_SIZE];
} C;

static size_t curl_sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static CURL *curl_to_silent_server(void)
{
    CURL *h = curl_easy_init();
    ck_assert_ptr_nonnull(h);
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", env_port("HTTP_PORT"));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, C.errbuf);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    return h;
}

static int curl_perform(void *arg)
{
    (void)arg;
    C.rc = curl_easy_perform(C.h); /* unmodified client code */
    return C.rc == CURLE_OK ? 0 : EIO;
}

START_TEST(curl_perform_stops_at_deadline)
{
    C.h = curl_to_silent_server();
    C.errbuf[0] = '\0';
    run_under_deadline(curl_perform, NULL);
    ck_assert_int_ne(C.rc, CURLE_OK);
    printf("curl error %d (%s): '%s'\n", (int)C.rc, curl_easy_strerror(C.rc), C.errbuf);
    /* Used again without a token, the handle works as before: the silent
     * server makes it time out on its own 300 ms limit. */
    curl_easy_setopt(C.h, CURLOPT_TIMEOUT_MS, 300L);
    tether_time_t t0 = tether_now();
    CURLcode rc = curl_easy_perform(C.h);
    ck_assert_int_eq(rc, CURLE_OPERATION_TIMEDOUT);
    ck_assert_int_ge(tether_now() - t0, tether_ms(290));
    curl_easy_cleanup(C.h);
}
END_TEST

START_TEST(curl_without_token_is_unchanged)
{
    CURL *h = curl_to_silent_server();
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 300L);
    uint64_t seen = seen_total();
    tether_time_t t0 = tether_now();
    CURLcode rc = curl_easy_perform(h);
    int64_t took = tether_now() - t0;
    ck_assert_int_eq(rc, CURLE_OPERATION_TIMEDOUT);
    ck_assert_int_ge(took, tether_ms(290));
    ck_assert_uint_eq(seen_total(), seen);
    curl_easy_cleanup(h);
}
END_TEST

/* ------------------------------------------------------------ libpq */

static PGconn *pg_connect(void)
{
    char info[256], user[64];
    snprintf(user, sizeof user, "%s", server_env("PG_USER")); /* server_env's buffer is reused */
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d user=%s dbname=postgres connect_timeout=20",
             env_port("PG_PORT"), user);
    PGconn *c = PQconnectdb(info);
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "PQconnectdb: %s", PQerrorMessage(c));
    return c;
}

static struct {
    PGconn *c;
    ExecStatusType status;
    char err[256];
} P;

static int pg_sleep_60(void *arg)
{
    (void)arg;
    PGresult *r = PQexec(P.c, "SELECT pg_sleep(60)"); /* unmodified client code */
    P.status = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    snprintf(P.err, sizeof P.err, "%s", PQerrorMessage(P.c));
    PQclear(r);
    return P.status == PGRES_TUPLES_OK ? 0 : EIO;
}

START_TEST(pq_sleep_stops_at_deadline)
{
    P.c = pg_connect();
    run_under_deadline(pg_sleep_60, NULL);
    ck_assert_int_ne(P.status, PGRES_TUPLES_OK);
    printf("libpq: %s", P.err);
    /* The next query on the connection must not get pg_sleep's row: it
     * fails (the layer shut the connection down), or answers 1. */
    PGresult *r = PQexec(P.c, "SELECT 1 AS one");
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        ck_assert_str_eq(PQfname(r, 0), "one");
        ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    } else {
        printf("libpq, next query: %s", PQerrorMessage(P.c));
        ck_assert_int_eq(PQstatus(P.c), CONNECTION_BAD);
    }
    PQclear(r);
    PQfinish(P.c);
}
END_TEST

START_TEST(pq_without_token_is_unchanged)
{
    PGconn *c = pg_connect();
    uint64_t seen = seen_total();
    tether_time_t t0 = tether_now();
    PGresult *r = PQexec(c, "SELECT pg_sleep(0.3)");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_int_ge(tether_now() - t0, tether_ms(290));
    PQclear(r);
    r = PQexec(c, "SELECT 1 AS one");
    ck_assert_int_eq(PQresultStatus(r), PGRES_TUPLES_OK);
    ck_assert_str_eq(PQgetvalue(r, 0, 0), "1");
    PQclear(r);
    ck_assert_uint_eq(seen_total(), seen);
    PQfinish(c);
}
END_TEST

/* ------------------------------------------------------------ GLib */

enum { POOL_JOBS = 8 };

typedef struct job {
    tether_token *token; /* entered for the span of the job (NULL: none) */
    int fd;              /* read() jobs: the read end of an empty pipe */
    ssize_t got;
    int err;
    tether_time_t done_at;
} job;

/* The unmodified job code: plain blocking calls. */
static void legacy_job(job *j)
{
    if (j->fd >= 0) {
        char b[16];
        j->got = read(j->fd, b, sizeof b);
        j->err = errno;
    } else {
        g_usleep(10 * G_USEC_PER_SEC);
    }
}

/* The pool's function: enter the job's token around the unmodified job. */
static void pool_fn(gpointer data, gpointer user)
{
    (void)user;
    job *j = data;
    if (j->token)
        tether_token_enter(j->token);
    legacy_job(j);
    j->done_at = tether_now();
    if (j->token)
        tether_token_leave(j->token);
}

static struct {
    job jobs[POOL_JOBS];
    int pipes[POOL_JOBS][2];
} G;

static void glib_setup_jobs(void)
{
    /* A pool thread that finishes after its pool is freed parks as a GLib
     * "unused thread" for reuse (up to its idle time) unless none may be
     * kept; g_thread_pool_stop_unused_threads only stops those already
     * parked. Keep none, so every pool thread exits with its pool. */
    g_thread_pool_set_max_unused_threads(0);
    for (int i = 0; i < POOL_JOBS; i++) {
        G.jobs[i] = (job){ .fd = -1 };
        G.pipes[i][0] = G.pipes[i][1] = -1;
        if (i % 2 == 0) {
            ck_assert_int_eq(pipe2(G.pipes[i], O_CLOEXEC), 0);
            G.jobs[i].fd = G.pipes[i][0];
        }
    }
}

static void glib_close_pipes(void)
{
    for (int i = 0; i < POOL_JOBS; i++) {
        if (G.pipes[i][0] >= 0) {
            close(G.pipes[i][0]);
            close(G.pipes[i][1]);
        }
    }
}

static void run_pool(void)
{
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(pool_fn, NULL, POOL_JOBS, TRUE, &err);
    ck_assert_ptr_nonnull(pool);
    for (int i = 0; i < POOL_JOBS; i++)
        g_thread_pool_push(pool, &G.jobs[i], NULL);
    g_thread_pool_free(pool, FALSE, TRUE); /* waits for every job */
}

/* The scope's child hands its token's children to the pool's jobs. */
static int glib_child(void *arg)
{
    (void)arg;
    for (int i = 0; i < POOL_JOBS; i++)
        ck_assert_int_eq(tether_token_new(&G.jobs[i].token, tether_current(), TETHER_NEVER), 0);
    run_pool();
    for (int i = 0; i < POOL_JOBS; i++)
        tether_token_free(G.jobs[i].token);
    return tether_check();
}

START_TEST(glib_pool_jobs_stop_at_deadline)
{
    glib_setup_jobs();
    tether_time_t deadline = tether_now() + tether_ms(DEADLINE_MS);
    run_under_deadline(glib_child, NULL);
    int stopped = 0;
    for (int i = 0; i < POOL_JOBS; i++) {
        job *j = &G.jobs[i];
        ck_assert_int_lt(j->done_at - deadline, th_bound_ns(300));
        if (j->fd >= 0) {
            ck_assert_int_eq(j->got, -1);
            ck_assert_int_eq(j->err, ETIMEDOUT);
        }
        stopped++;
    }
    ck_assert_int_eq(stopped, POOL_JOBS);
    glib_close_pipes();
    g_thread_pool_stop_unused_threads(); /* none should be parked: see glib_setup_jobs */
}
END_TEST

START_TEST(glib_without_token_is_unchanged)
{
    glib_setup_jobs();
    for (int i = 0; i < POOL_JOBS; i++) {
        if (G.pipes[i][1] >= 0) {
            ck_assert_int_eq(write(G.pipes[i][1], "x", 1), 1);
        }
    }
    /* No token: the read() jobs get their byte, g_usleep sleeps its time. */
    uint64_t seen = seen_total();
    GError *err = NULL;
    GThreadPool *pool = g_thread_pool_new(pool_fn, NULL, POOL_JOBS, TRUE, &err);
    ck_assert_ptr_nonnull(pool);
    for (int i = 0; i < POOL_JOBS; i += 2)
        g_thread_pool_push(pool, &G.jobs[i], NULL); /* the read() jobs: data is there */
    g_thread_pool_free(pool, FALSE, TRUE);
    for (int i = 0; i < POOL_JOBS; i += 2)
        ck_assert_int_eq(G.jobs[i].got, 1);
    tether_time_t t0 = tether_now();
    g_usleep(100 * 1000);
    ck_assert_int_ge(tether_now() - t0, tether_ms(100));
    ck_assert_uint_eq(seen_total(), seen);
    glib_close_pipes();
    g_thread_pool_stop_unused_threads();
}
END_TEST

/* ------------------------------------------------------------ the suite */

static TCase *client_case(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, th_timeout_s(30));
    return tc;
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* a shut-down connection written to: EPIPE, not death */
    load_env();
    const char *only = getenv("CK_RUN_CASE");
    if (only) {
        static const struct {
            const char *tcase, *skip;
        } need[] = { { "redis", "SKIP_REDIS" }, { "pq", "SKIP_PG" } };
        for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
            const char *why = server_env(need[i].skip);
            if (strcmp(only, need[i].tcase) == 0 && why) {
                printf("skipped: %s\n", why);
                return 77;
            }
        }
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);

    Suite *s = suite_create("clients");
    TCase *tc = client_case("redis");
    tcase_add_test(tc, redis_blpop_stops_at_deadline);
    tcase_add_test(tc, redis_without_token_is_unchanged);
    suite_add_tcase(s, tc);
    tc = client_case("curl");
    tcase_add_test(tc, curl_perform_stops_at_deadline);
    tcase_add_test(tc, curl_without_token_is_unchanged);
    suite_add_tcase(s, tc);
    tc = client_case("pq");
    tcase_add_test(tc, pq_sleep_stops_at_deadline);
    tcase_add_test(tc, pq_without_token_is_unchanged);
    suite_add_tcase(s, tc);
    tc = client_case("glib");
    tcase_add_test(tc, glib_pool_jobs_stop_at_deadline);
    tcase_add_test(tc, glib_without_token_is_unchanged);
    suite_add_tcase(s, tc);
    int rc = th_run_suite(s);
    curl_global_cleanup();
    return rc;
}
