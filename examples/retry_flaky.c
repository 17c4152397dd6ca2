/*
 * retry_flaky — tether_retry against a flaky local server.
 *
 * A small TCP server on 127.0.0.1 runs in the background of the program's
 * top-level scope. A client asks it for a greeting with tether_retry, under
 * a 3 s deadline, with exponential backoff (equal jitter, fixed seed) and a
 * 300 ms timeout per attempt, printing each attempt and each delay.
 *
 *   retry_flaky [flaky|down]
 *     flaky  (default) the server misbehaves on the first three requests and
 *            then answers:
 *              1. resets the connection             -> ECONNRESET, retried
 *              2. answers "BUSY 400" (retry after 400 ms)
 *                                                   -> EAGAIN, retried no
 *                                                      sooner than 400 ms
 *              3. stalls for 10 s                   -> the attempt's own
 *                                                      timeout: ETIMEDOUT,
 *                                                      retried
 *              4. answers "OK hello"                -> success
 *     down   nothing listens on the port: every attempt is refused
 *            (ECONNREFUSED) until the next backoff delay would cross the
 *            deadline; the retry then returns ETIMEDOUT at once instead of
 *            sleeping uselessly.
 *
 * It checks its own run and exits 1 if anything unexpected happened.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEADLINE_MS        3000
#define ATTEMPT_TIMEOUT_MS 300
#define RETRY_AFTER_MS     400

static bool down_mode;
static tether_time_t start;

static void say(const char *who, const char *fmt, ...)
{
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%5lld ms  %-7s %s\n", (long long)((tether_now() - start) / 1000000), who, msg);
}

static int unexpected(const char *what)
{
    fprintf(stderr, "UNEXPECTED: %s\n", what);
    return 1;
}

/* Read one '\n'-terminated line with tether_read (a cancellation point).
 * Returns its length ('\n' replaced by '\0'), or -1 with errno; a peer that
 * hangs up first is ECONNRESET. */
static ssize_t read_line(int fd, char *buf, size_t size)
{
    for (size_t len = 0;;) {
        ssize_t n = tether_read(fd, buf + len, size - 1 - len);
        if (n <= 0) {
            if (n == 0)
                errno = ECONNRESET;
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

/* One request at a time, misbehaving on purpose for the first three. */
static void serve(int fd, unsigned n)
{
    char req[32];
    if (read_line(fd, req, sizeof req) < 0)
        return;
    switch (n) {
    case 1: {
        /* Close with a reset instead of an orderly shutdown. */
        struct linger lg = { .l_onoff = 1, .l_linger = 0 };
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        say("server", "request %u: resetting the connection", n);
        return;
    }
    case 2: {
        char reply[32];
        int len = snprintf(reply, sizeof reply, "BUSY %d\n", RETRY_AFTER_MS);
        say("server", "request %u: busy, retry after %d ms", n, RETRY_AFTER_MS);
        tether_write(fd, reply, (size_t)len);
        return;
    }
    case 3:
        say("server", "request %u: stalling for 10 s", n);
        /* The client gives up first and closes; then the next connection
         * waits in the listen backlog until this sleep ends — so wait for
         * the client's hang-up instead of sleeping blindly. */
        {
            struct pollfd p = { .fd = fd, .events = POLLIN };
            tether_poll(&p, 1, 10000);
        }
        say("server", "request %u: the client hung up", n);
        return;
    default:
        say("server", "request %u: OK", n);
        tether_write(fd, "OK hello\n", 9);
        return;
    }
}

/* A background child of the top-level scope: it is halted (and its poll
 * cancelled) once the client is done. */
static int server(void *arg)
{
    int lfd = (int)(intptr_t)arg, rc = 0;
    for (unsigned n = 1;; n++) {
        struct pollfd p = { .fd = lfd, .events = POLLIN };
        if (tether_poll(&p, 1, -1) < 0) {
            rc = errno; /* ECANCELED once halted */
            break;
        }
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            n--;
            continue;
        }
        serve(fd, n);
        close(fd);
    }
    close(lfd);
    say("server", "halted (%s), cleanup done", strerror(rc));
    return rc;
}

/* ---- The client --------------------------------------------------------- */

struct client {
    in_port_t port; /* network byte order */
    unsigned attempt;
    char reply[64];
    tether_retry_event events[32];
    unsigned nevents;
    tether_time_t next_planned; /* when the next attempt should start */
    int64_t max_late_ns;        /* the latest wakeup seen */
    tether_retry_result result;
};

/* One attempt: connect, ask, read one line. 0 for "OK", else an errno. */
static int fetch_greeting(void *arg)
{
    struct client *c = arg;
    c->attempt++;
    if (c->next_planned && tether_now() - c->next_planned > c->max_late_ns)
        c->max_late_ns = tether_now() - c->next_planned;
    say("client", "attempt %u", c->attempt);
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = c->port,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), rc = 0;
    if (fd < 0)
        return errno;
    /* A loopback connect completes (or is refused) at once; the read is
     * where an attempt waits, so that is tether's. */
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || tether_write(fd, "HELLO\n", 6) < 0 ||
        read_line(fd, c->reply, sizeof c->reply) < 0) {
        rc = errno;
    } else if (strncmp(c->reply, "BUSY ", 5) == 0) {
        /* The server's hint: the next attempt no sooner than this. */
        tether_retry_after(tether_ms(atoi(c->reply + 5)));
        rc = EAGAIN;
    } else if (strncmp(c->reply, "OK ", 3) != 0) {
        rc = EPROTO; /* not transient: tether_retry would stop */
    }
    close(fd);
    say("client", "attempt %u: %s", c->attempt, rc ? strerror(rc) : c->reply);
    return rc;
}

