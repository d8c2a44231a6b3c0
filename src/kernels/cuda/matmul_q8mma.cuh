/*
 * matmul_q8mma.cuh: the per-thread parts of the 8-bit tensor-core kernel of matmul_q8mma.cu (loads of a tile
 * into registers, their unpacking into shared memory, a lane's mma fragments, the integer and f32 scaling, the
 * output), apart from the kernel so that tests/test_cuda_q8mma_host.cpp runs this very code on the host
 * (tests/cuda_emul.h) around an int8 mma emulated from the PTX ISA's fragment layout.
 *
 * Operands: x as the CPU quantizes it (matvec_q8.cuh, src/kernels/cpu/qdot.h: codes a in [-127, 127] and one
 * f32 dx per block of the weight format's B = 32 or 256 values), W's integer codes q (the format's integers:
 * Q4_0 q - 8, Q5_0 q - 16, Q6_K q - 32, Q4_K/Q5_K unsigned, Q8_0 as stored), so every product of the mma is
 * an int8 x int8 product and every sum below is an exact int32. Per weight block b and output (row n, token t):
 *     I = sum_g c_g S_g  (S_g = sum_{i in g} q_i a_i: one mma per group g of G = 32 values, or 16 for Q6_K's
 *                         16-value sub-scales; c_g the integer sub-scale, 1 where the format has none),
 *     M = sum_g m_g A_g  (Q4_K/Q5_K: the 6-bit mins, A_g the sum of the 32 codes a of group g),
 *     acc = acc + (f32(d_b dx_b) * (float)I - f32(dmin_b dx_b) * (float)M)
 * blocks in increasing k, each operation rounded once (__fmul_rn, __fsub_rn, __fadd_rn: no FMA): the portable
 * qdot's expression and order (src/kernels/cpu/qdot.c qdot_portable), so an output is bit for bit what the
 * CPU's portable kernel gives for the same codes, and within qdot.h's (K/16 + 16) 2^-24 sum_b |terms| of any
 * CPU path (the SIMD kernels sum the same integers in another f32 order). The bias is added last, as there.
 *
 * Tiles: a block owns Q8_BM = 64 rows of W from n0 and BN tokens from t0; per tile of Q8_BK = 256 values of k
 * (one K-quant block, eight 32-blocks; the last tile of a 32-block format may hold fewer: its blocks past K
 * are zero and skipped) shared memory holds the rows' codes w[64][Q8_LD] and the tokens' codes x[BN][Q8_LD]
 * (int8, k contiguous), the rows' per-block d, dmin, sub-scales and mins, the tokens' dx and (formats with
 * mins) the 32-sums of their codes. Rows are Q8_LD = 272 bytes apart: 68 words, 4 mod 32, so the 32 lanes'
 * 4-byte fragment loads (word 68 g + q + const) fall in 32 distinct banks. Each row's tile is unpacked by
 * Q8_UPR = 4 threads (a part: 64 values and the scales they use), loaded into registers (struct R) while the
 * block computes the tile before: the loads of tile k + 1 are in flight during the mma of tile k.
 *
 * Warps: 4 x WN. Warp w takes rows 16 (w % 4) .. + 15 and tokens 8 NT (w / 4) .. + 8 NT - 1: NT m16n8 tiles
 * sharing one A fragment per group.
 * Fragments of mma.m16n8k32 .s8 (g = lane / 4, q = lane % 4): A regs {row g, k 4q..4q+3}, {row g+8, k 4q..},
 * {row g, k 16+4q..}, {row g+8, k 16+4q..}; B regs {k 4q..4q+3, col g}, {k 16+4q.., col g}; C {row g, cols
 * 2q, 2q+1}, {row g+8, cols 2q, 2q+1}. m16n8k16 .s8 (Q6_K): the first two A regs and the first B reg.
 */
#ifndef FERRY_CUDA_MATMUL_Q8MMA_CUH
#define FERRY_CUDA_MATMUL_Q8MMA_CUH

#include "kernels/cuda/matvec_q8.cuh"

#define Q8_BK 256          /* k values per tile */
#define Q8_LD (Q8_BK + 16) /* bytes from one tile row to the next */
#define Q8_BM 64           /* weight rows per block */
#define Q8_UPR 4           /* threads (parts of 64 values) per row and tile */

