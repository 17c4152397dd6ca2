/*
 * curl_cancel — stop a libcurl transfer at a deadline with descriptor
 * spans on its sockets.
 *
 * A child of a scope with a 200 ms deadline fetches a URL whose server
 * stalls (it never answers). libcurl waits for the socket in poll(2), where
 * tether cannot reach it. libcurl lets the application open and close its
 * sockets (CURLOPT_OPENSOCKETFUNCTION, CURLOPT_CLOSESOCKETFUNCTION): the
 * open callback, which runs in the thread calling curl_easy_perform, opens
 * a descriptor span on the new socket (tether_fd_span_begin), and the close
 * callback ends it before closing the socket (tether_fd_span_end, after
 * which no shutdown can hit the descriptor or a later reuse of its number).
 * At the deadline the span shuts the socket down; poll(2) wakes, the read
 * sees end of file and curl_easy_perform returns at once with "Empty reply
 * from server". The server sees the connection end and stops its work.
 *
 * The connection is not reused afterwards, and cannot be: HTTP/1.1 has no
 * way to cancel one request and keep its connection (the response may
 * still be on its way), and the shut-down socket can carry nothing more.
 * curl closes it, and the next request on the same handle opens a new
 * connection (CURLINFO_NUM_CONNECTS says 1). HTTP/2 can cancel a single
 * stream (RST_STREAM) and keep the connection, but that is curl's to do
 * (curl_multi_remove_handle), not a socket's.
 *
 * It prints the lateness (the deadline to curl_easy_perform's return) and
 * whether the connection was reused, and exits non-zero (printing
 * UNEXPECTED) if the server still holds the stalled request, the next
 * request fails, or the lateness exceeds a generous bound.
 *
 * Server: HTTP11_PORT (environment) or the servers' fixture file named by
 * TETHER_CLIENTS_ENV: test/interpose/http_server, where /stall never
 * answers, /hello does, and /stats counts the stalled requests still open.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "server_env.h"

enum { DEADLINE_MS = 200, LATENESS_BOUND_MS = 250, MAX_SOCKETS = 8 };

/* ------------------------------------------------- the socket callbacks */

/* The spans of the handle's open sockets (curl opens one at a time here;
 * a multi-connection user would key them the same way). */
struct spans {
    int fd[MAX_SOCKETS];
    tether_fd_span *span[MAX_SOCKETS];
    int fired; /* spans that shut their socket down */
};

static curl_socket_t open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
    struct spans *sp = clientp;
    (void)purpose;
    int fd = socket(address->family, address->socktype | SOCK_CLOEXEC, address->protocol);
    if (fd < 0)
        return CURL_SOCKET_BAD;
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (sp->span[i])
            continue;
        /* Under the calling thread's current token; none: never fires. */
        if (tether_fd_span_begin(fd, SHUT_RDWR, &sp->span[i]) != 0)
            break;
        sp->fd[i] = fd;
        return fd;
    }
    close(fd);
    return CURL_SOCKET_BAD;
}

static int close_socket(void *clientp, curl_socket_t fd)
{
    struct spans *sp = clientp;
    for (int i = 0; i < MAX_SOCKETS; i++) {
        if (sp->span[i] && sp->fd[i] == fd) {
            bool fired = false;
            tether_fd_span_end(sp->span[i], &fired); /* no shutdown after this */
            sp->span[i] = NULL;
            sp->fired += fired;
        }
    }
    return close(fd);
}

/* ------------------------------------------------- the transfer */

struct body {
    char text[256];
    size_t len;
};

static size_t keep_body(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    size_t k = size * n;
    size_t room = sizeof b->text - 1 - b->len;
    memcpy(b->text + b->len, p, k < room ? k : room);
    b->len += k < room ? k : room;
    b->text[b->len] = '\0';
    return k;
}

struct fetch {
    CURL *h;
    CURLcode rc;
    char errbuf[CURL_ERROR_SIZE];
    tether_time_t deadline, returned;
};

static int stalled_fetch(void *arg)
{
    struct fetch *f = arg;
    f->deadline = tether_token_deadline(tether_current());
    f->rc = curl_easy_perform(f->h); /* blocks in poll(2) until the span fires */
    f->returned = tether_now();
    return f->rc == CURLE_OK ? 0 : EIO;
}

