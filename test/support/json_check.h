/*
 * A small strict JSON checker (RFC 8259) for the tests that parse tether's
 * JSON output (test/test_dump.c): no extensions, no trailing commas, no
 * comments, strings with valid escapes and no raw control characters,
 * numbers in JSON's grammar, exactly one value and only whitespace after it.
 */
#ifndef TETHER_TEST_JSON_CHECK_H
#define TETHER_TEST_JSON_CHECK_H

#include <stddef.h>

/* Whether text[0..n) is one valid JSON value. On failure *error_at (if not
 * NULL) gets the offset of the first byte that broke the grammar; on
 * success *max_depth (if not NULL) gets the deepest nesting of arrays and
 * objects (1 for a flat object). */
int json_check(const char *text, size_t n, size_t *error_at, int *max_depth);

#endif
