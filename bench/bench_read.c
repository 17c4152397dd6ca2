/*
 * bench_read.c — read throughput with a current token that is never
 * canceled, in 64 B, 4 KiB and 64 KiB chunks.
 *   pipe    tether_read against read(2) on a pipe a writer thread keeps full
 *           (read_<chunk>_*). For 64 B chunks also against the kernel's
 *           floor for a cancellable read: raw preadv2(RWF_NOWAIT) on the same
 *           pipe, waiting in poll(2) only when it says EAGAIN, which is
 *           tether_read's own first attempt (read_64_floor_*).
 *   socket  tether_read against read(2) on a stream socket (an AF_UNIX
 *           socketpair) a writer thread keeps full (read_sock_<chunk>_*).
 * Every figure is MB/s (10^6 bytes per second); a ratio is tether's over
 * the baseline's.
 */
#include "bench_common.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

static const size_t chunks[3] = { 64, 4096, 65536 };

struct read_ctx {
    int fd;
    size_t chunk, total;
};

static char read_buf[MAX_CHUNK];

static double mbps(size_t bytes, tether_time_t t0)
{
    return (double)bytes * 1e3 / (double)(tether_now() - t0);
}

static double round_read_raw(void *ctx)
{
    struct read_ctx *c = ctx;
    size_t done = 0;
    tether_time_t t0 = tether_now();
    while (done < c->total) {
        ssize_t n = read(c->fd, read_buf, c->chunk);
        if (n <= 0)
            die("read: %s", n < 0 ? strerror(errno) : "end of file");
        done += (size_t)n;
    }
    return mbps(done, t0);
}

/* The floor: one preadv2(RWF_NOWAIT) per chunk, poll(2) only on EAGAIN. */
static double round_read_floor(void *ctx)
{
    struct read_ctx *c = ctx;
    size_t done = 0;
    struct iovec iov = { .iov_base = read_buf, .iov_len = c->chunk };
    tether_time_t t0 = tether_now();
    while (done < c->total) {
        ssize_t n = preadv2(c->fd, &iov, 1, -1, RWF_NOWAIT);
        if (n < 0 && errno == EAGAIN) {
            struct pollfd p = { .fd = c->fd, .events = POLLIN };
            need_ok(poll(&p, 1, -1) >= 0 || errno == EINTR, "poll");
            continue;
        }
        if (n <= 0)
            die("preadv2(RWF_NOWAIT): %s", n < 0 ? strerror(errno) : "end of file");
        done += (size_t)n;
    }
    return mbps(done, t0);
}

static double round_read_tether(void *ctx)
{
    struct read_ctx *c = ctx;
    size_t done = 0;
    tether_time_t t0 = tether_now();
    while (done < c->total) {
        ssize_t n = tether_read(c->fd, read_buf, c->chunk);
        if (n <= 0)
            die("tether_read: %s", n < 0 ? strerror(errno) : "end of file");
        done += (size_t)n;
    }
    return mbps(done, t0);
}

/* Figures `<prefix>_<chunk>_raw_MBps`, `<prefix>_<chunk>_MBps`,
 * `<prefix>_<chunk>_ratio` from a raw and a tether variant. */
static void report_read(const char *prefix, size_t chunk, struct variant *raw,
                        struct variant *tether)
{
    char name[64];
    double r = median(&raw->s), t = median(&tether->s);
    snprintf(name, sizeof name, "%s_%zu_raw_MBps", prefix, chunk);
    report(name, r, "MB/s", 0);
    snprintf(name, sizeof name, "%s_%zu_MBps", prefix, chunk);
    report(name, t, "MB/s", 0);
    snprintf(name, sizeof name, "%s_%zu_ratio", prefix, chunk);
    report(name, ratio(t, r), "x", 3);
}

static void bench_read_pipe(const struct config *cfg)
{
    struct feeder f;
    feeder_start_pipe(&f);
    for (int i = 0; i < 3; i++) {
        struct read_ctx ctx = { .fd = f.rfd, .chunk = chunks[i], .total = cfg->read_bytes[i] };
        struct variant v[3] = {
            { .fn = round_read_raw, .ctx = &ctx },
            { .fn = round_read_tether, .ctx = &ctx },
            { .fn = round_read_floor, .ctx = &ctx },
        };
        /* The floor only where the per-call cost shows: 64 B chunks. */
        int nv = chunks[i] == 64 ? 3 : 2;
        char name[64];
        snprintf(name, sizeof name, "read_%zu", chunks[i]);
        interleave(name, v, nv, cfg->read_rounds, 1, cfg);
        report_read("read", chunks[i], &v[0], &v[1]);
        if (nv == 3) {
            double floor = median(&v[2].s);
            report("read_64_floor_MBps", floor, "MB/s", 0);
            report("read_64_floor_ratio", ratio(median(&v[1].s), floor), "x", 3);
        }
        for (int k = 0; k < nv; k++)
            samples_free(&v[k].s);
    }
    feeder_stop(&f);
}

static void bench_read_socket(const struct config *cfg)
{
    int sv[2];
    need_ok(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    /* Room for several 64 KiB writes, so the reader rarely finds it empty;
     * a refusal leaves the defaults. */
    int size = 1 << 20;
    (void)setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    (void)setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    struct feeder f;
    feeder_start(&f, sv[0], sv[1]);
    for (int i = 0; i < 3; i++) {
        struct read_ctx ctx = { .fd = f.rfd, .chunk = chunks[i], .total = cfg->read_bytes[i] };
        struct variant v[2] = {
            { .fn = round_read_raw, .ctx = &ctx },
            { .fn = round_read_tether, .ctx = &ctx },
        };
        char name[64];
        snprintf(name, sizeof name, "read_sock_%zu", chunks[i]);
        interleave(name, v, 2, cfg->read_rounds, 1, cfg);
        report_read("read_sock", chunks[i], &v[0], &v[1]);
        for (int k = 0; k < 2; k++)
            samples_free(&v[k].s);
    }
    feeder_stop(&f);
}

void bench_read(const struct config *cfg)
{
    tether_token *tok;
    need_rc(tether_token_new(&tok, NULL, TETHER_NEVER), "tether_token_new");
    need_rc(tether_token_enter(tok), "tether_token_enter");
    bench_read_pipe(cfg);
    bench_read_socket(cfg);
    need_rc(tether_token_leave(tok), "tether_token_leave");
    need_rc(tether_token_free(tok), "tether_token_free");
}
