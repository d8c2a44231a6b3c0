/* tree_util.h: the tree fields of a step (src/kernels/kv_pages.h) for a test's random tree, shared by
 * test_tree_attention.c and test_cuda_ops.c. */
#ifndef FERRY_TEST_TREE_UTIL_H
#define FERRY_TEST_TREE_UTIL_H

#include <stdint.h>
#include <string.h>

#include "kernels/kv_pages.h"

/* Tree tokens 0..n-1 (parent[j] < j, -1: a root) after C committed positions, sequence row 0: depth, stored
 * and logical positions, tree base, part, ancestor masks (mask: n * KV_TREE_WORDS words). */
static inline void tree_fields(int n, const int *parent, int C, int *depth, int *pos, int *lpos, int *tb, int *tp,
			       uint32_t *mask)
{
	memset(mask, 0, sizeof(uint32_t) * (size_t)n * KV_TREE_WORDS);
	for (int j = 0; j < n; j++) {
		depth[j] = parent[j] < 0 ? 0 : depth[parent[j]] + 1;
		pos[j] = C + j;
		lpos[j] = C + depth[j];
		tb[j] = C;
		tp[j] = 0;
		if (parent[j] >= 0)
			memcpy(mask + j * KV_TREE_WORDS, mask + parent[j] * KV_TREE_WORDS, sizeof(uint32_t) * KV_TREE_WORDS);
		mask[j * KV_TREE_WORDS + j / 32] |= 1u << (j % 32);
	}
}

#endif
