/*
 * tether-interpose-bench — the interposition layer's figures, each next to
 * its baseline in the same run.
 *
 * The program is linked with libtether_interpose.so ahead of libc, so its
 * plain read/recv/poll go through the layer. The baselines call libc's own
 * definitions, found with dlsym on libc.so.6, which bypass the layer. Rounds
 * alternate between the variants; a figure is the median of its rounds.
 *
 *   notoken   a loop of read (pipe), recv (socketpair) and poll (a pipe with
 *             a byte waiting) with no current token: through the layer
 *             against libc directly. Ratio = libc's time / the layer's (a
 *             throughput ratio: >= 0.98 is the target).
 *   token     the same read and poll loops under a live token (no deadline,
 *             never canceled): the layer's read/poll against calling
 *             tether_read/tether_poll directly (target >= 0.98), and the
 *             layer against libc (reported: it is tether's own cost, the
 *             ratio tether-bench reports for tether_read).
 *   clients   how long after a 200 ms scope deadline join returns, with an
 *             unmodified client blocked inside the scope: hiredis BLPOP,
 *             libcurl against a server that never answers, libpq
 *             pg_sleep(60), a GThreadPool of read() and g_usleep jobs.
 *             Median and max over the runs; target max < 1 ms. The servers
 *             come from TETHER_CLIENTS_ENV (as in the tests) or are started
 *             here with test/interpose/servers.sh and stopped at the end.
 *
 * Output: `name value unit` lines (the machine's load at start and end
 * among them), then `target <name> <met|missed> (...)`.
 *   tether-interpose-bench           full run (about half a minute)
 *   tether-interpose-bench --quick   few rounds and runs (the ctest smoke test)
 * Targets are reported, never enforced; exit 1 only if a figure could not
 * be measured.
 */
#define _GNU_SOURCE
#include <tether.h>
#include <tether/interpose.h>

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef TETHER_BENCH_CLIENTS
#include <curl/curl.h>
#include <glib.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#endif

static bool quick;
static int failures;

/* ====================================================================== */
/* Figures and targets                                                    */

struct figure {
    char name[64];
    double value;
};
static struct figure figures[64];
static int nfigures;

static void report(const char *name, double value, const char *unit)
{
    if (nfigures < (int)(sizeof figures / sizeof figures[0])) {
        snprintf(figures[nfigures].name, sizeof figures[nfigures].name, "%s", name);
        figures[nfigures++].value = value;
    }
    printf("%s %.3f %s\n", name, value, unit);
    fflush(stdout);
}

static const struct figure *find_figure(const char *name)
{
    for (int i = 0; i < nfigures; i++)
        if (strcmp(figures[i].name, name) == 0)
            return &figures[i];
    return NULL;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    if (n == 0)
        return NAN;
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double max_of(const double *v, int n)
{
    double m = n ? v[0] : NAN;
    for (int i = 1; i < n; i++)
        if (v[i] > m)
            m = v[i];
    return m;
}

/* The machine's load now, as `<prefix>_loadavg_1m` and `<prefix>_procs_running`
 * (as tether-bench reports it): figures taken while other work competes for
 * the two CPUs are noisier, and these say how much competed. */
static void report_load(const char *prefix)
{
    char buf[16384], name[64];
    double load1 = NAN, running = NAN;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fgets(buf, sizeof buf, f))
            load1 = strtod(buf, NULL);
        fclose(f);
    }
    f = fopen("/proc/stat", "r");
    if (f) {
        size_t n = fread(buf, 1, sizeof buf - 1, f);
        buf[n] = '\0';
        fclose(f);
        const char *p = strstr(buf, "\nprocs_running ");
        if (p)
            running = strtod(p + strlen("\nprocs_running "), NULL);
    }
    snprintf(name, sizeof name, "%s_loadavg_1m", prefix);
    report(name, load1, "load");
    snprintf(name, sizeof name, "%s_procs_running", prefix);
    report(name, running, "tasks");
}

/* ====================================================================== */
/* libc's own definitions, past the layer                                 */

