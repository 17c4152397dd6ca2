// Compiles tether.h as C++ with -Wall -Wextra -Werror and makes one call, so
// a C-only construct or a missing extern "C" in the header fails the build
// or the link.
#include <tether.h>

#include <cstdio>

int main()
{
    const char *version = tether_version();
    if (version == nullptr)
        return 1;
    std::printf("tether %s from C++\n", version);
    return 0;
}