/* 16 bytes at p (16-aligned, shared memory) from 4 words */
__device__ __forceinline__ void q8_put16(int8_t *p, uint32_t a, uint32_t b, uint32_t c, uint32_t d)
{
#ifdef __CUDACC__
	*(uint4 *)p = make_uint4(a, b, c, d);
#else
	const uint32_t v[4] = {a, b, c, d};
	memcpy(p, v, 16);
#endif
}

/* Where a part's unpacking writes: the row's 256 codes of the tile, its per-block d and dmin (NBLK each), its
 * sub-scales (one per G values) and mins (one per 32, formats with mins) */
struct q8_rowdst {
	int8_t *w;
	float *d, *dmin;
	int8_t *c;
	uint8_t *m;
};

/* Q4_K (QH false) and Q5_K (QH true): part j is chunk j of the block: qs bytes 32j .. 32j + 31, low nibbles
 * values 64j + l (sub-block 2j), high nibbles 64j + 32 + l (2j + 1); Q5_K + 16 from bits 2j, 2j + 1 of qh[l]. */
template <bool QH> struct q8f_k45 {
	static constexpr int BLOCK = QK_K, G = 32, BYTES = deq_k45<QH>::BYTES, ALIGN = deq_k45<QH>::ALIGN;
	static constexpr bool MIN = true, SC = true;
	struct R {
		uint4 h, q[2], qh[QH ? 2 : 1];
	};
	__device__ static void load(const uint8_t *row, int kt, int nb, int j, R &r)
	{
		(void)nb; /* K is a multiple of 256: every tile is whole */
		const uint8_t *p = row + (int64_t)kt * BYTES;
		r.h = __ldg((const uint4 *)p);
		r.q[0] = __ldg((const uint4 *)(p + (QH ? 48 : 16) + 32 * j));
		r.q[1] = __ldg((const uint4 *)(p + (QH ? 48 : 16) + 32 * j + 16));
		if (QH) {
			r.qh[0] = __ldg((const uint4 *)(p + 16));
			r.qh[QH ? 1 : 0] = __ldg((const uint4 *)(p + 32));
		}
	}
	__device__ static void store(const R &r, int j, const q8_rowdst &o)
	{
		const uint32_t qw[8] = {r.q[0].x, r.q[0].y, r.q[0].z, r.q[0].w, r.q[1].x, r.q[1].y, r.q[1].z, r.q[1].w};
		uint32_t hw[8] = {0, 0, 0, 0, 0, 0, 0, 0};
		if (QH) {
			const uint4 a = r.qh[0], b = r.qh[QH ? 1 : 0];
			const uint32_t v[8] = {a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w};
			for (int i = 0; i < 8; i++)
				hw[i] = v[i];
		}
		uint32_t lo[8], hi[8];
#pragma unroll
		for (int i = 0; i < 8; i++) {
			lo[i] = (qw[i] & 0x0f0f0f0fu) | (hw[i] >> (2 * j) & MVQ_ONES) << 4;
			hi[i] = (qw[i] >> 4 & 0x0f0f0f0fu) | (hw[i] >> (2 * j + 1) & MVQ_ONES) << 4;
		}
		q8_put16(o.w + 64 * j, lo[0], lo[1], lo[2], lo[3]);
		q8_put16(o.w + 64 * j + 16, lo[4], lo[5], lo[6], lo[7]);
		q8_put16(o.w + 64 * j + 32, hi[0], hi[1], hi[2], hi[3]);
		q8_put16(o.w + 64 * j + 48, hi[4], hi[5], hi[6], hi[7]);
		int sc, mn;
		k_scale_min_int(r.h, 2 * j, &sc, &mn);
		o.c[2 * j] = (int8_t)sc, o.m[2 * j] = (uint8_t)mn;
		k_scale_min_int(r.h, 2 * j + 1, &sc, &mn);
		o.c[2 * j + 1] = (int8_t)sc, o.m[2 * j + 1] = (uint8_t)mn;
		if (j == 0) {
			o.d[0] = f16_bits_to_f32((uint16_t)(r.h.x & 0xffff));
			o.dmin[0] = f16_bits_to_f32((uint16_t)(r.h.x >> 16));
		}
	}
};

