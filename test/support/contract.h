/*
 * Row machinery for the contract matrix (test/test_contract_*.c).
 *
 * A Check test covers one public function; inside it, each documented error
 * and each difference from the raw call is one row. A failing row is
 * recorded with its name and what was seen, the other rows still run, and
 * ct_done fails the test listing every failing row. The rows are listed in
 * docs/contract-matrix.md.
 */
#ifndef TETHER_TEST_CONTRACT_H
#define TETHER_TEST_CONTRACT_H

#include "support.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct ct_rows {
    const char *test; /* the Check test's function, for the listing */
    int failed;
    int listing; /* set while a CT_ macro lists its own row */
    size_t len;
    char log[16384];
} ct_rows;

/* With TETHER_CONTRACT_LIST=<file>, every row is appended to the file as
 * "row|expected|test" (docs/contract-matrix.md is made from it). */
static inline void ct_list(const ct_rows *r, const char *row, const char *expected)
{
    const char *path = getenv("TETHER_CONTRACT_LIST");
    if (!path || !*path)
        return;
    FILE *f = fopen(path, "a");
    if (!f)
        return;
    const char *test = r->test ? r->test : "?";
    size_t tl = strlen(test);
    if (tl > 3 && strcmp(test + tl - 3, "_fn") == 0)
        tl -= 3; /* START_TEST's suffix */
    fprintf(f, "%s|%s|%.*s\n", row, expected, (int)tl, test);
    fclose(f);
}

/* Record one row: ok, or a failure described by fmt ("row: expected ..."). */
__attribute__((format(printf, 3, 4))) static inline void ct_row(ct_rows *r, int ok, const char *fmt,
                                                                ...)
{
    char msg[512];
    va_list ap0;
    va_start(ap0, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap0);
    va_end(ap0);
    if (getenv("TETHER_CONTRACT_LIST") && !r->listing) {
        char row[512];
        snprintf(row, sizeof row, "%s", msg);
        char *colon = strstr(row, ": ");
        const char *exp = "holds";
        char expbuf[256];
        if (colon) {
            *colon = '\0';
            const char *e = strstr(colon + 2, "expected ");
            if (e) {
                snprintf(expbuf, sizeof expbuf, "%s", e + 9);
                char *g = strstr(expbuf, " got");
                if (g)
                    *g = '\0';
                g = strstr(expbuf, ", got");
                if (g)
                    *g = '\0';
                size_t el = strlen(expbuf);
                while (el &&
                       (expbuf[el - 1] == ',' || expbuf[el - 1] == ' ' || expbuf[el - 1] == ';'))
                    expbuf[--el] = '\0';
                exp = expbuf;
            }
        }
        ct_list(r, row, exp);
    }
    if (ok)
        return;
    r->failed++;
    if (r->len + 8 >= sizeof r->log)
        return;
    r->log[r->len++] = '\n';
    r->log[r->len++] = ' ';
    r->log[r->len++] = ' ';
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(r->log + r->len, sizeof r->log - r->len, fmt, ap);
    va_end(ap);
    if (n > 0)
        r->len += (size_t)n < sizeof r->log - r->len ? (size_t)n : sizeof r->log - r->len - 1;
}

/* Fail the test if any row failed, naming all of them. */
static inline void ct_done(ct_rows *r)
{
    if (r->failed)
        fprintf(stderr, "contract rows failed:%s\n", r->log);
    ck_assert_msg(r->failed == 0, "%d row(s) failed:%s", r->failed, r->log);
}

/* A row on a -1/errno call: expect ret == -1 and errno == err. */
#define CT_ERR(r, name, ret, err)                                                                  \
    do {                                                                                           \
        long long ct_ret_ = (long long)(ret);                                                      \
        int ct_errno_ = errno;                                                                     \
        char ct_exp_[64];                                                                          \
        snprintf(ct_exp_, sizeof ct_exp_, "-1/%s", strerrorname_np(err));                          \
        ct_list((r), (name), ct_exp_);                                                             \
        (r)->listing = 1;                                                                          \
        ct_row((r), ct_ret_ == -1 && ct_errno_ == (err), "%s: expected -1/%s got %lld/%s", (name), \
               strerrorname_np(err), ct_ret_, ct_ret_ == -1 ? strerrorname_np(ct_errno_) : "-");   \
        (r)->listing = 0;                                                                          \
    } while (0)

/* A row on a call returning an error number: expect rc == want. */
#define CT_RC(r, name, rc, want)                                               \
    do {                                                                       \
        int ct_rc_ = (int)(rc);                                                \
        int ct_want_ = (want);                                                 \
        ct_list((r), (name), ct_want_ ? strerrorname_np(ct_want_) : "0");      \
        (r)->listing = 1;                                                      \
        ct_row((r), ct_rc_ == ct_want_, "%s: expected %s got %s (%d)", (name), \
               ct_want_ ? strerrorname_np(ct_want_) : "0",                     \
               ct_rc_ > 0 ? strerrorname_np(ct_rc_) : "non-errno", ct_rc_);    \
        (r)->listing = 0;                                                      \
    } while (0)

