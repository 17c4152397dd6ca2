/* Clocks, names for causes and outcomes, and the always-on assertion. */
#define _GNU_SOURCE
#include "internal.h"

#include <time.h>

tether_time_t tether_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (tether_time_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

tether_time_t tether_deadline_after(int64_t duration_ns)
{
    tether_time_t now = tether_now();
    if (duration_ns > 0 && now > TETHER_NEVER - duration_ns)
        return TETHER_NEVER;
    return now + duration_ns;
}

const char *tether_cause_name(tether_cause cause)
{
    switch (cause) {
    case TETHER_CAUSE_NONE: return "none";
    case TETHER_CAUSE_EXPLICIT: return "explicit";
    case TETHER_CAUSE_DEADLINE: return "deadline";
    case TETHER_CAUSE_PARENT: return "parent";
    case TETHER_CAUSE_SIBLING_FAILED: return "sibling_failed";
    case TETHER_CAUSE_SIBLING_SUCCEEDED: return "sibling_succeeded";
    case TETHER_CAUSE_SCOPE_FINISHED: return "scope_finished";
    case TETHER_CAUSE_HALTED: return "halted";
    case TETHER_CAUSE_SIGNAL: return "signal";
    }
    return "unknown";
}

const char *tether_outcome_name(tether_outcome outcome)
{
    switch (outcome) {
    case TETHER_OUTCOME_OK: return "ok";
    case TETHER_OUTCOME_PARTIAL: return "partial";
    case TETHER_OUTCOME_FAILED: return "failed";
    case TETHER_OUTCOME_CANCELED: return "canceled";
    case TETHER_OUTCOME_DEADLINE_EXCEEDED: return "deadline_exceeded";
    }
    return "unknown";
}

void tether__assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "tether: internal invariant broken: %s (%s:%d)\n", what, file, line);
    abort();
}
