/*
 * quantize.h: quantizing f32 rows into the block formats ferry runs (src/layout/quant.h), for `ferry convert
 * --quant`, and the named mixes that say which tensor gets which format.
 *
 * The quantizers minimise the weighted squared error of each block rather than rounding to the nearest level
 * of the largest value alone: for each block (each 16 or 32 values of the K-quants) a range of candidate scales
 * is tried, each followed by a weighted least-squares refit of the scale (and the min, for Q4_K, Q5_K, Q2_K,
 * Q4_1 and Q5_1)
 * given the levels it picked; the best is kept, then the block's scales are quantized (to 6 or 8 bits under
 * an f16 super-block scale) and the levels chosen again for the scales as stored. Weights: an importance
 * matrix's per-column values times sqrt(sigma^2 + x^2) when one is given, else sigma^2 + x^2 (sigma^2: the
 * block's mean square; Q4_K/Q5_K/Q2_K/Q3_K, Q4_1/Q5_1 and IQ4: rms + |x| of each sub-block or block), so large
 * values, which dominate a dot product, are kept most exactly. IQ4_NL/IQ4_XS fit their 16-value table the same
 * way (the largest value near either end of it); IQ4_XS and Q3_K quantize their sub-block scales to 6 bits
 * (IQ4_XS choosing each by its error as coded). Against llama-quantize on the same F32 GGUF
 * (bench/bench_quant.py) the blocks are 1-2% closer for Q8_0/Q4_0/Q6_K, equal for Q4_K/Q5_K, and 3-10% closer
 * for Q2_K/Q3_K/IQ4_NL/IQ4_XS/Q4_1/Q5_1 (bench/RESULTS.md, issue 18).
 */
#ifndef FERRY_QUANTIZE_H
#define FERRY_QUANTIZE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether quant_row can write format fmt (enum wfmt). */
bool quant_supported(int fmt);
/* n values of x (n a multiple of fmt's block) into dst in format fmt; imp: NULL or n importance values of
 * the columns. 0, or -1 for a format without a quantizer. */
int quant_row(int fmt, const float *x, const float *imp, int64_t n, void *dst);

/* n rows of `cols` values, each read as f32 by row(r, x, ctx), quantized to fmt into dst (rows of
 * wfmt_row_bytes(fmt, cols) bytes) on the OpenMP threads; imp: NULL or the cols importance values of the
 * columns (an imatrix entry). 0, -1 (no quantizer) or -ENOMEM. */
int quant_rows(int fmt, int64_t n, int64_t cols, const float *imp, void (*row)(int64_t r, float *x, void *ctx),
	       void *ctx, void *dst);
/* A matrix of `cols` values a row stored in F32, F16 or BF16 at data, and the reader that hands quant_rows
 * its row r as f32 (ctx: a struct quant_src). */
struct quant_src {
	const void *data;
	int fmt;
	int64_t cols;
};
void quant_src_row(int64_t r, float *x, void *ctx);
/* The matrix src ([rows, cols] in F32/F16/BF16 sfmt) quantized to qfmt (imp: as quant_rows) in chunks of about 16 MiB of output,
 * each handed to sink(out, bytes, r0, n_rows, ctx) (which writes it and may drop the source rows r0 ..
 * r0 + n_rows - 1 from memory). 0, a sink's non-zero return, -1 or -ENOMEM. */
int quant_matrix(int qfmt, const void *src, int sfmt, int64_t rows, int64_t cols, const float *imp,
		 int (*sink)(const void *out, size_t bytes, int64_t r0, int64_t n_rows, void *ctx), void *ctx);

/* A named choice of formats (llama.cpp's file types: Q4_K_M, Q8_0, ...; or a single format's name). */
struct quant_mix;
const struct quant_mix *quant_mix_find(const char *name);
/* Whether m needs an importance matrix (the IQ1/IQ2 mixes and IQ3_XXS, as llama-quantize: without one their
 * 2- and 1-bit grids lose too much). */
bool quant_mix_needs_imatrix(const struct quant_mix *m);
/* The mix named quant into *out, or -EINVAL with the message in err: not a mix (the names listed), or a mix
 * that needs an importance matrix without one (have_imatrix false). */
int quant_mix_open(const char *quant, bool have_imatrix, const struct quant_mix **out, char *err, size_t errlen);
/* The mixes' names, comma separated, into buf. */
const char *quant_mix_list(char *buf, size_t n);
/* The format mix m gives tensor `name` (ferry / GGUF name, e.g. "attn_v.weight", "output.weight",
 * "token_embd.weight") of layer `layer` (-1: not a layer tensor) of the model hp describes (layers, query heads
 * per kv head, tied embeddings: what llama.cpp's choice depends on for dense models), a matrix of `cols`
 * columns: a quantized format, falling back as llama.cpp does when cols is not a multiple of the format's
 * block. 1-D tensors are not asked about (they stay as they are). */
struct layout_hparams;
int quant_mix_pick(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
		   int64_t cols);
/* The same for a conversion with an importance matrix (imatrix true), where llama.cpp picks otherwise for
 * ffn_down: the IQ4 mixes keep their first eighth in the base format, Q4_0/Q5_0 put it in Q4_1/Q5_1. */
int quant_mix_pick_im(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
		      int64_t cols, bool imatrix);
/* Whether quant_mix_pick_im fell back for that matrix: the format it gives differs from the one rows of whole
 * blocks (cols rounded up to a multiple of 256) would get. The converters count these and say so. */
bool quant_mix_fell_back(const struct quant_mix *m, const char *name, int layer, const struct layout_hparams *hp,
			 int64_t cols, bool imatrix);

#endif
