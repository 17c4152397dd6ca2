/*
 * The metrics in the Prometheus text exposition format (version 0.0.4):
 * tether_metrics_format over a snapshot, tether_metrics_write_prometheus
 * to a descriptor.
 */
#define _GNU_SOURCE
#include "internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const bucket_le_text[TETHER_METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",   "0.1",     "0.25",   "0.5",   "1",      "2.5",   "5",    "10"
};

/* Text appended to a caller's buffer, counted past its end as snprintf. */
struct out {
    char *buf;
    size_t size, len;
};

static void put_bytes(struct out *o, const char *p, size_t n)
{
    if (o->len < o->size) {
        size_t room = o->size - o->len;
        memcpy(o->buf + o->len, p, n < room ? n : room);
    }
    o->len += n;
}

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    TETHER_ASSERT(n >= 0 && (size_t)n < sizeof tmp);
    put_bytes(o, tmp, (size_t)n);
}

/* A label value: backslash, double quote and newline escaped. */
static void put_label(struct out *o, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\')
            put_bytes(o, "\\\\", 2);
        else if (*v == '"')
            put_bytes(o, "\\\"", 2);
        else if (*v == '\n')
            put_bytes(o, "\\n", 2);
        else
            put_bytes(o, v, 1);
    }
}

static void put_str(struct out *o, const char *s)
{
    put_bytes(o, s, strlen(s));
}

static void family(struct out *o, const char *name, const char *type, const char *help)
{
    put_str(o, "# HELP ");
    put_str(o, name);
    put_str(o, " ");
    put_str(o, help);
    put_str(o, "\n# TYPE ");
    put_str(o, name);
    put_str(o, " ");
    put_str(o, type);
    put_str(o, "\n");
}

/* `name{scope="..."` with the brace left open for more labels. */
static void open_series(struct out *o, const char *name, const tether_metrics_series *s)
{
    put_str(o, name);
    put_str(o, "{scope=\"");
    put_label(o, s->scope);
    put_bytes(o, "\"", 1);
}

enum field { OPENED, SCOPES_LIVE, CHILDREN_LIVE, CHILDREN_PEAK, HOSTAGES, LATE, LEFT };

static int64_t field_of(const tether_metrics_series *s, enum field f)
{
    switch (f) {
    case OPENED: return (int64_t)s->scopes_opened;
    case SCOPES_LIVE: return (int64_t)s->scopes_live;
    case CHILDREN_LIVE: return s->children_live;
    case CHILDREN_PEAK: return s->children_peak;
    case HOSTAGES: return (int64_t)s->hostages;
    case LATE: return (int64_t)s->late_successes;
    case LEFT: return (int64_t)s->children_left_running;
    }
    return 0;
}

/* A family with one value per scope name. */
static void per_scope(struct out *o, const tether_metrics_snapshot *snap, const char *name,
                      const char *type, const char *help, enum field f)
{
    family(o, name, type, help);
    for (size_t i = 0; i < snap->count; i++) {
        open_series(o, name, &snap->series[i]);
        put(o, "} %lld\n", (long long)field_of(&snap->series[i], f));
    }
}

static void outcomes(struct out *o, const tether_metrics_snapshot *snap)
{
    static const char name[] = "tether_scope_outcomes_total";
    family(o, name, "counter", "Scopes joined, by outcome.");
    for (size_t i = 0; i < snap->count; i++)
        for (int k = 0; k < TETHER_METRICS_OUTCOMES; k++) {
            open_series(o, name, &snap->series[i]);
            put(o, ",outcome=\"%s\"} %llu\n", tether_outcome_name((tether_outcome)k),
                (unsigned long long)snap->series[i].outcomes[k]);
        }
}

static void cancellations(struct out *o, const tether_metrics_snapshot *snap)
{
    static const char name[] = "tether_scope_cancellations_total";
    family(o, name, "counter",
           "Joined scopes that were canceled, by cause, and children halted (cause halted).");
    for (size_t i = 0; i < snap->count; i++)
        for (int k = TETHER_CAUSE_EXPLICIT; k < TETHER_METRICS_CAUSES; k++) {
            open_series(o, name, &snap->series[i]);
            put(o, ",cause=\"%s\"} %llu\n", tether_cause_name((tether_cause)k),
                (unsigned long long)snap->series[i].cancellations[k]);
        }
}

/* Nanoseconds as seconds, exactly. */
static void put_seconds(struct out *o, uint64_t ns)
{
    put(o, "%llu.%09llu", (unsigned long long)(ns / 1000000000u),
        (unsigned long long)(ns % 1000000000u));
}

