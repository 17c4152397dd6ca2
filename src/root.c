/*
 * The process root: the deadline a process inherits from its parent in
 * TETHER_DEADLINE (core.h), adopted as one root token under which every
 * thread runs when it has no current token of its own, and written into the
 * environment of the children tether_proc_spawn starts.
 *
 * The root is resolved once, lazily, by the first call that needs it: a
 * small state machine (unresolved, resolving, none, adopted) rather than a
 * pthread_once or a mutex, so that the fork handler can wait for a
 * resolution in flight instead of inheriting it half done. A process without
 * the variable pays one resolution and then one relaxed load per exported
 * check (tether__root_check is zero); the inline tether_check of a thread
 * with no token reads that word beside its own thread-local one.
 */
#define _GNU_SOURCE
#include "current.h"

#include "clock.h"

#include <sched.h>
#include <string.h>

_Atomic int tether__root_state = TETHER__ROOT_UNRESOLVED;
tether_token *tether__root_token;
_Thread_local bool tether__outside_root;
/* Nonzero while a thread with no token must call into tether_check: before
 * the resolution, and for good once a deadline is adopted. Written with
 * __atomic builtins: the inline check (core.h) reads it as a plain word. */
unsigned int tether__root_check = 1;

static const char VAR[] = TETHER_DEADLINE_ENV "=";
enum { VAR_LEN = sizeof VAR - 1, MAX_DIGITS = 19 };

int tether__deadline_parse(const char *s, tether_time_t *out)
{
    if (!s || !*s)
        return EINVAL;
    int64_t v = 0;
    size_t n = 0;
    for (; s[n]; n++) {
        if (n == MAX_DIGITS || s[n] < '0' || s[n] > '9')
            return EINVAL;
        int d = s[n] - '0';
        if (v > (INT64_MAX - d) / 10)
            return EINVAL;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static void set_root_check(unsigned int v)
{
    __atomic_store_n(&tether__root_check, v, __ATOMIC_RELAXED);
}

/* The winner of the resolution: parse, create, publish. */
static void resolve(void)
{
    tether_time_t d;
    /* Read once per process; racing a setenv is the caller's (documented). */
    const char *v = getenv(TETHER_DEADLINE_ENV); // NOLINT(concurrency-mt-unsafe)
    if (tether__deadline_parse(v, &d) != 0 || d == TETHER_NEVER) {
        set_root_check(0);
        atomic_store_explicit(&tether__root_state, TETHER__ROOT_NONE, memory_order_release);
        return;
    }
    tether_token *t;
    if (tether__token_new(&t, NULL, d) != 0) {
        /* No memory for it: unresolved again, the next call retries. */
        atomic_store_explicit(&tether__root_state, TETHER__ROOT_UNRESOLVED, memory_order_release);
        return;
    }
    tether__root_token = t;
    atomic_store_explicit(&tether__root_state, TETHER__ROOT_ADOPTED, memory_order_release);
}

tether_token *tether__root_slow(void)
{
    for (;;) {
        int s = atomic_load_explicit(&tether__root_state, memory_order_acquire);
        if (s == TETHER__ROOT_NONE)
            return NULL;
        if (s == TETHER__ROOT_ADOPTED)
            return tether__root_token;
        if (s == TETHER__ROOT_UNRESOLVED) {
            if (!atomic_compare_exchange_strong(&tether__root_state, &s, TETHER__ROOT_RESOLVING))
                continue;
            resolve();
            s = atomic_load_explicit(&tether__root_state, memory_order_acquire);
            if (s == TETHER__ROOT_UNRESOLVED)
                return NULL; /* out of memory: this call goes on without */
            continue;
        }
        sched_yield(); /* another thread resolves: a getenv and a token */
    }
}

tether_time_t tether_process_deadline(void)
{
    tether_token *r = tether__root_slow(); /* the process's, from any thread */
    return r ? tether_token_deadline(r) : TETHER_NEVER;
}

int tether_process_deadline_ignore(void)
{
    for (;;) {
        int s = atomic_load_explicit(&tether__root_state, memory_order_acquire);
        if (s == TETHER__ROOT_NONE)
            return 0;
        if (s == TETHER__ROOT_ADOPTED)
            return EBUSY;
        if (s == TETHER__ROOT_UNRESOLVED) {
            if (!atomic_compare_exchange_strong(&tether__root_state, &s, TETHER__ROOT_RESOLVING))
                continue;
            set_root_check(0);
            atomic_store_explicit(&tether__root_state, TETHER__ROOT_NONE, memory_order_release);
            return 0;
        }
        sched_yield();
    }
}

int tether_token_new(tether_token **out, tether_token *parent, tether_time_t deadline)
{
    if (!out)
        return EINVAL;
    return tether__token_new(out, parent ? parent : tether__root(), deadline);
}

void tether__root_fork_prepare(void)
{
    /* A resolution is a getenv and a token: short, and it takes no lock
     * the other prepare handlers hold yet. */
    while (atomic_load_explicit(&tether__root_state, memory_order_acquire) ==
           TETHER__ROOT_RESOLVING)
        sched_yield();
}

/* Whether entry e is "TETHER_DEADLINE=..." */
static bool is_var(const char *e)
{
    return strncmp(e, VAR, VAR_LEN) == 0;
}

int tether__child_env(char *const *envp, tether_time_t deadline, char ***out)
{
    *out = NULL;
    size_t n = 0;
    for (; envp && envp[n]; n++) {
        tether_time_t inherited;
        if (is_var(envp[n]) && tether__deadline_parse(envp[n] + VAR_LEN, &inherited) == 0)
            deadline = tether__min_time(deadline, inherited);
    }
    if (deadline == TETHER_NEVER)
        return 0; /* nothing to say: envp goes as it is */
    /* One block: the pointers (the ones kept, ours, the NULL), then our
     * "TETHER_DEADLINE=<digits>". */
    size_t ptrs = (n + 2) * sizeof(char *);
    char **env = tether__malloc(ptrs + VAR_LEN + MAX_DIGITS + 1);
    if (!env)
        return ENOMEM;
    char *var = (char *)env + ptrs;
    memcpy(var, VAR, VAR_LEN);
    char digits[MAX_DIGITS];
    int nd = 0;
    uint64_t v = deadline < 0 ? 0 : (uint64_t)deadline; /* never negative on Linux */
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    char *p = var + VAR_LEN;
    while (nd)
        *p++ = digits[--nd];
    *p = '\0';
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!is_var(envp[i])) /* replaced, never duplicated (malformed ones too) */
            env[k++] = envp[i];
    env[k++] = var;
    env[k] = NULL;
    *out = env;
    return 0;
}
