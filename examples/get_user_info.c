/*
 * get_user_info — tether's flagship example. A request handler fetches a
 * user's profile and orders in parallel, with a spinner and a heartbeat beside
 * them, in one fail-fast scope with a 500 ms deadline, from a real TCP server
 * on 127.0.0.1 that runs in the background of the program's top-level scope.
 *
 *   get_user_info [ok|fail|stall]
 *     ok     (default) both fetches succeed; the background children are halted
 *     fail   the server answers the orders request with ERR: that fetch fails
 *            with EIO and its siblings are canceled
 *     stall  the server stalls the orders request for 10 s: the deadline fires
 *
 * It checks its own run and exits 1 if anything unexpected happened.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { DEADLINE_MS = 500 }; /* the request handler's deadline */

/* What the server does in each mode, and how the request must then end. */
static const struct mode {
    const char *name;
    int profile_ms, orders_ms; /* the server's delay before it answers */
    bool orders_fail;          /* answer the orders request with ERR */
    tether_outcome outcome;
    tether_cause cause;
} modes[] = {
    { "ok", 60, 120, false, TETHER_OUTCOME_OK, TETHER_CAUSE_SCOPE_FINISHED },
    { "fail", 300, 40, true, TETHER_OUTCOME_FAILED, TETHER_CAUSE_SIBLING_FAILED },
    { "stall", 60, 10000, false, TETHER_OUTCOME_DEADLINE_EXCEEDED, TETHER_CAUSE_DEADLINE },
}, *mode = &modes[0];
static tether_time_t start;

/* Every duration goes through ms(): a slow test run (a sanitizer, a loaded
 * machine) stretches them all by TETHER_TEST_TIME_FACTOR, as the tests do. */
static double time_factor = 1.0;
static int64_t ms(int64_t n)
{
    return (int64_t)((double)tether_ms(n) * time_factor);
}

/* One timeline line: milliseconds since start, who, what. */
static void say(const char *who, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%4lld ms  %-11s %s\n", (long long)((tether_now() - start) / 1000000), who, msg);
}

/* Why the calling child was canceled. Its own token's cause is usually
 * "parent" (cancellation flows down the token tree); the root cause names the
 * decision that started it: a deadline, a failed sibling, a halt. */
static const char *why(void)
{
    return tether_cause_name(tether_token_root_cause(tether_current()));
}

/* Read one '\n'-terminated line with tether_read, a cancellation point.
 * Returns its length ('\n' replaced by '\0'), or -1 with errno. */
static ssize_t read_line(int fd, char *buf, size_t size)
{
    for (size_t len = 0;;) {
        ssize_t n = tether_read(fd, buf + len, size - 1 - len);
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET; /* the peer hung up before a whole line */
            return -1;
        }
        len += (size_t)n;
        buf[len] = '\0';
        char *nl = strchr(buf, '\n');
        if (nl) {
            *nl = '\0';
            return nl - buf;
        }
        if (len == size - 1) {
            errno = EMSGSIZE;
            return -1;
        }
    }
}

/* ---- The server --------------------------------------------------------- */

/* One connection: read "GET <resource>", wait the mode's delay, answer. */
static int serve_connection(void *arg)
{
    int fd = (int)(intptr_t)arg, rc = 0;
    char req[64], who[32] = "connection";
    if (read_line(fd, req, sizeof req) < 0) {
        rc = errno;
        goto out;
    }
    const char *res = strncmp(req, "GET ", 4) == 0 ? req + 4 : "?";
    bool orders = strcmp(res, "orders") == 0;
    int delay_ms = orders ? mode->orders_ms : mode->profile_ms;
    snprintf(who, sizeof who, "srv/%.20s", res);
    if (delay_ms > 1000)
        say(who, "stalling for %.0f ms", delay_ms * time_factor);
    /* A cancellable sleep: halting the server wakes its connections at once. */
    if (tether_sleep_for(ms(delay_ms)) < 0) {
        rc = errno;
        say(who, "canceled while waiting (%s)", why());
        goto out;
    }
    const char *reply = orders && mode->orders_fail   ? "ERR orders database unavailable\n"
                        : orders                      ? "OK 3 orders, the last one shipped\n"
                        : strcmp(res, "profile") == 0 ? "OK Ada Lovelace <ada@example.org>\n"
                                                      : "ERR no such resource\n";
    say(who, "answering %.*s", (int)strcspn(reply, " "), reply);
    if (tether_write(fd, reply, strlen(reply)) < 0)
        rc = errno;
out:
    close(fd);
    say(who, "cleanup done");
    return rc;
}

/* The server: a background child of the top-level scope. It owns the
 * listening socket and a supervisor scope with one child per connection (a
 * failed connection does not stop the server). Halting the server cancels its
 * token, and with it every connection's token below. */
