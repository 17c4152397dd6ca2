/* The always-on invariant check and the aborts for misuse no caller can handle. */
#include "internal.h"

#include <stdio.h>

void tether__assert_fail(const char *what, const char *file, int line)
{
    fprintf(stderr, "tether: internal invariant broken: %s (%s:%d)\n", what, file, line);
    abort();
}

void tether__misuse(const char *who, const char *name, const char *what)
{
    if (name)
        fprintf(stderr, "tether: %s '%s' %s\n", who, name, what);
    else
        fprintf(stderr, "tether: %s %s\n", who, what);
    abort();
}
