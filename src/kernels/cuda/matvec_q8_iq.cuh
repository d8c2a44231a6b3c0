/*
 * matvec_q8_iq.cuh: the 8-bit-activation dots of the grid IQ formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S,
 * IQ1_S, IQ1_M), included by matvec_q8.cuh, whose contract they keep. Each is a dq_g32 (lane j takes 32-group
 * j of the block: its 4 groups of 8, its two sub-scales per 16, d), and load turns the group into the integer
 * codes of the CPU's qint_<k> (src/kernels/cpu/dequant_iq.c): grid magnitudes (src/layout/iq_grids.h, global
 * memory on the device) with their signs applied per byte, IQ1's 8 g + shift (g in -1, 0, 1, shift +-1) formed
 * per byte; the scales 2 s + 1 and d times the format's power of two, as the CPU forms them. Blocks are read
 * in bytes and 2-byte words (IQ1_M: its scale words in one 8-byte load, ALIGN 8).
 */
#ifndef FERRY_CUDA_MATVEC_Q8_IQ_CUH
#define FERRY_CUDA_MATVEC_Q8_IQ_CUH

/* 4 IQ1 codes 8 g + shift from the signed bytes g of gr; sh the per-byte subtrahend: 0xffffffff for shift +1,
 * 0x01010101 for -1 (8 g per byte: the word shifted by 3 with each byte's spill into the next masked off) */
__device__ __forceinline__ uint32_t iq1_codes(uint32_t gr, uint32_t sh)
{
	return __vsub4(gr << 3 & 0xf8f8f8f8u, sh);
}

/* d (f16 bits) times the format's power of two f, exact, as qint_<k> */
__device__ __forceinline__ float iq_d(uint32_t dbits, float f)
{
	return __fmul_rn(f16_bits_to_f32((uint16_t)dbits), f);
}

/* IQ2_XXS: group j's 8 bytes at 2 + 8j: 4 grid indices, then a word of 4 7-bit sign indices and the scale */
struct dq_iq2_xxs : dq_g32 {
	static constexpr int BYTES = deq_iq2_xxs::BYTES, ALIGN = deq_iq2_xxs::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t idx = ld_u32_2a(p + 2 + 8 * j), aux = ld_u32_2a(p + 6 + 8 * j);
		w.d = iq_d(ld_u16(p), 0.125f);
		w.sc0 = w.sc1 = 2 * (int)(aux >> 28) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint64_t gr = iq2xxs_grid[idx >> 8 * l & 255];
			const uint32_t s = iq_ksigns(aux >> 7 * l & 127);
			w.q[2 * l] = signed4((uint32_t)gr, s);
			w.q[2 * l + 1] = signed4((uint32_t)(gr >> 32), s >> 4);
		}
	}
};

/* IQ2_XS: 4 words at 2 + 8j (9-bit grid index, 7-bit sign index), scale nibbles at 66 + j */
struct dq_iq2_xs : dq_g32 {
	static constexpr int BYTES = deq_iq2_xs::BYTES, ALIGN = deq_iq2_xs::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t sc = __ldg(p + 66 + j);
		w.d = iq_d(ld_u16(p), 0.125f);
		w.sc0 = 2 * (int)(sc & 15) + 1, w.sc1 = 2 * (int)(sc >> 4) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint32_t v = ld_u16(p + 2 + 8 * j + 2 * l), s = iq_ksigns(v >> 9);
			const uint64_t gr = iq2xs_grid[v & 511];
			w.q[2 * l] = signed4((uint32_t)gr, s);
			w.q[2 * l + 1] = signed4((uint32_t)(gr >> 32), s >> 4);
		}
	}
};

/* IQ2_S: index bytes at 2 + 4j (2 more bits each from qh at 66 + j), sign bytes at 34 + 4j, scales at 74 + j */
struct dq_iq2_s : dq_g32 {
	static constexpr int BYTES = deq_iq2_s::BYTES, ALIGN = deq_iq2_s::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t idx = ld_u32_2a(p + 2 + 4 * j), signs = ld_u32_2a(p + 34 + 4 * j);
		const uint32_t h = __ldg(p + 66 + j), sc = __ldg(p + 74 + j);
		w.d = iq_d(ld_u16(p), 0.125f);
		w.sc0 = 2 * (int)(sc & 15) + 1, w.sc1 = 2 * (int)(sc >> 4) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint64_t gr = iq2s_grid[(idx >> 8 * l & 255) | (h << (8 - 2 * l) & 0x300)];
			const uint32_t s = signs >> 8 * l;
			w.q[2 * l] = signed4((uint32_t)gr, s);
			w.q[2 * l + 1] = signed4((uint32_t)(gr >> 32), s >> 4);
		}
	}
};

