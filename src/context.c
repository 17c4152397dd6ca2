/*
 * Request context (tether/context.h): a short string attached to a token,
 * seen by every token below it.
 *
 * A token's value is an immutable heap copy published through an atomic
 * pointer (token.h). Setting swaps the pointer under the context lock and
 * frees the old copy after dropping the lock; every reader that follows a
 * pointer does so under the same lock, so no reader sees a freed or
 * half-written string. The lock is a leaf: nothing else is taken while it
 * is held. The dump takes it inside the tree lock (tree lock, then context
 * lock: the only nesting), and the fork handlers hold it across fork
 * after the tree lock. A lookup that finds no value on the way up takes no
 * lock at all.
 *
 * Walking up needs no tree lock: a token's parent link never changes, and a
 * token with children cannot be freed (tether_token_free: EBUSY), so every
 * ancestor of a token the caller holds stays alive. A token's own copy is
 * freed with the token, once it is unlinked: no descendant is left to look
 * it up and the dump's walk no longer reaches it.
 */
#define _GNU_SOURCE
#include "current.h"

#include <string.h>

static pthread_mutex_t context_lock = PTHREAD_MUTEX_INITIALIZER;

static char *value_of(const tether_token *t)
{
    /* atomic_load wants a non-const object; the load does not write. */
    return atomic_load_explicit(&((tether_token *)(uintptr_t)t)->context, memory_order_relaxed);
}

int tether_token_set_context(tether_token *t, const char *value)
{
    if (!t)
        return EINVAL;
    char *copy = NULL;
    if (value) {
        size_t len = strnlen(value, TETHER_CONTEXT_MAX);
        if (len == TETHER_CONTEXT_MAX)
            return ERANGE;
        copy = tether__malloc(len + 1);
        if (!copy)
            return ENOMEM;
        memcpy(copy, value, len);
        copy[len] = '\0';
    }
    tether__fork_once(); /* the lock is held across fork from now on */
    tether__lock(&context_lock);
    char *old = value_of(t);
    atomic_store_explicit(&t->context, copy, memory_order_relaxed);
    tether__unlock(&context_lock);
    free(old); /* no reader follows it any more: they do so under the lock */
    return 0;
}

/* Copy the nearest value from t upwards (t's own only, unless `up`) into
 * buf: 0, ENOENT or ERANGE. */
static int lookup(const tether_token *t, bool up, char *buf, size_t size)
{
    const tether_token *n = t;
    while (n && !value_of(n))
        n = up ? tether__token_parent(n) : NULL;
    if (!n)
        return ENOENT;
    /* Found one: look again under the lock, from t, since values may have
     * been set, replaced or removed since. */
    int rc = ENOENT;
    tether__lock(&context_lock);
    for (n = t; n; n = up ? tether__token_parent(n) : NULL) {
        const char *v = value_of(n);
        if (!v)
            continue;
        size_t len = strlen(v);
        rc = len < size ? 0 : ERANGE;
        if (!rc)
            memcpy(buf, v, len + 1);
        break;
    }
    tether__unlock(&context_lock);
    return rc;
}

int tether_token_context(const tether_token *t, char *buf, size_t size)
{
    if (!t || !buf)
        return EINVAL;
    return lookup(t, true, buf, size);
}

int tether_context(char *buf, size_t size)
{
    if (!buf)
        return EINVAL;
    tether_token *t = tether__current;
    return t ? lookup(t, true, buf, size) : ENOENT;
}

bool tether__context_own(const tether_token *t, char buf[TETHER_CONTEXT_MAX])
{
    return lookup(t, false, buf, TETHER_CONTEXT_MAX) == 0;
}

void tether__context_release(tether_token *t)
{
    free(value_of(t));
}

void tether__context_fork_prepare(void)
{
    tether__lock(&context_lock);
}

void tether__context_fork_release(void)
{
    tether__unlock(&context_lock);
}
