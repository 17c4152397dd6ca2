/*
 * server_env.h — what the protocol-cancel examples (redis_unblock,
 * pg_cancel, curl_cancel) share: how they report a broken expectation, and
 * where they find their server: a variable KEY from the
 * environment (REDIS_PORT=6379 ./redis_unblock), else the KEY=VALUE file
 * named by TETHER_CLIENTS_ENV (written by the test servers' fixture,
 * test/interpose/servers.sh). A server the fixture could not start is
 * listed there as SKIP_<NAME>: the example then exits 77 (skipped).
 */
#ifndef TETHER_EXAMPLE_SERVER_ENV_H
#define TETHER_EXAMPLE_SERVER_ENV_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Broken expectations so far; each is printed as an UNEXPECTED line (the
 * examples' tests fail on it) and makes the example exit 1. */
static int failures;

static void unexpected(const char *what)
{
    printf("UNEXPECTED: %s\n", what);
    failures++;
}

/* KEY's value (environment first, then the fixture's file), or NULL. The
 * result lives until the next call. */
static const char *server_env(const char *key)
{
    const char *v = getenv(key);
    if (v)
        return v;
    static char line[512];
    const char *path = getenv("TETHER_CLIENTS_ENV");
    FILE *f = path ? fopen(path, "r") : NULL;
    if (!f)
        return NULL;
    size_t klen = strlen(key);
    const char *found = NULL;
    while (!found && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, key, klen) == 0 && line[klen] == '=')
            found = line + klen + 1;
    }
    fclose(f);
    return found;
}

/* The port in KEY; exits 77 (skipped) if the fixture recorded SKIP_<name>,
 * 2 if there is no such setting at all. */
static int server_port(const char *key, const char *skip_key)
{
    const char *skip = server_env(skip_key);
    if (skip) {
        printf("skipped: %s\n", skip);
        exit(77);
    }
    const char *v = server_env(key);
    if (!v) {
        fprintf(stderr, "%s is not set (set it, or run through ctest)\n", key);
        exit(2);
    }
    return atoi(v);
}

#endif
