/*
 * Which sanitizer this test binary was built with, for the few tests whose
 * sizes or measurements depend on it (gcc says so with __SANITIZE_*__,
 * clang with __has_feature). Defines TS_ASAN, TS_TSAN and TS_SANITIZED
 * (either one), or none of them.
 */
#ifndef TETHER_TEST_SANITIZER_H
#define TETHER_TEST_SANITIZER_H

#include <stddef.h>

#if defined(__SANITIZE_ADDRESS__)
#define TS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TS_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define TS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TS_TSAN 1
#endif
#endif

#if defined(TS_ASAN) || defined(TS_TSAN)
#define TS_SANITIZED 1
/* From the sanitizer runtime (sanitizer/allocator_interface.h, which not
 * every toolchain installs): live heap bytes, excluding ASan's quarantine. */
size_t __sanitizer_get_current_allocated_bytes(void);
#endif

#endif
