/*
 * host_rand.h: the random numbers of the kernel tests (the host tests of the 8-bit CUDA kernels,
 * test_cuda_mvq_host.cpp and test_cuda_q8mma_host.cpp; test_cuda_matmul.c; the CPU kernel tests through
 * quant_ref.h): a xorshift64 stream rng_state (starting at HOST_RAND_SEED, which an includer may define
 * first; a test may set rng_state), uniform doubles and random finite f16 scales.
 */
#ifndef FERRY_TESTS_HOST_RAND_H
#define FERRY_TESTS_HOST_RAND_H

#include <stdint.h>

#include "base/xorshift.h"

#ifndef HOST_RAND_SEED
#define HOST_RAND_SEED 0x2545f4914f6cdd1dull
#endif

static uint64_t rng_state = HOST_RAND_SEED;

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