static ssize_t (*libc_read)(int, void *, size_t);
static ssize_t (*libc_write)(int, const void *, size_t);
static ssize_t (*libc_recv)(int, void *, size_t, int);
static ssize_t (*libc_send)(int, const void *, size_t, int);
static int (*libc_poll)(struct pollfd *, nfds_t, int);

static void find_libc(void)
{
    void *h = dlopen("libc.so.6", RTLD_NOW | RTLD_NOLOAD);
    if (!h) {
        fprintf(stderr, "interpose-bench: libc.so.6: %s\n", dlerror());
        exit(1);
    }
    libc_read = (ssize_t(*)(int, void *, size_t))dlsym(h, "read");
    libc_write = (ssize_t(*)(int, const void *, size_t))dlsym(h, "write");
    libc_recv = (ssize_t(*)(int, void *, size_t, int))dlsym(h, "recv");
    libc_send = (ssize_t(*)(int, const void *, size_t, int))dlsym(h, "send");
    libc_poll = (int (*)(struct pollfd *, nfds_t, int))dlsym(h, "poll");
    if (!libc_read || !libc_write || !libc_recv || !libc_send || !libc_poll ||
        (void *)libc_read == (void *)&read) {
        fprintf(stderr, "interpose-bench: libc's definitions not found, or the layer is not "
                        "in front of them\n");
        exit(1);
    }
}

/* ====================================================================== */
/* The call loops                                                         */

enum variant { V_LIBC, V_LAYER, V_TETHER };
static const char *const variant_name[] = { "libc", "layer", "tether" };

static int pipe_fds[2], sock_fds[2], ready_fds[2];

/* One iteration: put a byte in, take it out with the variant's read. */
static double loop_read(enum variant v, long iters)
{
    char c = 'x';
    tether_time_t t0 = tether_now();
    for (long i = 0; i < iters; i++) {
        if (libc_write(pipe_fds[1], &c, 1) != 1)
            return NAN;
        ssize_t n = v == V_LIBC    ? libc_read(pipe_fds[0], &c, 1)
                    : v == V_LAYER ? read(pipe_fds[0], &c, 1)
                                   : tether_read(pipe_fds[0], &c, 1);
        if (n != 1)
            return NAN;
    }
    return (double)(tether_now() - t0) / (double)iters;
}

static double loop_recv(enum variant v, long iters)
{
    char c = 'x';
    tether_time_t t0 = tether_now();
    for (long i = 0; i < iters; i++) {
        if (libc_send(sock_fds[1], &c, 1, 0) != 1)
            return NAN;
        ssize_t n = v == V_LIBC    ? libc_recv(sock_fds[0], &c, 1, 0)
                    : v == V_LAYER ? recv(sock_fds[0], &c, 1, 0)
                                   : tether_recv(sock_fds[0], &c, 1, 0);
        if (n != 1)
            return NAN;
    }
    return (double)(tether_now() - t0) / (double)iters;
}

/* A byte always waits in ready_fds[0]: each poll returns 1 at once. */
static double loop_poll(enum variant v, long iters)
{
    struct pollfd p = { .fd = ready_fds[0], .events = POLLIN };
    tether_time_t t0 = tether_now();
    for (long i = 0; i < iters; i++) {
        int n = v == V_LIBC    ? libc_poll(&p, 1, 0)
                : v == V_LAYER ? poll(&p, 1, 0)
                               : tether_poll(&p, 1, 0);
        if (n != 1)
            return NAN;
    }
    return (double)(tether_now() - t0) / (double)iters;
}

typedef double (*loop_fn)(enum variant, long);

/*
 * Alternate rounds of variants a and b (rotating which goes first), report
 * each one's median ns per call, and the throughput ratio b over a
 * (a's time / b's time). Returns that ratio.
 */
