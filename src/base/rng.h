/*
 * rng.h: xoshiro256** (Blackman and Vigna) with the splitmix64 mixer for seeding: the one random stream of
 * ferry (sampling, synthetic weights), so a seed means the same stream everywhere.
 */
#ifndef FERRY_RNG_H
#define FERRY_RNG_H

#include <stdint.h>

struct rng {
	uint64_t s[4];
};

/* The splitmix64 finalizer of z + golden ratio (a splitmix64 step from state z). */
static inline uint64_t rng_mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* The four state words from consecutive splitmix64 steps of seed. */
static inline void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = rng_mix64(seed + (uint64_t)i * 0x9e3779b97f4a7c15ull);
}

static inline uint64_t rng_rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s, out = rng_rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rng_rotl(s[3], 45);
	return out;
}

#endif
