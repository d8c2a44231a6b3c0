/*
 * attention.cu: causal GQA attention over the f16 KV cache (cuda_attention), flash style: no T x C score
 * matrix, an online softmax in f32, the two products on tensor cores (mma.sync f16 -> f32, sm_75 on).
 *
 * One kernel serves prefill and decode. A block takes 64 query rows of one kv head, a row being a (token,
 * query head of that kv group) pair, row R = t * g + hh with g = H / Hkv, so the query heads of a group and
 * the tokens of a tile share every K/V tile loaded into shared memory. Its 4 warps own 16 rows each. Key
 * tiles of BK rows stream through shared memory (cp.async from sm_80, so the V tile loads while Q.K^T runs
 * and the next K tile while P.V runs); only the tiles between the smallest window start and the largest
 * position of the block's rows are visited, so a causal layer costs about half of T x T and a window layer
 * O(T * window). Masks are applied only to tiles not fully visible to a warp's rows; a warp whose rows see
 * nothing of a tile skips it.
 *
 * Numerics: q is scaled by scale * log2(e) and rounded to f16 (scores in the log2 domain, exp2f), K/V are the
 * cache's f16, the probabilities are rounded to f16 for P.V; sums, maxima and the output accumulate in f32.
 * Every reduction has a fixed order: results do not depend on timing.
 *
 * Few blocks (decode, short chunks over a long context): the key range is split over gridDim.z blocks, each
 * writing its unnormalized output, max and sum into the workspace; k_attention_combine merges them.
 *
 * Shared memory tiles hold rows of DH halves (Dh rounded up to 64, 128 or 256, zero padded) in 16-byte
 * chunks stored at chunk ^ (row & 7), so the 8 rows an ldmatrix phase reads fall in distinct banks.
 */
#include "cuda_common.cuh"

#define ATT_ROWS 64
#define ATT_THREADS 128
/* Most partial rows (split x token x head) a split may write: bounds the workspace. */
#define ATT_SPLIT_ROWS_MAX 16384

/* the tile width of a head dim: Dh <= 128 in 64-key tiles, larger in 32-key ones (registers, shared memory) */
#define ATT_BK(DH) ((DH) > 128 ? 32 : 64)

struct att_args {
	float *out;            /* [T, H*Dh] when nsplit == 1 */
	float *part_o;         /* [nsplit, T*H, Dh] unnormalized partial outputs, when nsplit > 1 */
	float *part_ml;        /* [nsplit, T*H, 2]: max (log2 domain) and sum of each partial row */
	const float *q;        /* [T, H*Dh] */
	const uint16_t *kc;    /* [C, Hkv*Dh] f16 */
	const uint16_t *vc;
	const int *pos;        /* [T] */
	int T, H, Hkv, Dh, g, window, max_pos, split_keys;
	float qscale;          /* scale * log2(e) */
};

static __device__ __forceinline__ int att_swz(int DH, int r, int c)
{
	return r * DH + ((c ^ (r & 7)) << 3);
}

static __device__ __forceinline__ uint32_t smem_addr(const void *p)
{
	return (uint32_t)__cvta_generic_to_shared(p);
}

static __device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_addr(p)));
}

static __device__ __forceinline__ void ldsm_x4_trans(uint32_t r[4], const void *p)
{
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(smem_addr(p)));
}

/* d[16x8] += a[16x16] . b[16x8], f16 in, f32 accumulate; sm_75 has only k = 8, the same product in two. */
static __device__ __forceinline__ void mma_f16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if __CUDA_ARCH__ >= 800
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
		     "{%8, %9}, {%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
		     "{%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(b0));
	asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5}, {%6}, "
		     "{%0, %1, %2, %3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[2]), "r"(a[3]), "r"(b1));
#endif
}

/* 16 bytes global -> shared, zeros when !ok (src must still be a valid address); asynchronous from sm_80. */
static __device__ __forceinline__ void cp16(void *dst, const void *src, bool ok)
{
#if __CUDA_ARCH__ >= 800
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src),
		     "r"(ok ? 16 : 0));
