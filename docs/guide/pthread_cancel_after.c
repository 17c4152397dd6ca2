/* After: the worker is a scope's child; canceling the scope ends its read. */
#include <tether.h>

#include <errno.h>
#include <unistd.h>

static int worker(void *arg)
{
    int fd = *(int *)arg;
    char buf[64];
    ssize_t n;
    while ((n = tether_read(fd, buf, sizeof buf)) > 0)
        ;
    int rc = n < 0 ? errno : 0; /* ECANCELED once the scope is canceled */
    close(fd);                  /* cleanup is ordinary code: the function returns */
    return rc;
}

int main(void)
{
    int p[2];
    tether_scope *s;
    tether_result r;
    if (pipe(p) != 0 || tether_scope_open(&s, NULL) != 0)
        return 1;
    if (tether_spawn(s, worker, &p[0], NULL, NULL) != 0)
        return 1;
    tether_scope_cancel(s);   /* never blocks */
    tether_scope_join(s, &r); /* returns once the worker has returned */
    tether_scope_free(s);
    close(p[1]);
    return r.outcome == TETHER_OUTCOME_CANCELED && r.canceled == 1 ? 0 : 1;
}
