/*
 * pg_cancel — stop a PostgreSQL statement at a deadline on the server too,
 * and keep the connection.
 *
 * A child of a scope with a 200 ms deadline runs `SELECT pg_sleep(30)`
 * with libpq's PQexec, which sends the query and waits in poll(2) on the
 * connection's socket for the result. Stopping only that wait would leave
 * the backend sleeping for 30 s and the connection unusable meanwhile.
 * Instead, a cancel hook (tether_hook_on_cancel), which may block, calls
 * PQcancel with a PGcancel object made beforehand (PQgetCancel): libpq
 * opens a second connection and sends a cancel request naming the
 * backend, which interrupts the statement. PQexec then returns the error
 * "canceling statement due to user request", and the same connection runs
 * `SELECT 1`.
 *
 * It prints the lateness (the deadline to PQexec's return) and whether the
 * connection was reused, and exits non-zero (printing UNEXPECTED) if the
 * statement was not canceled on the server, the connection does not answer,
 * or the lateness exceeds a generous bound.
 *
 * Server: PG_PORT and PG_USER (environment) or the servers' fixture file
 * named by TETHER_CLIENTS_ENV. Caveat: the cancel request races the
 * statement; one that arrives after the statement finished does nothing
 * (the result is a late success, reported as such by the scope) and the
 * next query still works.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_env.h"

enum { DEADLINE_MS = 200, LATENESS_BOUND_MS = 250 };

struct query {
    PGconn *c;
    PGcancel *cancel; /* made before the query: PQcancel needs no lock on c */
    int cancel_sent;  /* PQcancel's return: 1 if the request was sent */
    char cancel_err[256];
    char error[256]; /* the query's error */
    char sqlstate[6];
    tether_time_t deadline, returned;
};

/* The cancel hook: runs on a tether runner thread, may block (PQcancel
 * connects to the server and waits for it to close that connection). */
static void cancel_hook(void *arg)
{
    struct query *q = arg;
    q->cancel_sent = PQcancel(q->cancel, q->cancel_err, sizeof q->cancel_err);
}

static int sleep_child(void *arg)
{
    struct query *q = arg;
    q->deadline = tether_token_deadline(tether_current());
    tether_hook *h;
    int rc = tether_hook_on_cancel(tether_current(), cancel_hook, q, &h);
    if (rc)
        return rc;
    PGresult *r = PQexec(q->c, "SELECT pg_sleep(30)"); /* blocks */
    q->returned = tether_now();
    tether_hook_off(h, NULL); /* waits if the hook still runs */
    int result = 0;
    if (PQresultStatus(r) == PGRES_FATAL_ERROR) {
        snprintf(q->error, sizeof q->error, "%s", PQresultErrorMessage(r));
        q->error[strcspn(q->error, "\n")] = '\0';
        const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        snprintf(q->sqlstate, sizeof q->sqlstate, "%s", st ? st : "");
        result = ECANCELED;
    }
    PQclear(r);
    return result; /* 0: the statement finished, a late success */
}

int main(void)
{
    int port = server_port("PG_PORT", "SKIP_PG");
    const char *user = server_env("PG_USER");
    char info[256];
    snprintf(info, sizeof info, "host=127.0.0.1 port=%d user=%s dbname=postgres connect_timeout=20",
             port, user ? user : "postgres");
    struct query q = { .c = PQconnectdb(info) };
    if (PQstatus(q.c) != CONNECTION_OK) {
        printf("UNEXPECTED: PQconnectdb: %s", PQerrorMessage(q.c));
        return 1;
    }
    q.cancel = PQgetCancel(q.c);

    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(DEADLINE_MS), .name = "pg" };
    tether_result res;
    if (tether_scope_open(&s, &o) || tether_spawn(s, sleep_child, &q, NULL, NULL) ||
        tether_scope_join(s, &res) || tether_scope_free(s)) {
        printf("UNEXPECTED: scope failed\n");
        return 1;
    }
    double late_ms = (double)(q.returned - q.deadline) / 1e6;
    printf("pg_cancel: PQexec returned %.2f ms after the deadline with \"%s\" (SQLSTATE %s)\n",
           late_ms, q.error, q.sqlstate);
    if (q.cancel_sent != 1)
        printf("pg_cancel: PQcancel failed: %s\n", q.cancel_err);
    if (!strstr(q.error, "canceling statement due to user request") ||
        strcmp(q.sqlstate, "57014") != 0)
        unexpected("the statement was not canceled on the server");
    if (q.returned < q.deadline || late_ms > LATENESS_BOUND_MS)
        unexpected("lateness out of bounds");
    if (res.outcome != TETHER_OUTCOME_DEADLINE_EXCEEDED)
        unexpected("the scope did not report its deadline");

    PGresult *r = PQexec(q.c, "SELECT 1 AS one");
    bool reused = PQresultStatus(r) == PGRES_TUPLES_OK && strcmp(PQgetvalue(r, 0, 0), "1") == 0;
    PQclear(r);
    printf("pg_cancel: connection reused: %s\n",
           reused ? "yes (the same connection ran SELECT 1)" : "no");
    if (!reused)
        unexpected("the connection did not run SELECT 1");
    PQfreeCancel(q.cancel);
    PQfinish(q.c);
    tether_trim();
    return failures ? 1 : 0;
}
