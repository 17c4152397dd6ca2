/*
 * The dump: every live scope, child and token, as text or JSON, written to a
 * descriptor (tether_dump), on demand or from a signal's relay thread
 * (tether_dump_on_signal).
 *
 * The token tree is the registry: every token is linked into it (roots on a
 * list of their own, token.c), and a token made by a scope says so (its
 * owner, token.h), so the walk finds every scope and child with no list of
 * its own to keep on the spawn path. The walk copies what it needs under
 * the tree lock (tether__token_visit) and formats and writes after it: a
 * slow descriptor never holds up a cancel. An owner's fields read during the
 * walk are immutable once its token is published, or atomic (a child's tid,
 * whether it exited), and an owner outlives its token's place in the tree.
 *
 * fork: the children of a scope the child process inherited are the
 * parent's threads; the dump says so instead of looking them up. An
 * installation of tether_dump_on_signal is inert in a fork child (its relay
 * thread is the parent's and its eventfd is shared with the parent: the
 * handler must never wake the parent's relay), as tether_sigcancel is.
 */
#define _GNU_SOURCE
#include "scope.h"

#include "clock.h"
#include "sys.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sched.h>

enum { BLOCKED_MAX = 32 };

/* One token as copied under the tree lock. */
struct node {
    unsigned depth;
    enum tether__owner_kind kind;
    char name[TETHER_NAME_MAX];
    tether_policy policy;
    int index, tid, entered;
    bool exited, canceled;
    bool inherited; /* a child of a scope opened before a fork */
    tether_cause cause;
    tether_time_t deadline, canceled_at;
    char blocked[BLOCKED_MAX];
    bool has_context;
    char context[TETHER_CONTEXT_MAX]; /* its own value, not an ancestor's */
};

struct snapshot {
    struct node *v;
    size_t n, cap;
};

/* The visitor: copy t. Allocation and the context lock (a leaf) only. */
static int copy_node(void *ctx, const tether_token *t, unsigned depth)
{
    struct snapshot *sn = ctx;
    if (sn->n == sn->cap) {
        size_t cap = sn->cap ? sn->cap * 2 : 64;
        struct node *v = tether__fault_hit() ? NULL : realloc(sn->v, cap * sizeof *v);
        if (!v)
            return ENOMEM;
        sn->v = v;
        sn->cap = cap;
    }
    struct node *nd = &sn->v[sn->n++];
    memset(nd, 0, sizeof *nd);
    nd->depth = depth;
    nd->deadline = t->deadline;
    nd->entered = atomic_load_explicit(&t->entered, memory_order_relaxed);
    nd->canceled = tether__token_canceled(t);
    nd->has_context = tether__context_own(t, nd->context);
    if (nd->canceled) {
        nd->cause = tether_token_cause(t);
        nd->canceled_at = t->canceled_at;
    }
    void *owner =
        atomic_load_explicit(&((tether_token *)(uintptr_t)t)->owner, memory_order_acquire);
    nd->kind = owner ? (enum tether__owner_kind)t->owner_kind : OWNER_NONE;
    if (nd->kind == OWNER_SCOPE) {
        const tether_scope *s = owner;
        memcpy(nd->name, s->name, TETHER_NAME_MAX);
        nd->policy = s->policy;
    } else if (nd->kind == OWNER_TASK) {
        tether_task *task = owner;
        memcpy(nd->name, task->name, TETHER_NAME_MAX);
        nd->index = task->index;
        nd->tid = atomic_load_explicit(&task->tid, memory_order_relaxed);
        nd->exited = atomic_load_explicit(&task->exited, memory_order_relaxed);
        nd->inherited = tether__scope_inherited(task->scope);
    }
    return 0;
}

/* ---------------------------------------------------------------------- */
/* Output buffer                                                          */