/* Q6_K: part j is half hf = j / 2, l0 = 16 (j % 2): ql bytes 64hf + l0 .. + 15 and 64hf + 32 + l0 .., qh bytes
 * 32hf + l0 .., giving values 128hf + 32u + l0 + i (u = 0..3); and the sub-scales 4j .. 4j + 3. */
struct q8f_q6_k {
	static constexpr int BLOCK = QK_K, G = 16, BYTES = sizeof(struct block_q6_K), ALIGN = deq_q6_k::ALIGN;
	static constexpr bool MIN = false, SC = true;
	struct R {
		uint32_t a[4], b[4], h[4], s, d;
	};
	__device__ static void load(const uint8_t *row, int kt, int nb, int j, R &r)
	{
		(void)nb;
		const uint8_t *p = row + (int64_t)kt * BYTES;
		const int hf = j >> 1, l0 = 16 * (j & 1);
#pragma unroll
		for (int i = 0; i < 4; i++) {
			r.a[i] = ld_u32_2a(p + 64 * hf + l0 + 4 * i);
			r.b[i] = ld_u32_2a(p + 64 * hf + 32 + l0 + 4 * i);
			r.h[i] = ld_u32_2a(p + 128 + 32 * hf + l0 + 4 * i);
		}
		r.s = ld_u32_2a(p + 192 + 4 * j);
		r.d = ld_u16(p + 208);
	}
	__device__ static void store(const R &r, int j, const q8_rowdst &o)
	{
		const int hf = j >> 1, l0 = 16 * (j & 1);
		uint32_t v[4][4];
#pragma unroll
		for (int i = 0; i < 4; i++) {
			const uint32_t A = r.a[i], B = r.b[i], H = r.h[i];
			v[0][i] = __vsub4((A & 0x0f0f0f0fu) | (H << 4 & 0x30303030u), 0x20202020u);
			v[1][i] = __vsub4((B & 0x0f0f0f0fu) | (H << 2 & 0x30303030u), 0x20202020u);
			v[2][i] = __vsub4((A >> 4 & 0x0f0f0f0fu) | (H & 0x30303030u), 0x20202020u);
			v[3][i] = __vsub4((B >> 4 & 0x0f0f0f0fu) | (H >> 2 & 0x30303030u), 0x20202020u);
		}
#pragma unroll
		for (int u = 0; u < 4; u++)
			q8_put16(o.w + 128 * hf + 32 * u + l0, v[u][0], v[u][1], v[u][2], v[u][3]);
#pragma unroll
		for (int i = 0; i < 4; i++)
			o.c[4 * j + i] = (int8_t)(r.s >> 8 * i);
		if (j == 0)
			o.d[0] = f16_bits_to_f32((uint16_t)r.d);
	}
};

/* The 32-blocks Q8_0 (KIND 0), Q4_0 (1), Q5_0 (2): part j is blocks 2j, 2j + 1 of the tile (values 64j ..
 * 64j + 63); a block past the row's nb is zero. Q4_0/Q5_0: qs byte l holds values l (low nibble) and l + 16
 * (high), Q5_0's bit 4 of value i is bit i of qh; codes minus 8 (16). */