static double compare(const char *name, loop_fn loop, enum variant a, enum variant b)
{
    enum { MAX_ROUNDS = 31 };
    int rounds = quick ? 5 : 21;
    long iters = quick ? 20000 : 100000;
    double ta[MAX_ROUNDS], tb[MAX_ROUNDS];
    loop(a, iters / 10); /* warm up both paths */
    loop(b, iters / 10);
    for (int r = 0; r < rounds; r++) {
        if (r % 2) {
            ta[r] = loop(a, iters);
            tb[r] = loop(b, iters);
        } else {
            tb[r] = loop(b, iters);
            ta[r] = loop(a, iters);
        }
        if (isnan(ta[r]) || isnan(tb[r])) {
            fprintf(stderr, "interpose-bench: %s: a call failed: %s\n", name, strerror(errno));
            failures++;
            return NAN;
        }
    }
    double ma = median(ta, rounds), mb = median(tb, rounds);
    char fig[64];
    snprintf(fig, sizeof fig, "%s_%s_ns", name, variant_name[a]);
    report(fig, ma, "ns");
    snprintf(fig, sizeof fig, "%s_%s_ns", name, variant_name[b]);
    report(fig, mb, "ns");
    snprintf(fig, sizeof fig, "%s_%s_vs_%s_ratio", name, variant_name[b], variant_name[a]);
    double ratio = mb > 0 ? ma / mb : NAN;
    report(fig, ratio, "x");
    return ratio;
}

static int with_token(int (*fn)(void *), void *arg)
{
    tether_token *t;
    if (tether_token_new(&t, NULL, TETHER_NEVER))
        return ENOMEM;
    tether_token_enter(t);
    int rc = fn(arg);
    tether_token_leave(t);
    tether_token_free(t);
    return rc;
}

static int token_section(void *arg)
{
    (void)arg;
    compare("token_read", loop_read, V_TETHER, V_LAYER);
    compare("token_read", loop_read, V_LIBC, V_LAYER);
    compare("token_poll", loop_poll, V_TETHER, V_LAYER);
    compare("token_poll", loop_poll, V_LIBC, V_LAYER);
    return 0;
}

static void overhead_sections(void)
{
    if (pipe2(pipe_fds, O_CLOEXEC) || pipe2(ready_fds, O_CLOEXEC) ||
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sock_fds) ||
        libc_write(ready_fds[1], "r", 1) != 1) {
        perror("interpose-bench: setup");
        exit(1);
    }
    compare("notoken_read", loop_read, V_LIBC, V_LAYER);
    compare("notoken_recv", loop_recv, V_LIBC, V_LAYER);
    compare("notoken_poll", loop_poll, V_LIBC, V_LAYER);
    with_token(token_section, NULL);
}

/* ====================================================================== */
/* Real clients: lateness after a 200 ms scope deadline                   */

#ifdef TETHER_BENCH_CLIENTS

enum { DEADLINE_MS = 200 };

static char env_text[4096];
static char server_dir[256];

static const char *server_env(const char *key, char *out, size_t outlen)
{
    size_t klen = strlen(key);
    for (char *line = env_text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            size_t n = nl ? (size_t)(nl - line) - klen - 1 : strlen(line + klen + 1);
            if (n >= outlen)
                n = outlen - 1;
            memcpy(out, line + klen + 1, n);
            out[n] = '\0';
            return out;
        }
        line = nl ? nl + 1 : NULL;
    }
    return NULL;
}

static int env_port(const char *key)
{
    char v[32];
    return server_env(key, v, sizeof v) ? atoi(v) : -1;
}

/* The servers: from TETHER_CLIENTS_ENV, or started here. */
static bool servers_up(void)
{
    const char *path = getenv("TETHER_CLIENTS_ENV");
    char envpath[300];
    if (!path) {
        char tmpl[] = "/tmp/tether-bench-servers.XXXXXX";
        if (!mkdtemp(tmpl))
            return false;
        snprintf(server_dir, sizeof server_dir, "%s/s", tmpl);
        char cmd[1024];
        snprintf(cmd, sizeof cmd, "bash '%s' start '%s' '%s' >&2", TETHER_BENCH_SERVERS_SH,
                 server_dir, TETHER_BENCH_SILENT_SERVER);
        if (system(cmd) != 0) {
            fprintf(stderr, "interpose-bench: could not start the servers\n");
            return false;
        }
        snprintf(envpath, sizeof envpath, "%s/env", server_dir);
        path = envpath;
    }
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    size_t n = fread(env_text, 1, sizeof env_text - 1, f);
    env_text[n] = '\0';
    fclose(f);
    return true;
}