static int server(void *arg)
{
    int lfd = (int)(intptr_t)arg, rc = ENOMEM;
    tether_scope_opts conn_opts = { .policy = TETHER_POLICY_SUPERVISOR, .name = "connections" };
    {
        /* Below the server's token; canceled if need be, joined and freed at
         * the closing brace, so no connection outlives the server. */
        TETHER_SCOPE_GUARD(conns, &conn_opts);
        while (conns) {
            struct pollfd p = { .fd = lfd, .events = POLLIN };
            if (tether_poll(&p, 1, -1) < 0) { /* ECANCELED once halted */
                rc = errno;
                say("server", "canceled (%s), waiting for its connections", why());
                break;
            }
            /* The listener is non-blocking: a connection that went away after
             * poll makes accept fail with EAGAIN instead of blocking. */
            int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
            tether_spawn_opts o = { .name = "connection" };
            if (fd >= 0 && tether_spawn(conns, serve_connection, (void *)(intptr_t)fd, &o, NULL))
                close(fd);
        }
    }
    close(lfd);
    say("server", "cleanup done");
    return rc;
}

/* ---- The request handler ------------------------------------------------ */

struct fetch {
    const char *resource;
    in_port_t port; /* network byte order */
    char reply[96];
};

/* Foreground: fetch one resource over a real socket. */
static int fetch(void *arg)
{
    struct fetch *f = arg;
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = f->port,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char req[64];
    int len = snprintf(req, sizeof req, "GET %s\n", f->resource), rc = 0;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return errno;
    /* A loopback connect completes at once (the kernel finishes the handshake
     * before accept), so the plain call will do; for a remote peer use
     * tether_connect. The write and the read are where this child waits, so
     * they are tether's. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        tether_write(fd, req, (size_t)len) < 0 || read_line(fd, f->reply, sizeof f->reply) < 0) {
        rc = errno;
        if (rc == ECANCELED || rc == ETIMEDOUT)
            say(f->resource, "canceled (%s): %s", why(), strerror(rc));
        else
            say(f->resource, "failed: %s", strerror(rc));
    } else if (strncmp(f->reply, "OK ", 3) != 0) {
        say(f->resource, "server said \"%s\": failing with EIO", f->reply);
        rc = EIO; /* fail-fast: the scope cancels the siblings */
    } else {
        say(f->resource, "got \"%s\"", f->reply + 3);
    }
    close(fd);
    say(f->resource, "cleanup done");
    return rc;
}

/* Background: print the next frame every period until canceled. */
struct ticker {
    const char *name;
    int period_ms;
    unsigned nframes;
    const char *frames[4];
};
static struct ticker spin = { "spinner", 50, 4, { "|", "/", "-", "\\" } };
static struct ticker beat = { "heartbeat", 100, 1, { "heartbeat" } };

static int ticker(void *arg)
{
    const struct ticker *t = arg;
    for (unsigned i = 0; tether_sleep_for(ms(t->period_ms)) == 0; i++)
        say(t->name, "%s", t->frames[i % t->nframes]);
    int rc = errno; /* ECANCELED, or ETIMEDOUT at the scope's deadline */
    say(t->name, "canceled (%s), cleanup done", why());
    return rc; /* a cancellation error: counted as canceled, not failed */
}

/* Four children in one fail-fast scope with a deadline. */
static int get_user_info(in_port_t port, tether_result *res)
{
    struct fetch profile = { .resource = "profile", .port = port };
    struct fetch orders = { .resource = "orders", .port = port };
    struct {
        int (*fn)(void *);
        void *arg;
        tether_spawn_opts opts;
    } kids[] = {
        { ticker, &spin, { .name = "spinner", .background = true } },
        { ticker, &beat, { .name = "heartbeat", .background = true } },
        { fetch, &profile, { .name = "profile" } },
        { fetch, &orders, { .name = "orders" } },
    };
    tether_scope_opts opts = { .policy = TETHER_POLICY_FAIL_FAST,
                               .timeout_ns = ms(DEADLINE_MS),
                               .name = "get_user_info" };
    TETHER_SCOPE_GUARD(req, &opts); /* freed on every path out of this block */
    for (size_t i = 0; i < sizeof kids / sizeof kids[0]; i++) {
        int rc = tether_spawn(req, kids[i].fn, kids[i].arg, &kids[i].opts, NULL);
        if (rc)
            say("handler", "could not spawn %s: %s", kids[i].opts.name, strerror(rc));
        else
            say("handler", "spawned %s%s", kids[i].opts.name,
                kids[i].opts.background ? " (background)" : "");
    }
    /* Wait for the foreground children (the fetches); then halt the
     * background ones (cause scope_finished) and wait for their cleanup. */
    int rc = tether_scope_join(req, res);
    if (rc == 0)
        say("handler", "scope joined: %s", tether_outcome_name(res->outcome));
    return rc;
}

/* ---- Putting it together ------------------------------------------------ */

