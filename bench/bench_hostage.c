/*
 * bench_hostage.c — the hostage watchdog and the dump (issue 13 §4, §5).
 *
 *   hostage_report_late   how long after cancel + grace the joining thread
 *                         reports a child blocked in a plain read() (from
 *                         the report's own since_cancel_ns; grace 5 ms)
 *   hostage_escalate_stop from cancel + grace to the child's read()
 *                         returning EINTR, with escalation on
 *   dump_100_children     tether_dump to /dev/null of 10 scopes of 10
 *                         sleeping children each (reads 100 /proc files),
 *                         text and JSON
 * No raw baseline: nothing else reports or interrupts a hostage. Targets
 * are absolute.
 */
#include "bench_common.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

enum { GRACE_MS = 5, DUMP_SCOPES = 10, DUMP_CHILDREN = 10 };

struct hostage_round {
    struct slot slot;
    tether_time_t read_returned;
    int read_errno;
    int64_t held_since_cancel_ns;
};

/* A child blocked in a plain read() of the never-written pipe. */
static int plain_read_child(void *arg)
{
    struct hostage_round *h = arg;
    char c;
    about_to_block(&h->slot);
    ssize_t n = read(g_pipe[0], &c, 1);
    h->read_errno = n < 0 ? errno : 0;
    h->read_returned = tether_now();
    return 0;
}

static void hostage_hook(const tether_hostage_report *r, void *arg)
{
    struct hostage_round *h = arg;
    if (r->event == TETHER_HOSTAGE_HELD)
        h->held_since_cancel_ns = r->since_cancel_ns;
}

/* One round: returns the stop latency (ns); *late gets the report's. */
static double hostage_round(double *late)
{
    struct hostage_round h = { 0 };
    atomic_store(&g_ready, 0);
    tether_scope_opts o = { .name = "bench",
                            .hostage_grace_ns = tether_ms(GRACE_MS),
                            .hostage_hook = hostage_hook,
                            .hostage_arg = &h,
                            .hostage_escalate = true };
    tether_scope *s;
    need_rc(tether_scope_open(&s, &o), "tether_scope_open");
    need_rc(tether_spawn(s, plain_read_child, &h, NULL, NULL), "tether_spawn");
    wait_all_blocked(&h.slot, 1, IN_READ);
    tether_time_t canceled = tether_now();
    need_rc(tether_scope_cancel(s), "tether_scope_cancel");
    need_rc(tether_scope_join(s, NULL), "tether_scope_join");
    need_rc(tether_scope_free(s), "tether_scope_free");
    if (h.read_errno != EINTR)
        die("hostage round: read() ended with errno %d, not EINTR", h.read_errno);
    *late = (double)(h.held_since_cancel_ns - tether_ms(GRACE_MS));
    return (double)(h.read_returned - canceled - tether_ms(GRACE_MS));
}

static void bench_hostage_rounds(const struct config *cfg)
{
    samples late = { 0 }, stop = { 0 };
    int rounds = cfg->quick ? 5 : 100;
    tether_time_t budget_end = tether_now() + (tether_time_t)(cfg->budget_s * 1e9);
    int done = 0;
    for (; done < rounds && (done < MIN_ROUNDS || tether_now() < budget_end); done++) {
        double l;
        samples_add(&stop, hostage_round(&l));
        samples_add(&late, l);
    }
    report("hostage_rounds", done, "rounds", 0);
    report("hostage_report_late_us", median(&late) / 1e3, "us", 1);
    report("hostage_report_late_p99_us", percentile(&late, 99) / 1e3, "us", 1);
    report("hostage_escalate_stop_us", median(&stop) / 1e3, "us", 1);
    report("hostage_escalate_stop_p99_us", percentile(&stop, 99) / 1e3, "us", 1);
    samples_free(&late);
    samples_free(&stop);
}

/* The dump of DUMP_SCOPES scopes of DUMP_CHILDREN sleepers each. */
static void bench_dump_tree(const struct config *cfg)
{
    tether_scope *scopes[DUMP_SCOPES];
    struct slot slots[DUMP_SCOPES * DUMP_CHILDREN];
    atomic_store(&g_ready, 0);
    for (int i = 0; i < DUMP_SCOPES; i++) {
        tether_scope_opts o = { .name = "dumped", .timeout_ns = tether_sec(3600) };
        need_rc(tether_scope_open(&scopes[i], &o), "tether_scope_open");
        for (int k = 0; k < DUMP_CHILDREN; k++)
            need_rc(tether_spawn(scopes[i], child_sleep_until_canceled,
                                 &slots[i * DUMP_CHILDREN + k], NULL, NULL),
                    "tether_spawn");
    }
    wait_all_blocked(slots, DUMP_SCOPES * DUMP_CHILDREN, IN_FUTEX);
    int null_fd = open("/dev/null", O_WRONLY | O_CLOEXEC);
    need_ok(null_fd >= 0, "open(/dev/null)");
    samples text = { 0 }, json = { 0 };
    int rounds = cfg->quick ? 3 : 50;
    for (int i = 0; i < rounds; i++) {
        tether_time_t t0 = tether_now();
        need_rc(tether_dump(null_fd, TETHER_DUMP_TEXT), "tether_dump");
        tether_time_t t1 = tether_now();
        need_rc(tether_dump(null_fd, TETHER_DUMP_JSON), "tether_dump");
        samples_add(&text, (double)(t1 - t0));
        samples_add(&json, (double)(tether_now() - t1));
    }
    close(null_fd);
    for (int i = 0; i < DUMP_SCOPES; i++) {
        need_rc(tether_scope_cancel(scopes[i]), "tether_scope_cancel");
        need_rc(tether_scope_join(scopes[i], NULL), "tether_scope_join");
        need_rc(tether_scope_free(scopes[i]), "tether_scope_free");
    }
    report("dump_100_children_us", median(&text) / 1e3, "us", 1);
    report("dump_100_children_json_us", median(&json) / 1e3, "us", 1);
    samples_free(&text);
    samples_free(&json);
}

void bench_hostage(const struct config *cfg)
{
    bench_hostage_rounds(cfg);
    bench_dump_tree(cfg);
}
