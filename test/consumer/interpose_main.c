/* A program linked with the interposition layer ahead of libc: its plain
 * read() under a token with a 50 ms deadline must stop with ETIMEDOUT, and
 * the layer must have counted it. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>

#include <tether.h>
#include <tether/interpose.h>

static int fds[2];

static int body(void *arg)
{
    char c;
    (void)arg;
    if (read(fds[0], &c, 1) != -1 || errno != ETIMEDOUT) {
        fprintf(stderr, "consumer_interpose: read was not stopped by the deadline\n");
        return 1;
    }
    return 0;
}

int main(void)
{
    tether_interpose_counter c[64];
    size_t i, n;
    if (pipe(fds) != 0)
        return 1;
    if (tether_with_timeout(tether_ms(50), body, NULL, NULL) != 0)
        return 1;
    n = tether_interpose_counters(c, 64);
    for (i = 0; i < n && i < 64; i++) {
        if (c[i].stopped == 1) {
            printf("consumer: the layer stopped %s\n", c[i].name);
            return 0;
        }
    }
    fprintf(stderr, "consumer_interpose: no stopped call counted\n");
    return 1;
}
