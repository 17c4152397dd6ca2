/* After: the read runs under a 100 ms deadline of the calling thread's own. */
#include <tether.h>

#include <errno.h>
#include <unistd.h>

static int read_reply(void *arg)
{
    char buf[64];
    return tether_read(*(int *)arg, buf, sizeof buf) < 0 ? errno : 0;
}

int main(void)
{
    int p[2];
    bool fired;
    if (pipe(p) != 0)
        return 1;
    int rc = tether_with_timeout(tether_ms(100), read_reply, &p[0], &fired);
    close(p[0]);
    close(p[1]);
    return rc == ETIMEDOUT && fired ? 0 : 1;
}