struct out {
    char *p;
    size_t n, cap;
    bool oom;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
    for (;;) {
        if (o->oom)
            return;
        va_list ap;
        va_start(ap, fmt);
        int len = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
        va_end(ap);
        if (len < 0) {
            o->oom = true;
            return;
        }
        if ((size_t)len < o->cap - o->n) {
            o->n += (size_t)len;
            return;
        }
        size_t cap = (o->cap + (size_t)len + 1) * 2;
        char *p = tether__fault_hit() ? NULL : realloc(o->p, cap);
        if (!p) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
}

/* s quoted, on one line whatever it holds: as a JSON string (json), or
 * between single quotes for the text form; a quote, a backslash and every
 * byte outside printable ASCII escaped (\u00XX in JSON, \xXX in text). */
static void put_quoted(struct out *o, const char *s, bool json)
{
    unsigned char q = json ? '"' : '\'';
    put(o, "%c", q);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        if (*c == q || *c == '\\')
            put(o, "\\%c", *c);
        else if (*c < 0x20 || *c >= 0x7f)
            put(o, json ? "\\u%04x" : "\\x%02x", *c);
        else
            put(o, "%c", *c);
    }
    put(o, "%c", q);
}

static const char *policy_name(tether_policy p)
{
    return p == TETHER_POLICY_SUPERVISOR      ? "supervisor"
           : p == TETHER_POLICY_FIRST_SUCCESS ? "first-success"
                                              : "fail-fast";
}

static const char *kind_name(enum tether__owner_kind k)
{
    return k == OWNER_SCOPE        ? "scope"
           : k == OWNER_TASK       ? "child"
           : k == OWNER_BACKGROUND ? "background"
                                   : "token";
}

static double ms(int64_t ns)
{
    return (double)ns / 1e6;
}

/* ---------------------------------------------------------------------- */
/* Formats                                                                */

/* nd's state (cause and time since the cancel) and deadline (time left),
 * as either format spells them. */
static void put_state(struct out *o, const struct node *nd, tether_time_t now, bool json)
{
    if (nd->canceled)
        put(o,
            json ? ",\"state\":\"canceled\",\"cause\":\"%s\",\"since_cancel_ms\":%.3f"
                 : ", canceled (%s, %.1f ms ago)",
            tether_cause_name(nd->cause), ms(now - nd->canceled_at));
    else
        put(o, "%s",
            json ? ",\"state\":\"live\",\"cause\":null,\"since_cancel_ms\":null" : ", live");
    if (nd->deadline == TETHER_NEVER)
        put(o, "%s", json ? ",\"deadline_ns\":null,\"time_left_ms\":null" : ", no deadline");
    else
        put(o,
            json ? ",\"deadline_ns\":%lld,\"time_left_ms\":%.3f"
                 : ", deadline %lld ns (%.1f ms left)",
            (long long)nd->deadline, ms(nd->deadline - now));
}

static void text_node(struct out *o, const struct node *nd, tether_time_t now)
{
    put(o, "%*s%s", (int)(2 * nd->depth), "", kind_name(nd->kind));
    if (nd->kind == OWNER_SCOPE || nd->kind == OWNER_TASK)
        put(o, " '%s'", nd->name);
    if (nd->kind == OWNER_SCOPE)
        put(o, " %s", policy_name(nd->policy));
    if (nd->kind == OWNER_TASK) {
        put(o, " #%d tid %d", nd->index, nd->tid);
        if (nd->inherited)
            put(o, " in the parent process (inherited across fork)");
        else if (nd->exited)
            put(o, " exited");
        else
            put(o, " running, blocked in %s", nd->blocked);
    }
    if (nd->kind == OWNER_NONE)
        put(o, " entered %d", nd->entered);
    put_state(o, nd, now, false);
    if (nd->has_context) {
        put(o, ", context ");
        put_quoted(o, nd->context, false);
    }
    put(o, "\n");
}