static void on_retry(const tether_retry_event *ev, void *ctx)
{
    struct client *c = ctx;
    if (c->nevents < sizeof c->events / sizeof c->events[0])
        c->events[c->nevents++] = *ev;
    c->next_planned = tether_now() + ev->delay_ns;
    say("client", "attempt %u failed (%s%s)%s; next in %lld ms", ev->attempt, strerror(ev->error),
        ev->attempt_timed_out ? ", its own timeout" : "",
        ev->retry_after_ns ? ", server asked to wait" : "", (long long)(ev->delay_ns / 1000000));
}

static int client(void *arg)
{
    struct client *c = arg;
    tether_retry_opts opts = {
        .initial_delay_ns = tether_ms(100),
        .max_delay_ns = tether_ms(1000),
        .jitter = TETHER_RETRY_JITTER_EQUAL,
        .seed = 2024,                           /* the same delays on every run */
        .max_attempts = TETHER_RETRY_UNLIMITED, /* the deadline bounds it */
        .attempt_timeout_ns = tether_ms(ATTEMPT_TIMEOUT_MS),
        .on_retry = on_retry,
        .ctx = c,
    };
    return tether_retry(fetch_greeting, c, &opts, &c->result);
}

/* ---- Putting it together ------------------------------------------------ */

/* The top-level scope's body: start the server (or, when down, only hold a
 * port nobody listens on) and run the client under the deadline. */
static int app_main(tether_scope *app, void *arg)
{
    struct client *c = arg;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t salen = sizeof sa;
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), rc;
    if (lfd < 0)
        return errno;
    /* Port 0: the kernel picks a free one. Bound but not listening refuses
     * connections: that is the "down" server. */
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || (!down_mode && listen(lfd, 16) < 0) ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) < 0) {
        rc = errno;
        close(lfd);
        return rc;
    }
    c->port = sa.sin_port;
    if (down_mode) {
        say("app", "nothing listens on 127.0.0.1:%d", ntohs(sa.sin_port));
    } else {
        tether_spawn_opts so = { .name = "server", .background = true };
        if ((rc = tether_spawn(app, server, (void *)(intptr_t)lfd, &so, NULL)) != 0) {
            close(lfd);
            return rc;
        }
        say("app", "server (background) on 127.0.0.1:%d", ntohs(sa.sin_port));
    }
    bool fired;
    tether_with_timeout(tether_ms(DEADLINE_MS), client, c, &fired);
    if (down_mode)
        close(lfd);
    return 0; /* the result is judged by main */
}

