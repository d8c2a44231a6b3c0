/*
 * topk.cu: the k largest logits of one row, sorted descending, ties lower index first (cuda_topk), for the
 * host sampler. Two kernels (c->topk_mode):
 *
 * GRID (default): the row is read three times by many blocks (the 2nd and 3rd mostly from L2).
 * k_topk_hist<0> counts the keys (the logits as order-preserving 32-bit keys, -0 taken as +0) by their bits
 * 31..20 into a histogram in the workspace (integer atomics: exact whatever their order); k_topk_hist<1> finds
 * there the bin b1 of the k-th largest key (every block the same) and counts the keys of b1 by their bits
 * 19..8. k_topk_collect finds the 24-bit prefix thr of the k-th largest from both, and writes each key whose
 * prefix is >= thr as (key << 32 | ~index) to the candidates; the last block to finish (a fence, then a
 * counter) sorts them in shared memory, descending (larger key, then lower index: the 64-bit words are all
 * distinct, so the order of the atomic writes does not matter), and writes the first k. The keys above thr
 * are fewer than k and those at thr hold the k-th, so the candidates hold the top k. When they are more than
 * TOPK_CAP (many logits equal in their top 24 bits), that block runs the single-block selection below over
 * the row instead.
 *
 * BLOCK: one block of 1024 threads, no workspace:
 * 1. radix select: four passes over 8-bit digits from the top find the key of the k-th largest, thr, and how
 *    many of the keys equal to thr are needed (need_eq); the digit histograms use integer shared atomics (one
 *    per warp and digit), exact whatever their order;
 * 2. collection: every key > thr, and the need_eq lowest-index keys == thr (their rank by a block scan in
 *    index order), into k slots as (key << 32 | ~index);
 * 3. a bitonic sort of the slots, descending: larger key first, then lower index.
 */
#include "kernels/cuda/cuda_common.cuh"

#define TOPK_THREADS 1024
#define TOPK_MAX 1024
/* elements a thread loads before using them: several loads in flight */
#define TOPK_UNROLL 8

