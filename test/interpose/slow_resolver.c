/*
 * A stand-in resolver for the layer's tests, loaded after the layer: it
 * defines getaddrinfo, answers "slow.invalid" with 127.0.0.1 after one
 * second, and hands every other name to the next definition (libc's). It
 * lets the tests stop a lookup that is really in progress without a network
 * or a name server.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netdb.h>
#include <string.h>
#include <time.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

__attribute__((visibility("default"))) int getaddrinfo(const char *node, const char *service,
                                                       const struct addrinfo *hints,
                                                       struct addrinfo **res)
{
    gai_fn next = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
    if (!node || strcmp(node, "slow.invalid") != 0)
        return next(node, service, hints, res);
    struct timespec t = { .tv_sec = 1 };
    while (nanosleep(&t, &t) != 0) {
    }
    struct addrinfo h = { .ai_flags = AI_NUMERICHOST };
    if (hints) {
        h.ai_family = hints->ai_family;
        h.ai_socktype = hints->ai_socktype;
        h.ai_protocol = hints->ai_protocol;
    }
    return next("127.0.0.1", service, &h, res);
}