/* The top-level scope's body: start the server, handle one request. */
static int app_main(tether_scope *app, void *arg)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t salen = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), rc;
    if (lfd < 0)
        return errno;
    /* Port 0: the kernel picks a free one; getsockname says which. */
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 16) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
        rc = errno;
        close(lfd);
        return rc;
    }
    tether_spawn_opts so = { .name = "server", .background = true };
    if ((rc = tether_spawn(app, server, (void *)(intptr_t)lfd, &so, NULL)) != 0) {
        close(lfd);
        return rc;
    }
    say("app", "spawned server (background) on 127.0.0.1:%d", ntohs(sa.sin_port));
    return get_user_info(sa.sin_port, arg);
    /* Returning ends the top-level scope's foreground work: tether_scope_run
     * then halts the server and waits for it and its connections. */
}

/* Threads in this process, from /proc/self/task. */
static int live_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    int n = 0;
    if (!d)
        return -1;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

static void *no_op(void *arg)
{
    return arg;
}

/* The threads this program has before it starts any work: main, plus any a
 * runtime keeps for itself (a sanitizer's helper thread, however the program
 * was built). ThreadSanitizer starts its helper at the first pthread_create,
 * so one thread is started and joined before counting. -1 if unknown. */
static int baseline_threads(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, no_op, NULL) != 0 || pthread_join(t, NULL) != 0)
        return -1;
    /* A joined thread can stay listed for a moment while the kernel finishes
     * removing it: wait for the count to settle. */
    int n = live_threads(), prev = -1;
    for (int i = 0; i < 100 && n != prev; i++) {
        prev = n;
        tether_sleep_for(tether_ms(2));
        n = live_threads();
    }
    return n;
}

static int unexpected(const char *what)
{
    fprintf(stderr, "UNEXPECTED: %s\n", what);
    return 1;
}

int main(int argc, char **argv)
{
    for (size_t i = 0; argc == 2 && i < sizeof modes / sizeof modes[0]; i++)
        if (strcmp(argv[1], modes[i].name) == 0)
            mode = &modes[i];
    if (argc > 2 || (argc == 2 && strcmp(argv[1], mode->name) != 0)) {
        fprintf(stderr, "usage: %s [ok|fail|stall]\n", argv[0]);
        return 2;
    }
    const char *factor = getenv("TETHER_TEST_TIME_FACTOR");
    if (factor && strtod(factor, NULL) > 1.0)
        time_factor = strtod(factor, NULL);
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a peer that hung up is an EPIPE, not a kill */
    printf("get_user_info %s (tether %s): server delays profile %.0f ms, orders %.0f ms%s; "
           "deadline %.0f ms\n\n",
           mode->name, tether_version(), mode->profile_ms * time_factor,
           mode->orders_ms * time_factor, mode->orders_fail ? " then ERR" : "",
           DEADLINE_MS * time_factor);
    int baseline = baseline_threads();
    start = tether_now();

    tether_result req, app;
    tether_scope_opts app_opts = { .name = "app" };
    int rc = tether_scope_run(&app_opts, app_main, &req, &app);
    /* Here every thread this program started has exited and been joined. */
    tether_time_t elapsed = tether_now() - start;
    if (rc || app.outcome != TETHER_OUTCOME_OK) {
        fprintf(stderr, "%s\n", strerror(rc ? rc : app.error));
        return unexpected("the program itself failed");
    }
    /* tether's timer thread (it fired the deadlines above) stays until
     * tether_trim stops it. A joined thread can stay listed for a moment
     * while the kernel finishes removing it: give the count a few
     * milliseconds to settle. */
    tether_trim();
    int threads = live_threads();
    for (int i = 0; i < 100 && threads != baseline; i++, threads = live_threads())
        tether_sleep_for(tether_ms(1));

    printf("\noutcome:      %s\n", tether_outcome_name(req.outcome));
    printf("cause:        %s\n", tether_cause_name(req.cause));
    printf("error:        %s%s%s\n", req.error ? strerror(req.error) : "none",
           req.error_task >= 0 ? " from " : "", req.error_task >= 0 ? req.error_task_name : "");
    printf("children:     %u spawned, %u succeeded (%u late), %u failed, %u canceled\n",
           req.spawned, req.succeeded, req.late_succeeded, req.failed, req.canceled);
    printf("convergence:  %.1f ms (first cancel request to last child's exit)\n",
           (double)req.convergence_ns / 1e6);
    printf("live threads: %d (%d at start)\n", threads, baseline);

    /* The self-check: what this mode must show. */
    int bad = 0;
    if (req.outcome != mode->outcome || req.cause != mode->cause)
        bad |= unexpected("another outcome or cause than this mode's");
    if (req.spawned != 4 || req.succeeded + req.failed + req.canceled != 4)
        bad |= unexpected("the children's counts do not add up");
    if (baseline < 0 || threads != baseline)
        bad |= unexpected("threads left behind: more alive than at start");
    if (elapsed > ms(5000))
        bad |= unexpected("too slow: the stalled request was not cut short");
    printf("check:        %s\n", bad ? "FAILED" : "as expected for this mode");
    return bad;
}
