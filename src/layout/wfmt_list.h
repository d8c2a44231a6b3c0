/*
 * wfmt_list.h: every weight format, one row each (X-macros), shared by C and CUDA. The enum, the format table
 * (wfmt.c), the GGUF type table (gguf.c, the GGUF converter) and the per-format kernel tables of every backend
 * are generated from these rows, so adding a format is a new last row plus the kernels its kind names.
 *
 * WFMT_LIST(X) calls X(id, code, block, bytes, ggml, kind, k) once per format, in code order:
 *   id     WFMT_<id> is the enum value; #id is the name written in manifest.json and printed
 *   code   the on-disk number (src/layout/FORMAT.md): equal to the row's position (wfmt.c checks it), so a
 *          new format is a new last row and no row ever moves
 *   block  values per block (1 for an element format), bytes: bytes per block; 0, 0 for a reserved code
 *   ggml   the GGML type id of the same bytes in a GGUF file (what the converter maps), -1 when GGUF has none
 *   kind   which kernels exist for it, named with the suffix k:
 *            FLOAT  an element format (or NF4, a block of them): cpu_dequant_<k> (kernels/cpu/dequant.c), the CUDA decoder deq_<k>
 *                   (kernels/cuda/matmul.cuh, behind the matvec and GEMM-dequant tables), synth_fill_<k>
 *                   (convert/synth_model.c); the CPU's f32 row dots (fdot, kernels/cpu/qdot.h): the
 *                   portable one generated from cpu_dequant_<k>, the SIMD ones fk_<k> (kernels/cpu/qdot_simd.h)
 *            QUANT  quantized blocks: as FLOAT, but the CPU's dots take 8-bit activations (qdot): the portable
 *                   one is generated from qint_<k> (kernels/cpu/qdot.c), the SIMD ones are qk_<k>
 *                   (kernels/cpu/qdot_simd.h, built for AVX2 and AVX-512)
 *            QMIN   QUANT whose blocks subtract mins (Q4_K, Q5_K, Q2_K; Q4_1/Q5_1 add theirs: dmin = -m)
 *            NONE   a code reserved by the file format: no kernels, no backend takes it
 *
 * GGML_ONLY_LIST(G) calls G(id, ggml, block, bytes) for the GGML types that have no ferry format: the GGUF
 * reader sizes their tensors and errors name them (#id), nothing converts them. A type that gains a format
 * moves from here to WFMT_LIST.
 */
#ifndef FERRY_WFMT_LIST_H
#define FERRY_WFMT_LIST_H

/* X(id, code, block, bytes, ggml, kind, k) */
#define WFMT_LIST(X)                            \
	X(F32,   0,  1,   4,   0,  FLOAT, f32)  \
	X(F16,   1,  1,   2,   1,  FLOAT, f16)  \
	X(BF16,  2,  1,   2,   30, FLOAT, bf16) \
	X(Q8_0,  3,  32,  34,  8,  QUANT, q8_0) \
	X(Q4_0,  4,  32,  18,  2,  QUANT, q4_0) \
	X(Q4_K,  5,  256, 144, 12, QMIN,  q4_k) \
	X(Q5_K,  6,  256, 176, 13, QMIN,  q5_k) \
	X(Q6_K,  7,  256, 210, 14, QUANT, q6_k) \
	X(NF4,   8,  64,  36,  -1, FLOAT, nf4)  \
	X(Q4_Z,  9,  32,  20,  -1, QMIN,  q4_z) \
	X(Q8_Z,  10, 32,  36,  -1, QMIN,  q8_z) \
	X(Q5_0,  11, 32,  22,  6,  QUANT, q5_0) \
	/* grid IQ types (issue 18) */          \
	X(IQ2_XXS, 12, 256, 66,  16, QUANT, iq2_xxs) \
	X(IQ2_XS,  13, 256, 74,  17, QUANT, iq2_xs)  \
	X(IQ2_S,   14, 256, 82,  22, QUANT, iq2_s)   \
	X(IQ3_XXS, 15, 256, 98,  18, QUANT, iq3_xxs) \
	X(IQ3_S,   16, 256, 110, 21, QUANT, iq3_s)   \
	X(IQ1_S,   17, 256, 50,  19, QUANT, iq1_s)   \
	X(IQ1_M,   18, 256, 56,  29, QUANT, iq1_m) \
	/* the other low-bit types (issue 18) */ \
	X(Q4_1,  19, 32,  20,  3,  QMIN,  q4_1) \
	X(Q5_1,  20, 32,  24,  7,  QMIN,  q5_1) \
	X(Q2_K,  21, 256, 84,  10, QMIN,  q2_k) \
	X(Q3_K,  22, 256, 110, 11, QUANT, q3_k) \
	X(IQ4_NL, 23, 32, 18,  20, QUANT, iq4_nl) \
	X(IQ4_XS, 24, 256, 136, 23, QUANT, iq4_xs) \
	X(MXFP4, 25, 32,  17,  39, QUANT, mxfp4) \
	X(TQ1_0, 26, 256, 54,  34, QUANT, tq1_0) \
	X(TQ2_0, 27, 256, 66,  35, QUANT, tq2_0) \
	/* GPTQ/AWQ groups of 128 or more (issue 19) */ \
	X(Q4_Z128, 28, 128, 68,  -1, QMIN, q4_z128) \
	X(Q8_Z128, 29, 128, 132, -1, QMIN, q8_z128) \
	/* bitsandbytes FP4 (issue 19) */ \
	X(BNB_FP4, 30, 64, 36, -1, FLOAT, bnb_fp4)

