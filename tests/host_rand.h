/*
 * host_rand.h: the random numbers of the host tests of the 8-bit CUDA kernels (test_cuda_mvq_host.cpp,
 * test_cuda_q8mma_host.cpp): a xorshift64 stream (each test sets rng_state), uniform doubles and random
 * finite f16 scales.
 */
#ifndef FERRY_TESTS_HOST_RAND_H
#define FERRY_TESTS_HOST_RAND_H

#include <stdint.h>

#include "base/xorshift.h"

static uint64_t rng_state = 0x2545f4914f6cdd1dull;

static inline uint64_t rng_next(void)
{
	return xorshift64(&rng_state);
}

/* uniform in [0, 1) */
static inline double urand(void)
{
	return (double)(rng_next() >> 11) * 0x1.0p-53;
}

/* A random finite half: either sign, 1 in 8 subnormal, otherwise 2^-14 .. 2^2 */
static inline uint16_t rand_half(void)
{
	uint16_t sign = urand() < 0.5 ? 0x8000 : 0, man = (uint16_t)(urand() * 1024);
	uint16_t ex = urand() < 0.125 ? 0 : (uint16_t)(1 + urand() * 17);
	return (uint16_t)(sign | ex << 10 | man);
}

#endif
