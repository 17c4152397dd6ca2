/*
 * Shielded regions: clean-up that must still do blocking I/O after its
 * thread was canceled.
 *
 * Entering a shield creates a root token (no parent, not even the process
 * root, so no cancellation or deadline from outside reaches it) with the
 * shield's own deadline, and
 * enters it: every cancellation point in the region uses it. Leaving leaves
 * and frees it; the tokens entered before are untouched, so a cancellation
 * that arrived meanwhile is seen at the next cancellation point.
 *
 * Its own file rather than part of current.c: a shield is an opaque handle
 * with a lifecycle of its own, built on the public token calls and the one
 * internal call that makes a token with no parent at all.
 */
#define _GNU_SOURCE
#include "current.h"

struct tether_shield {
    tether_token *token;
};

int tether_shield_enter(tether_shield **out, tether_time_t deadline)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    tether_shield *s = tether__malloc(sizeof *s);
    if (!s)
        return ENOMEM;
    /* No parent at all, not even the process root. */
    int rc = tether__token_new(&s->token, NULL, deadline);
    if (rc) {
        free(s);
        return rc;
    }
    rc = tether_token_enter(s->token);
    if (rc) {
        tether_token_free(s->token);
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

tether_token *tether_shield_token(tether_shield *s)
{
    return s ? s->token : NULL;
}

int tether_shield_leave(tether_shield *s)
{
    if (!s)
        return EINVAL;
    int rc = tether_token_leave(s->token);
    if (rc)
        return rc; /* EPERM: not the innermost entry */
    rc = tether_token_free(s->token);
    if (rc) {
        /* EBUSY: a child token or scope lives on. Undo the leave; it cannot
         * fail, as the entry stack just had room for it. */
        int again = tether_token_enter(s->token);
        TETHER_ASSERT(again == 0);
        return rc;
    }
    free(s);
    return 0;
}
