/* ram_tier.c: the RAM tier's fixed set (ram_tier.h). */
#include <string.h>

#include "io/ram_tier.h"

/* The k evenly spaced units of n: unit floor((2i + 1) n / 2k) for i < k. */
static uint64_t pick(const uint64_t *bytes, int n, int k, bool *keep)
{
	uint64_t sum = 0;
	memset(keep, 0, sizeof(bool) * (size_t)n);
	for (int i = 0; i < k; i++) {
		int u = (int)(((int64_t)2 * i + 1) * n / (2 * (int64_t)k));
		keep[u] = true;
		sum += bytes[u];
	}
	return sum;
}

int ram_tier_choose(const uint64_t *bytes, int n, uint64_t budget, bool *keep)
{
	for (int k = n; k > 0; k--)
		if (pick(bytes, n, k, keep) <= budget)
			return k;
	memset(keep, 0, sizeof(bool) * (size_t)n);
	return 0;
}