#else
	*(uint4 *)dst = ok ? *(const uint4 *)src : make_uint4(0, 0, 0, 0);
#endif
}

static __device__ __forceinline__ void cp_commit(void)
{
#if __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* waits until at most n of this thread's committed copy groups are still in flight */
template <int n> static __device__ __forceinline__ void cp_wait(void)
{
#if __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group %0;\n" ::"n"(n));
#endif
}

static __device__ __forceinline__ uint32_t pack_half2(float lo, float hi)
{
	__half2 h = __floats2half2_rn(lo, hi);
	return *reinterpret_cast<uint32_t *>(&h);
}

/* Cache rows j0 .. j0+BK-1 of one kv head (base = cache + kvh * Dh) into a tile; rows outside [jlo, jhi]
 * and the padding past Dh are zeros, so no unwritten cache row can reach P.V as a NaN. */
template <int DH, int BK>
static __device__ __forceinline__ void att_load_tile(__half *dst, const uint16_t *base, int j0, int jlo, int jhi,
						     int kv_dim, int Dh)
{
	constexpr int CH = DH / 8;
	for (int e = threadIdx.x; e < BK * CH; e += ATT_THREADS) {
		int r = e / CH, ch = e % CH, j = j0 + r;
		bool ok = j >= jlo && j <= jhi && ch < Dh / 8;
		cp16(dst + att_swz(DH, r, ch), ok ? base + (size_t)j * (size_t)kv_dim + ch * 8 : base, ok);
	}
}

static __device__ __forceinline__ bool att_visible(int p, int j, int window)
{
	return j <= p && (window == 0 || p - j < window);
}

template <int DH>
static __global__ void __launch_bounds__(ATT_THREADS) k_attention(const struct att_args a)
{
	constexpr int BK = ATT_BK(DH), CH = DH / 8;
	extern __shared__ uint4 att_smem[];
	__half *sq = (__half *)att_smem, *sk = sq + ATT_ROWS * DH, *sv = sk + BK * DH;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
	int kvh = blockIdx.y, rows = a.T * a.g, kv_dim = a.Hkv * a.Dh, W = a.window;
	/* heaviest (latest) row blocks first: a causal grid ends on short blocks */
	int R0 = (gridDim.x - 1 - blockIdx.x) * ATT_ROWS;

	/* this thread's rows: A = gid, B = gid + 8 of its warp's 16; position -1 (sees nothing) past the end */
	int rA = R0 + warp * 16 + gid, rB = rA + 8;
	int pA = rA < rows ? a.pos[rA / a.g] : -1, pB = rB < rows ? a.pos[rB / a.g] : -1;

	/* the keys any row of the block may see, within this split's share */
	int pmin = min(pA < 0 ? INT_MAX : pA, pB < 0 ? INT_MAX : pB), pmax = max(pA, pB);
	for (int o = 16; o > 0; o >>= 1) {
		pmin = min(pmin, __shfl_xor_sync(0xffffffffu, pmin, o));
		pmax = max(pmax, __shfl_xor_sync(0xffffffffu, pmax, o));
	}
	int *red = (int *)sv;
	if (lane == 0) {
		red[warp] = pmin;
		red[4 + warp] = pmax;
	}
	__syncthreads();
	pmin = min(min(red[0], red[1]), min(red[2], red[3]));
	pmax = max(max(red[4], red[5]), max(red[6], red[7]));
	__syncthreads();
	int s0 = blockIdx.z * a.split_keys;
	int jlo = max(W > 0 ? max(pmin - W + 1, 0) : 0, s0);
	int jhi = min(min(pmax, a.max_pos), s0 + a.split_keys - 1);

	const uint16_t *kbase = a.kc + (size_t)kvh * a.Dh, *vbase = a.vc + (size_t)kvh * a.Dh;
	int jbeg = jlo / BK * BK;
	if (jbeg <= jhi) {
		att_load_tile<DH, BK>(sk, kbase, jbeg, jlo, jhi, kv_dim, a.Dh);
		cp_commit();
	}
	for (int e = tid; e < ATT_ROWS * CH; e += ATT_THREADS) {
		int r = e / CH, ch = e % CH, R = R0 + r;
		uint4 v = make_uint4(0, 0, 0, 0);
		if (R < rows && ch < a.Dh / 8) {
			int t = R / a.g, h = kvh * a.g + R % a.g;
			const float4 *src = (const float4 *)(a.q + ((size_t)t * a.H + h) * a.Dh + ch * 8);
			float4 x0 = src[0], x1 = src[1];
			float s = a.qscale;
			v = make_uint4(pack_half2(x0.x * s, x0.y * s), pack_half2(x0.z * s, x0.w * s),
				       pack_half2(x1.x * s, x1.y * s), pack_half2(x1.z * s, x1.w * s));
		}
		*(uint4 *)(sq + att_swz(DH, r, ch)) = v;
	}

	float o[DH / 8][4];
#pragma unroll
	for (int i = 0; i < DH / 8; i++)
		o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0;
	float mA = -INFINITY, mB = -INFINITY, lA = 0, lB = 0;

	for (int j0 = jbeg; j0 <= jhi; j0 += BK) {
		att_load_tile<DH, BK>(sv, vbase, j0, jlo, jhi, kv_dim, a.Dh);
		cp_commit();
		cp_wait<1>();
		__syncthreads();

		int j1 = j0 + BK - 1;
		bool any = (pA >= j0 && (W == 0 || pA - j1 < W)) || (pB >= j0 && (W == 0 || pB - j1 < W));
		bool full = pA >= j1 && (W == 0 || pA - j0 < W) && pB >= j1 && (W == 0 || pB - j0 < W);
		bool warp_any = __any_sync(0xffffffffu, any), warp_full = __all_sync(0xffffffffu, full);
		uint32_t pf[BK / 16][4];
		if (warp_any) {
			float s[BK / 8][4];
#pragma unroll
			for (int i = 0; i < BK / 8; i++)
				s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0;
#pragma unroll
			for (int kk = 0; kk < DH / 16; kk++) {
				uint32_t qa[4];
				ldsm_x4(qa, sq + att_swz(DH, warp * 16 + (lane & 15), 2 * kk + (lane >> 4)));
#pragma unroll
				for (int np = 0; np < BK / 16; np++) {
					uint32_t kb[4];
					ldsm_x4(kb, sk + att_swz(DH, np * 16 + (lane & 7) + ((lane >> 4) << 3),
								  2 * kk + ((lane >> 3) & 1)));
					mma_f16(s[2 * np], qa, kb[0], kb[1]);
					mma_f16(s[2 * np + 1], qa, kb[2], kb[3]);
				}
			}
			if (!warp_full) {
#pragma unroll
				for (int nt = 0; nt < BK / 8; nt++)
#pragma unroll
					for (int e = 0; e < 4; e++)
						if (!att_visible(e < 2 ? pA : pB, j0 + nt * 8 + 2 * tig + (e & 1), W))
							s[nt][e] = -INFINITY;
			}
			float xA = -INFINITY, xB = -INFINITY;
#pragma unroll
			for (int nt = 0; nt < BK / 8; nt++) {
				xA = fmaxf(xA, fmaxf(s[nt][0], s[nt][1]));
				xB = fmaxf(xB, fmaxf(s[nt][2], s[nt][3]));
			}
			for (int o2 = 1; o2 < 4; o2 <<= 1) {
				xA = fmaxf(xA, __shfl_xor_sync(0xffffffffu, xA, o2));
				xB = fmaxf(xB, __shfl_xor_sync(0xffffffffu, xB, o2));
			}
			float nA = fmaxf(mA, xA), nB = fmaxf(mB, xB);
			/* a row that has seen nothing yet keeps max -inf: subtract 0 so exp2f gives 0, not NaN */
			float bA = nA == -INFINITY ? 0.0f : nA, bB = nB == -INFINITY ? 0.0f : nB;
			float alA = exp2f(mA - bA), alB = exp2f(mB - bB);
			mA = nA;
			mB = nB;
			float sumA = 0, sumB = 0;
#pragma unroll
			for (int nt = 0; nt < BK / 8; nt++) {
				s[nt][0] = exp2f(s[nt][0] - bA);
				s[nt][1] = exp2f(s[nt][1] - bA);
				s[nt][2] = exp2f(s[nt][2] - bB);
				s[nt][3] = exp2f(s[nt][3] - bB);
				sumA += s[nt][0] + s[nt][1];
				sumB += s[nt][2] + s[nt][3];
			}
			lA = lA * alA + sumA;
			lB = lB * alB + sumB;
#pragma unroll
			for (int i = 0; i < DH / 8; i++) {
				o[i][0] *= alA;
				o[i][1] *= alA;
				o[i][2] *= alB;
				o[i][3] *= alB;
			}
			/* the accumulator layout of two 8-key n-tiles is the A layout of one 16-key step */
#pragma unroll
			for (int ks = 0; ks < BK / 16; ks++) {
				pf[ks][0] = pack_half2(s[2 * ks][0], s[2 * ks][1]);
				pf[ks][1] = pack_half2(s[2 * ks][2], s[2 * ks][3]);
				pf[ks][2] = pack_half2(s[2 * ks + 1][0], s[2 * ks + 1][1]);
				pf[ks][3] = pack_half2(s[2 * ks + 1][2], s[2 * ks + 1][3]);
			}
		}
		cp_wait<0>();
		__syncthreads();
		if (j0 + BK <= jhi) {
			att_load_tile<DH, BK>(sk, kbase, j0 + BK, jlo, jhi, kv_dim, a.Dh);
			cp_commit();
		}
		if (warp_any) {
#pragma unroll
			for (int ks = 0; ks < BK / 16; ks++)
#pragma unroll
				for (int dp = 0; dp < DH / 16; dp++) {
					uint32_t vb[4];
					ldsm_x4_trans(vb, sv + att_swz(DH, ks * 16 + (lane & 7) + (((lane >> 3) & 1) << 3),
									2 * dp + (lane >> 4)));
					mma_f16(o[2 * dp], pf[ks], vb[0], vb[1]);
					mma_f16(o[2 * dp + 1], pf[ks], vb[2], vb[3]);
				}
		}
		__syncthreads();
	}

	for (int o2 = 1; o2 < 4; o2 <<= 1) {
		lA += __shfl_xor_sync(0xffffffffu, lA, o2);
		lB += __shfl_xor_sync(0xffffffffu, lB, o2);
	}
#pragma unroll
	for (int half = 0; half < 2; half++) {
		int R = half ? rB : rA;
		if (R >= rows)
			continue;
		int t = R / a.g, h = kvh * a.g + R % a.g;
		float m = half ? mB : mA, l = half ? lB : lA;
		size_t prow = (size_t)t * a.H + h;
		float *dst, inv = 1.0f;
		if (gridDim.z == 1) {
			dst = a.out + prow * a.Dh;
			inv = 1.0f / l;
		} else {
			prow += (size_t)blockIdx.z * a.T * a.H;
			dst = a.part_o + prow * a.Dh;
			if (tig == 0)
				*(float2 *)(a.part_ml + 2 * prow) = make_float2(m, l);
		}
#pragma unroll
		for (int i = 0; i < DH / 8; i++) {
			int d = i * 8 + 2 * tig;
			if (d < a.Dh)
				*(float2 *)(dst + d) = make_float2(o[i][2 * half] * inv, o[i][2 * half + 1] * inv);
		}
	}
}

/* out[t, h, :] from the nsplit partial rows of (t, h), each weighted by exp2(its max - the largest max).
 * Grid (T*H, Dh/32): a block takes 32 columns of one row; its warp w sums splits w, w + 8, ... (several
 * loads in flight), and the 8 warp sums are added in warp order. */
static __global__ void __launch_bounds__(256)
	k_attention_combine(float *out, const float *part_o, const float *part_ml, int nsplit, int64_t TH, int Dh)
{
	__shared__ float red[8][33];
	int64_t row = blockIdx.x;
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, d = blockIdx.y * 32 + lane;
	float M = -INFINITY;
	for (int s = threadIdx.x; s < nsplit; s += 256)
		M = fmaxf(M, part_ml[2 * (s * TH + row)]);
	for (int o = 16; o > 0; o >>= 1)
		M = fmaxf(M, __shfl_xor_sync(0xffffffffu, M, o));
	if (lane == 0)
		red[warp][32] = M;
	__syncthreads();
	for (int w = 0; w < 8; w++)
		M = fmaxf(M, red[w][32]);
	__syncthreads();
	float L = 0, acc = 0;
#pragma unroll 4
	for (int s = warp; s < nsplit; s += 8) {
		int64_t pr = s * TH + row;
		float m = part_ml[2 * pr], w = m == -INFINITY ? 0.0f : exp2f(m - M);
		L += w * part_ml[2 * pr + 1];
		acc += w * part_o[pr * Dh + d];
	}
	red[warp][lane] = acc;
	if (lane == 0)
		red[warp][32] = L;
	__syncthreads();
	if (warp == 0) {
		acc = L = 0;
		for (int w = 0; w < 8; w++) {
			acc += red[w][lane];
			L += red[w][32];
		}
		out[row * Dh + d] = acc / L;
	}
}

static int att_dh_pad(int Dh)
{
	return Dh <= 64 ? 64 : Dh <= 128 ? 128 : 256;
}

static size_t att_split_bytes(int64_t prows, int Dh)
{
	return (size_t)prows * ((size_t)Dh + 2) * sizeof(float);
}

extern "C" size_t cuda_attention_ws_bytes(int T_max, int C, int H, int Dh)
{
	if (T_max <= 0 || C <= 0 || H <= 0 || Dh <= 0)
		return 0;
	int bk = ATT_BK(att_dh_pad(Dh));
	/* a split takes at least two tiles (see att_run) */
	int64_t max_split = ((int64_t)C + bk - 1) / bk / 2;
	if (max_split < 2)
		return 0;
	int64_t prows = (int64_t)T_max * H * max_split;
	return att_split_bytes(prows < ATT_SPLIT_ROWS_MAX ? prows : ATT_SPLIT_ROWS_MAX, Dh);
}

/* Launches k_attention<DH> (a.part_o, a.split_keys filled here) and, when it split the keys, the combine. */
template <int DH> static int att_run(struct cuda_ctx *c, struct att_args a)
{
	constexpr int BK = ATT_BK(DH);
	int smem = (ATT_ROWS + 2 * BK) * DH * 2, dev, optin, per_sm;
	CUDA_CALL_CHECK(c, cudaGetDevice(&dev));
	CUDA_CALL_CHECK(c, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
	CUDA_ARG_CHECK(c, smem <= optin, "cuda_attention: head dim %d needs %d bytes of shared memory, the GPU has %d",
		       a.Dh, smem, optin);
	CUDA_CALL_CHECK(c, cudaFuncSetAttribute(k_attention<DH>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
	CUDA_CALL_CHECK(c, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attention<DH>, ATT_THREADS, smem));

	/* Split the keys when the blocks would leave part of one wave idle: as many splits as fill the wave, at
	 * least two tiles a split, at most ATT_SPLIT_ROWS_MAX partial rows (cuda_attention_ws_bytes counts on
	 * all three). */
	int64_t TH = (int64_t)a.T * a.H, rblocks = ((int64_t)a.T * a.g + ATT_ROWS - 1) / ATT_ROWS;
	int64_t blocks = rblocks * a.Hkv, wave = (int64_t)(per_sm > 0 ? per_sm : 1) * (c->n_sm > 0 ? c->n_sm : 1);
	int ntiles = a.max_pos / BK + 1, nsplit = 1;
	if (blocks * 2 <= wave) {
		int64_t n = wave / blocks, cap = ATT_SPLIT_ROWS_MAX / TH;
		n = n < ntiles / 2 ? n : ntiles / 2;
		n = n < cap ? n : cap;
		nsplit = n >= 2 ? (int)n : 1;
	}
	int split_tiles = (ntiles + nsplit - 1) / nsplit;
	nsplit = (ntiles + split_tiles - 1) / split_tiles;
	a.split_keys = split_tiles * BK;
	if (nsplit > 1) {
		size_t need = att_split_bytes(nsplit * TH, a.Dh);
		if (!c->ws || c->ws_bytes < need) {
			snprintf(c->err, sizeof(c->err),
				 "cuda_attention: %d key splits of %d tokens need %zu bytes of workspace, have %zu", nsplit,
				 a.T, need, c->ws ? c->ws_bytes : 0);
			return -ENOSPC;
		}
		a.part_o = (float *)c->ws;
		a.part_ml = a.part_o + nsplit * TH * a.Dh;
	}
	k_attention<DH><<<dim3((unsigned)rblocks, (unsigned)a.Hkv, (unsigned)nsplit), ATT_THREADS, smem,
			  cuda_stream_of(c)>>>(a);
	CUDA_LAUNCH_CHECK(c, "k_attention");
	if (nsplit == 1)
		return 0;
	k_attention_combine<<<dim3((unsigned)TH, (unsigned)(a.Dh / 32)), 256, 0, cuda_stream_of(c)>>>(
		a.out, a.part_o, a.part_ml, nsplit, TH, a.Dh);
	CUDA_LAUNCH_CHECK(c, "k_attention_combine");
	return 0;
}

extern "C" int cuda_attention(struct cuda_ctx *c, float *out, const float *q, const uint16_t *kc,
			      const uint16_t *vc, const int *pos, int T, int H, int Hkv, int Dh, int window,
			      float scale, int max_pos)
{
	CUDA_ARG_CHECK(c, T >= 0 && H > 0 && Hkv > 0 && H % Hkv == 0, "cuda_attention: H = %d, Hkv = %d, T = %d", H, Hkv,
		       T);
	CUDA_ARG_CHECK(c, Dh >= 32 && Dh <= 256 && Dh % 32 == 0, "cuda_attention: head dim %d (a multiple of 32 up to 256)",
		       Dh);
	CUDA_ARG_CHECK(c, window >= 0 && max_pos >= 0, "cuda_attention: window = %d, max_pos = %d", window, max_pos);
	CUDA_ARG_CHECK(c, ((uintptr_t)q | (uintptr_t)kc | (uintptr_t)vc | (uintptr_t)out) % 16 == 0,
		       "cuda_attention: q, out and the caches must be 16-byte aligned");
	int g = H / Hkv;
	CUDA_ARG_CHECK(c, ((int64_t)T * g + ATT_ROWS - 1) / ATT_ROWS < INT32_MAX && Hkv <= 65535 && (int64_t)T * H < INT32_MAX,
		       "cuda_attention: T = %d x %d heads is too many", T, H);
	if (T == 0)
		return 0;
	struct att_args a = {out, NULL, NULL, q, kc, vc, pos, T, H, Hkv, Dh, g, window, max_pos, 0,
			     scale * 1.4426950408889634f};
	int dhp = att_dh_pad(Dh);
	return dhp == 64 ? att_run<64>(c, a) : dhp == 128 ? att_run<128>(c, a) : att_run<256>(c, a);
}
