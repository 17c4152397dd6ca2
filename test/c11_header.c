/* Compiled, not run: tether.h under strict ISO C11 (see CMakeLists.txt). */
#include <tether.h>

int tether_c11_header_check(void);

int tether_c11_header_check(void)
{
    return tether_check();
}