template <int KIND> struct q8f_q32 {
	static constexpr int BLOCK = QK, G = 32;
	static constexpr int BYTES = KIND == 0 ? sizeof(struct block_q8_0)
				     : KIND == 1 ? sizeof(struct block_q4_0)
						 : sizeof(struct block_q5_0);
	static constexpr int ALIGN = KIND == 0 ? deq_q8_0::ALIGN : KIND == 1 ? deq_q4_0::ALIGN : deq_q5_0::ALIGN;
	static constexpr int NW = KIND == 0 ? 8 : 4, QS_AT = KIND == 2 ? 6 : 2; /* code words, where they start */
	static constexpr bool MIN = false, SC = false;
	struct R {
		uint32_t q[2][NW], qh[2], d[2];
	};
	__device__ static void load(const uint8_t *row, int kt, int nb, int j, R &r)
	{
#pragma unroll
		for (int i = 0; i < 2; i++) {
			const int b = kt * (Q8_BK / QK) + 2 * j + i;
			const uint8_t *p = row + (int64_t)(b < nb ? b : nb - 1) * BYTES;
			r.d[i] = b < nb ? ld_u16(p) : 0;
			r.qh[i] = KIND == 2 ? ld_u32_2a(p + 2) : 0;
#pragma unroll
			for (int w = 0; w < NW; w++)
				r.q[i][w] = ld_u32_2a(p + QS_AT + 4 * w);
		}
	}
	__device__ static void store(const R &r, int j, const q8_rowdst &o)
	{
#pragma unroll
		for (int i = 0; i < 2; i++) {
			int8_t *w = o.w + 64 * j + 32 * i;
			if (KIND == 0) {
				q8_put16(w, r.q[i][0], r.q[i][1], r.q[i][2], r.q[i][3]);
				q8_put16(w + 16, r.q[i][4], r.q[i][5], r.q[i][6], r.q[i][7]);
			} else {
				const uint32_t off = KIND == 2 ? 0x10101010u : 0x08080808u;
				uint32_t lo[4], hi[4];
#pragma unroll
				for (int u = 0; u < 4; u++) {
					const uint32_t q = r.q[i][u % NW];
					const uint32_t bl = KIND == 2 ? bits_to_b4(r.qh[i] >> (4 * u) & 15) : 0;
					const uint32_t bh = KIND == 2 ? bits_to_b4(r.qh[i] >> (16 + 4 * u) & 15) : 0;
					lo[u] = __vsub4((q & 0x0f0f0f0fu) | bl, off);
					hi[u] = __vsub4((q >> 4 & 0x0f0f0f0fu) | bh, off);
				}
				q8_put16(w, lo[0], lo[1], lo[2], lo[3]);
				q8_put16(w + 16, hi[0], hi[1], hi[2], hi[3]);
			}
			o.d[2 * j + i] = f16_bits_to_f32((uint16_t)r.d[i]);
		}
	}
};
typedef q8f_k45<false> q8f_q4_k;
typedef q8f_k45<true> q8f_q5_k;
typedef q8f_q32<0> q8f_q8_0;
typedef q8f_q32<1> q8f_q4_0;
typedef q8f_q32<2> q8f_q5_0;

/* Which format has an 8-bit tensor-core kernel: q8f_for<WFMT_x>::type, void for the others. */
template <int FMT> struct q8f_for {
	typedef void type;
};
template <> struct q8f_for<WFMT_Q4_K> {
	typedef q8f_q4_k type;
};
template <> struct q8f_for<WFMT_Q5_K> {
	typedef q8f_q5_k type;
};
template <> struct q8f_for<WFMT_Q6_K> {
	typedef q8f_q6_k type;
};
template <> struct q8f_for<WFMT_Q8_0> {
	typedef q8f_q8_0 type;
};
template <> struct q8f_for<WFMT_Q4_0> {
	typedef q8f_q4_0 type;
};
template <> struct q8f_for<WFMT_Q5_0> {
	typedef q8f_q5_0 type;
};

/* A block's shapes: WN warps along the tokens, NT m16n8 tiles per warp */
template <class F, int WN, int NT> struct q8_shape {
	static constexpr int BN = 8 * NT * WN, NTHR = 128 * WN, NBLK = Q8_BK / F::BLOCK, NG = Q8_BK / F::G;
	static constexpr int WU = Q8_BM * Q8_UPR / NTHR;  /* row parts per thread */
	static constexpr int XU = BN * (Q8_BK / 16) / NTHR; /* 16-byte chunks of x per thread */
	static constexpr int DU = (BN * NBLK + NTHR - 1) / NTHR;
	static_assert(Q8_BM * Q8_UPR % NTHR == 0 && BN * (Q8_BK / 16) % NTHR == 0, "whole loads per thread");
	static_assert(Q8_LD / 4 % 32 == 4, "conflict-free fragment rows");
};

/* Shared memory of one tile */
template <class F, int BN> struct __align__(16) q8_smem {
	static constexpr int NBLK = Q8_BK / F::BLOCK, NG = Q8_BK / F::G, NM = F::MIN ? 1 : 0;
	int8_t w[Q8_BM * Q8_LD];
	int8_t x[BN * Q8_LD];
	float d[Q8_BM][NBLK], dmin[NM ? Q8_BM : 1][NBLK];
	float dx[BN][NBLK];
	int sa[NM ? BN : 1][Q8_BK / 32];
	int8_t c[Q8_BM][NG];
	uint8_t m[NM ? Q8_BM : 1][Q8_BK / 32];
};

