/*
 * redis_unblock — stop a redis BLPOP at a deadline on the server too, and
 * keep the connection.
 *
 * A child of a scope with a 200 ms deadline runs hiredis' blocking
 * BLPOP on an empty list: hiredis sends the command and waits in recv(2) on
 * its socket for the reply. Stopping only that wait would leave the server
 * holding the client blocked until the connection closes. Instead, a cancel
 * hook (tether_hook_on_cancel), which may block, sends
 *
 *     CLIENT UNBLOCK <id> ERROR
 *
 * from a second connection (the blocked client's id comes from CLIENT ID,
 * asked first). The server ends the BLPOP with an -UNBLOCKED error reply,
 * which is what hiredis' recv(2) then receives: BLPOP returns, the server
 * has no blocked client left, and the same connection answers PING.
 *
 * It prints the lateness (the deadline to BLPOP's return) and whether the
 * connection was reused, and exits non-zero (printing UNEXPECTED) if the
 * server still holds a blocked client, the connection does not answer, or
 * the lateness exceeds a generous bound.
 *
 * Server: REDIS_PORT (environment) or the servers' fixture file named by
 * TETHER_CLIENTS_ENV. Caveat: CLIENT UNBLOCK unblocks only blocking
 * commands (BLPOP, BRPOP, XREAD BLOCK, WAIT, ...); a slow non-blocking
 * command (a long Lua script, KEYS on a huge keyspace) is not stopped.
 */
#define _GNU_SOURCE
#include <tether.h>

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server_env.h"

enum { DEADLINE_MS = 200, LATENESS_BOUND_MS = 250 };

struct blpop {
    redisContext *c;     /* the blocked client's connection */
    redisContext *admin; /* the second connection, for CLIENT UNBLOCK */
    long long id;        /* the blocked client's CLIENT ID */
    long long unblocked; /* CLIENT UNBLOCK's reply: 1 if it unblocked one */
    char error[128];     /* BLPOP's error reply */
    tether_time_t deadline, returned;
};

/* The cancel hook: runs on a tether runner thread, may block. */
static void unblock_hook(void *arg)
{
    struct blpop *b = arg;
    redisReply *r = redisCommand(b->admin, "CLIENT UNBLOCK %lld ERROR", b->id);
    if (r && r->type == REDIS_REPLY_INTEGER)
        b->unblocked = r->integer;
    freeReplyObject(r);
}

static int blpop_child(void *arg)
{
    struct blpop *b = arg;
    b->deadline = tether_token_deadline(tether_current());
    tether_hook *h;
    int rc = tether_hook_on_cancel(tether_current(), unblock_hook, b, &h);
    if (rc)
        return rc;
    redisReply *r = redisCommand(b->c, "BLPOP tether:example:empty 0"); /* blocks */
    b->returned = tether_now();
    tether_hook_off(h, NULL); /* waits if the hook still runs */
    int result = 0;
    if (r && r->type == REDIS_REPLY_ERROR)
        snprintf(b->error, sizeof b->error, "%s", r->str);
    else
        result = EPROTO; /* a value or a lost connection: not expected here */
    freeReplyObject(r);
    return result;
}

static long long blocked_clients(redisContext *c)
{
    redisReply *r = redisCommand(c, "INFO clients");
    long long n = -1;
    const char *p = r && r->type == REDIS_REPLY_STRING ? strstr(r->str, "blocked_clients:") : NULL;
    if (p)
        n = atoll(p + strlen("blocked_clients:"));
    freeReplyObject(r);
    return n;
}

int main(void)
{
    int port = server_port("REDIS_PORT", "SKIP_REDIS");
    struct blpop b = { 0 };
    b.c = redisConnect("127.0.0.1", port);
    b.admin = redisConnect("127.0.0.1", port);
    if (!b.c || b.c->err || !b.admin || b.admin->err) {
        printf("UNEXPECTED: cannot connect to redis on port %d\n", port);
        return 1;
    }
    freeReplyObject(redisCommand(b.admin, "DEL tether:example:empty"));
    redisReply *r = redisCommand(b.c, "CLIENT ID");
    if (!r || r->type != REDIS_REPLY_INTEGER) {
        printf("UNEXPECTED: CLIENT ID failed\n");
        return 1;
    }
    b.id = r->integer;
    freeReplyObject(r);

    tether_scope *s;
    tether_scope_opts o = { .timeout_ns = tether_ms(DEADLINE_MS), .name = "redis" };
    tether_result res;
    if (tether_scope_open(&s, &o) || tether_spawn(s, blpop_child, &b, NULL, NULL) ||
        tether_scope_join(s, &res) || tether_scope_free(s)) {
        printf("UNEXPECTED: scope failed\n");
        return 1;
    }
    double late_ms = (double)(b.returned - b.deadline) / 1e6;
    printf("redis_unblock: BLPOP returned %.2f ms after the deadline with \"%s\" "
           "(CLIENT UNBLOCK replied %lld)\n",
           late_ms, b.error, b.unblocked);
    if (strncmp(b.error, "UNBLOCKED", 9) != 0 || b.unblocked != 1)
        unexpected("BLPOP was not ended by CLIENT UNBLOCK");
    if (b.returned < b.deadline || late_ms > LATENESS_BOUND_MS)
        unexpected("lateness out of bounds");
    if (res.outcome != TETHER_OUTCOME_DEADLINE_EXCEEDED)
        unexpected("the scope did not report its deadline");

    long long blocked = blocked_clients(b.admin);
    printf("redis_unblock: clients still blocked on the server: %lld\n", blocked);
    if (blocked != 0)
        unexpected("the server still holds the BLPOP");

    r = redisCommand(b.c, "PING");
    bool reused = r && r->type == REDIS_REPLY_STATUS && strcmp(r->str, "PONG") == 0;
    freeReplyObject(r);
    printf("redis_unblock: connection reused: %s\n",
           reused ? "yes (the same connection answered PING)" : "no");
    if (!reused)
        unexpected("the connection did not answer PING");
    redisFree(b.c);
    redisFree(b.admin);
    tether_trim();
    return failures ? 1 : 0;
}