/* A row comparing tether's -1/errno call with the raw call's, side by side. */
#define CT_SAME(r, name, tret, terr, rret, rerr)                                          \
    do {                                                                                  \
        char ct_exp_[96];                                                                 \
        snprintf(ct_exp_, sizeof ct_exp_, "as the raw call (%lld/%s)", (long long)(rret), \
                 (long long)(rret) == -1 ? strerrorname_np(rerr) : "-");                  \
        ct_list((r), (name), ct_exp_);                                                    \
        (r)->listing = 1;                                                                 \
        ct_row((r),                                                                       \
               (long long)(tret) == (long long)(rret) &&                                  \
                   ((long long)(tret) != -1 || (terr) == (rerr)),                         \
               "%s: raw gave %lld/%s, tether gave %lld/%s", (name), (long long)(rret),    \
               (long long)(rret) == -1 ? strerrorname_np(rerr) : "-", (long long)(tret),  \
               (long long)(tret) == -1 ? strerrorname_np(terr) : "-");                    \
        (r)->listing = 0;                                                                 \
    } while (0)

/* Run RAW, then TETHER under a token in state ST (bounded rows end within
 * th_bound_ns(250)), and compare them as one row named by the format. */
#define CT_SIDE(r, st, RAW, TETHER, ...)                        \
    do {                                                        \
        char ct_name_[160];                                     \
        snprintf(ct_name_, sizeof ct_name_, __VA_ARGS__);       \
        errno = 0;                                              \
        long long ct_rr_ = (long long)(RAW);                    \
        int ct_re_ = errno;                                     \
        tether_token *ct_t_ = ct_enter((st), 250);              \
        errno = 0;                                              \
        long long ct_tr_ = (long long)(TETHER);                 \
        int ct_te_ = errno;                                     \
        ct_leave(ct_t_);                                        \
        CT_SAME((r), ct_name_, ct_tr_, ct_te_, ct_rr_, ct_re_); \
    } while (0)

/* The token states a row can run under. */
typedef enum ct_state {
    CT_NONE = 0, /* no current token */
    CT_LIVE,     /* a live token, no deadline */
    CT_CANCELED, /* already canceled */
    CT_EXPIRED,  /* deadline already past */
    CT_BOUNDED   /* a deadline th_bound_ns(base) ahead: a hang ends as ETIMEDOUT */
} ct_state;

/* Enter a token in the given state; returns it (NULL for CT_NONE). */
static inline tether_token *ct_enter(ct_state st, int64_t bound_ms)
{
    if (st == CT_NONE)
        return NULL;
    tether_token *t = NULL;
    tether_time_t dl = TETHER_NEVER;
    if (st == CT_EXPIRED)
        dl = tether_now() - 1;
    if (st == CT_BOUNDED)
        dl = tether_now() + th_bound_ns(bound_ms);
    ck_assert_int_eq(tether_token_new(&t, NULL, dl), 0);
    if (st == CT_CANCELED)
        ck_assert_int_eq(tether_token_cancel(t, 0), 0);
    ck_assert_int_eq(tether_token_enter(t), 0);
    return t;
}

static inline void ct_leave(tether_token *t)
{
    if (!t)
        return;
    ck_assert_int_eq(tether_token_leave(t), 0);
    ck_assert_int_eq(tether_token_free(t), 0);
}

static inline int ct_expected(ct_state st)
{
    return st == CT_CANCELED ? ECANCELED : ETIMEDOUT;
}

static inline const char *ct_state_name(ct_state st)
{
    static const char *n[] = { "no-token", "live", "canceled", "expired", "bounded" };
    return n[st];
}

/* An address that is mapped PROT_NONE: any access faults. */
static inline void *ct_unmapped(void)
{
    void *p = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    return p;
}

/* Two pages, the second PROT_NONE; returns the start of the second. */
static inline char *ct_guarded(void)
{
    char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_ne(p, MAP_FAILED);
    ck_assert_int_eq(mprotect(p + 4096, 4096, PROT_NONE), 0);
    return p + 4096;
}

/* Run fn(ctx) in a forked child, so a row that crashes fails alone. Returns
 * fn's result with *err its errno, or sets *sig to the signal that killed it. */
static inline long long ct_in_child(long long (*fn)(void *ctx), void *ctx, int *err, int *sig)
{
    int ep[2];
    ck_assert_int_eq(pipe(ep), 0);
    *sig = 0;
    *err = 0;
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        close(ep[0]);
        /* Check's own SIGALRM handler (inherited) kills the whole process
         * group: a row's alarm() must only end this child. */
        signal(SIGALRM, SIG_DFL);
        errno = 0;
        long long v[2];
        v[0] = fn(ctx);
        v[1] = errno;
        _exit(write(ep[1], v, sizeof v) == sizeof v ? 0 : 3);
    }
    close(ep[1]);
    long long v[2] = { 0, 0 };
    ssize_t got = read(ep[0], v, sizeof v);
    int ws = 0;
    waitpid(pid, &ws, 0);
    close(ep[0]);
    if (WIFSIGNALED(ws))
        *sig = WTERMSIG(ws);
    else if (got != (ssize_t)sizeof v)
        *sig = -1;
    *err = (int)v[1];
    return v[0];
}

#endif