/* One thread's registers of the next tile */
template <class F, int WN, int NT> struct q8_stage {
	typedef q8_shape<F, WN, NT> S;
	typename F::R w[S::WU];
	uint4 x[S::XU];
	float dx[S::DU];
};

/* Thread tid's loads of tile kt (k0 = 256 kt): its row parts (rows past N load row N - 1, never written out),
 * its 16-byte chunks of the tokens' codes and its tokens' dx (tokens past T and values past K: 0). */
template <class F, int WN, int NT>
__device__ __forceinline__ void q8_load(q8_stage<F, WN, NT> &s, const uint8_t *W, const int8_t *xq, const float *xd,
					int N, int K, int64_t row_bytes, int T, int n0, int t0, int kt, int tid)
{
	typedef q8_shape<F, WN, NT> S;
	const int nb = K / F::BLOCK, k0 = kt * Q8_BK;
#pragma unroll
	for (int u = 0; u < S::WU; u++) {
		const int i = tid + u * S::NTHR, r = i / Q8_UPR, n = n0 + r < N ? n0 + r : N - 1;
		F::load(W + (int64_t)n * row_bytes, kt, nb, i % Q8_UPR, s.w[u]);
	}
#pragma unroll
	for (int u = 0; u < S::XU; u++) {
		const int i = tid + u * S::NTHR, t = i / (Q8_BK / 16), kk = i % (Q8_BK / 16) * 16;
		s.x[u] = t0 + t < T && k0 + kk < K ? __ldg((const uint4 *)(xq + (int64_t)(t0 + t) * K + k0 + kk))
						   : uint4{0, 0, 0, 0};
	}
#pragma unroll
	for (int u = 0; u < S::DU; u++) {
		const int i = tid + u * S::NTHR, t = i / S::NBLK, b = kt * S::NBLK + i % S::NBLK;
		s.dx[u] = i < S::BN * S::NBLK && t0 + t < T && b < nb ? __ldg(xd + (int64_t)(t0 + t) * nb + b) : 0.0f;
	}
}

/* Thread tid's stores of what q8_load brought: the row parts unpacked, the codes and dx as they are */
template <class F, int WN, int NT>
__device__ __forceinline__ void q8_store(const q8_stage<F, WN, NT> &s, q8_smem<F, 8 * NT * WN> &sm, int tid)
{
	typedef q8_shape<F, WN, NT> S;
#pragma unroll
	for (int u = 0; u < S::WU; u++) {
		const int i = tid + u * S::NTHR, r = i / Q8_UPR;
		const q8_rowdst o = {sm.w + r * Q8_LD, sm.d[r], sm.dmin[F::MIN ? r : 0], sm.c[r], sm.m[F::MIN ? r : 0]};
		F::store(s.w[u], i % Q8_UPR, o);
	}
#pragma unroll
	for (int u = 0; u < S::XU; u++) {
		const int i = tid + u * S::NTHR, t = i / (Q8_BK / 16), kk = i % (Q8_BK / 16) * 16;
		q8_put16(sm.x + t * Q8_LD + kk, s.x[u].x, s.x[u].y, s.x[u].z, s.x[u].w);
	}
#pragma unroll
	for (int u = 0; u < S::DU; u++) {
		const int i = tid + u * S::NTHR;
		if (i < S::BN * S::NBLK)
			sm.dx[i / S::NBLK][i % S::NBLK] = s.dx[u];
	}
}

/* Formats with mins: the 32-sums of the tile's codes, sa[t][g] (after the codes are stored) */
template <class F, int WN, int NT>
__device__ __forceinline__ void q8_xsums(q8_smem<F, 8 * NT * WN> &sm, int tid)
{
	typedef q8_shape<F, WN, NT> S;
	for (int i = tid; i < S::BN * (Q8_BK / 32); i += S::NTHR) {
		const int8_t *p = sm.x + i / (Q8_BK / 32) * Q8_LD + i % (Q8_BK / 32) * 32;
		int s = 0;
#pragma unroll
		for (int u = 0; u < 8; u++)
			s = __dp4a((int)ld_word(p + 4 * u), (int)MVQ_ONES, s);
		sm.sa[i / (Q8_BK / 32)][i % (Q8_BK / 32)] = s;
	}
}

