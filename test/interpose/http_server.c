/*
 * http_server — a small HTTP/1.1 server on 127.0.0.1 for the libcurl
 * example (examples/curl_cancel.c): persistent connections, one thread per
 * connection, three paths.
 *
 *   GET /hello   200, a short body; the connection stays open for more
 *   GET /stall   no answer, ever: the request "works" until the client
 *                closes or shuts down its end (the server sees end of file)
 *   GET /stats   200, "stalled N\n": how many /stall requests are still
 *                open, so a client can check that its cancel reached the
 *                server
 *
 * Anything else gets 404. Usage: http_server PORTFILE (listens on a free
 * port and writes it to PORTFILE once listening; runs until killed).
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static atomic_int stalled;

/* Read until the end of a request's headers; the request line stays in
 * req. False on end of file or error. */
static bool read_request(int fd, char *req, size_t cap)
{
    size_t n = 0;
    while (n + 1 < cap) {
        ssize_t r = recv(fd, req + n, 1, 0); /* one byte: never eat the next request */
        if (r <= 0)
            return false;
        n++;
        req[n] = '\0';
        if (n >= 4 && memcmp(req + n - 4, "\r\n\r\n", 4) == 0)
            return true;
    }
    return false; /* headers too long */
}

static bool send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static bool respond(int fd, int status, const char *body)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                     "Connection: keep-alive\r\n\r\n",
                     status, status == 200 ? "OK" : "Not Found", strlen(body));
    return send_all(fd, head, (size_t)n) && send_all(fd, body, strlen(body));
}

/* Hold a /stall request: read (and drop) whatever comes until the client
 * closes or shuts down its end. */
static void stall(int fd)
{
    atomic_fetch_add(&stalled, 1);
    char buf[256];
    while (recv(fd, buf, sizeof buf, 0) > 0) {
    }
    atomic_fetch_sub(&stalled, 1);
}

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char req[4096];
    while (read_request(fd, req, sizeof req)) {
        bool ok;
        if (strncmp(req, "GET /hello ", 11) == 0) {
            ok = respond(fd, 200, "hello\n");
        } else if (strncmp(req, "GET /stall ", 11) == 0) {
            stall(fd);
            ok = false;
        } else if (strncmp(req, "GET /stats ", 11) == 0) {
            char body[64];
            snprintf(body, sizeof body, "stalled %d\n", atomic_load(&stalled));
            ok = respond(fd, 200, body);
        } else {
            ok = respond(fd, 404, "not found\n");
        }
        if (!ok)
            break;
    }
    close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: http_server PORTFILE\n");
        return 2;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, 64) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        perror("http_server: listen");
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", ntohs(a.sin_port)) < 0 || fclose(f) || rename(tmp, argv[1])) {
        perror("http_server: port file");
        return 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (;;) {
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            continue;
        pthread_t th;
        if (pthread_create(&th, &attr, serve, (void *)(intptr_t)c) != 0)
            close(c);
    }
}
