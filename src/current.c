/*
 * The calling thread's current token: enter/leave, the cancellation check,
 * and the in-thread timeout block.
 *
 * The current token is a thread-local pointer in the initial-exec TLS model,
 * so tether_check is a TLS load, a load of the token's state and a test;
 * tether__check_word (core.h) lets callers inline exactly that.
 * Entries nest; the tokens they replaced are kept on a per-thread stack that
 * lives inline for the first 16 levels and on the heap beyond.
 */
#define _GNU_SOURCE
#include "current.h"

#include <string.h>

_Thread_local tether_token *tether__current __attribute__((tls_model("initial-exec")));
_Thread_local const unsigned int *tether__check_word __attribute__((tls_model("initial-exec")));

/* The inline tether_check reads the state word (an _Atomic uint32_t) as a
 * plain unsigned int: that needs the two to be one lock-free 32-bit word. */
_Static_assert(sizeof(unsigned int) == 4 && ATOMIC_INT_LOCK_FREE == 2,
               "the check word is a plain lock-free 32-bit word");

/* The check word for t (or NULL): t's state word, zero unless t has fired
 * or has a deadline (or a waiter; then the inline check merely calls
 * tether_check). */
static const unsigned int *check_word_of(tether_token *t)
{
    return t ? (const unsigned int *)(uintptr_t)&t->wake.state : NULL;
}

/* Make t (or NULL) the calling thread's current token. Every write of
 * tether__current goes through here: callers compiled with the inline
 * tether_check read tether__check_word instead, and a stale one would point
 * into a token that may be freed. enter/leave assert the two agree. */
static void set_current(tether_token *t)
{
    tether__current = t;
    tether__check_word = check_word_of(t);
}

enum { INLINE_DEPTH = 16 };

static _Thread_local struct {
    tether_token **saved; /* inline_saved or a heap array */
    unsigned depth, cap;
    tether_token *inline_saved[INLINE_DEPTH];
} entries;

tether_token *tether_current(void)
{
    return tether__current;
}

static int grow_entries(void)
{
    unsigned cap = entries.cap * 2;
    tether_token **heap = tether__malloc(cap * sizeof(tether_token *));
    if (!heap)
        return ENOMEM;
    memcpy(heap, entries.saved, entries.depth * sizeof(tether_token *));
    if (entries.saved != entries.inline_saved)
        free(entries.saved);
    entries.saved = heap;
    entries.cap = cap;
    return 0;
}

int tether_token_enter(tether_token *t)
{
    if (!t)
        return EINVAL;
    if (!entries.saved) {
        entries.saved = entries.inline_saved;
        entries.cap = INLINE_DEPTH;
    }
    TETHER_ASSERT(tether__check_word == check_word_of(tether__current));
    if (entries.depth == entries.cap && grow_entries() != 0)
        return ENOMEM;
    entries.saved[entries.depth++] = tether__current;
    atomic_fetch_add_explicit(&t->entered, 1, memory_order_relaxed);
    set_current(t);
    return 0;
}

int tether_token_leave(tether_token *t)
{
    if (!t)
        return EINVAL;
    if (entries.depth == 0 || tether__current != t)
        return EPERM;
    TETHER_ASSERT(tether__check_word == check_word_of(t));
    set_current(entries.saved[--entries.depth]);
    atomic_fetch_sub_explicit(&t->entered, 1, memory_order_release);
    if (entries.depth == 0 && entries.saved != entries.inline_saved) {
        /* Back at the bottom: give the heap array back. */
        free(entries.saved);
        entries.saved = entries.inline_saved;
        entries.cap = INLINE_DEPTH;
    }
    return 0;
}

int(tether_check)(void)
{
    tether_token *t = tether__current_or_root();
    if (!t)
        return 0;
    uint32_t s = atomic_load_explicit(&t->wake.state, memory_order_acquire);
    if (__builtin_expect(!(s & (TETHER_WAKE_FIRED | TOKEN_HAS_DEADLINE)), 1))
        return 0;
    return tether__token_poll(t);
}

void tether__leave_or_die(tether_token *t, const char *who, const char *name)
{
    if (tether_token_leave(t) != 0)
        tether__misuse(who, name,
                       "returned with a token still entered "
                       "(tether_token_enter without tether_token_leave)");
}

void tether__free_or_die(tether_token *t, const char *who, const char *name)
{
    if (tether_token_free(t) != 0)
        tether__misuse(who, name,
                       "left a token or scope derived from its own token alive "
                       "after returning");
}

int tether__run_under(tether_time_t deadline, int (*fn)(void *arg), void *arg, int *result,
                      bool *fired, const char *who)
{
    tether_token *t;
    int rc = tether_token_new(&t, tether__current, deadline);
    if (rc)
        return rc;
    rc = tether_token_enter(t);
    if (rc) {
        tether_token_free(t);
        return rc;
    }
    *result = fn(arg);
    tether__leave_or_die(t, who, NULL);
    if (fired)
        *fired = tether_token_cause(t) == TETHER_CAUSE_DEADLINE;
    tether__free_or_die(t, who, NULL);
    return 0;
}

int tether_with_deadline(tether_time_t deadline, int (*fn)(void *arg), void *arg, bool *fired)
{
    if (fired)
        *fired = false;
    if (!fn)
        return EINVAL;
    int result;
    int rc = tether__run_under(deadline, fn, arg, &result, fired, "tether_with_deadline block");
    return rc ? rc : result;
}

int tether_with_timeout(int64_t timeout_ns, int (*fn)(void *arg), void *arg, bool *fired)
{
    return tether_with_deadline(tether_deadline_after(timeout_ns), fn, arg, fired);
}
