/*
 * topk.cu: the k largest logits of one row, sorted descending, ties lower index first (cuda_topk), for the
 * host sampler. One block of 1024 threads (the row is small next to a layer, and one block needs no
 * workspace nor a second launch):
 * 1. radix select: the logits as order-preserving 32-bit keys (-0 taken as +0), four passes over 8-bit
 *    digits from the top find the key of the k-th largest, thr, and how many of the keys equal to thr are
 *    needed (need_eq); the digit histograms use integer shared atomics (one per warp and digit), exact
 *    whatever their order;
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

static __global__ void __launch_bounds__(TOPK_THREADS) k_topk(float *vals, int *idx, const float *logits, int V,
							      int k)
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
	for (int r = tid; r < k; r += TOPK_THREADS) {
		int i = (int)~(uint32_t)slot[r];
		idx[r] = i;
		vals[r] = logits[i];
	}
}

extern "C" int cuda_topk(struct cuda_ctx *c, float *vals, int *idx, const float *logits, int V, int k)
{
	CUDA_ARG_CHECK(c, V > 0 && k > 0 && k <= TOPK_MAX && k <= V, "cuda_topk: k = %d of V = %d (k <= %d)", k, V,
		       TOPK_MAX);
	k_topk<<<1, TOPK_THREADS, 0, cuda_stream_of(c)>>>(vals, idx, logits, V, k);
	CUDA_LAUNCH_CHECK(c, "k_topk");
	return 0;
}
