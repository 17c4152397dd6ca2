/*
 * service — an HTTP/1.1 service on 127.0.0.1 built on tether, the example of
 * docs/guide.md put together.
 *
 *   service [--port N] [--slo-ms N] [--max-conns N]
 *
 * Every request runs in a scope of its own whose deadline is the endpoint's
 * SLO budget (--slo-ms, default 250 ms) or the client's grpc-timeout header,
 * whichever is tighter. It fans out to two backends, "users" and "stock",
 * over real TCP connections; the backends are part of this program (each a
 * listener with a thread per connection) and get the request's remaining
 * time with each call, so they stop when it is no longer wanted.
 *
 *   GET /a?users=M&stock=M   fail-fast: both answers or an error
 *   GET /b?users=M&stock=M   supervisor: a partial answer, marked, when one
 *                            backend fails (X-Partial, "partial": true)
 *   GET /metrics             Prometheus text format
 *
 * M tells that backend what to do with this call: ok (the default), fail
 * (it answers ERR) or stall (it waits until the call's deadline). Status:
 * 200, 502 (a backend failed), 504 (out of time), 503 (shutting down), 400,
 * 404, 405. kill -USR2 writes the scope dump to stderr; SIGTERM or SIGINT
 * cancel every request in flight, join their scopes, stop the backends and
 * exit 0. examples/service_test.sh drives it with curl --parallel.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

enum {
    CHILD_MAX_MS = 120,   /* a backend call's own timeout, at most ... */
    CHILD_MARGIN_MS = 20, /* ... and this much below the request's time left */
    BACKEND_OK_MS = 2,    /* how long a backend takes to answer */
    STALL_MS = 30000,     /* how long a stalled backend would take */
    WIRE_MS = 5,          /* a backend gets the time left minus this, for the answer's trip */
    IDLE_MS = 30000,      /* a keep-alive connection's idle limit */
    HEAD_MAX = 8192,      /* the largest request head accepted */
};

static struct {
    int slo_ms;
    unsigned max_conns;
    in_port_t users_port, stock_port; /* network byte order */
} cfg = { .slo_ms = 250, .max_conns = 64 };

/* ---- Small helpers -------------------------------------------------------- */

/* Read one '\n'-terminated line; returns its length ('\n' dropped) or -1. */
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

static int listen_loopback(int port, in_port_t *bound)
{
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof sa;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 512) < 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    *bound = sa.sin_port;
    return fd;
}

/* ---- The backends ----------------------------------------------------------- */

struct backend {
    const char *name;
    int lfd;
};

struct backend_call {
    int fd;
    char mode[16];
};

static int backend_work(void *arg)
{
    struct backend_call *c = arg;
    if (strcmp(c->mode, "stall") == 0)
        return tether_sleep_for(tether_ms(STALL_MS)) < 0 ? errno : 0;
    return tether_sleep_for(tether_ms(BACKEND_OK_MS)) < 0 ? errno : 0;
}

/* One call: "GET <name> <ok|fail|stall> <grpc-timeout> <request id>\n"
 * (the id becomes this call's context, for the dump), answered with
 * "OK ...\n" or "ERR ...\n". The work runs under the budget the caller
 * sent, so a stall ends when the caller stops waiting: then the answer is
 * "ERR deadline exceeded". */
static int backend_connection(void *arg)
{
    struct backend_call c = { .fd = (int)(intptr_t)arg };
    char line[160], name[16], budget[TETHER_BUDGET_SIZE], id[48], reply[96];
    int64_t ns;
    int rc = 0;
    if (read_line(c.fd, line, sizeof line) < 0) {
        rc = errno;
    } else if (sscanf(line, "GET %15s %15s %9s %47s", name, c.mode, budget, id) != 4 ||
               tether_budget_parse_ns(budget, strlen(budget), &ns) != 0 ||
               tether_token_set_context(tether_current(), id) != 0) {
        snprintf(reply, sizeof reply, "ERR bad request\n");
        rc = tether_write(c.fd, reply, strlen(reply)) < 0 ? errno : 0;
    } else if (strcmp(c.mode, "fail") == 0) {
        snprintf(reply, sizeof reply, "ERR %s unavailable\n", name);
        rc = tether_write(c.fd, reply, strlen(reply)) < 0 ? errno : 0;
    } else if ((rc = tether_with_timeout(ns, backend_work, &c, NULL)) == 0 || rc == ETIMEDOUT) {
        if (rc == 0)
            snprintf(reply, sizeof reply, "OK %s answered\n", name);
        else
            snprintf(reply, sizeof reply, "ERR deadline exceeded\n");
        rc = tether_write(c.fd, reply, strlen(reply)) < 0 ? errno : 0;
    }
    close(c.fd);
    /* A caller that hung up is an ordinary end of a call. */
    return rc == ECONNRESET || rc == EPIPE ? 0 : rc;
}

