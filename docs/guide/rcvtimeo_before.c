/* Before: SO_RCVTIMEO bounds each recv() on its own, not the exchange. */
#include <errno.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

int main(void)
{
    int sv[2];
    char buf[64];
    struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0 ||
        setsockopt(sv[0], SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0)
        return 1;
    /* A peer sending one byte every 90 ms keeps this loop going for ever:
     * the 100 ms start again at every recv. */
    if (send(sv[0], "ping\n", 5, 0) != 5)
        return 1;
    ssize_t n = recv(sv[0], buf, sizeof buf, 0);
    int timed_out = n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    close(sv[0]);
    close(sv[1]);
    return timed_out ? 0 : 1;
}