/* The lane's A fragment of group ko (k offset in the tile) for rows 16 wr .. + 15: KK = 32 four words, 16 two */
template <int KK>
__device__ __forceinline__ void q8_frag_a(const int8_t *w, int wr, int lane, int ko, uint32_t a[4])
{
	const int8_t *p = w + (16 * wr + lane / 4) * Q8_LD + ko + 4 * (lane % 4);
	a[0] = ld_word(p);
	a[1] = ld_word(p + 8 * Q8_LD);
	a[2] = KK == 32 ? ld_word(p + 16) : 0;
	a[3] = KK == 32 ? ld_word(p + 8 * Q8_LD + 16) : 0;
}

/* The lane's B fragment of group ko for tokens tt .. tt + 7 of the tile */
template <int KK>
__device__ __forceinline__ void q8_frag_b(const int8_t *x, int tt, int lane, int ko, uint32_t b[2])
{
	const int8_t *p = x + (tt + lane / 4) * Q8_LD + ko + 4 * (lane % 4);
	b[0] = ld_word(p);
	b[1] = KK == 32 ? ld_word(p + 16) : 0;
}

/* Element e of the lane's n-tile: its row (in the block) and token (in the tile) */
__device__ __forceinline__ int q8_row(int wr, int lane, int e)
{
	return 16 * wr + lane / 4 + (e >= 2 ? 8 : 0);
}

__device__ __forceinline__ int q8_tok(int wc, int NT, int j, int lane, int e)
{
	return 8 * NT * wc + 8 * j + 2 * (lane % 4) + (e & 1);
}

/* I += c_g S for group g of the tile (its mma result S of the lane's NT tiles) */
template <class F, int BN, int NT>
__device__ __forceinline__ void q8_group(const q8_smem<F, BN> &sm, int wr, int lane, int g, const int (*S)[4],
					 int (*I)[4])
{
	const int c0 = F::SC ? sm.c[q8_row(wr, lane, 0)][g] : 1, c1 = F::SC ? sm.c[q8_row(wr, lane, 2)][g] : 1;
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int e = 0; e < 4; e++)
			I[j][e] += (e >= 2 ? c1 : c0) * S[j][e];
}

/* The end of weight block b of the tile: acc = acc + (f32(d dx) I - f32(dmin dx) M), I then cleared */
template <class F, int BN, int NT>
__device__ __forceinline__ void q8_block_end(const q8_smem<F, BN> &sm, int wr, int wc, int lane, int b, int (*I)[4],
					     float (*acc)[4])
{
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const int r = q8_row(wr, lane, e), t = q8_tok(wc, NT, j, lane, e);
			const float dx = sm.dx[t][b], pi = __fmul_rn(__fmul_rn(sm.d[r][b], dx), (float)I[j][e]);
			if (F::MIN) {
				int M = 0;
#pragma unroll
				for (int g = 0; g < Q8_BK / 32; g++)
					M += (int)sm.m[r][g] * sm.sa[t][g];
				const float pm = __fmul_rn(__fmul_rn(sm.dmin[r][b], dx), (float)M);
				acc[j][e] = __fadd_rn(acc[j][e], __fsub_rn(pi, pm));
			} else {
				acc[j][e] = __fadd_rn(acc[j][e], pi);
			}
			I[j][e] = 0;
		}
}

/* y[t0 + t][n0 + r] = acc + bias for the lane's elements inside N and T */
template <int NT>
__device__ __forceinline__ void q8_out(float *y, const float (*acc)[4], int wr, int wc, int lane, int n0, int t0,
				       int N, int T, const void *bias, int bias_fmt)
{
#pragma unroll
	for (int j = 0; j < NT; j++)
#pragma unroll
		for (int e = 0; e < 4; e++) {
			const int n = n0 + q8_row(wr, lane, e), t = t0 + q8_tok(wc, NT, j, lane, e);
			if (n < N && t < T)
				y[(int64_t)t * N + n] = bias ? __fadd_rn(acc[j][e], vec_elem_f32(bias, bias_fmt, n)) : acc[j][e];
		}
}

#endif