/* A backend: a background child of the service's scope, a thread per
 * connection in a supervisor scope below it. */
static int backend(void *arg)
{
    struct backend *b = arg;
    char name[32];
    snprintf(name, sizeof name, "backend %s", b->name);
    tether_scope_opts o = { .policy = TETHER_POLICY_SUPERVISOR,
                            .name = name,
                            .reuse_threads = true };
    int rc = 0;
    {
        TETHER_SCOPE_GUARD(calls, &o);
        while (calls) {
            int fd = tether_accept4(b->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0) {
                if (errno == ECANCELED || errno == ETIMEDOUT) {
                    rc = errno;
                    break;
                }
                continue; /* ECONNABORTED, EMFILE...: keep serving */
            }
            tether_spawn_opts so = { .name = b->name };
            if (tether_spawn(calls, backend_connection, (void *)(intptr_t)fd, &so, NULL) != 0)
                close(fd);
        }
    }
    return rc; /* main closes the listener */
}

/* ---- Counters for /metrics ------------------------------------------------- */

enum { EP_A, EP_B, EP_METRICS, EP_OTHER, EP_COUNT };
static const char *const ep_names[EP_COUNT] = { "/a", "/b", "/metrics", "other" };
static const int codes[] = { 200, 400, 404, 405, 431, 502, 503, 504 };
enum { NCODES = sizeof codes / sizeof codes[0] };
static const double buckets[] = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1 };
enum { NBUCKETS = sizeof buckets / sizeof buckets[0] };

static struct {
    atomic_ulong requests[EP_COUNT][NCODES];
    atomic_ulong partial[EP_COUNT];
    atomic_ulong le[EP_COUNT][NBUCKETS + 1]; /* latency histogram; the last is +Inf */
    atomic_ulong ns_sum[EP_COUNT];
    atomic_ulong canceled_in_flight;
} stats;

static void count_response(int ep, int code, bool partial, int64_t ns)
{
    for (int i = 0; i < NCODES; i++)
        if (codes[i] == code)
            atomic_fetch_add(&stats.requests[ep][i], 1);
    if (partial)
        atomic_fetch_add(&stats.partial[ep], 1);
    int b = 0; /* the first bucket it fits; the writer adds them up */
    while (b < NBUCKETS && (double)ns / 1e9 > buckets[b])
        b++;
    atomic_fetch_add(&stats.le[ep][b], 1);
    atomic_fetch_add(&stats.ns_sum[ep], (unsigned long)ns);
}

/* tether's own series (tether_metrics_write_prometheus): per scope name,
 * so per endpoint here, scopes opened and live, outcomes by kind,
 * cancellations by cause, convergence time, hostages, late successes. */
static int write_tether_metrics(int fd)
{
    return tether_metrics_write_prometheus(fd);
}

