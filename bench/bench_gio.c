/*
 * bench_gio.c — what C programs would pick instead: GLib GIO's
 * GCancellable, side by side with tether in the same run. Built only when
 * pkg-config finds gio-unix-2.0 and the build is not a TSan one
 * (TETHER_BENCH_HAVE_GIO); otherwise the section reports gio_built 0 and a
 * note line saying why (TETHER_BENCH_GIO_OFF).
 *   cancel  a thread blocked in g_input_stream_read on the empty pipe (a
 *           GUnixInputStream), from g_cancellable_cancel until pthread_join
 *           returns, against a thread blocked in tether_read on the same pipe
 *           under a token it entered, from tether_token_cancel until
 *           pthread_join returns (gio_cancel_*; ratio tether / GIO latency).
 *   read    64 B and 4 KiB reads from a pipe a writer thread keeps full:
 *           g_input_stream_read with a live (never canceled) cancellable
 *           against tether_read with a live current token (gio_read_<chunk>_*;
 *           ratio tether / GIO throughput, MB/s).
 */
#include "bench_common.h"

#if TETHER_BENCH_HAVE_GIO

#include <errno.h>
#include <gio/gio.h>
#include <gio/gunixinputstream.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------------- */
/* Canceling one blocked reader                                           */

struct gio_cancel_ctx {
    GInputStream *in;          /* over g_pipe[0], which is never written */
    GCancellable *cancellable; /* fresh each round */
    tether_token *token;       /* fresh each round */
    struct slot slot;
    bool failed_as_expected;
};

static void *gio_reader(void *arg)
{
    struct gio_cancel_ctx *c = arg;
    char buf[1];
    GError *err = NULL;
    about_to_block(&c->slot);
    gssize n = g_input_stream_read(c->in, buf, sizeof buf, c->cancellable, &err);
    c->failed_as_expected = n < 0 && g_error_matches(err, G_IO_ERROR, G_IO_ERROR_CANCELLED);
    g_clear_error(&err);
    return NULL;
}

static void *tether_reader(void *arg)
{
    struct gio_cancel_ctx *c = arg;
    char buf[1];
    need_rc(tether_token_enter(c->token), "tether_token_enter");
    about_to_block(&c->slot);
    ssize_t n = tether_read(g_pipe[0], buf, sizeof buf);
    c->failed_as_expected = n < 0 && errno == ECANCELED;
    need_rc(tether_token_leave(c->token), "tether_token_leave");
    return NULL;
}

static double round_gio_cancel(void *ctx)
{
    struct gio_cancel_ctx *c = ctx;
    pthread_t th;
    c->cancellable = g_cancellable_new();
    atomic_store(&g_ready, 0);
    need_rc(pthread_create(&th, NULL, gio_reader, c), "pthread_create");
    wait_all_blocked(&c->slot, 1, IN_POLL);
    tether_time_t t0 = tether_now();
    g_cancellable_cancel(c->cancellable);
    need_rc(pthread_join(th, NULL), "pthread_join");
    tether_time_t t1 = tether_now();
    g_clear_object(&c->cancellable);
    if (!c->failed_as_expected)
        die("g_input_stream_read: did not fail with G_IO_ERROR_CANCELLED");
    return (double)(t1 - t0);
}

static double round_tether_cancel(void *ctx)
{
    struct gio_cancel_ctx *c = ctx;
    pthread_t th;
    need_rc(tether_token_new(&c->token, NULL, TETHER_NEVER), "tether_token_new");
    atomic_store(&g_ready, 0);
    need_rc(pthread_create(&th, NULL, tether_reader, c), "pthread_create");
    wait_all_blocked(&c->slot, 1, IN_POLL);
    tether_time_t t0 = tether_now();
    need_rc(tether_token_cancel(c->token, 0), "tether_token_cancel");
    need_rc(pthread_join(th, NULL), "pthread_join");
    tether_time_t t1 = tether_now();
    need_rc(tether_token_free(c->token), "tether_token_free");
    c->token = NULL;
    if (!c->failed_as_expected)
        die("tether_read: did not fail with ECANCELED");
    return (double)(t1 - t0);
}

static void bench_gio_cancel(const struct config *cfg)
{
    struct gio_cancel_ctx ctx = { .in = g_unix_input_stream_new(g_pipe[0], FALSE) };
    struct variant v[2] = {
        { .fn = round_gio_cancel, .ctx = &ctx },
        { .fn = round_tether_cancel, .ctx = &ctx },
    };
    interleave("gio_cancel", v, 2, cfg->gio_cancel_rounds, cfg->cancel_warmup, cfg);
    double gio = report_latency("gio_cancel_gio", &v[0].s);
    double tether = report_latency("gio_cancel_tether", &v[1].s);
    report("gio_cancel_ratio", ratio(tether, gio), "x", 3);
    for (int i = 0; i < 2; i++)
        samples_free(&v[i].s);
    g_object_unref(ctx.in);
}