static void servers_down(void)
{
    if (!server_dir[0])
        return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "bash '%s' stop '%s' >&2; rmdir \"$(dirname '%s')\"",
             TETHER_BENCH_SERVERS_SH, server_dir, server_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "interpose-bench: stopping the servers failed\n");
}

/* Lateness of join after the scope's deadline, in ms; NaN if it failed. */
static double lateness_ms(int (*fn)(void *), void *arg)
{
    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(DEADLINE_MS) };
    tether_time_t deadline = tether_now() + tether_ms(DEADLINE_MS);
    if (tether_scope_open(&s, &o))
        return NAN;
    if (tether_spawn(s, fn, arg, NULL, NULL)) {
        tether_scope_join(s, NULL);
        tether_scope_free(s);
        return NAN;
    }
    tether_result r;
    tether_scope_join(s, &r);
    double late = (double)(tether_now() - deadline) / 1e6;
    tether_scope_free(s);
    return r.cause == TETHER_CAUSE_DEADLINE ? late : NAN;
}

static int redis_blpop(void *arg)
{
    redisReply *r = redisCommand(arg, "BLPOP tether:bench 0");
    if (r) {
        freeReplyObject(r);
        return 0;
    }
    return EIO;
}

static double run_redis(void)
{
    redisContext *c = redisConnect("127.0.0.1", env_port("REDIS_PORT"));
    if (!c || c->err) {
        redisFree(c);
        return NAN;
    }
    double late = lateness_ms(redis_blpop, c);
    redisFree(c);
    return late;
}

static size_t curl_sink(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

static int curl_perform(void *arg)
{
    return curl_easy_perform(arg) == CURLE_OK ? 0 : EIO;
}

static double run_curl(void)
{
    CURL *h = curl_easy_init();
    if (!h)
        return NAN;
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/", env_port("HTTP_PORT"));
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, curl_sink);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    double late = lateness_ms(curl_perform, h);
    curl_easy_cleanup(h);
    return late;
}

static int pq_sleep(void *arg)
{
    PGresult *r = PQexec(arg, "SELECT pg_sleep(60)");
    int rc = r && PQresultStatus(r) == PGRES_TUPLES_OK ? 0 : EIO;
    PQclear(r);
    return rc;
}

static double run_pq(void)
{
    char info[256], user[64];
    if (!server_env("PG_USER", user, sizeof user))
        return NAN;
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d user=%s dbname=postgres",
             env_port("PG_PORT"), user);
    PGconn *c = PQconnectdb(info);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "interpose-bench: %s", PQerrorMessage(c));
        PQfinish(c);
        return NAN;
    }
    double late = lateness_ms(pq_sleep, c);
    PQfinish(c);
    return late;
}

enum { POOL_JOBS = 8 };
struct pool_job {
    tether_token *token;
    int fd; /* -1: a g_usleep job */
};

static void pool_fn(gpointer data, gpointer user)
{
    (void)user;
    struct pool_job *j = data;
    tether_token_enter(j->token);
    if (j->fd >= 0) {
        char b[8];
        (void)!read(j->fd, b, sizeof b); /* the unmodified job: plain read() */
    } else {
        g_usleep(10 * G_USEC_PER_SEC); /* ... or g_usleep */
    }
    tether_token_leave(j->token);
}

static int glib_child(void *arg)
{
    int(*pipes)[2] = arg;
    struct pool_job jobs[POOL_JOBS];
    for (int i = 0; i < POOL_JOBS; i++) {
        jobs[i].fd = i % 2 ? -1 : pipes[i][0];
        if (tether_token_new(&jobs[i].token, tether_current(), TETHER_NEVER))
            return ENOMEM;
    }
    GThreadPool *pool = g_thread_pool_new(pool_fn, NULL, POOL_JOBS, TRUE, NULL);
    for (int i = 0; i < POOL_JOBS; i++)
        g_thread_pool_push(pool, &jobs[i], NULL);
    g_thread_pool_free(pool, FALSE, TRUE);
    for (int i = 0; i < POOL_JOBS; i++)
        tether_token_free(jobs[i].token);
    return tether_check();
}

