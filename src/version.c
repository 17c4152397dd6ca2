/* The runtime version query, fed from project(VERSION) like the macros. */
#include "internal.h"

const char *tether_version(void)
{
    return TETHER_VERSION_STRING;
}

int tether_version_number(void)
{
    return TETHER_VERSION_NUMBER;
}
