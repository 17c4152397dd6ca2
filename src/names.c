/* The names of causes and outcomes. */
#include "internal.h"

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
