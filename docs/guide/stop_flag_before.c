/* Before: a worker polls a hand-rolled stop flag between naps. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

static atomic_bool stop;
static atomic_int ticks;

static void *worker(void *arg)
{
    struct timespec nap = { .tv_sec = 0, .tv_nsec = 10 * 1000 * 1000 };
    (void)arg;
    /* Stopping takes up to one nap, and a blocking call in the loop would
     * never see the flag at all. */
    while (!atomic_load(&stop)) {
        atomic_fetch_add(&ticks, 1);
        nanosleep(&nap, NULL);
    }
    return NULL;
}

int main(void)
{
    pthread_t t;
    if (pthread_create(&t, NULL, worker, NULL) != 0)
        return 1;
    atomic_store(&stop, true);
    pthread_join(t, NULL);
    return 0;
}