/* The service's own series; tether's follow them. */
static int write_metrics(int fd)
{
    dprintf(fd,
            "# HELP service_http_requests_total HTTP requests answered, by endpoint and status.\n"
            "# TYPE service_http_requests_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        for (int i = 0; i < NCODES; i++)
            dprintf(fd, "service_http_requests_total{endpoint=\"%s\",code=\"%d\"} %lu\n",
                    ep_names[e], codes[i], atomic_load(&stats.requests[e][i]));
    dprintf(fd, "# HELP service_http_partial_responses_total Answers marked partial.\n"
                "# TYPE service_http_partial_responses_total counter\n");
    for (int e = 0; e < EP_COUNT; e++)
        dprintf(fd, "service_http_partial_responses_total{endpoint=\"%s\"} %lu\n", ep_names[e],
                atomic_load(&stats.partial[e]));
    dprintf(
        fd,
        "# HELP service_http_request_duration_seconds Time from a request's head to its answer.\n"
        "# TYPE service_http_request_duration_seconds histogram\n");
    for (int e = 0; e < EP_COUNT; e++) {
        unsigned long cum = 0;
        for (int i = 0; i <= NBUCKETS; i++) {
            char le[16];
            cum += atomic_load(&stats.le[e][i]);
            if (i < NBUCKETS)
                snprintf(le, sizeof le, "%g", buckets[i]);
            else
                snprintf(le, sizeof le, "+Inf");
            dprintf(fd,
                    "service_http_request_duration_seconds_bucket{endpoint=\"%s\",le=\"%s\"} %lu\n",
                    ep_names[e], le, cum);
        }
        dprintf(fd, "service_http_request_duration_seconds_sum{endpoint=\"%s\"} %.9f\n",
                ep_names[e], (double)atomic_load(&stats.ns_sum[e]) / 1e9);
        dprintf(fd, "service_http_request_duration_seconds_count{endpoint=\"%s\"} %lu\n",
                ep_names[e], cum);
    }
    return write_tether_metrics(fd);
}

/* ---- One request ----------------------------------------------------------- */

struct call {
    const char *backend;
    in_port_t port;
    char mode[16];
    int rc;
    char reply[96];
};

/* A child of the request's scope: one call to one backend, passing on the
 * time this child has left. */
static int call_backend(void *arg)
{
    struct call *c = arg;
    struct sockaddr_in sa = { .sin_family = AF_INET,
                              .sin_port = c->port,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    char req[192], budget[TETHER_BUDGET_SIZE], id[TETHER_CONTEXT_MAX];
    /* The time this call has left, minus the answer's trip back: "0n" when
     * none is left (the backend then answers at once). */
    tether_budget_format_ns(tether_token_deadline(tether_current()) - tether_now() -
                                tether_ms(WIRE_MS),
                            budget, sizeof budget);
    /* The request's id, looked up from the scope above this child. */
    if (tether_context(id, sizeof id) != 0)
        snprintf(id, sizeof id, "-");
    int len = snprintf(req, sizeof req, "GET %s %s %s %.40s\n", c->backend, c->mode, budget, id);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return c->rc = errno;
    if (tether_connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
        tether_write(fd, req, (size_t)len) < 0 || read_line(fd, c->reply, sizeof c->reply) < 0)
        c->rc = errno;
    else
        c->rc = strncmp(c->reply, "OK ", 3) == 0                 ? 0
                : strcmp(c->reply, "ERR deadline exceeded") == 0 ? ETIMEDOUT
                                                                 : EIO;
    close(fd);
    return c->rc;
}

/* The request's id as its scope's context: every call below it sees it
 * (tether_context), and the dump shows it on the request's scope. */
static int label_request(tether_scope *req, const char *id)
{
    return tether_token_set_context(tether_scope_token(req), id);
}

struct response {
    int code;
    bool partial;
    char partial_names[32];
    char outcome[24];
    char body[512];
};

static bool timed_out(int rc)
{
    return rc == ETIMEDOUT || rc == ECANCELED;
}

/* GET /a or /b: the request's scope, its two children, the answer. */
static void fan_out(int ep, const char *query, tether_time_t start, int64_t budget_ns,
                    const char *id, struct response *r)
{
    struct call calls[2] = { { .backend = "users", .port = cfg.users_port, .mode = "ok" },
                             { .backend = "stock", .port = cfg.stock_port, .mode = "ok" } };
    for (const char *q = query; q && *q; q += strcspn(q, "&"), q += *q == '&') {
        for (int i = 0; i < 2; i++) {
            size_t n = strlen(calls[i].backend);
            if (strncmp(q, calls[i].backend, n) == 0 && q[n] == '=') {
                size_t m = strcspn(q + n + 1, "&");
                snprintf(calls[i].mode, sizeof calls[i].mode, "%.*s", (int)m, q + n + 1);
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (strcmp(calls[i].mode, "ok") && strcmp(calls[i].mode, "fail") &&
            strcmp(calls[i].mode, "stall")) {
            r->code = 400;
            snprintf(r->body, sizeof r->body, "{\"error\": \"%s= takes ok, fail or stall\"}\n",
                     calls[i].backend);
            return;
        }

    /* Each call's own timeout sits below the request's budget (docs/guide.md §2). */
    int64_t margin =
        budget_ns / 4 < tether_ms(CHILD_MARGIN_MS) ? budget_ns / 4 : tether_ms(CHILD_MARGIN_MS);
    int64_t child_ns =
        budget_ns - margin < tether_ms(CHILD_MAX_MS) ? budget_ns - margin : tether_ms(CHILD_MAX_MS);
    tether_scope_opts so = { .policy =
                                 ep == EP_A ? TETHER_POLICY_FAIL_FAST : TETHER_POLICY_SUPERVISOR,
                             .deadline = start + budget_ns,
                             .name = ep_names[ep],
                             .reuse_threads = true };
    tether_result res;
    tether_scope *req;
    int rc = tether_scope_open(&req, &so);
    if (rc == 0) {
        rc = label_request(req, id);
        for (int i = 0; i < 2 && rc == 0; i++) {
            tether_spawn_opts o = { .name = calls[i].backend, .timeout_ns = child_ns };
            calls[i].rc = ECANCELED;
            rc = tether_spawn(req, call_backend, &calls[i], &o, NULL);
        }
        int jrc = tether_scope_join(req, &res);
        tether_scope_free(req);
        rc = rc ? rc : jrc;
    }
    if (rc != 0) {
        r->code = rc == ECANCELED ? 503 : 502;
        if (rc == ECANCELED)
            atomic_fetch_add(&stats.canceled_in_flight, 1);
        snprintf(r->outcome, sizeof r->outcome, "%s", rc == ECANCELED ? "canceled" : "failed");
        snprintf(r->body, sizeof r->body, "{\"error\": \"%s\"}\n", strerror(rc));
        return;
    }
    snprintf(r->outcome, sizeof r->outcome, "%s", tether_outcome_name(res.outcome));
    switch (res.outcome) {
    case TETHER_OUTCOME_OK: r->code = 200; break;
    case TETHER_OUTCOME_PARTIAL:
        r->code = 200;
        r->partial = true;
        for (int i = 0; i < 2; i++)
            if (calls[i].rc)
                snprintf(r->partial_names, sizeof r->partial_names, "%s", calls[i].backend);
        break;
    case TETHER_OUTCOME_FAILED:
        /* Every call that did not answer ran out of time: 504; else 502. */
        r->code = 504;
        for (int i = 0; i < 2; i++)
            if (calls[i].rc && !timed_out(calls[i].rc))
                r->code = 502;
        break;
    case TETHER_OUTCOME_DEADLINE_EXCEEDED: r->code = 504; break;
    default: /* canceled: the service is shutting down */
        r->code = 503;
        atomic_fetch_add(&stats.canceled_in_flight, 1);
        break;
    }
    int len = snprintf(r->body, sizeof r->body,
                       "{\"request\": \"%s\", \"outcome\": \"%s\", \"partial\": %s", id, r->outcome,
                       r->partial ? "true" : "false");
    for (int i = 0; i < 2; i++)
        len += snprintf(r->body + len, sizeof r->body - (size_t)len, ", \"%s\": \"%s\"",
                        calls[i].backend,
                        calls[i].rc == 0 ? calls[i].reply + 3 : strerror(calls[i].rc));
    snprintf(r->body + len, sizeof r->body - (size_t)len, "}\n");
}

/* ---- HTTP/1.1 ------------------------------------------------------------------- */

struct conn {
    int fd;
    char head[HEAD_MAX + 1];
    size_t have; /* bytes in head, maybe the start of the next request */
};

/* Read one request head (up to the blank line). 0, or an error number;
 * EPIPE for a peer that closed between requests. */
static int read_head(struct conn *c, size_t *head_len)
{
    for (;;) {
        c->head[c->have] = '\0';
        char *end = strstr(c->head, "\r\n\r\n");
        if (end) {
            *head_len = (size_t)(end - c->head) + 4;
            return 0;
        }
        if (c->have == HEAD_MAX)
            return EMSGSIZE;
        struct pollfd p = { .fd = c->fd, .events = POLLIN };
        int n = tether_poll(&p, 1, IDLE_MS);
        if (n == 0)
            return EPIPE;
        ssize_t got = n < 0 ? -1 : tether_read(c->fd, c->head + c->have, HEAD_MAX - c->have);
        if (got < 0)
            return errno;
        if (got == 0)
            return EPIPE;
        c->have += (size_t)got;
    }
}

static const char *reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    default: return "Gateway Timeout";
    }
}

/* Write the whole answer. A shield lets a canceled request (shutdown)
 * still say 503 within 200 ms. */
static int send_response(int fd, const struct response *r, const char *id, int64_t budget_ns,
                         const char *ctype, const char *body, size_t blen, bool close_after)
{
    char head[512];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "X-Request-Id: %s\r\nX-Deadline-Ms: %.3f\r\n%s%s%s%s%s%s%s\r\n",
                     r->code, reason(r->code), ctype, blen, id, (double)budget_ns / 1e6,
                     r->outcome[0] ? "X-Outcome: " : "", r->outcome, r->outcome[0] ? "\r\n" : "",
                     r->partial ? "X-Partial: " : "", r->partial ? r->partial_names : "",
                     r->partial ? "\r\n" : "", close_after ? "Connection: close\r\n" : "");
    tether_shield *sh;
    int rc = tether_shield_enter(&sh, tether_deadline_after(tether_ms(200)));
    if (rc)
        return rc;
    if (tether_write_all(fd, head, (size_t)n, NULL) < 0 ||
        tether_write_all(fd, body, blen, NULL) < 0)
        rc = errno;
    tether_shield_leave(sh);
    return rc;
}

/* The metrics are written to a memory file, then answered in one piece
 * with their length. */
static int metrics_body(char **body, size_t *len)
{
    int fd = memfd_create("metrics", MFD_CLOEXEC), rc;
    if (fd < 0)
        return errno;
    off_t size = -1;
    if ((rc = write_metrics(fd)) == 0 && (size = lseek(fd, 0, SEEK_END)) < 0)
        rc = errno;
    if (rc == 0 && (*body = malloc((size_t)size + 1)) == NULL)
        rc = ENOMEM;
    if (rc == 0 && pread(fd, *body, (size_t)size, 0) != size) {
        rc = EIO;
        free(*body);
        *body = NULL;
    }
    *len = rc == 0 ? (size_t)size : 0;
    close(fd);
    return rc;
}

static atomic_ulong next_id;

/* Parse and answer one request. Returns 0 to keep the connection. */
static int handle_one(struct conn *c, size_t head_len)
{
    tether_time_t start = tether_now();
    char id[24], method[8] = "", target[256] = "", version[16] = "";
    snprintf(id, sizeof id, "req-%lu", atomic_fetch_add(&next_id, 1) + 1);
    struct response r = { .code = 200 };
    int ep = EP_OTHER;
    bool close_after = false;
    int64_t budget_ns = tether_ms(cfg.slo_ms);
    char *line_end = strstr(c->head, "\r\n");
    *line_end = '\0';
    if (sscanf(c->head, "%7s %255s %15s", method, target, version) != 3 ||
        strncmp(version, "HTTP/1.", 7) != 0) {
        r.code = 400;
        close_after = true;
    }
    close_after |= strcmp(version, "HTTP/1.0") == 0;
    /* Headers: Connection, Content-Length (no bodies here), grpc-timeout. */
    for (char *h = line_end + 2; r.code == 200 && h < c->head + head_len - 2;) {
        char *e = strstr(h, "\r\n");
        *e = '\0';
        char *v = strchr(h, ':');
        if (v) {
            *v++ = '\0';
            v += strspn(v, " \t");
            if (strcasecmp(h, "connection") == 0 && strcasecmp(v, "close") == 0)
                close_after = true;
            else if (strcasecmp(h, "content-length") == 0 && strcmp(v, "0") != 0)
                r.code = 400;
            else if (strcasecmp(h, "grpc-timeout") == 0) {
                int64_t client_ns;
                size_t vlen = strlen(v);
                while (vlen > 0 && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                    vlen--; /* optional white space after the value */
                if (tether_budget_parse_ns(v, vlen, &client_ns) != 0)
                    r.code = 400;
                else if (client_ns < budget_ns)
                    budget_ns = client_ns; /* the tighter budget wins */
            }
        }
        h = e + 2;
    }
    char *query = strchr(target, '?');
    if (query)
        *query++ = '\0';
    if (strcmp(target, "/a") == 0)
        ep = EP_A;
    else if (strcmp(target, "/b") == 0)
        ep = EP_B;
    else if (strcmp(target, "/metrics") == 0)
        ep = EP_METRICS;

    char *body = NULL;
    size_t blen = 0;
    const char *ctype = "application/json";
    if (r.code != 200) {
        snprintf(r.body, sizeof r.body, "{\"error\": \"bad request\"}\n");
    } else if (ep == EP_OTHER) {
        r.code = 404;
        snprintf(r.body, sizeof r.body, "{\"error\": \"no such endpoint\"}\n");
    } else if (strcmp(method, "GET") != 0) {
        r.code = 405;
        snprintf(r.body, sizeof r.body, "{\"error\": \"GET only\"}\n");
    } else if (ep == EP_METRICS) {
        int rc = metrics_body(&body, &blen);
        ctype = "text/plain; version=0.0.4";
        if (rc) {
            r.code = 503;
            snprintf(r.body, sizeof r.body, "{\"error\": \"%s\"}\n", strerror(rc));
        }
    } else {
        fan_out(ep, query, start, budget_ns, id, &r);
    }
    if (!body) {
        body = r.body;
        blen = strlen(r.body);
    }
    close_after |= r.code == 400 || r.code == 503 || tether_check() != 0;
    int rc = send_response(c->fd, &r, id, budget_ns, ctype, body, blen, close_after);
    if (body != r.body)
        free(body);
    count_response(ep, r.code, r.partial, tether_now() - start);
    /* Keep what came after this head: the start of the next request. */
    memmove(c->head, c->head + head_len, c->have - head_len);
    c->have -= head_len;
    return rc ? rc : close_after ? EPIPE : 0;
}

/* One connection: a child of the connections scope, requests one after the
 * other (keep-alive) until the client closes, an error, or shutdown. */
static int connection(void *arg)
{
    struct conn *c = malloc(sizeof *c);
    int fd = (int)(intptr_t)arg, rc = ENOMEM;
    if (c) {
        c->fd = fd;
        c->have = 0;
        size_t head_len = 0;
        while ((rc = read_head(c, &head_len)) == 0 && (rc = handle_one(c, head_len)) == 0)
            ;
        if (rc == EMSGSIZE) { /* a head over HEAD_MAX: say so, then hang up */
            static const char too_big[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                          "Content-Length: 0\r\nConnection: close\r\n\r\n";
            rc = tether_write_all(fd, too_big, sizeof too_big - 1, NULL) < 0 ? errno : 0;
            count_response(EP_OTHER, 431, false, 0);
            /* Closing with unread bytes would reset the connection and could
             * drop the answer: finish sending, then read what the client
             * still sends (100 ms, 64 KiB at most). */
            shutdown(fd, SHUT_WR);
            struct pollfd p = { .fd = fd, .events = POLLIN };
            for (size_t n = 0; n < 64 * 1024 && tether_poll(&p, 1, 100) == 1;) {
                ssize_t got = tether_read(fd, c->head, HEAD_MAX);
                if (got <= 0)
                    break;
                n += (size_t)got;
            }
        }
        free(c);
    }
    close(fd);
    /* A client going away is a connection's ordinary end. */
    return rc == EPIPE || rc == ECONNRESET ? 0 : rc;
}

/* ---- The service ------------------------------------------------------------- */

struct service {
    int lfd;
    struct backend users, stock;
};

/* The service scope's body (under its token): install SIGTERM/SIGINT, start
 * the backends as background children, accept connections until canceled. */
static int serve(tether_scope *app, void *arg)
{
    struct service *svc = arg;
    tether_signals *sig;
    int rc = tether_signals_install(&sig, tether_scope_token(app), NULL);
    if (rc)
        return rc;
    tether_spawn_opts bo = { .name = "users", .background = true };
    if ((rc = tether_spawn(app, backend, &svc->users, &bo, NULL)) == 0) {
        bo.name = "stock";
        rc = tether_spawn(app, backend, &svc->stock, &bo, NULL);
    }
    /* A bounded scope rather than a pool: each connection is a child with
     * its own token (shutdown reaches every one, the join waits for every
     * one); a full scope makes the accept loop wait for a slot while the
     * kernel's backlog holds the next connections. */
    tether_scope_opts co = { .policy = TETHER_POLICY_SUPERVISOR,
                             .name = "connections",
                             .max_children = cfg.max_conns,
                             .reuse_threads = true };
    if (rc == 0) {
        TETHER_SCOPE_GUARD(conns, &co);
        while (conns) {
            int fd = tether_accept4(svc->lfd, NULL, NULL, SOCK_CLOEXEC);
            if (fd < 0 && (errno == ECANCELED || errno == ETIMEDOUT))
                break;
            if (fd < 0)
                continue;
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            tether_spawn_opts o = { .name = "connection" };
            if (tether_spawn(conns, connection, (void *)(intptr_t)fd, &o, NULL) != 0) {
                close(fd);
                if (tether_check() != 0)
                    break;
            }
        }
        fprintf(stderr, "service: stopping: canceling the connections and their requests\n");
    }
    tether_signals_restore(sig);
    return rc;
}

static int usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--port N] [--slo-ms N] [--max-conns N]\n", argv0);
    return 2;
}

int main(int argc, char **argv)
{
    int port = 0;
    for (int i = 1; i < argc; i += 2) {
        char *end;
        long v = i + 1 < argc ? strtol(argv[i + 1], &end, 10) : -1;
        if (i + 1 >= argc || *end != '\0' || v < 0)
            return usage(argv[0]);
        if (strcmp(argv[i], "--port") == 0 && v <= 65535)
            port = (int)v;
        else if (strcmp(argv[i], "--slo-ms") == 0 && v > 0 && v <= 600000)
            cfg.slo_ms = (int)v;
        else if (strcmp(argv[i], "--max-conns") == 0 && v > 0 && v <= 4096)
            cfg.max_conns = (unsigned)v;
        else
            return usage(argv[0]);
    }
    signal(SIGPIPE, SIG_IGN); /* a client that hung up is an EPIPE, not a kill */
    setvbuf(stdout, NULL, _IOLBF, 0);
    struct service svc = { .users = { .name = "users" }, .stock = { .name = "stock" } };
    in_port_t http_port;
    if ((svc.lfd = listen_loopback(port, &http_port)) < 0 ||
        (svc.users.lfd = listen_loopback(0, &cfg.users_port)) < 0 ||
        (svc.stock.lfd = listen_loopback(0, &cfg.stock_port)) < 0) {
        perror("service: listen");
        return 1;
    }
    tether_dump_signal *dump;
    int rc = tether_dump_on_signal(&dump, SIGUSR2, STDERR_FILENO, TETHER_DUMP_TEXT);
    if (rc) {
        fprintf(stderr, "service: tether_dump_on_signal: %s\n", strerror(rc));
        return 1;
    }
    printf("service: listening on 127.0.0.1:%d pid %d (slo %d ms, %u connections at most; "
           "backends users 127.0.0.1:%d, stock 127.0.0.1:%d)\n",
           ntohs(http_port), (int)getpid(), cfg.slo_ms, cfg.max_conns, ntohs(cfg.users_port),
           ntohs(cfg.stock_port));

    tether_result res;
    tether_scope_opts ao = { .name = "service" };
    rc = tether_scope_run(&ao, serve, &svc, &res);
    /* Every request's scope, every connection and both backends have been
     * joined here: nothing of the service is left running. */
    tether_dump_signal_free(dump);
    close(svc.lfd);
    close(svc.users.lfd);
    close(svc.stock.lfd);
    if (rc) {
        fprintf(stderr, "service: %s\n", strerror(rc));
        return 1;
    }
    fprintf(stderr, "service: stopped (%s, cause %s); %lu requests canceled in flight\n",
            tether_outcome_name(res.outcome), tether_cause_name(res.cause),
            atomic_load(&stats.canceled_in_flight));
    bool clean = res.outcome == TETHER_OUTCOME_OK ||
                 (res.outcome == TETHER_OUTCOME_CANCELED && res.cause == TETHER_CAUSE_SIGNAL);
    return clean ? 0 : 1;
}
