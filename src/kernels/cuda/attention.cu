/*
 * attention.cu: causal GQA attention over the paged KV cache (cuda_attention), flash style: no T x C score
 * matrix, an online softmax in f32, the two products on tensor cores (mma.sync f16 -> f32, sm_75 on).
 *
 * One kernel serves prefill and decode, and any mix of parts (runs of tokens of one sequence, struct
 * kv_batch) in one launch. A block takes 64 query rows of one kv head within one part, a row being a
 * (token, query head of that kv group) pair, row R = t * g + hh with g = H / Hkv and t counted from the
 * part's first token, so the query heads of a group and the tokens of a tile share every K/V tile loaded
 * into shared memory. Its 4 warps own 16 rows each. Part p's row blocks are grid.x indices S(p) ..
 * S(p+1)-1, S(p) = part_t0[p] * g / 64 + p (room for ceil(rows / 64) blocks; a block past its part's rows
 * returns at once); a block finds its part by a binary search over part_t0.
 *
 * Key tiles of BK positions (a tile lies inside one page: pages are multiples of 64 positions) stream
 * through shared memory, one page-table lookup per tile; only the tiles between the smallest window start
 * and the largest position of the block's rows are visited, so a causal layer costs about half of T x T
 * and a window layer O(T * window). The next tile loads while the current one is used (V while Q.K^T
 * runs, the next K while P.V runs): F16 pages by cp.async (sm_80 on) straight into the tile, Q8/Q4/Q5/A4/A5 pages
 * into registers, dequantized to f16 (q * d, rounded once) and stored when the tile is due. Keys and values
 * each take their pool's row format (a mixed KV format, e.g. k8v5: Q8 keys, Q5 values; the kernel is
 * instantiated per pair of row formats). Masks are
 * applied only to tiles not fully visible to a warp's rows; a warp whose rows see nothing of a tile skips
 * it, and a tile whose page is unmapped (-1) is skipped by the whole block.
 *
 * Numerics: q is scaled by scale * log2(e) and rounded to f16 (scores in the log2 domain, exp2f), K/V are
 * the pages' values in f16, the probabilities are rounded to f16 for P.V; sums, maxima and the output
 * accumulate in f32. Every reduction has a fixed order: results do not depend on timing.
 *
 * Few blocks (decode, short chunks over a long context): each block's key tiles are split evenly over
 * gridDim.z blocks, each writing its unnormalized output, max and sum into the workspace (a split with no
 * tiles writes max -inf, sum 0); k_attention_combine merges them.
 *
 * Shared memory tiles hold rows of DH halves (Dh rounded up to 64, 128 or 256, zero padded) in 16-byte
 * chunks stored at chunk ^ (row & 7), so the 8 rows an ldmatrix phase reads fall in distinct banks.
 *
 * Attention sinks (gpt-oss): head h's sink logit joins the softmax's max and denominator when a row's output
 * is normalized (by the block, or by k_attention_combine over the splits), never a P.V product.
 *
 * Token trees (speculative steps, kv_pages.h): a row's window is measured from its logical position, and
 * keys at or past its tree base are masked unless its ancestor mask has them; a tile reaching a row's tree
 * base is never taken as fully visible.
 */
#include "kernels/cuda/cuda_common.cuh"

#define ATT_ROWS 64
#define ATT_THREADS 128
/* Most partial rows (split x token x head) a split may write: bounds the workspace. */
#define ATT_SPLIT_ROWS_MAX 16384

/* the tile width of a head dim: Dh <= 128 in 64-key tiles, larger in 32-key ones (registers, shared memory) */
#define ATT_BK(DH) ((DH) > 128 ? 32 : 64)

