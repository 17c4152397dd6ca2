/* After: one deadline for the whole exchange, whatever the number of calls. */
#include <tether.h>

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

static int exchange(void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    if (tether_send(fd, "ping\n", 5, 0) != 5)
        return errno;
    for (;;) { /* a trickling peer cannot stretch the budget */
        ssize_t n = tether_recv(fd, buf, sizeof buf, 0);
        if (n <= 0)
            return n < 0 ? errno : ECONNRESET;
        if (buf[n - 1] == '\n')
            return 0;
    }
}

int main(void)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 1;
    int rc = tether_with_timeout(tether_ms(100), exchange, &sv[0], NULL);
    close(sv[0]);
    close(sv[1]);
    return rc == ETIMEDOUT ? 0 : 1;
}
