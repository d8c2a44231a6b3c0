/*
 * qdot.h: the row kernels behind cpu_matmul and cpu_row_to_f32 (internal to kernels/cpu and the tests), one of
 * each family per format of src/layout/wfmt_list.h that has it (its kind):
 *   dequant (dequant.c): nb blocks -> f32 (element formats: nb values), bit-identical with ggml / gguf-py.
 *   qdot (QUANT, QMIN): a run of quantized weight rows against T <= QDOT_MAX_T rows of 8-bit activations.
 *   fdot (FLOAT): a run of f32/f16/bf16 weight rows against T <= QDOT_MAX_T rows of f32 activations.
 *
 * Activations (struct cpu_xq) are quantized per block of B values, B the weight format's block (32 for
 * Q8_0/Q4_0/Q5_0 as llama.cpp's Q8_0, 256 for the K-quants as its Q8_K): amax = max |x| over the block,
 * dx = amax / 127 (f32), a_i = round-half-even(clamp(x_i * (127 / amax), -127, 127)) (0 when amax = 0), so
 * |x_i - dx a_i| <= dx / 2 (+ f32 rounding). Besides a and dx, the sums of each 16 codes (exact int16) are
 * kept: the offsets and mins of the weights are taken from them. One C function quantizes on every path.
 *
 * What a qdot computes. A weight block b is integer codes q_i with integer sub-scales c_g per 16 values
 * (1 for the 32-blocks and the ternary TQ1_0/TQ2_0; the 6-bit scale of Q4_K/Q5_K repeated for both halves of
 * its 32; Q6_K's int8; Q2_K's 4-bit; Q3_K's and IQ4_XS's 6-bit minus 32), the scale d_b (f16; MXFP4's e8m0
 * 2^(e-128)), and for Q4_K/Q5_K/Q2_K integer mins m_g per 16 and dmin_b (Q4_1/Q5_1: m_g = 1, dmin_b = -m: their
 * min is added). Codes are the format's integers: IQ4_NL/IQ4_XS/MXFP4 their table's int8 value; then
 *     I_b = sum_g c_g sum_{i in g} q_i a_i,   M_b = sum_g m_g S_g   (S_g: the 16-sum of the codes a)
 * are exact integers (int32 on every path), and
 *     out[t] = sum_b ( f32(d_b dx_b) * I_b  -  f32(dmin_b dx_b) * M_b ).
 * The portable C kernel (qdot.c) adds the blocks in order in f32: acc = acc + (f32(d dx) * (float)I -
 * f32(dmin dx) * (float)M). The SIMD kernels (AVX2: qdot_avx2.c, AVX-512 VNNI: qdot_avx512.c) split I_b
 * (Q6_K's codes taken as unsigned u = q + 32, with - 32 sum_g c_g S_g; Q3_K's as q + 4, the ternary ones as
 * q + 1, likewise) over 8 int32 lanes (Q4_1/Q5_1's min part in a scalar f32 per token), convert the
 * lanes to f32 and accumulate them by FMA in lanes, summed at the end:
 * the same sum in another f32 order, so any two paths agree to within (K/16 + 16) * 2^-24 * sum_b |terms|
 * (tests/test_qdot.c). Against the dequantized weights w and f32 x: out = w . (dx a) up to that rounding,
 * and |w . (dx a) - w . x| <= sum_i |w_i| dx_i / 2.
 *
 * An fdot computes sum_i w_i x_i in f32 with the weights widened exactly (f16, bf16), in an order of the
 * path's choosing. Every kernel is deterministic: an output depends on its row, its x and, for the SIMD
 * kernels, T (which sets how many accumulator chains a token gets), never on the thread count.
 */
#ifndef FERRY_QDOT_H
#define FERRY_QDOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout/wfmt.h"

#define QDOT_MAX_T 8

/* Which kernels: the best the CPU runs, or one forced by cpu_qdot_force_isa (the tests). */
enum cpu_isa { CPU_ISA_PORTABLE, CPU_ISA_AVX2, CPU_ISA_AVX512, CPU_ISA_COUNT };

/* T rows of K activations quantized in blocks of blk (see above); a row t at q + t*K, d + t*(K/blk),
 * s + t*(K/16). With blk 32 also the same numbers per pair of tokens (2p, 2p + 1) and block b, as the tiled
 * prefill kernels load them (qdot_simd.h): entry (p, b) at pair + (p*(K/32) + b)*CPU_XQ_PAIR_BYTES holds
 * four vectors of 8 lanes, token 2p in lanes 0..3 and 2p + 1 in 4..7 of each: codes 0..15 of the block
 * (int8 x 16 per token), codes 16..31, dx (f32 x 4), -S_b (int32, then 3 zeros; S_b the block's code sum). */
