/* Before: a read bounded by alarm() and a SIGALRM handler without SA_RESTART. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>

static void on_alarm(int sig)
{
    (void)sig; /* nothing to do: the point is the EINTR */
}

int main(void)
{
    struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
    int p[2];
    char buf[64];
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGALRM, &sa, NULL) != 0 || pipe(p) != 0)
        return 1;
    alarm(1); /* whole seconds, one timer per process, any thread may get it */
    ssize_t n = read(p[0], buf, sizeof buf);
    int timed_out = n < 0 && errno == EINTR; /* or was it another signal? */
    alarm(0);
    return timed_out ? 0 : 1;
}