/* IQ3_XXS: 8 index bytes at 2 + 8j (a 4-value grid entry each), the sign/scale word at 66 + 4j */
struct dq_iq3_xxs : dq_g32 {
	static constexpr int BYTES = deq_iq3_xxs::BYTES, ALIGN = deq_iq3_xxs::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t idx[2] = {ld_u32_2a(p + 2 + 8 * j), ld_u32_2a(p + 6 + 8 * j)};
		const uint32_t aux = ld_u32_2a(p + 66 + 4 * j);
		w.d = iq_d(ld_u16(p), 0.25f);
		w.sc0 = w.sc1 = 2 * (int)(aux >> 28) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint32_t s = iq_ksigns(aux >> 7 * l & 127), i2 = idx[l / 2] >> 16 * (l & 1);
			w.q[2 * l] = signed4(iq3xxs_grid[i2 & 255], s);
			w.q[2 * l + 1] = signed4(iq3xxs_grid[i2 >> 8 & 255], s >> 4);
		}
	}
};

/* IQ3_S: 8 index bytes at 2 + 8j, bit i of qh[j] (66 + j) the ninth bit of index i, sign nibbles at 74 + 4j,
 * scale nibble j of 106.. */
struct dq_iq3_s : dq_g32 {
	static constexpr int BYTES = deq_iq3_s::BYTES, ALIGN = deq_iq3_s::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t idx[2] = {ld_u32_2a(p + 2 + 8 * j), ld_u32_2a(p + 6 + 8 * j)};
		const uint32_t h = __ldg(p + 66 + j), signs = ld_u32_2a(p + 74 + 4 * j);
		const uint32_t sc = __ldg(p + 106 + j / 2) >> 4 * (j & 1) & 15;
		w.d = iq_d(ld_u16(p), 1.0f);
		w.sc0 = w.sc1 = 2 * (int)sc + 1;
#pragma unroll
		for (int i = 0; i < 8; i++)
			w.q[i] = signed4(iq3s_grid[(idx[i / 4] >> 8 * (i % 4) & 255) | (h >> i & 1) << 8], signs >> 4 * i);
	}
};

/* IQ1_S: index bytes at 2 + 4j, the word at 34 + 2j: 3 more index bits per group of 8, the scale (bits 12..14)
 * and the shift's sign (bit 15) */
struct dq_iq1_s : dq_g32 {
	static constexpr int BYTES = deq_iq1_s::BYTES, ALIGN = deq_iq1_s::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint32_t idx = ld_u32_2a(p + 2 + 4 * j), h = ld_u16(p + 34 + 2 * j);
		const uint32_t sh = h & 0x8000 ? MVQ_ONES : 0xffffffffu;
		w.d = iq_d(ld_u16(p), 0.125f);
		w.sc0 = w.sc1 = 2 * (int)(h >> 12 & 7) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint64_t gr = iq1s_grid[(idx >> 8 * l & 255) | (h >> 3 * l & 7) << 8];
			w.q[2 * l] = iq1_codes((uint32_t)gr, sh);
			w.q[2 * l + 1] = iq1_codes((uint32_t)(gr >> 32), sh);
		}
	}
};

/* IQ1_M: index bytes at 4j, a nibble per group of 8 at 32 + 2j (3 index bits, the shift's sign), the 3-bit
 * scales per 16 and d's nibbles in the 4 scale words at 48 (deq_iq1_m's reading) */
struct dq_iq1_m : dq_g32 {
	static constexpr int BYTES = deq_iq1_m::BYTES, ALIGN = deq_iq1_m::ALIGN;
	__device__ static void load(const uint8_t *p, int j, W &w)
	{
		const uint2 s = __ldg((const uint2 *)(p + 48));
		const uint32_t dbits = (s.x >> 12 & 0xf) | (s.x >> 24 & 0xf0) | (s.y >> 4 & 0xf00) | (s.y >> 16 & 0xf000);
		const uint32_t sw = (j < 4 ? s.x : s.y) >> (16 * (j / 2 & 1) + 6 * (j & 1));
		const uint32_t idx = __ldg((const unsigned int *)(p + 4 * j)), qh = ld_u16(p + 32 + 2 * j);
		w.d = iq_d(dbits, 0.125f);
		w.sc0 = 2 * (int)(sw & 7) + 1, w.sc1 = 2 * (int)(sw >> 3 & 7) + 1;
#pragma unroll
		for (int l = 0; l < 4; l++) {
			const uint32_t hq = qh >> 4 * l & 15, sh = hq & 8 ? MVQ_ONES : 0xffffffffu;
			const uint64_t gr = iq1s_grid[(idx >> 8 * l & 255) | (hq & 7) << 8];
			w.q[2 * l] = iq1_codes((uint32_t)gr, sh);
			w.q[2 * l + 1] = iq1_codes((uint32_t)(gr >> 32), sh);
		}
	}
};

#endif