static __device__ __forceinline__ uint32_t topk_key(float x)
{
	uint32_t b = __float_as_uint(x + 0.0f);
	return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

/* slot[0..n) (n a power of two, all TOPK_THREADS threads of the block) sorted descending */
static __device__ void topk_bitonic_desc(unsigned long long *slot, int n)
{
	int tid = threadIdx.x;
	__syncthreads();
	for (int size = 2; size <= n; size <<= 1)
		for (int stride = size >> 1; stride > 0; stride >>= 1) {
			for (int i = tid; i < n; i += TOPK_THREADS) {
				int j = i ^ stride;
				if (j > i) {
					unsigned long long a = slot[i], b = slot[j];
					if ((a < b) == ((i & size) == 0)) {
						slot[i] = b;
						slot[j] = a;
					}
				}
			}
			__syncthreads();
		}
}

/* The single-block selection (BLOCK above) by all TOPK_THREADS threads of the calling block */
static __device__ void topk_block(float *vals, int *idx, const float *logits, int V, int k)
{
	__shared__ unsigned long long slot[TOPK_MAX];
	__shared__ int hist[256];
	__shared__ int warp_eq[TOPK_THREADS / 32];
	__shared__ uint32_t s_prefix;
	__shared__ int s_need, s_taken;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;

	uint32_t prefix = 0, mask = 0;
	int need = k; /* keys still to place at or below the prefix found so far */
	for (int shift = 24; shift >= 0; shift -= 8) {
		for (int i = tid; i < 256; i += TOPK_THREADS)
			hist[i] = 0;
		__syncthreads();
		for (int base = 0; base < V; base += TOPK_THREADS * TOPK_UNROLL) {
			uint32_t u[TOPK_UNROLL];
#pragma unroll
			for (int r = 0; r < TOPK_UNROLL; r++) {
				int i = base + r * TOPK_THREADS + tid;
				u[r] = i < V ? topk_key(logits[i]) : 0;
			}
#pragma unroll
			for (int r = 0; r < TOPK_UNROLL; r++) {
				/* lanes with the same digit add once: the top digits of real logits are few */
				int bin = base + r * TOPK_THREADS + tid < V && (u[r] & mask) == prefix ? (int)(u[r] >> shift) & 255
												    : 256;
				unsigned peers = __match_any_sync(0xffffffffu, bin);
				if (bin < 256 && lane == __ffs(peers) - 1)
					atomicAdd(&hist[bin], __popc(peers));
			}
		}
		__syncthreads();
		if (warp == 0) {
			/* lane l sums bins 255-8l down to 248-8l; an inclusive scan over lanes counts from the top */
			int cnt = 0;
			for (int b = 0; b < 8; b++)
				cnt += hist[255 - 8 * lane - b];
			int cum = cnt;
			for (int o = 1; o < 32; o <<= 1) {
				int v = __shfl_up_sync(0xffffffffu, cum, o);
				if (lane >= o)
					cum += v;
			}
			unsigned hit = __ballot_sync(0xffffffffu, cum >= need);
			if (lane == __ffs(hit) - 1) {
				int above = cum - cnt;
				for (int b = 0; b < 8; b++) {
					int bin = 255 - 8 * lane - b, h = hist[bin];
					if (above + h >= need) {
						s_prefix = prefix | ((uint32_t)bin << shift);
						s_need = need - above;
						break;
					}
					above += h;
				}
			}
		}
		__syncthreads();
		prefix = s_prefix;
		need = s_need;
		mask |= 255u << shift;
	}

	/* prefix is now thr, the k-th largest key; need of the keys equal to it belong to the top k. A chunk
	 * gives each thread TOPK_UNROLL consecutive indices; the rank of an equal key counts the equal keys at
	 * lower indices: earlier chunks, lower threads (a block scan), earlier in the thread. */
	if (tid == 0)
		s_taken = 0;
	int eq_before = 0;
	for (int base = 0; base < V; base += TOPK_THREADS * TOPK_UNROLL) {
		int i0 = base + tid * TOPK_UNROLL, n_eq = 0;
		uint32_t u[TOPK_UNROLL];
#pragma unroll
		for (int r = 0; r < TOPK_UNROLL; r++) {
			u[r] = i0 + r < V ? topk_key(logits[i0 + r]) : 0;
			n_eq += i0 + r < V && u[r] == prefix;
		}
		int incl = n_eq;
		for (int o = 1; o < 32; o <<= 1) {
			int v = __shfl_up_sync(0xffffffffu, incl, o);
			if (lane >= o)
				incl += v;
		}
		if (lane == 31)
			warp_eq[warp] = incl;
		__syncthreads();
		int rank = eq_before + incl - n_eq, total = 0;
		for (int w = 0; w < TOPK_THREADS / 32; w++) {
			rank += w < warp ? warp_eq[w] : 0;
			total += warp_eq[w];
		}
#pragma unroll
		for (int r = 0; r < TOPK_UNROLL; r++) {
			int i = i0 + r;
			bool eq = i < V && u[r] == prefix;
			if (i < V && (u[r] > prefix || (eq && rank < need)))
				slot[atomicAdd(&s_taken, 1)] = (unsigned long long)u[r] << 32 | (uint32_t)~i;
			rank += eq;
		}
		eq_before += total;
		__syncthreads();
	}

	int n = 1;
	while (n < k)
		n <<= 1;
	for (int i = k + tid; i < n; i += TOPK_THREADS)
		slot[i] = 0;
	topk_bitonic_desc(slot, n);
	for (int r = tid; r < k; r += TOPK_THREADS) {
		int i = (int)~(uint32_t)slot[r];
		idx[r] = i;
		vals[r] = logits[i];
	}
}

static __global__ void __launch_bounds__(TOPK_THREADS) k_topk(float *vals, int *idx, const float *logits, int V,
							      int k)
{
	topk_block(vals, idx, logits, V, k);
}

#define TOPK_BITS 12
#define TOPK_BINS (1 << TOPK_BITS)
#define TOPK_CAP 4096 /* candidates the last block sorts in shared memory (32 KiB) */

/* The workspace of the grid-wide selection; all but cand zeroed before each call. */
struct topk_ws {
	unsigned int hist[2][TOPK_BINS]; /* keys per bin of bits 31..20; of bits 19..8 among those in bin b1 */
	unsigned int count;              /* candidates written (the first TOPK_CAP kept) */
	unsigned int done;               /* blocks of k_topk_collect finished */
	unsigned long long cand[TOPK_CAP];
};

/* By all threads of the block: the bin of hist holding its need-th largest key (counting from the top bin
 * down; need <= the sum of hist), and how many keys the bins above it hold. */
static __device__ void topk_find_bin(const unsigned int *hist, unsigned int need, unsigned int *bin,
				     unsigned int *above)
{
	constexpr int PER = TOPK_BINS / TOPK_THREADS; /* bins per thread, thread 0 the top ones */
	__shared__ unsigned int warp_sum[TOPK_THREADS / 32], s_bin, s_above;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
	unsigned int h[PER], own = 0;
#pragma unroll
	for (int j = 0; j < PER; j++)
		own += h[j] = __ldcg(&hist[TOPK_BINS - 1 - PER * tid - j]);
	unsigned int cum = own;
	for (int o = 1; o < 32; o <<= 1) {
		unsigned int v = __shfl_up_sync(0xffffffffu, cum, o);
		if (lane >= o)
			cum += v;
	}
	__syncthreads(); /* warp_sum of an earlier call read by all */
	if (lane == 31)
		warp_sum[warp] = cum;
	__syncthreads();
	for (int w = 0; w < warp; w++)
		cum += warp_sum[w];
	if (cum >= need && cum - own < need) { /* exactly one thread */
		unsigned int up = cum - own;
		for (int j = 0; j < PER; j++) {
			if (up + h[j] >= need) {
				s_bin = (unsigned)(TOPK_BINS - 1 - PER * tid - j);
				s_above = up;
				break;
			}
			up += h[j];
		}
	}
	__syncthreads();
	*bin = s_bin;
	*above = s_above;
}

/* LEVEL 0: ws->hist[0] over every key; LEVEL 1: ws->hist[1] over the keys in bin b1 of hist[0], the bin of
 * the k-th largest. Shared counts per block, then one global atomic per bin used. */
template <int LEVEL>
static __global__ void __launch_bounds__(TOPK_THREADS) k_topk_hist(struct topk_ws *ws, const float *logits, int V,
								   int k)
{
	__shared__ unsigned int h[TOPK_BINS];
	int tid = threadIdx.x;
	unsigned int b1 = 0, above;
	if (LEVEL == 1)
		topk_find_bin(ws->hist[0], (unsigned)k, &b1, &above);
	for (int b = tid; b < TOPK_BINS; b += TOPK_THREADS)
		h[b] = 0;
	__syncthreads();
	for (int i = blockIdx.x * TOPK_THREADS + tid; i < V; i += gridDim.x * TOPK_THREADS) {
		uint32_t u = topk_key(logits[i]);
		if (LEVEL == 0)
			atomicAdd(&h[u >> (32 - TOPK_BITS)], 1u);
		else if (u >> (32 - TOPK_BITS) == b1)
			atomicAdd(&h[u >> (32 - 2 * TOPK_BITS) & (TOPK_BINS - 1)], 1u);
	}
	__syncthreads();
	for (int b = tid; b < TOPK_BINS; b += TOPK_THREADS)
		if (h[b])
			atomicAdd(&ws->hist[LEVEL][b], h[b]);
}

/* The keys at or above the 24-bit prefix of the k-th largest into ws->cand; the last block to finish sorts
 * them (or, past TOPK_CAP, selects over the row with topk_block) and writes vals, idx. */
static __global__ void __launch_bounds__(TOPK_THREADS) k_topk_collect(float *vals, int *idx, struct topk_ws *ws,
								      const float *logits, int V, int k)
{
	__shared__ unsigned long long slot[TOPK_CAP];
	__shared__ bool s_last;
	int tid = threadIdx.x, lane = tid & 31;
	unsigned int b1, above1, b2, above2;
	topk_find_bin(ws->hist[0], (unsigned)k, &b1, &above1);
	topk_find_bin(ws->hist[1], (unsigned)k - above1, &b2, &above2);
	unsigned int thr = b1 << TOPK_BITS | b2, total = above1 + above2 + __ldcg(&ws->hist[1][b2]);

	/* one atomic per warp and pass (base is the same for the whole block, so every lane takes each pass) */
	for (int base = blockIdx.x * TOPK_THREADS; base < V; base += gridDim.x * TOPK_THREADS) {
		int i = base + tid;
		uint32_t u = i < V ? topk_key(logits[i]) : 0;
		bool take = i < V && u >> (32 - 2 * TOPK_BITS) >= thr;
		unsigned m = __ballot_sync(0xffffffffu, take);
		if (!m)
			continue;
		unsigned int p = 0;
		if (lane == __ffs(m) - 1)
			p = atomicAdd(&ws->count, (unsigned)__popc(m));
		p = __shfl_sync(0xffffffffu, p, __ffs(m) - 1) + (unsigned)__popc(m & ((1u << lane) - 1));
		if (take && p < TOPK_CAP)
			ws->cand[p] = (unsigned long long)u << 32 | (uint32_t)~i;
	}
	__threadfence();
	__syncthreads();
	if (tid == 0)
		s_last = atomicAdd(&ws->done, 1u) == gridDim.x - 1;
	__syncthreads();
	if (!s_last)
		return;

	if (total > TOPK_CAP) {
		topk_block(vals, idx, logits, V, k);
		return;
	}
	int n = 1;
	while (n < (int)total)
		n <<= 1;
	for (int i = tid; i < n; i += TOPK_THREADS)
		slot[i] = i < (int)total ? __ldcg(&ws->cand[i]) : 0;
	topk_bitonic_desc(slot, n);
	for (int r = tid; r < k; r += TOPK_THREADS) {
		int i = (int)~(uint32_t)slot[r];
		idx[r] = i;
		vals[r] = logits[i];
	}
}

extern "C" size_t cuda_topk_ws_bytes(void)
{
	return sizeof(struct topk_ws);
}

extern "C" int cuda_topk(struct cuda_ctx *c, float *vals, int *idx, const float *logits, int V, int k)
{
	CUDA_ARG_CHECK(c, V > 0 && k > 0 && k <= TOPK_MAX && k <= V, "cuda_topk: k = %d of V = %d (k <= %d)", k, V,
		       TOPK_MAX);
	cudaStream_t s = cuda_stream_of(c);
	if (c->topk_mode == CUDA_TOPK_BLOCK) {
		k_topk<<<1, TOPK_THREADS, 0, s>>>(vals, idx, logits, V, k);
		CUDA_LAUNCH_CHECK(c, "k_topk");
		return 0;
	}
	if (!c->ws || c->ws_bytes < sizeof(struct topk_ws)) {
		snprintf(c->err, sizeof(c->err), "cuda_topk: workspace of %zu bytes, the grid-wide selection needs %zu",
			 c->ws_bytes, sizeof(struct topk_ws));
		return -ENOSPC;
	}
	struct topk_ws *ws = (struct topk_ws *)c->ws;
	/* blocks of 4 loads per thread, at most 2 per multiprocessor */
	int per = TOPK_THREADS * 4, blocks = (V + per - 1) / per, cap = 2 * (c->n_sm > 0 ? c->n_sm : 16);
	blocks = blocks < cap ? blocks : cap;
	CUDA_CALL_CHECK(c, cudaMemsetAsync(ws, 0, offsetof(struct topk_ws, cand), s));
	k_topk_hist<0><<<blocks, TOPK_THREADS, 0, s>>>(ws, logits, V, k);
	CUDA_LAUNCH_CHECK(c, "k_topk_hist<0>");
	k_topk_hist<1><<<blocks, TOPK_THREADS, 0, s>>>(ws, logits, V, k);
	CUDA_LAUNCH_CHECK(c, "k_topk_hist<1>");
	k_topk_collect<<<blocks, TOPK_THREADS, 0, s>>>(vals, idx, ws, logits, V, k);
	CUDA_LAUNCH_CHECK(c, "k_topk_collect");
	return 0;
}