/* ---------------------------------------------------------------------- */
/* Read throughput with a live cancellable / a live token                 */

struct gio_read_ctx {
    GInputStream *in;          /* over the feeder's read end */
    GCancellable *cancellable; /* live: never canceled */
    int fd;
    size_t chunk, total;
};

static char gio_buf[MAX_CHUNK];

static double round_gio_read(void *ctx)
{
    struct gio_read_ctx *c = ctx;
    size_t done = 0;
    tether_time_t t0 = tether_now();
    while (done < c->total) {
        GError *err = NULL;
        gssize n = g_input_stream_read(c->in, gio_buf, c->chunk, c->cancellable, &err);
        if (n <= 0)
            die("g_input_stream_read: %s", n < 0 ? err->message : "end of file");
        done += (size_t)n;
    }
    return (double)done * 1e3 / (double)(tether_now() - t0);
}

static double round_tether_read(void *ctx)
{
    struct gio_read_ctx *c = ctx;
    size_t done = 0;
    tether_time_t t0 = tether_now();
    while (done < c->total) {
        ssize_t n = tether_read(c->fd, gio_buf, c->chunk);
        if (n <= 0)
            die("tether_read: %s", n < 0 ? strerror(errno) : "end of file");
        done += (size_t)n;
    }
    return (double)done * 1e3 / (double)(tether_now() - t0);
}

static void bench_gio_read(const struct config *cfg)
{
    static const size_t chunks[2] = { 64, 4096 };
    tether_token *tok;
    need_rc(tether_token_new(&tok, NULL, TETHER_NEVER), "tether_token_new");
    need_rc(tether_token_enter(tok), "tether_token_enter");
    struct feeder f;
    feeder_start_pipe(&f);
    GInputStream *in = g_unix_input_stream_new(f.rfd, FALSE);
    GCancellable *cancellable = g_cancellable_new();
    for (int i = 0; i < 2; i++) {
        struct gio_read_ctx ctx = { .in = in,
                                    .cancellable = cancellable,
                                    .fd = f.rfd,
                                    .chunk = chunks[i],
                                    .total = cfg->gio_read_bytes[i] };
        struct variant v[2] = {
            { .fn = round_gio_read, .ctx = &ctx },
            { .fn = round_tether_read, .ctx = &ctx },
        };
        char name[64];
        snprintf(name, sizeof name, "gio_read_%zu", chunks[i]);
        interleave(name, v, 2, cfg->gio_read_rounds, 1, cfg);
        double gio = median(&v[0].s), tether = median(&v[1].s);
        snprintf(name, sizeof name, "gio_read_%zu_gio_MBps", chunks[i]);
        report(name, gio, "MB/s", 0);
        snprintf(name, sizeof name, "gio_read_%zu_tether_MBps", chunks[i]);
        report(name, tether, "MB/s", 0);
        snprintf(name, sizeof name, "gio_read_%zu_ratio", chunks[i]);
        report(name, ratio(tether, gio), "x", 3);
        for (int k = 0; k < 2; k++)
            samples_free(&v[k].s);
    }
    g_object_unref(cancellable);
    g_object_unref(in);
    feeder_stop(&f);
    need_rc(tether_token_leave(tok), "tether_token_leave");
    need_rc(tether_token_free(tok), "tether_token_free");
}

void bench_gio(const struct config *cfg)
{
    report("gio_built", 1, "bool", 0);
    report("gio_version_number",
           glib_major_version * 10000 + glib_minor_version * 100 + glib_micro_version, "version",
           0);
    bench_gio_cancel(cfg);
    bench_gio_read(cfg);
}

#else /* !TETHER_BENCH_HAVE_GIO */

#ifndef TETHER_BENCH_GIO_OFF
#define TETHER_BENCH_GIO_OFF "not configured"
#endif

void bench_gio(const struct config *cfg)
{
    (void)cfg;
    report("gio_built", 0, "bool", 0);
    report_note("gio section left out: tether-bench was built without GLib's GIO (%s), "
                "so no gio_* figure",
                TETHER_BENCH_GIO_OFF);
}

#endif /* TETHER_BENCH_HAVE_GIO */