static void json_node(struct out *o, const struct node *nd, tether_time_t now)
{
    put(o, "{\"kind\":\"%s\",\"name\":", kind_name(nd->kind));
    put_quoted(o, nd->name, true);
    if (nd->kind == OWNER_SCOPE)
        put(o, ",\"policy\":\"%s\"", policy_name(nd->policy));
    if (nd->kind == OWNER_TASK) {
        put(o,
            ",\"index\":%d,\"tid\":%d,\"inherited\":%s,\"running\":%s,\"blocked_in\":", nd->index,
            nd->tid, nd->inherited ? "true" : "false",
            nd->exited || nd->inherited ? "false" : "true");
        if (nd->exited || nd->inherited)
            put(o, "null");
        else
            put_quoted(o, nd->blocked, true);
    }
    put(o, ",\"entered\":%d", nd->entered);
    put_state(o, nd, now, true);
    put(o, ",\"context\":");
    if (nd->has_context)
        put_quoted(o, nd->context, true);
    else
        put(o, "null");
    put(o, ",\"children\":[");
}

static void format(struct out *o, const struct snapshot *sn, tether_dump_format f)
{
    tether_time_t now = tether_now();
    unsigned scopes = 0, children = 0, running = 0;
    for (size_t i = 0; i < sn->n; i++) {
        scopes += sn->v[i].kind == OWNER_SCOPE;
        children += sn->v[i].kind == OWNER_TASK;
        running += sn->v[i].kind == OWNER_TASK && !sn->v[i].exited && !sn->v[i].inherited;
    }
    int pid = (int)tether__sys_getpid();
    if (f == TETHER_DUMP_TEXT) {
        put(o, "tether dump: pid %d, %u scopes, %u children (%u running), %zu tokens\n", pid,
            scopes, children, running, sn->n);
        for (size_t i = 0; i < sn->n; i++)
            text_node(o, &sn->v[i], now);
        return;
    }
    put(o,
        "{\"pid\":%d,\"now_ns\":%lld,\"scopes\":%u,\"children\":%u,\"running\":%u,"
        "\"tokens\":%zu,\"tree\":[",
        pid, (long long)now, scopes, children, running, sn->n);
    /* Pre-order with depths to nesting: a node's "children" array stays
     * open while the next node is one level deeper. */
    for (size_t i = 0; i < sn->n; i++) {
        json_node(o, &sn->v[i], now);
        unsigned d = sn->v[i].depth;
        bool last = i + 1 == sn->n;
        unsigned next = last ? 0 : sn->v[i + 1].depth;
        if (!last && next == d + 1)
            continue;
        for (unsigned k = 0, closes = last ? d + 1 : d - next + 1; k < closes; k++)
            put(o, "]}");
        if (!last)
            put(o, ",");
    }
    put(o, "]}\n");
}

/* ---------------------------------------------------------------------- */
/* tether_dump                                                            */

