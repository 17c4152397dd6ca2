/* Before: a worker blocked in read() is stopped with pthread_cancel. */
#include <pthread.h>
#include <unistd.h>

static void close_fd(void *arg)
{
    close(*(int *)arg);
}

static void *worker(void *arg)
{
    char buf[64];
    /* Cleanup must be registered as a handler: cancellation unwinds the
     * thread at whatever cancellation point it reaches, even one inside a
     * library that holds a lock. */
    pthread_cleanup_push(close_fd, arg);
    while (read(*(int *)arg, buf, sizeof buf) > 0)
        ;
    pthread_cleanup_pop(1);
    return NULL;
}

int main(void)
{
    int p[2];
    pthread_t t;
    void *ret;
    if (pipe(p) != 0 || pthread_create(&t, NULL, worker, &p[0]) != 0)
        return 1;
    pthread_cancel(t);
    pthread_join(t, &ret); /* all the caller learns: PTHREAD_CANCELED */
    close(p[1]);
    return ret == PTHREAD_CANCELED ? 0 : 1;
}