/* NF4: bitsandbytes NF4, 16 f32 code values times an f32 absmax per 64 (FLOAT: a blocked format whose values
 * are not integers, so its CPU dots take f32 activations); Q4_Z/Q8_Z: 4- and 8-bit codes with an f16 scale and
 * an integer zero point per 32 (GPTQ and AWQ groups, issue 19: src/convert/hf_quant.c), QMIN with the zero as
 * the min; Q4_Z128/Q8_Z128 the same per 128 (four Q4_Z/Q8_Z code arrays under one scale and zero: 4.25 and 8.25
 * bits per weight, for groups of 128 or more); BNB_FP4: NF4's blocks with bitsandbytes' FP4 table; Q5_0: Q4_K_M files use it
 * where a row is not a multiple of 256. The grid IQ types (blocks: src/layout/quant_iq.h, grids:
 * src/layout/iq_grids.h) are QUANT: every value is d * an integer scale * an integer code (qint_<k>).
 * Q4_1/Q5_1: the 32-blocks with a min (QMIN, the min as -dmin);
 * Q2_K (QMIN), Q3_K: the 2- and 3-bit K-quants; IQ4_NL/IQ4_XS: 4-bit codes through a 16-value table;
 * MXFP4: e2m1 codes with an e8m0 block scale; TQ1_0/TQ2_0: ternary (BitNet) blocks. */

/* G(id, ggml, block, bytes) */
#define GGML_ONLY_LIST(G)                       \
	G(Q8_1,    9,  32,  36)                 \
	G(Q8_K,    15, 256, 292)                \
	G(I8,      24, 1,   1)                  \
	G(I16,     25, 1,   2)                  \
	G(I32,     26, 1,   4)                  \
	G(I64,     27, 1,   8)                  \
	G(F64,     28, 1,   8)                  \

/* A row's kind as selectors for the tables built from the list: WFMT_<what>_##kind(yes, no) is `yes` for the
 * kinds that have <what>, else `no`. RUNS: the kernels every backend runs (dequant, CUDA decoder, synth);
 * QDOT: a CPU dot on 8-bit activations; FDOT: a CPU dot on f32 activations. */
#define WFMT_RUNS_FLOAT(yes, no) yes
#define WFMT_RUNS_QUANT(yes, no) yes
#define WFMT_RUNS_QMIN(yes, no) yes
#define WFMT_RUNS_NONE(yes, no) no
#define WFMT_QDOT_FLOAT(yes, no) no
#define WFMT_QDOT_QUANT(yes, no) yes
#define WFMT_QDOT_QMIN(yes, no) yes
#define WFMT_QDOT_NONE(yes, no) no
#define WFMT_FDOT_FLOAT(yes, no) yes
#define WFMT_FDOT_QUANT(yes, no) no
#define WFMT_FDOT_QMIN(yes, no) no
#define WFMT_FDOT_NONE(yes, no) no

#endif