struct att_args {
	float *out;              /* [T, H*Dh] when nsplit == 1 */
	float *part_o;           /* [nsplit, T*H, Dh] unnormalized partial outputs, when nsplit > 1 */
	float *part_ml;          /* [nsplit, T*H, 2]: max (log2 domain) and sum of each partial row */
	const float *q;          /* [T, H*Dh] */
	const uint8_t *kp, *vp;  /* the key and value pools */
	const int *part_t0, *part_row, *pos, *pages;
	int T, H, Hkv, Dh, g, window, n_parts, max_pages, page, qrow[2], srow[2]; /* [pool]: keys, values */
	size_t page_bytes[2];
	float qscale;            /* scale * log2(e) */
	const int *lpos, *tbase; /* token trees (kv_pages.h): logical positions, tree bases; NULL: none */
	const uint32_t *tmask;
	const float *sinks;      /* [H] sink logits (natural log domain), NULL: none */
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

/* two signed values (bytes biased by +128 (Q8), nibbles by +8 (Q4), 5-bit codes by +16 (Q5), in bytes b0, b1
 * of w) times d
 * as f16: 0x6400 | u is the f16 1024 + u, so one exact subtraction leaves the value and one rounded product
 * gives q * d; AFF (A4, A5: unsigned codes, bias 1024): one rounded fma gives code * d + m */
template <bool AFF>
static __device__ __forceinline__ uint32_t att_dq2(uint32_t w, uint32_t sel, __half2 bias, __half2 d, __half2 m)
{
	uint32_t u = __byte_perm(w, 0x64646464u, sel);
	__half2 c = __hsub2(*reinterpret_cast<__half2 *>(&u), bias);
	__half2 h = AFF ? __hfma2(c, d, m) : __hmul2(c, d);
	return *reinterpret_cast<uint32_t *>(&h);
}

/* 8 values from the biased bytes of w0, w1 (values in order b0..b3 of w0, then of w1) */
template <bool AFF>
static __device__ __forceinline__ uint4 att_dq8(uint32_t w0, uint32_t w1, __half2 bias, __half2 d, __half2 m)
{
	return make_uint4(att_dq2<AFF>(w0, 0x4140, bias, d, m), att_dq2<AFF>(w0, 0x4342, bias, d, m),
			  att_dq2<AFF>(w1, 0x4140, bias, d, m), att_dq2<AFF>(w1, 0x4342, bias, d, m));
}

/* bits 0..3 of b to bit 4 of bytes 0..3: four Q5 codes' fifth bits beside their nibbles */
static __device__ __forceinline__ uint32_t att_hi4(uint32_t b)
{
	return (b & 1u) << 4 | (b & 2u) << 11 | (b & 4u) << 18 | (b & 8u) << 25;
}

/*
 * One K or V tile: positions j0 .. j0+BK-1 of kv head kvh, in page pid (-1: none) of pool pi (0 keys, 1
 * values), whose rows are in row format FMT. Rows outside [jlo, jhi], all rows of an unmapped page and the
 * padding past Dh are zeros, so no unwritten row reaches P.V as a NaN. issue() starts the loads, commit() completes the tile in shared memory (F16: cp.async does both at
 * issue, the caller's cp_wait completes it).
 *   F16  a thread per 16-byte chunk, cp.async into the tile
 *   Q8   a thread per 16 bytes of q (16 values, 2 chunks) and its group's scale
 *   Q4   a thread per 16 bytes of q (one group of 32 values, 4 chunks) and its scale
 *   Q5   as Q4, and the group's 4 bytes of fifth bits (two 2-byte loads: the s part is 2-byte aligned)
 *   A4   as Q4 (codes 0..15), and the group's minimum: value = code * d + m, one f16 fma
 *   A5   as A4 with Q5's fifth bits (after the row's steps and minima)
 */
template <int FMT, int DH, int BK> struct att_tile {
	static constexpr int UPR = FMT == KV_Q8 ? DH / 16 : DH / 32; /* units per row */
	static constexpr int NU = FMT == KV_F16 ? 1 : BK * UPR / ATT_THREADS;
	static_assert(FMT == KV_F16 || BK * UPR % ATT_THREADS == 0, "whole units per thread");
	uint4 raw[NU];
	uint32_t sc[NU];
	static constexpr bool FIVE = FMT == KV_Q5 || FMT == KV_A5, AFF = FMT == KV_A4 || FMT == KV_A5;
	uint32_t hb[FIVE ? NU : 1]; /* Q5, A5: each unit's fifth bits */
	uint32_t mn[AFF ? NU : 1];  /* A4, A5: each unit's minimum */

	__device__ __forceinline__ void issue(__half *dst, const uint8_t *pool, int pi, int pid, int j0, int jlo,
					      int jhi, int kvh, const struct att_args &a)
	{
		size_t roff = (size_t)kvh * a.page + j0 % a.page;
		int qrow = a.qrow[pi], srow = a.srow[pi];
		const uint8_t *pg = pool + (pid < 0 ? 0 : (size_t)pid * a.page_bytes[pi]);
		const uint8_t *qb = pg + roff * qrow, *sb = pg + (size_t)a.Hkv * a.page * qrow + roff * srow;
		if constexpr (FMT == KV_F16) {
			constexpr int CH = DH / 8;
			for (int e = threadIdx.x; e < BK * CH; e += ATT_THREADS) {
				int r = e / CH, ch = e % CH, j = j0 + r;
				bool ok = pid >= 0 && j >= jlo && j <= jhi && ch < a.Dh / 8;
				cp16(dst + att_swz(DH, r, ch), ok ? qb + (size_t)r * qrow + ch * 16 : pool, ok);
			}
		} else {
			constexpr int VPU = FMT == KV_Q8 ? 16 : 32; /* values per unit */
#pragma unroll
			for (int i = 0; i < NU; i++) {
				int e = threadIdx.x + i * ATT_THREADS, r = e / UPR, u = e % UPR, j = j0 + r;
				bool ok = pid >= 0 && j >= jlo && j <= jhi && u < a.Dh / VPU;
				raw[i] = ok ? *(const uint4 *)(qb + (size_t)r * qrow + u * 16) : make_uint4(0, 0, 0, 0);
				sc[i] = ok ? *(const uint16_t *)(sb + (size_t)r * srow + u * VPU / 32 * 2) : 0;
				if constexpr (AFF)
					mn[i] = ok ? *(const uint16_t *)(sb + (size_t)r * srow + a.Dh / 32 * 2 + u * 2) : 0;
				if constexpr (FIVE) {
					const uint16_t *h16 = (const uint16_t *)(sb + (size_t)r * srow + a.Dh / 32 * (AFF ? 4 : 2) +
										 u * 4);
					hb[i] = ok ? (uint32_t)h16[0] | (uint32_t)h16[1] << 16 : 0;
				}
			}
		}
	}

	__device__ __forceinline__ void commit(__half *dst)
	{
		if constexpr (FMT != KV_F16) {
#pragma unroll
			for (int i = 0; i < NU; i++) {
				int e = threadIdx.x + i * ATT_THREADS, r = e / UPR, u = e % UPR;
				__half2 d = __half2half2(__ushort_as_half((uint16_t)sc[i]));
				uint4 w = raw[i];
				if (FMT == KV_Q8) {
					__half2 bias = __half2half2(__ushort_as_half(0x6480)); /* 1152 = 1024 + 128 */
					w.x ^= 0x80808080u;
					w.y ^= 0x80808080u;
					w.z ^= 0x80808080u;
					w.w ^= 0x80808080u;
					*(uint4 *)(dst + att_swz(DH, r, 2 * u)) = att_dq8<false>(w.x, w.y, bias, d, d);
					*(uint4 *)(dst + att_swz(DH, r, 2 * u + 1)) = att_dq8<false>(w.z, w.w, bias, d, d);
				} else {
					/* Q4: 1032 = 1024 + 8; Q5: 1040 = 1024 + 16; A4, A5: 1024 (codes unsigned) */
					__half2 bias = __half2half2(__ushort_as_half(AFF ? 0x6400 : FMT == KV_Q5 ? 0x6410 : 0x6408));
					__half2 m2 = __half2half2(__ushort_as_half((uint16_t)mn[AFF ? i : 0]));
					const uint32_t m = 0x0f0f0f0fu;
					uint4 lo = make_uint4(w.x & m, w.y & m, w.z & m, w.w & m);
					uint4 hi = make_uint4(w.x >> 4 & m, w.y >> 4 & m, w.z >> 4 & m, w.w >> 4 & m);
					if constexpr (FIVE) { /* values 0..15 in lo, 16..31 in hi, 4 per word */
						uint32_t b = hb[i];
						lo = make_uint4(lo.x | att_hi4(b), lo.y | att_hi4(b >> 4), lo.z | att_hi4(b >> 8),
								lo.w | att_hi4(b >> 12));
						hi = make_uint4(hi.x | att_hi4(b >> 16), hi.y | att_hi4(b >> 20),
								hi.z | att_hi4(b >> 24), hi.w | att_hi4(b >> 28));
					}
					*(uint4 *)(dst + att_swz(DH, r, 4 * u)) = att_dq8<AFF>(lo.x, lo.y, bias, d, m2);
					*(uint4 *)(dst + att_swz(DH, r, 4 * u + 1)) = att_dq8<AFF>(lo.z, lo.w, bias, d, m2);
					*(uint4 *)(dst + att_swz(DH, r, 4 * u + 2)) = att_dq8<AFF>(hi.x, hi.y, bias, d, m2);
					*(uint4 *)(dst + att_swz(DH, r, 4 * u + 3)) = att_dq8<AFF>(hi.z, hi.w, bias, d, m2);
				}
			}
		}
	}
};

/* the physical page of position j in page-table row prow, -1 when unmapped or past the table */
static __device__ __forceinline__ int att_page_of(const struct att_args &a, int prow, int j)
{
	int lp = j / a.page;
	return lp < a.max_pages ? a.pages[(size_t)prow * a.max_pages + lp] : -1;
}

/* kv_visible of src/kernels/kv_pages.h: row with stored position p, logical position lp, tree base tb and
 * ancestor mask m */
static __device__ __forceinline__ bool att_visible(int p, int lp, int tb, const uint32_t *m, int j, int window)
{
	return j <= p && (window == 0 || lp - j < window) && (j < tb || (m[(j - tb) >> 5] >> ((j - tb) & 31) & 1));
}

template <int KF, int VF, int DH>
static __global__ void __launch_bounds__(ATT_THREADS) k_attention(const struct att_args a)
{
	constexpr int BK = ATT_BK(DH), CH = DH / 8;
	extern __shared__ uint4 att_smem[];
	__half *sq = (__half *)att_smem, *sk = sq + ATT_ROWS * DH, *sv = sk + BK * DH;
	int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, gid = lane >> 2, tig = lane & 3;
	int kvh = blockIdx.y, W = a.window;

	/* this block's part: the last p with S(p) <= b; heaviest (latest) row blocks first, a causal grid
	 * ending on short blocks */
	int b = gridDim.x - 1 - blockIdx.x, lo = 0, hi = a.n_parts - 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) >> 1;
		if (a.part_t0[mid] * a.g / ATT_ROWS + mid <= b)
			lo = mid;
		else
			hi = mid - 1;
	}
	int t0 = a.part_t0[lo], rows = (a.part_t0[lo + 1] - t0) * a.g, prow = a.part_row[lo];
	int R0 = (b - (t0 * a.g / ATT_ROWS + lo)) * ATT_ROWS;
	if (R0 >= rows)
		return;

	/* this thread's rows: A = gid, B = gid + 8 of its warp's 16; position -1 (sees nothing) past the end */
	int rA = R0 + warp * 16 + gid, rB = rA + 8;
	int tA = t0 + rA / a.g, tB = t0 + rB / a.g;
	int pA = rA < rows ? a.pos[tA] : -1, pB = rB < rows ? a.pos[tB] : -1;
	/* token trees: logical positions (the window), tree bases and ancestor masks */
	int wA = pA >= 0 && a.lpos ? a.lpos[tA] : pA, wB = pB >= 0 && a.lpos ? a.lpos[tB] : pB;
	int tbA = pA >= 0 && a.tbase ? a.tbase[tA] : KV_TREE_NONE, tbB = pB >= 0 && a.tbase ? a.tbase[tB] : KV_TREE_NONE;
	const uint32_t *maskA = a.tmask && pA >= 0 ? a.tmask + (size_t)tA * KV_TREE_WORDS : NULL;
	const uint32_t *maskB = a.tmask && pB >= 0 ? a.tmask + (size_t)tB * KV_TREE_WORDS : NULL;

	/* the keys any row of the block may see (the window from the smallest logical position), then this
	 * split's share of their tiles */
	int pmin = min(pA < 0 ? INT_MAX : wA, pB < 0 ? INT_MAX : wB), pmax = max(pA, pB);
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
	int jlo = W > 0 ? max(pmin - W + 1, 0) : 0, jhi = pmax;
	int jt0 = jlo / BK, ntl = jhi / BK - jt0 + 1, per = (ntl + gridDim.z - 1) / gridDim.z;
	int jbeg = (jt0 + (int)blockIdx.z * per) * BK, jlast = (jt0 + min((int)blockIdx.z * per + per, ntl) - 1) * BK;

	att_tile<KF, DH, BK> kt;
	att_tile<VF, DH, BK> vt;
	int pid = 0, pid_next = 0;
	if (jbeg <= jlast) {
		pid = att_page_of(a, prow, jbeg);
		kt.issue(sk, a.kp, 0, pid, jbeg, jlo, jhi, kvh, a);
		cp_commit();
		pid_next = jbeg + BK <= jlast ? att_page_of(a, prow, jbeg + BK) : -1;
	}
	for (int e = tid; e < ATT_ROWS * CH; e += ATT_THREADS) {
		int r = e / CH, ch = e % CH, R = R0 + r;
		uint4 v = make_uint4(0, 0, 0, 0);
		if (R < rows && ch < a.Dh / 8) {
			int t = t0 + R / a.g, h = kvh * a.g + R % a.g;
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

	for (int j0 = jbeg; j0 <= jlast; j0 += BK) {
		vt.issue(sv, a.vp, 1, pid, j0, jlo, jhi, kvh, a);
		cp_commit();
		kt.commit(sk);
		cp_wait<1>();
		__syncthreads();

		int j1 = j0 + BK - 1;
		bool any = pid >= 0 && ((pA >= j0 && (W == 0 || wA - j1 < W)) || (pB >= j0 && (W == 0 || wB - j1 < W)));
		bool full = pA >= j1 && (W == 0 || wA - j0 < W) && j1 < tbA && pB >= j1 && (W == 0 || wB - j0 < W) &&
			    j1 < tbB;
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
						if (!(e < 2 ? att_visible(pA, wA, tbA, maskA, j0 + nt * 8 + 2 * tig + (e & 1), W)
							    : att_visible(pB, wB, tbB, maskB, j0 + nt * 8 + 2 * tig + (e & 1), W)))
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
		vt.commit(sv);
		cp_wait<0>();
		__syncthreads();
		if (j0 + BK <= jlast) {
			pid = pid_next;
			kt.issue(sk, a.kp, 0, pid, j0 + BK, jlo, jhi, kvh, a);
			cp_commit();
			pid_next = j0 + 2 * BK <= jlast ? att_page_of(a, prow, j0 + 2 * BK) : -1;
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
		int t = t0 + R / a.g, h = kvh * a.g + R % a.g;
		float m = half ? mB : mA, l = half ? lB : lA;
		size_t prw = (size_t)t * a.H + h;
		float *dst, inv = 1.0f;
		if (gridDim.z == 1) {
			dst = a.out + prw * a.Dh;
			/* the sink joins the denominator only: o / (l + 2^(sink - m)) with both rescaled to their max */
			float sk = a.sinks ? a.sinks[h] * 1.4426950408889634f : -INFINITY, M = fmaxf(m, sk);
			inv = a.sinks ? exp2f(m - M) / (l * exp2f(m - M) + exp2f(sk - M)) : 1.0f / l;
		} else {
			prw += (size_t)blockIdx.z * a.T * a.H;
			dst = a.part_o + prw * a.Dh;
			if (tig == 0)
				*(float2 *)(a.part_ml + 2 * prw) = make_float2(m, l);
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
	k_attention_combine(float *out, const float *part_o, const float *part_ml, int nsplit, int64_t TH, int Dh,
			    const float *sinks, int H)
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
	/* a sink (log2 domain) joins the max and, below, the denominator only */
	float sk = sinks ? sinks[row % H] * 1.4426950408889634f : -INFINITY;
	M = fmaxf(M, sk);
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
		acc = 0;
		L = sinks ? exp2f(sk - M) : 0.0f;
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

/* the most key tiles a block's range of span positions can touch (it need not start on a tile) */
static int64_t att_key_tiles(int64_t span, int bk)
{
	return (span + bk - 1) / bk + 1;
}

static size_t att_split_bytes(int64_t prows, int Dh)
{
	return (size_t)prows * ((size_t)Dh + 2) * sizeof(float);
}

extern "C" size_t cuda_attention_ws_bytes(int T_max, int C, int H, int Dh)
{
	if (T_max <= 0 || C <= 0 || H <= 0 || Dh <= 0)
		return 0;
	/* a split takes at least two tiles (see att_run) */
	int64_t max_split = att_key_tiles(C, ATT_BK(att_dh_pad(Dh))) / 2;
	if (max_split < 2)
		return 0;
	int64_t prows = (int64_t)T_max * H * max_split;
	return att_split_bytes(prows < ATT_SPLIT_ROWS_MAX ? prows : ATT_SPLIT_ROWS_MAX, Dh);
}

/* Launches k_attention<KF, VF, DH> (a.part_o, a.part_ml filled here) and, when it split the keys, the
 * combine. max_pos, max_part: the batch's host values. plan: launch nothing, *plan = the key splits it would
 * launch (cuda_attention_splits). */
template <int KF, int VF, int DH>
static int att_run(struct cuda_ctx *c, struct att_args a, int max_pos, int max_part, int64_t *plan)
{
	constexpr int BK = ATT_BK(DH);
	int smem = (ATT_ROWS + 2 * BK) * DH * 2, dev, optin, per_sm;
	CUDA_CALL_CHECK(c, cudaGetDevice(&dev));
	CUDA_CALL_CHECK(c, cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
	CUDA_ARG_CHECK(c, smem <= optin, "cuda_attention: head dim %d needs %d bytes of shared memory, the GPU has %d",
		       a.Dh, smem, optin);
	CUDA_CALL_CHECK(c, cudaFuncSetAttribute(k_attention<KF, VF, DH>, cudaFuncAttributeMaxDynamicSharedMemorySize,
						smem));
	CUDA_CALL_CHECK(c, cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, k_attention<KF, VF, DH>,
									 ATT_THREADS, smem));

	/* Split the keys when the blocks would leave part of one wave idle: as many splits as fill the wave, at
	 * least two tiles a split, at most ATT_SPLIT_ROWS_MAX partial rows (cuda_attention_ws_bytes counts on
	 * all three). A block's key range spans at most max_pos + 1 positions, window + max_part - 1 with a
	 * window. */
	int64_t TH = (int64_t)a.T * a.H, rblocks = (int64_t)a.T * a.g / ATT_ROWS + a.n_parts;
	int64_t blocks = rblocks * a.Hkv, wave = (int64_t)(per_sm > 0 ? per_sm : 1) * (c->n_sm > 0 ? c->n_sm : 1);
	int64_t span = (int64_t)max_pos + 1;
	/* (a tree token's stored position runs up to max_part past its logical one) */
	int64_t wspan = (int64_t)a.window + max_part - 1 + (a.tbase ? max_part : 0);
	if (a.window > 0 && wspan < span)
		span = wspan;
	int64_t ntiles = att_key_tiles(span, BK), nsplit = 1;
	if (blocks * 2 <= wave) {
		int64_t n = wave / blocks, cap = ATT_SPLIT_ROWS_MAX / TH;
		n = n < ntiles / 2 ? n : ntiles / 2;
		n = n < cap ? n : cap;
		nsplit = n >= 2 ? n : 1;
	}
	if (plan) {
		*plan = nsplit;
		return 0;
	}
	if (nsplit > 1) {
		size_t need = att_split_bytes(nsplit * TH, a.Dh);
		if (!c->ws || c->ws_bytes < need) {
			snprintf(c->err, sizeof(c->err),
				 "cuda_attention: %lld key splits of %d tokens need %zu bytes of workspace, have %zu",
				 (long long)nsplit, a.T, need, c->ws ? c->ws_bytes : 0);
			return -ENOSPC;
		}
		a.part_o = (float *)c->ws;
		a.part_ml = a.part_o + nsplit * TH * a.Dh;
	}
	k_attention<KF, VF, DH><<<dim3((unsigned)rblocks, (unsigned)a.Hkv, (unsigned)nsplit), ATT_THREADS, smem,
			       cuda_stream_of(c)>>>(a);
	CUDA_LAUNCH_CHECK(c, "k_attention");
	if (nsplit == 1)
		return 0;
	k_attention_combine<<<dim3((unsigned)TH, (unsigned)(a.Dh / 32)), 256, 0, cuda_stream_of(c)>>>(
		a.out, a.part_o, a.part_ml, (int)nsplit, TH, a.Dh, a.sinks, a.H);
	CUDA_LAUNCH_CHECK(c, "k_attention_combine");
	return 0;
}

template <int KF, int VF>
static int att_run_fmt(struct cuda_ctx *c, const struct att_args &a, int max_pos, int max_part, int64_t *plan)
{
	int dhp = att_dh_pad(a.Dh);
	return dhp == 64    ? att_run<KF, VF, 64>(c, a, max_pos, max_part, plan)
	       : dhp == 128 ? att_run<KF, VF, 128>(c, a, max_pos, max_part, plan)
			    : att_run<KF, VF, 256>(c, a, max_pos, max_part, plan);
}

/* the kernels of each KV format the GPU takes (src/kernels/kv_pages.h: KV_FMT_LIST) */
typedef int (*att_run_fn)(struct cuda_ctx *c, const struct att_args &a, int max_pos, int max_part, int64_t *plan);
#define ATT_ROW(id, k, key, val, cuda) KV_IF_##cuda((att_run_fmt<KV_##key, KV_##val>), nullptr),
static const att_run_fn att_by_fmt[KV_FMT_COUNT] = {KV_FMT_LIST(ATT_ROW)};
#undef ATT_ROW

static int att_call(struct cuda_ctx *c, float *out, const float *q, const struct kv_layer *kv,
		    const struct kv_batch *bt, int H, int window, float scale, const float *sinks, int64_t *plan)
{
	int Hkv = kv->Hkv, Dh = kv->Dh, T = bt->T;
	CUDA_ARG_CHECK(c, kv->fmt >= 0 && kv->fmt < KV_FMT_COUNT && kv_fmt_on_cuda(kv->fmt),
		       "cuda_attention: KV format %d (F32 is CPU only)", kv->fmt);
	CUDA_ARG_CHECK(c, H > 0 && Hkv > 0 && H % Hkv == 0, "cuda_attention: H = %d, Hkv = %d", H, Hkv);
	CUDA_ARG_CHECK(c, Dh >= 32 && Dh <= 256 && Dh % 32 == 0, "cuda_attention: head dim %d (a multiple of 32 up to 256)",
		       Dh);
	CUDA_ARG_CHECK(c, kv->page > 0 && kv->page % KV_PAGE_ALIGN == 0,
		       "cuda_attention: page of %d positions (a multiple of %d)", kv->page, KV_PAGE_ALIGN);
	CUDA_ARG_CHECK(c, window >= 0, "cuda_attention: window = %d", window);
	CUDA_ARG_CHECK(c, T >= 0 && (T == 0 || (bt->n_parts > 0 && bt->max_part > 0 && bt->max_pos >= 0 &&
						 bt->max_pages > 0)),
		       "cuda_attention: T = %d, %d parts, max_part = %d, max_pos = %d, max_pages = %d", T, bt->n_parts,
		       bt->max_part, bt->max_pos, bt->max_pages);
	CUDA_ARG_CHECK(c, ((uintptr_t)q | (uintptr_t)out | (uintptr_t)kv->k | (uintptr_t)kv->v) % 16 == 0,
		       "cuda_attention: q, out and the KV pools must be 16-byte aligned");
	int g = H / Hkv;
	CUDA_ARG_CHECK(c, (int64_t)T * g / ATT_ROWS + bt->n_parts < INT32_MAX && Hkv <= 65535 &&
				  (int64_t)T * H < INT32_MAX,
		       "cuda_attention: T = %d x %d heads in %d parts is too many", T, H, bt->n_parts);
	if (plan)
		*plan = 0;
	if (T == 0)
		return 0;
	struct att_args a = {out, NULL, NULL, q, (const uint8_t *)kv->k, (const uint8_t *)kv->v, bt->part_t0,
			     bt->part_row, bt->pos, bt->pages, T, H, Hkv, Dh, g, window, bt->n_parts, bt->max_pages,
			     kv->page, {0, 0}, {0, 0}, {0, 0}, scale * 1.4426950408889634f, bt->lpos,
			     bt->tree_base, bt->tree_mask, sinks};
	for (int i = 0; i < 2; i++) {
		int rf = kv_pool_fmt(kv->fmt, i);
		a.qrow[i] = kv_qrow_bytes(rf, Dh);
		a.srow[i] = kv_srow_bytes(rf, Dh);
		a.page_bytes[i] = kv_page_bytes(rf, Hkv, Dh, kv->page);
	}
	return att_by_fmt[kv->fmt](c, a, bt->max_pos, bt->max_part, plan);
}

extern "C" int cuda_attention(struct cuda_ctx *c, float *out, const float *q, const struct kv_layer *kv,
			      const struct kv_batch *bt, int H, int window, float scale, const float *sinks)
{
	return att_call(c, out, q, kv, bt, H, window, scale, sinks, NULL);
}

extern "C" int cuda_attention_splits(struct cuda_ctx *c, int64_t *nsplit, float *out, const float *q,
				     const struct kv_layer *kv, const struct kv_batch *bt, int H, int window, float scale,
				     const float *sinks)
{
	return att_call(c, out, q, kv, bt, H, window, scale, sinks, nsplit);
}