#define CPU_XQ_PAIR_BYTES 128
struct cpu_xq {
	int8_t *q;     /* [T][K] codes a */
	float *d;      /* [T][K/blk] scales dx */
	int16_t *s;    /* [T][K/16] sums of 16 codes */
	uint8_t *pair; /* [(T + 1)/2][K/32][CPU_XQ_PAIR_BYTES] when blk is 32, else NULL */
	int K, blk;
};

typedef void (*cpu_dequant_fn)(const void *src, float *y, int64_t nb);
/* rows weight rows of row_bytes from w: y[t*ldy + r] = row r . token t0 + t of xq, T <= QDOT_MAX_T */
typedef void (*cpu_qdot_fn)(const void *w, size_t row_bytes, int rows, const struct cpu_xq *xq, int t0, int T,
			    float *y, int64_t ldy);
/* y[t*ldy + r] = sum_k w_r[k] x[t*ldx + k], T <= QDOT_MAX_T */
typedef void (*cpu_fdot_fn)(const void *w, size_t row_bytes, int rows, const float *x, int64_t ldx, int T, int K,
			    float *y, int64_t ldy);

#define CPU_DEQUANT_DECL(id, code, block, bytes, ggml, kind, k) \
	WFMT_RUNS_##kind(void cpu_dequant_##k(const void *src, float *y, int64_t nb);, )
WFMT_LIST(CPU_DEQUANT_DECL)
#undef CPU_DEQUANT_DECL

/* Bytes of a cpu_xq of T rows of K (any block of 32 or more), and the struct laid over buf (64-aligned) */
size_t cpu_xq_bytes(int T, int K);
void cpu_xq_init(struct cpu_xq *xq, void *buf, int T, int K, int blk);
/* Quantizes x[K] into row t of xq */
void cpu_xq_quantize(const float *x, int t, const struct cpu_xq *xq);

/* The kernel of fmt for isa; NULL when fmt has none of that family, or isa is not built in or not supported
 * by this CPU (AVX2 needs AVX2+FMA+F16C; AVX-512 needs F, BW, VL and VNNI). */
cpu_qdot_fn cpu_qdot_find(int fmt, int isa);
cpu_fdot_fn cpu_fdot_find(int fmt, int isa);
/* The isa cpu_matmul uses: the forced one when set and supported, else the best supported */
int cpu_qdot_isa(void);
/* Forces an isa for cpu_matmul (tests); -1 goes back to the best */
void cpu_qdot_force_isa(int isa);
const char *cpu_isa_name(int isa);

/* Prefill tiles (T >= 2): kernels of the cpu_qdot_fn type that take T up to QTILE_MAX_T tokens at once, with
 * the contract above; NULL where fmt has none on isa (then its qdot serves), and for every fmt with
 * FERRY_QTILE=0 in the environment. The K-quants on the SIMD paths (qdot_ktile_simd.h). */
#define QTILE_MAX_T 64
cpu_qdot_fn cpu_qtile_find(int fmt, int isa);

/* Per isa, from its own file (NULL when not built in; the CPU is not asked) */
cpu_qdot_fn cpu_qdot_find_avx2(int fmt);
cpu_fdot_fn cpu_fdot_find_avx2(int fmt);
cpu_qdot_fn cpu_qdot_find_avx512(int fmt);
cpu_fdot_fn cpu_fdot_find_avx512(int fmt);
cpu_qdot_fn cpu_qtile_find_avx2(int fmt);
cpu_qdot_fn cpu_qtile_find_avx512(int fmt);
/* The finders of an isa whose file is built without its instruction set */
#define QDOT_NO_KERNELS(isa)                         \
	cpu_qdot_fn cpu_qdot_find_##isa(int fmt)     \
	{                                            \
		(void)fmt;                           \
		return NULL;                         \
	}                                            \
	cpu_fdot_fn cpu_fdot_find_##isa(int fmt)     \
	{                                            \
		(void)fmt;                           \
		return NULL;                         \
	}                                            \
	cpu_qdot_fn cpu_qtile_find_##isa(int fmt)    \
	{                                            \
		(void)fmt;                           \
		return NULL;                         \
	}

#endif
