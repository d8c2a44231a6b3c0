/*
 * fuzz_driver.h: one fuzz target, two ways to run it. A target file defines
 *   static int fuzz_one(const uint8_t *data, size_t size);            (never crashes, whatever the bytes)
 *   static void fuzz_seeds(void (*add)(const uint8_t *, size_t));      (valid inputs to start from)
 * and includes this header last.
 * - Built by `make` (gcc): main() runs the seeds and a fixed, seeded stream of mutations of them (bit flips,
 *   truncations, byte runs, integer edge values), deterministic, so `make asan` checks them under ASan.
 * - Built by `make fuzz` (clang -fsanitize=fuzzer,address,undefined, FUZZ_LIBFUZZER): libFuzzer drives it:
 *     build/tests/test_fuzz_x --seeds DIR && build-fuzz/tests/test_fuzz_x DIR -max_total_time=60
 */
#ifndef FERRY_FUZZ_DRIVER_H
#define FERRY_FUZZ_DRIVER_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xorshift.h"

#ifdef FUZZ_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_one(data, size);
	return 0;
}
#else
#define FUZZ_MAX_SEEDS 16
static struct {
	uint8_t *data;
	size_t size;
} seeds[FUZZ_MAX_SEEDS];
static int n_seeds;

static void add_seed(const uint8_t *d, size_t n)
{
	if (n_seeds == FUZZ_MAX_SEEDS)
		return;
	seeds[n_seeds].data = malloc(n ? n : 1);
	memcpy(seeds[n_seeds].data, d, n);
	seeds[n_seeds++].size = n;
}

static uint64_t fz_state = 0x243f6a8885a308d3ull;
static uint64_t fz_next(void)
{
	return xorshift64(&fz_state);
}

int main(int argc, char **argv)
{
	fuzz_seeds(add_seed);
	if (n_seeds == 0) {
		fprintf(stderr, "no seeds\n");
		return 1;
	}
	if (argc == 3 && !strcmp(argv[1], "--seeds")) { /* a starting corpus for libFuzzer */
		for (int i = 0; i < n_seeds; i++) {
			char p[4096];
			snprintf(p, sizeof(p), "%s/seed%d", argv[2], i);
			FILE *f = fopen(p, "wb");
			if (!f || fwrite(seeds[i].data, 1, seeds[i].size, f) != seeds[i].size) {
				perror(p);
				return 1;
			}
			fclose(f);
		}
		return 0;
	}
	long iters = argc > 1 ? atol(argv[1]) : 20000;
	for (int i = 0; i < n_seeds; i++)
		fuzz_one(seeds[i].data, seeds[i].size);
	static const uint8_t edge[] = {0x00, 0xff, 0x7f, 0x80, '{', '}', '"', ',', ':', '[', ']', '-', '9'};
	for (long it = 0; it < iters; it++) {
		int s = (int)(fz_next() % (uint64_t)n_seeds);
		size_t n = seeds[s].size;
		uint8_t *d = malloc(n + 64);
		memcpy(d, seeds[s].data, n);
		int muts = 1 + (int)(fz_next() % 4);
		for (int m = 0; m < muts; m++) {
			size_t at = n ? (size_t)(fz_next() % n) : 0;
			switch (fz_next() % 5) {
			case 0: if (n) d[at] ^= (uint8_t)(1u << (fz_next() % 8)); break;
			case 1: if (n) d[at] = edge[fz_next() % sizeof(edge)]; break;
			case 2: n = at; break; /* truncate */
			case 3: if (n) memset(d + at, (int)(fz_next() & 0xff), (n - at) < 8 ? n - at : 8); break;
			default: /* insert a byte */
				if (n < seeds[s].size + 64) {
					memmove(d + at + 1, d + at, n - at);
					d[at] = edge[fz_next() % sizeof(edge)];
					n++;
				}
			}
		}
		fuzz_one(d, n);
		free(d);
	}
	for (int i = 0; i < n_seeds; i++)
		free(seeds[i].data);
	printf("ok: %d seeds, %ld mutations\n", n_seeds, iters);
	return 0;
}
#endif

#endif
