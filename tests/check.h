/* check.h: a minimal check macro for the C test programs: counts failures, prints file and line, and
 * CHECK_DONE() exits 1 when anything failed (tests must fail loudly, never return 0 regardless). */
#ifndef FERRY_TEST_CHECK_H
#define FERRY_TEST_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures;

#define CHECK(c)                                                                              \
	do {                                                                                  \
		if (!(c)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #c); \
			check_failures++;                                                     \
		}                                                                             \
	} while (0)

#define CHECK_MSG(c, ...)                                                                     \
	do {                                                                                  \
		if (!(c)) {                                                                   \
			fprintf(stderr, "%s:%d: check failed: %s: ", __FILE__, __LINE__, #c); \
			fprintf(stderr, __VA_ARGS__);                                         \
			fputc('\n', stderr);                                                  \
			check_failures++;                                                     \
		}                                                                             \
	} while (0)

#define CHECK_DONE()                                                                          \
	do {                                                                                  \
		if (check_failures) {                                                         \
			fprintf(stderr, "%d check(s) failed\n", check_failures);              \
			return 1;                                                             \
		}                                                                             \
		printf("ok\n");                                                               \
		return 0;                                                                     \
	} while (0)

#endif
