/* A program using tether the way a downstream project would. Shared by the
 * add_subdirectory, find_package and pkg-config consumer checks. */
#include <stdio.h>
#include <string.h>

#include <tether.h>

int main(void)
{
    const char *version = tether_version();
    int rc;

    /* The header and the library that was linked must agree. */
    if (version == NULL || strcmp(version, TETHER_VERSION_STRING) != 0) {
        fprintf(stderr, "consumer: library version %s != header version %s\n",
                version ? version : "(null)", TETHER_VERSION_STRING);
        return 1;
    }
    /* A real call: no current token, so nothing can be canceled. */
    rc = tether_check();
    if (rc != 0) {
        fprintf(stderr, "consumer: tether_check() = %d without a token\n", rc);
        return 1;
    }
    printf("consumer: tether %s works\n", version);
    return 0;
}