static double run_glib(void)
{
    int pipes[POOL_JOBS][2];
    for (int i = 0; i < POOL_JOBS; i++)
        if (pipe2(pipes[i], O_CLOEXEC))
            return NAN;
    double late = lateness_ms(glib_child, pipes);
    for (int i = 0; i < POOL_JOBS; i++) {
        close(pipes[i][0]);
        close(pipes[i][1]);
    }
    return late;
}

static void client_section(void)
{
    if (!servers_up()) {
        fprintf(stderr, "interpose-bench: no servers: client figures not measured\n");
        failures++;
        return;
    }
    curl_global_init(CURL_GLOBAL_DEFAULT);
    static const struct {
        const char *name, *needs;
        double (*run)(void);
    } clients[] = {
        { "hiredis_blpop", "REDIS_PORT", run_redis },
        { "curl_silent", "HTTP_PORT", run_curl },
        { "libpq_pg_sleep", "PG_PORT", run_pq },
        { "glib_pool", NULL, run_glib },
    };
    enum { MAX_RUNS = 15 };
    int runs = quick ? 3 : 11;
    for (size_t k = 0; k < sizeof clients / sizeof clients[0]; k++) {
        if (clients[k].needs && env_port(clients[k].needs) < 0) {
            fprintf(stderr, "interpose-bench: %s: server not available, skipped\n",
                    clients[k].name);
            continue;
        }
        double late[MAX_RUNS];
        int n = 0;
        for (int r = 0; r < runs; r++) {
            double v = clients[k].run();
            if (isnan(v)) {
                fprintf(stderr, "interpose-bench: %s: run %d failed\n", clients[k].name, r);
                failures++;
                continue;
            }
            late[n++] = v;
        }
        if (n == 0)
            continue;
        char fig[64];
        double mx = max_of(late, n);
        snprintf(fig, sizeof fig, "late_%s_median_ms", clients[k].name);
        report(fig, median(late, n), "ms");
        snprintf(fig, sizeof fig, "late_%s_max_ms", clients[k].name);
        report(fig, mx, "ms");
    }
    curl_global_cleanup();
    servers_down();
}

#endif /* TETHER_BENCH_CLIENTS */

/* ====================================================================== */
/* Targets                                                                */

static void print_targets(void)
{
    static const struct {
        const char *name;
        bool at_most;
        double bound;
    } targets[] = {
        { "notoken_read_layer_vs_libc_ratio", false, 0.98 },
        { "notoken_recv_layer_vs_libc_ratio", false, 0.98 },
        { "notoken_poll_layer_vs_libc_ratio", false, 0.98 },
        { "token_read_layer_vs_tether_ratio", false, 0.98 },
        { "token_poll_layer_vs_tether_ratio", false, 0.98 },
        { "late_hiredis_blpop_max_ms", true, 1.0 },
        { "late_curl_silent_max_ms", true, 1.0 },
        { "late_libpq_pg_sleep_max_ms", true, 1.0 },
        { "late_glib_pool_max_ms", true, 1.0 },
    };
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        const struct figure *f = find_figure(targets[i].name);
        if (!f)
            continue;
        double v = f->value;
        bool met = targets[i].at_most ? v <= targets[i].bound : v >= targets[i].bound;
        printf("target %s %s (%.3f vs %s %.2f)\n", targets[i].name, met ? "met" : "missed", v,
               targets[i].at_most ? "<=" : ">=", targets[i].bound);
    }
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            quick = true;
        } else {
            fprintf(stderr, "usage: %s [--quick]\n", argv[0]);
            return 2;
        }
    }
    signal(SIGPIPE, SIG_IGN);
    find_libc();
    report_load("start");
    overhead_sections();
#ifdef TETHER_BENCH_CLIENTS
    client_section();
#else
    printf("# built without hiredis/libcurl/libpq/glib: no client lateness figures\n");
#endif
    report_load("end");
    print_targets();
    return failures ? 1 : 0;
}
