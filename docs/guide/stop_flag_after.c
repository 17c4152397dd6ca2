/* After: the worker is a background child; its sleep is where it stops. */
#include <tether.h>

#include <errno.h>
#include <stdatomic.h>

static atomic_int ticks;

static int worker(void *arg)
{
    (void)arg;
    while (tether_sleep_for(tether_ms(10)) == 0) /* wakes at once when halted */
        atomic_fetch_add(&ticks, 1);
    return errno; /* ECANCELED: counted as canceled, not failed */
}

static int busy(void *arg)
{
    unsigned long *sum = arg;
    /* Code that never blocks asks tether_check() between steps instead of
     * reading a flag of its own: ECANCELED or ETIMEDOUT once it must stop. */
    for (unsigned long i = 0; i < 1000000; i++) {
        if (i % 1024 == 0 && tether_check() != 0)
            return tether_check();
        *sum += i;
    }
    return 0;
}

int main(void)
{
    tether_scope *s;
    tether_result r;
    tether_spawn_opts bg = { .name = "worker", .background = true };
    tether_spawn_opts fg = { .name = "busy" };
    unsigned long sum = 0;
    if (tether_scope_open(&s, NULL) != 0)
        return 1;
    if (tether_spawn(s, worker, NULL, &bg, NULL) != 0 ||
        tether_spawn(s, busy, &sum, &fg, NULL) != 0)
        return 1;
    /* The join waits for the foreground child, then halts the background
     * worker (no flag: its token is canceled) and waits for it to return. */
    tether_scope_join(s, &r);
    tether_scope_free(s);
    return r.outcome == TETHER_OUTCOME_OK && r.succeeded == 1 && r.canceled == 1 ? 0 : 1;
}