static void convergence(struct out *o, const tether_metrics_snapshot *snap)
{
    static const char name[] = "tether_scope_convergence_seconds";
    family(o, name, "histogram",
           "Canceled scopes' convergence: first cancel request to last child's exit.");
    for (size_t i = 0; i < snap->count; i++) {
        const tether_metrics_series *s = &snap->series[i];
        for (int b = 0; b < TETHER_METRICS_BUCKETS; b++) {
            open_series(o, "tether_scope_convergence_seconds_bucket", s);
            put(o, ",le=\"%s\"} %llu\n", bucket_le_text[b],
                (unsigned long long)s->convergence_le[b]);
        }
        open_series(o, "tether_scope_convergence_seconds_bucket", s);
        put(o, ",le=\"+Inf\"} %llu\n", (unsigned long long)s->convergence_count);
        open_series(o, "tether_scope_convergence_seconds_sum", s);
        put_bytes(o, "} ", 2);
        put_seconds(o, s->convergence_sum_ns);
        put_bytes(o, "\n", 1);
        open_series(o, "tether_scope_convergence_seconds_count", s);
        put(o, "} %llu\n", (unsigned long long)s->convergence_count);
    }
}

static void process_wide(struct out *o, const tether_metrics_snapshot *snap)
{
    family(o, "tether_process_children_live", "gauge", "Scope children running in the process.");
    put(o, "tether_process_children_live %lld\n", (long long)snap->process.children_live);
    family(o, "tether_process_children_peak", "gauge",
           "The most scope children the process ran at once.");
    put(o, "tether_process_children_peak %lld\n", (long long)snap->process.children_peak);
    family(o, "tether_retries_after_cancel_total", "counter",
           "Retry attempts started under a token already canceled (zero by construction).");
    put(o, "tether_retries_after_cancel_total %llu\n",
        (unsigned long long)snap->retries_after_cancel);
    family(o, "tether_blocking_calls_stopped_total", "counter",
           "Blocking calls that waited and were stopped by a cancel or a deadline.");
    put(o, "tether_blocking_calls_stopped_total{reason=\"canceled\"} %llu\n",
        (unsigned long long)snap->calls_stopped_canceled);
    put(o, "tether_blocking_calls_stopped_total{reason=\"deadline\"} %llu\n",
        (unsigned long long)snap->calls_stopped_deadline);
    family(o, "tether_metrics_enabled", "gauge", "1 if new scopes are counted, else 0.");
    put(o, "tether_metrics_enabled %d\n", snap->enabled ? 1 : 0);
}

int tether_metrics_format(const tether_metrics_snapshot *snap, char *buf, size_t size,
                          size_t *length)
{
    if (!snap || (!buf && size))
        return EINVAL;
    struct out o = { .buf = buf, .size = size };
    per_scope(&o, snap, "tether_scopes_opened_total", "counter", "Scopes opened.", OPENED);
    per_scope(&o, snap, "tether_scopes_live", "gauge", "Scopes opened and not yet joined.",
              SCOPES_LIVE);
    per_scope(&o, snap, "tether_children_live", "gauge", "Children spawned and not yet exited.",
              CHILDREN_LIVE);
    per_scope(&o, snap, "tether_children_peak", "gauge",
              "The most children of scopes of this name alive at once.", CHILDREN_PEAK);
    outcomes(&o, snap);
    cancellations(&o, snap);
    convergence(&o, snap);
    per_scope(&o, snap, "tether_hostages_total", "counter",
              "Children reported held hostage past the grace after a cancel.", HOSTAGES);
    per_scope(&o, snap, "tether_late_successes_total", "counter",
              "Children that returned 0 after they were canceled.", LATE);
    per_scope(&o, snap, "tether_children_left_running_total", "counter",
              "Children found running after their scope's join (zero by construction).", LEFT);
    process_wide(&o, snap);
    if (length)
        *length = o.len;
    if (o.len >= size) {
        if (size)
            buf[size - 1] = '\0'; /* as snprintf: what fits, NUL-terminated */
        return ERANGE;
    }
    buf[o.len] = '\0';
    return 0;
}

/* Format a snapshot taken now and write it to fd: 0 or an error number,
 * errno changed. */
static int write_snapshot(int fd)
{
    tether_metrics_snapshot snap;
    int rc = tether_metrics_snapshot_take(&snap);
    if (rc)
        return rc;
    size_t need = 0;
    (void)tether_metrics_format(&snap, NULL, 0, &need);
    char *text = tether__malloc(need + 1);
    if (!text) {
        tether_metrics_snapshot_release(&snap);
        return ENOMEM;
    }
    rc = tether_metrics_format(&snap, text, need + 1, &need);
    tether_metrics_snapshot_release(&snap);
    TETHER_ASSERT(rc == 0);
    size_t moved;
    if (tether_write_all(fd, text, need, &moved) < 0)
        rc = errno;
    free(text);
    return rc;
}

int tether_metrics_write_prometheus(int fd)
{
    int saved = errno; /* an error number is returned: errno stays as it was */
    int rc = write_snapshot(fd);
    errno = saved;
    return rc;
}