static int writable(int fd)
{
    int fl = tether__sys_fcntl(fd, F_GETFL, 0);
    if (fl < 0)
        return errno == EBADF ? EBADF : errno;
    return (fl & O_ACCMODE) == O_RDONLY ? EBADF : 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = tether__sys_write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int tether_dump(int fd, tether_dump_format format_)
{
    if ((unsigned)format_ > TETHER_DUMP_JSON)
        return EINVAL;
    int rc = writable(fd);
    if (rc)
        return rc;
    struct snapshot sn = { 0 };
    rc = tether__token_visit(copy_node, &sn);
    if (!rc) {
        for (size_t i = 0; i < sn.n; i++)
            if (sn.v[i].kind == OWNER_TASK && !sn.v[i].exited && !sn.v[i].inherited)
                tether__blocked_in(sn.v[i].tid, sn.v[i].blocked, BLOCKED_MAX);
        struct out o = { 0 };
        format(&o, &sn, format_);
        rc = o.oom ? ENOMEM : write_all(fd, o.p, o.n);
        free(o.p);
    }
    free(sn.v);
    return rc;
}

/* ---------------------------------------------------------------------- */
/* On a signal: the handler wakes the relay, the relay writes             */

struct tether_dump_signal {
    int sig, fd, efd;
    tether_dump_format format;
    unsigned gen; /* the process generation whose relay this is */
    _Atomic int stopping;
    pthread_t relay;
    struct sigaction old;
};

static _Atomic(tether_dump_signal *) dump_active;
static _Atomic int dump_in_handler;
static _Atomic int dump_installed; /* the one slot, from install to free */

static void on_dump_signal(int sig)
{
    (void)sig;
    int saved = errno;
    atomic_fetch_add(&dump_in_handler, 1);
    tether_dump_signal *h = atomic_load(&dump_active);
    if (h && h->gen == tether__fork_generation()) /* never the parent's relay */
        tether__sys_eventfd_signal(h->efd);
    atomic_fetch_sub(&dump_in_handler, 1);
    errno = saved;
}

static void *dump_relay(void *arg)
{
    tether_dump_signal *h = arg;
    while (!atomic_load(&h->stopping)) {
        struct pollfd p = { .fd = h->efd, .events = POLLIN };
        if (tether__sys_poll(&p, 1, -1) < 0)
            continue;
        tether__sys_eventfd_drain(h->efd);
        if (!atomic_load(&h->stopping))
            tether_dump(h->fd, h->format);
    }
    return NULL;
}

int tether_dump_on_signal(tether_dump_signal **out, int sig, int fd, tether_dump_format format_)
{
    if (!out)
        return EINVAL;
    *out = NULL;
    bool catchable = sig > 0 && sig < NSIG && sig != SIGKILL && sig != SIGSTOP;
    if (!catchable || (unsigned)format_ > TETHER_DUMP_JSON)
        return EINVAL;
    int rc = writable(fd);
    if (rc)
        return rc;
    int unclaimed = 0;
    if (!atomic_compare_exchange_strong(&dump_installed, &unclaimed, 1))
        return EBUSY; /* one installation at a time: the handler finds it by one pointer */
    tether_dump_signal *h = tether__calloc(1, sizeof *h);
    if (!h) {
        rc = ENOMEM;
        goto fail_slot;
    }
    h->sig = sig;
    h->fd = fd;
    h->format = format_;
    h->gen = tether__fork_generation();
    h->efd = tether__sys_eventfd(EFD_CLOEXEC | EFD_NONBLOCK);
    if (h->efd < 0) {
        rc = errno;
        goto fail_free;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = tether__thread_create(&h->relay, NULL, dump_relay, h);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc)
        goto fail_efd;
    atomic_store(&dump_active, h);
    struct sigaction sa = { .sa_handler = on_dump_signal, .sa_flags = SA_RESTART };
    sigemptyset(&sa.sa_mask); /* an empty mask: the handler only writes an eventfd */
    if (sigaction(sig, &sa, &h->old) < 0) {
        rc = errno;
        atomic_store(&dump_active, NULL);
        goto fail_relay;
    }
    *out = h;
    return 0;

fail_relay:
    atomic_store(&h->stopping, 1);
    tether__sys_eventfd_signal(h->efd);
    pthread_join(h->relay, NULL);
fail_efd:
    tether__sys_close(h->efd);
fail_free:
    free(h);
fail_slot:
    atomic_store(&dump_installed, 0);
    return rc;
}

int tether_dump_signal_free(tether_dump_signal *h)
{
    if (!h)
        return EINVAL;
    /* Inherited across fork: it gave up the slot, its relay is the
     * parent's; while the child has an installation of its own, the
     * disposition is that one's. */
    bool mine = h->gen == tether__fork_generation();
    tether_dump_signal *expected = h;
    if (atomic_compare_exchange_strong(&dump_active, &expected, NULL) || mine || !expected)
        sigaction(h->sig, &h->old, NULL);
    while (atomic_load(&dump_in_handler))
        sched_yield(); /* a handler that started before the store is finishing */
    if (!mine) {
        tether__sys_close(h->efd); /* the child's copy; the relay is the parent's */
        free(h);
        return 0;
    }
    atomic_store(&h->stopping, 1);
    tether__sys_eventfd_signal(h->efd);
    pthread_join(h->relay, NULL);
    tether__sys_close(h->efd);
    free(h);
    atomic_store(&dump_installed, 0);
    return 0;
}

void tether__dump_fork_child(void)
{
    atomic_store(&dump_installed, 0);
}