/* GET path on the handle (no current token: its spans never fire). */
static CURLcode get(CURL *h, int port, const char *path, struct body *b)
{
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", port, path);
    b->len = 0;
    b->text[0] = '\0';
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, b);
    return curl_easy_perform(h);
}

/* How many stalled requests the server still holds (-1: unknown). */
static int server_stalled(CURL *h, int port)
{
    struct body b;
    if (get(h, port, "/stats", &b) != CURLE_OK)
        return -1;
    int n = -1;
    return sscanf(b.text, "stalled %d", &n) == 1 ? n : -1;
}

int main(void)
{
    int port = server_port("HTTP11_PORT", "SKIP_HTTP11");
    curl_global_init(CURL_GLOBAL_DEFAULT);
    struct spans sp = { .fired = 0 };
    struct fetch f = { .h = curl_easy_init() };
    struct body b;
    curl_easy_setopt(f.h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(f.h, CURLOPT_ERRORBUFFER, f.errbuf);
    curl_easy_setopt(f.h, CURLOPT_WRITEFUNCTION, keep_body);
    curl_easy_setopt(f.h, CURLOPT_OPENSOCKETFUNCTION, open_socket);
    curl_easy_setopt(f.h, CURLOPT_OPENSOCKETDATA, &sp);
    curl_easy_setopt(f.h, CURLOPT_CLOSESOCKETFUNCTION, close_socket);
    curl_easy_setopt(f.h, CURLOPT_CLOSESOCKETDATA, &sp);

    /* The handle's first request, so its connection is opened in the child,
     * under the child's token: that is where the span must be begun. (A
     * connection curl kept from an earlier request, opened under another
     * token or none, would carry that span instead: give a transfer that
     * must be stoppable CURLOPT_FRESH_CONNECT.) */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/stall", port);
    curl_easy_setopt(f.h, CURLOPT_URL, url);
    curl_easy_setopt(f.h, CURLOPT_WRITEDATA, &b);

    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(DEADLINE_MS), .name = "curl" };
    tether_result res;
    if (tether_scope_open(&s, &o) || tether_spawn(s, stalled_fetch, &f, NULL, NULL) ||
        tether_scope_join(s, &res) || tether_scope_free(s)) {
        printf("UNEXPECTED: scope failed\n");
        return 1;
    }
    double late_ms = (double)(f.returned - f.deadline) / 1e6;
    printf("curl_cancel: curl_easy_perform returned %.2f ms after the deadline with %d (%s): %s\n",
           late_ms, (int)f.rc, curl_easy_strerror(f.rc), f.errbuf);
    if (f.rc == CURLE_OK || sp.fired != 1)
        unexpected("the transfer was not stopped by its span");
    if (f.returned < f.deadline || late_ms > LATENESS_BOUND_MS)
        unexpected("lateness out of bounds");
    if (res.outcome != TETHER_OUTCOME_DEADLINE_EXCEEDED)
        unexpected("the scope did not report its deadline");

    /* A next request on the same handle: a new connection (NUM_CONNECTS),
     * since curl closed the one that was shut down. */
    CURLcode rc = get(f.h, port, "/hello", &b);
    long connects = -1;
    curl_easy_getinfo(f.h, CURLINFO_NUM_CONNECTS, &connects);
    printf("curl_cancel: next request: %s; connection reused: %s\n",
           rc == CURLE_OK ? "ok" : curl_easy_strerror(rc),
           connects == 0 ? "yes" : "no (a shut-down socket is closed; curl opened a new one)");
    if (rc != CURLE_OK || strcmp(b.text, "hello\n") != 0)
        unexpected("the next request failed");
    if (connects != 1)
        unexpected("curl did not open a new connection for the next request");

    /* The server's side: the stalled request ended with the connection. */
    int stalled = -1;
    for (int i = 0; i < 100 && (stalled = server_stalled(f.h, port)) != 0; i++)
        nanosleep(&(struct timespec){ .tv_nsec = 10 * 1000 * 1000 }, NULL);
    printf("curl_cancel: stalled requests still open on the server: %d\n", stalled);
    if (stalled != 0)
        unexpected("the server still holds the stalled request");
    curl_easy_cleanup(f.h);
    for (int i = 0; i < MAX_SOCKETS; i++)
        if (sp.span[i])
            unexpected("a span was left open");
    curl_global_cleanup();
    tether_trim();
    return failures ? 1 : 0;
}
