/*
 * hf_quant.h: the quantized linear layers of Hugging Face checkpoints (issue 19): GPTQ (v1 and v2 zero points,
 * 2/3/4/8 bits, any group size that is a multiple of 32 or -1, act-order g_idx) and AWQ (GEMM packing), read
 * from quantization_config and repacked losslessly into Q4_Z / Q8_Z (src/layout/FORMAT.md says why it is exact).
 *
 * A checkpoint's linear `P.weight` is then the tensors P.qweight, P.qzeros, P.scales (and GPTQ's P.g_idx); the
 * value of element (n, k) is scales[g, n] * (q[k, n] - z[g, n]) with g its group (g_idx[k], else k / group).
 * Act-order (g_idx) whose groups mix inside blocks of 32: the columns are stored sorted by group (t->perm),
 * which makes every block one group again; the converter writes the permutation beside the weight.
 * bitsandbytes 4-bit NF4 (with or without double quantization) is repacked into NF4: P.weight (uint8 codes),
 * P.weight.absmax, .quant_map, (.nested_absmax, .nested_quant_map) and .quant_state.bitsandbytes__nf4;
 * bitsandbytes FP4 the same with its table and .quant_state.bitsandbytes__fp4, repacked into BNB_FP4.
 * bitsandbytes LLM.int8 (load_in_8bit): P.weight int8 [N, K] codes CB, P.SCB f32 [N] row absmax (and
 * P.weight_format, 0: row-major); W = CB SCB / 127, stored as Q8_0 with d = f16(SCB / 127) per row: exact where
 * that f16 is SCB / 127, otherwise each row scaled by 1 + e, |e| <= 2^-11 (f16's rounding, SCB / 127 >= 2^-14;
 * below, |d error| <= 2^-25 absolute). FORMAT.md has the bound.
 * EXL2 (ExLlamaV2; quant_method "exl2", or no quantization_config and P.q_groups tensors): P.q_weight int32
 * [qrows, N padded to 32] (its K rows already in act-order), P.q_groups int16 [2 G] (bits, first packed row),
 * P.q_scale int32 [G, N' / 8] (4-bit codes), P.q_scale_max f16 [G], P.q_invperm and/or P.q_perm [K]. Each
 * group of act-order rows is a b-bit code block with zero 2^(b-1) and the f16 scale ExLlamaV2 forms per
 * (group, column); stored as Q4_Z (all groups <= 4 bits) or Q8_Z (any of 5, 6, 8 bits), the permutation beside.
 */
#ifndef FERRY_HF_QUANT_H
#define FERRY_HF_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout/safetensors.h"

enum hfq_method { HFQ_NONE, HFQ_GPTQ, HFQ_AWQ, HFQ_BNB4, HFQ_BNB8, HFQ_EXL2 };

struct hfq_config {
	enum hfq_method method;
	int bits;        /* 2, 3, 4, 8 (AWQ: 4) */
	int group;       /* values per group along K; -1: one group per column */
	bool desc_act;   /* GPTQ act-order: g_idx required */
	bool v2;         /* GPTQ checkpoint_format gptq_v2: zeros as they are (v1: stored + 1) */
	bool double_quant; /* bitsandbytes: absmax stored as 8-bit codes (bnb_4bit_use_double_quant) */
	bool fp4;          /* bitsandbytes 4-bit: bnb_4bit_quant_type fp4 (else nf4) */
	const char *name;
};

/* config.json's quantization_config (else dir/quantize_config.json, AutoGPTQ's older file) into q; method
 * HFQ_NONE when neither exists. An unsupported method, bit width, group size or packing: -EINVAL and one line
 * naming the field. config is a json_t *. */
int hfq_config_read(const void *config, const char *dir, struct hfq_config *q, char *err, size_t errlen);
/* A checkpoint with no quantization config whose tensors hold EXL2 linears (P.q_groups: ExLlamaV2 wrote a
 * quantization_config only when it compiled a full model): q becomes EXL2. */
void hfq_config_from_tensors(const struct st_set *st, struct hfq_config *q);

/* One quantized linear [N, K] of a checkpoint, checked (dtypes, shapes against the config and N, K). */
struct hfq_tensor {
	const struct hfq_config *cfg;
	const struct st_tensor *qweight, *qzeros, *scales, *g_idx; /* g_idx NULL: k / group */
	int64_t N, K, G;
	/* bitsandbytes: qweight the packed codes, scales the absmax (F32, or U8 codes with the nested tables) */
	const struct st_tensor *nested_absmax, *nested_map;
	int64_t blocksize, nested_blocksize;
	float nested_offset;
	int fmt;   /* WFMT_Q4_Z128 / WFMT_Q8_Z128 where every aligned 128 lies in one group, else WFMT_Q4_Z / WFMT_Q8_Z
		    * (WFMT_F32 where even the permuted columns mix groups inside a block of 32); WFMT_NF4 */
	/* EXL2: group g holds stored columns [grow0[g], grow0[g + 1]) in gbits[g] bits from packed row gqrow0[g];
	 * gmap[k] the group of stored column k; Npad the packed width (N rounded up to 32) */
	const struct st_tensor *scale_max;
	int32_t *gmap;
	int *gbits;
	int64_t *grow0, *gqrow0, Npad;
	int32_t *perm; /* [K] act-order whose groups mix inside blocks: stored column j is the checkpoint's row
			* perm[j] (the rows sorted by group, stably), so each block lies in one group and the forward
			* gathers x[perm[j]] (src/engine/act_perm.h); NULL: columns in the checkpoint's order */
};

/* Whether the checkpoint stores `base` (a name without ".weight") as a quantized linear */
bool hfq_present(const struct hfq_config *cfg, const struct st_set *st, const char *base);
/* Finds and checks base's tensors for an [N, K] weight; -ENOENT / -EINVAL with a line naming the tensor. */
int hfq_open(const struct hfq_config *cfg, const struct st_set *st, const char *base, int64_t N, int64_t K,
	     struct hfq_tensor *t, char *err, size_t errlen);
/* Rows [n0, n0 + nn) of the weight in t->fmt, wfmt_row_bytes(t->fmt, K) bytes each, into out (columns in
 * t->perm's order when it is set). */
void hfq_rows(const struct hfq_tensor *t, int64_t n0, int64_t nn, void *out);
/* Frees what hfq_open allocated (the permutation, EXL2's group tables). */
void hfq_close(struct hfq_tensor *t);

#endif