int main(int argc, char **argv)
{
    if (argc > 2 || (argc == 2 && strcmp(argv[1], "flaky") && strcmp(argv[1], "down"))) {
        fprintf(stderr, "usage: %s [flaky|down]\n", argv[0]);
        return 2;
    }
    down_mode = argc == 2 && strcmp(argv[1], "down") == 0;
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    printf("retry_flaky %s (tether %s): deadline %d ms, %d ms per attempt, "
           "backoff 100 ms doubling to 1 s, equal jitter\n\n",
           down_mode ? "down" : "flaky", tether_version(), DEADLINE_MS, ATTEMPT_TIMEOUT_MS);
    start = tether_now();

    struct client c = { .attempt = 0 };
    tether_result app;
    tether_scope_opts app_opts = { .name = "app" };
    int rc = tether_scope_run(&app_opts, app_main, &c, &app);
    tether_time_t elapsed = tether_now() - start;
    if (rc || app.outcome != TETHER_OUTCOME_OK) {
        fprintf(stderr, "%s\n", strerror(rc ? rc : app.error));
        return unexpected("the program itself failed");
    }
    const tether_retry_result *r = &c.result;
    printf("\nresult:   %s\n", r->error ? strerror(r->error) : "success");
    printf("stopped:  %s\n", tether_retry_stop_name(r->stop));
    printf("attempts: %u\n", r->attempts);
    printf("slept:    %.1f ms in backoff\n", (double)r->slept_ns / 1e6);
    printf("elapsed:  %.1f ms\n", (double)elapsed / 1e6);

    int bad = 0;
    if (!down_mode) {
        if (r->error != 0 || r->stop != TETHER_RETRY_STOP_SUCCEEDED || r->attempts != 4)
            bad |= unexpected("the fourth attempt should have succeeded");
        else if (strcmp(c.reply, "OK hello") != 0)
            bad |= unexpected("another reply than the greeting");
        if (c.nevents != 3 || c.events[0].error != ECONNRESET || c.events[1].error != EAGAIN ||
            c.events[2].error != ETIMEDOUT)
            bad |= unexpected("the attempts failed otherwise than the server misbehaved");
        else if (c.events[1].delay_ns < tether_ms(RETRY_AFTER_MS))
            bad |= unexpected("the server's retry-after hint was not honoured");
        else if (!c.events[2].attempt_timed_out)
            bad |= unexpected("the stalled attempt was not stopped by its own timeout");
    } else {
        if (r->error != ETIMEDOUT || r->stop != TETHER_RETRY_STOP_DEADLINE || r->attempts < 3)
            bad |= unexpected("the retry should have stopped at the deadline");
        for (unsigned i = 0; i < c.nevents; i++)
            if (c.events[i].error != ECONNREFUSED)
                bad |= unexpected("an attempt failed otherwise than refused");
        /* A sleep that would have crossed the deadline was refused, so the
         * call returned before it — unless a wakeup was so late (a loaded
         * machine) that it overshot the deadline by itself. */
        if (c.max_late_ns > tether_ms(50))
            printf("note:     wakeups up to %.1f ms late (a loaded machine): "
                   "not judging the early return\n",
                   (double)c.max_late_ns / 1e6);
        else if (elapsed >= tether_ms(DEADLINE_MS))
            bad |= unexpected("it slept up to the deadline instead of returning early");
    }
    if (elapsed > tether_sec(10))
        bad |= unexpected("too slow");
    printf("check:    %s\n", bad ? "FAILED" : "as expected");
    return bad;
}
