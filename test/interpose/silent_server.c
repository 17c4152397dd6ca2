/*
 * silent_server — a TCP server on 127.0.0.1 that accepts connections and
 * never answers (the "server that accepts and never answers" of the
 * real-client tests). It holds every accepted connection open until it is
 * killed.
 *
 *   silent_server PORTFILE   listen on a free port, write it to PORTFILE
 *                            once listening, then accept forever
 *   silent_server --free-port  print a port that was free a moment ago
 */
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

enum { MAX_HELD = 1024 };

static int listen_any(int *port, int backlog)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t len = sizeof a;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) || listen(fd, backlog) ||
        getsockname(fd, (struct sockaddr *)&a, &len)) {
        close(fd);
        return -1;
    }
    *port = ntohs(a.sin_port);
    return fd;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: silent_server PORTFILE | --free-port\n");
        return 2;
    }
    int port;
    int fd = listen_any(&port, 64);
    if (fd < 0) {
        perror("silent_server: listen");
        return 1;
    }
    if (strcmp(argv[1], "--free-port") == 0) {
        close(fd);
        printf("%d\n", port);
        return 0;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", argv[1]);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", port) < 0 || fclose(f) || rename(tmp, argv[1])) {
        perror("silent_server: port file");
        return 1;
    }
    int held = 0;
    for (;;) {
        int c = accept(fd, NULL, NULL);
        if (c < 0)
            continue;
        if (held < MAX_HELD)
            held++; /* kept open, never read, never answered */
        else
            close(c);
    }
}
