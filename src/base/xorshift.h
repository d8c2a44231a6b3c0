/*
 * xorshift.h: xorshift64 (Marsaglia's shifts 13, 7, 17), the cheap fixed-seed streams of the tests, the fuzz
 * drivers and the benchmarks: their data, and the bounds some tests hold for it, are those of their seeds.
 * ferry's own randomness (sampling, synthetic weights) is rng.h.
 */
#ifndef FERRY_XORSHIFT_H
#define FERRY_XORSHIFT_H

#include <stdint.h>

/* The next state of *s (never 0 from a state that is not 0), which is also the value drawn. */
static inline uint64_t xorshift64(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

#endif
