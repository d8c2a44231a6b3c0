/*
 * hf_quant.c: GPTQ and AWQ linear layers -> Q4_Z / Q8_Z rows (contract in hf_quant.h, formats in
 * src/layout/FORMAT.md).
 *
 * Packings read here (little-endian int32 words):
 *   GPTQ qweight [K bits / 32, N]: column n is a bit stream along K, value k at bit bits * k (for 2, 4 and 8
 *        bits whole words of 32 / bits values; AutoGPTQ's 3-bit packing is the same stream over 3 words per 32
 *        values, values straddling words); qzeros [G, N bits / 32]: row g the same stream along N. v1 files
 *        store zero - 1 in bits bits, read back as (stored & mask) + 1 (AutoGPTQ, ExLlama): a zero of 0 reads
 *        as 2^bits, as every v1 kernel runs it; v2 (GPTQModel's gptq_v2) stores the zero itself.
 *   AWQ  qweight [K, N / 8] and qzeros [G, N / 8]: word c holds columns 8c .. 8c + 7, column 8c + j in nibble
 *        AWQ_NIBBLE[j] (the GEMM kernels' interleaved order 0 2 4 6 1 3 5 7 inverted).
 * Each block of 32 values along K lies in one group when the groups are whole blocks (group % 32 == 0 or -1,
 * g_idx constant over every aligned 32): the block then takes its group's f16 scale as d and its integer zero
 * as z, so d (q - z) is the checkpoint's s (q - z) exactly. Where every aligned 128 lies in one group (groups of
 * 128 or more: the usual g128 and -1) the blocks are Q4_Z128/Q8_Z128, one d and z per 128 (4.25 / 8.25 bits). A g_idx that mixes groups inside a block (act-order
 * without static groups) has no per-block scale in the checkpoint's order: the columns are then stored sorted
 * by group (a stable counting sort of g_idx, t->perm), where each group is a run of its size, and W x =
 * W[:, perm] x[perm] exactly (the forward gathers x). Only where even that leaves a block of two groups (a
 * group whose size is not a multiple of 32) is the tensor written as F32 values s (q - z), exact too.
 *
 * bitsandbytes LLM.int8: P.weight int8 [N, K] row-major, P.SCB f32 [N]: Q8_0 blocks of the row's codes with
 * d = f16(SCB / 127) (hf_quant.h: the rounding's bound).
 *
 * bitsandbytes NF4 and FP4 (BNB_FP4: NF4's block with the FP4 table; the file's quant_map must be that table):
 * P.weight uint8 [N K / 2, 1] packs the flattened row-major [N, K] weight, element 2i in the
 * high nibble of byte i (NF4's own order: the bytes are copied); blocks of `blocksize` (quant_state) over the
 * flattened weight each have an absmax, f32, or with double quantization a uint8 code a giving
 * f32(f32(nested_quant_map[a] * nested_absmax[i / nested_blocksize]) + nested_offset), bitsandbytes' own f32
 * arithmetic. A block of 64 along a row lies in one such block when K and blocksize are multiples of 64.
 *
 * EXL2 (ExLlamaV2's conversion: pack_columns, pack_rows_4; its loader: make_q_matrix, dq_scale): q_weight rows
 * are the act-order rows, group after group; group g (q_groups[2g] = b bits, q_groups[2g + 1] = its first
 * packed row r) packs column n of its rows as GPTQ does, a little-endian b-bit stream over the words
 * q_weight[r.., n] (3/5/6 bits straddle words: 32 rows in 3/5 words, 16 in 3). Its rows are
 * (next group's r - r) 32 / b, the last group's the rest of K. q_scale [g, n / 8] holds nibble qs of column n at
 * bit 4 (n % 8); the loader divides q_scale_max by 256 in f16 and forms the scale
 * S = f16(f16((qs + 1)^2) f16(q_scale_max / 256)) (each f16 product of f16 values is exact in f32, so f32
 * arithmetic with one rounding to f16 is ExLlamaV2's); w = (q - 2^(b-1)) S. In the act-order (stored) order a
 * group of a multiple of 32 rows is whole blocks: d = S, z = 2^(b-1), the codes as they are (Q4_Z for 2-4
 * bits; Q8_Z for 5, 6, 8 bits: codes - 2^(b-1), z 0). Column n of the weight is input row q_perm[stored row]
 * (q_perm = the inverse of q_invperm), which is ferry's NAME.perm.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/hf_quant.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

static const int AWQ_NIBBLE[8] = {0, 4, 1, 5, 2, 6, 3, 7};

static int json_int_of(const json_t *o, const char *a, const char *b, int dflt)
{
	const json_t *v = json_object_get(o, a);
	if (!v && b)
		v = json_object_get(o, b);
	return json_is_integer(v) ? (int)json_integer_value(v) : v ? -1000 : dflt;
}

int hfq_config_read(const void *config, const char *dir, struct hfq_config *q, char *err, size_t errlen)
{
	memset(q, 0, sizeof(*q));
	const json_t *qc = json_object_get(config, "quantization_config");
	json_t *own = NULL;
	char where[4200];
	snprintf(where, sizeof(where), "%s/config.json: quantization_config", dir);
	if (!qc) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/quantize_config.json", dir);
		if (stat(path, &st))
			return 0;
		json_error_t je;
		own = json_load_file(path, 0, &je);
		snprintf(where, sizeof(where), "%s", path);
		qc = own;
	}
	int rc = -EINVAL;
	if (!json_is_object(qc)) {
		snprintf(err, errlen, "%s: not a JSON object", where);
		goto out;
	}
	const char *m = json_string_value(json_object_get(qc, "quant_method"));
	m = m ? m : own ? "gptq" : "(none)"; /* AutoGPTQ's quantize_config.json names no method */
	q->method = !strcmp(m, "gptq") ? HFQ_GPTQ : !strcmp(m, "awq") ? HFQ_AWQ : !strcmp(m, "bitsandbytes") ? HFQ_BNB4
		    : !strcmp(m, "exl2")										? HFQ_EXL2
															: HFQ_NONE;
	q->name = q->method == HFQ_GPTQ ? "gptq" : q->method == HFQ_AWQ ? "awq" : q->method == HFQ_EXL2 ? "exl2" : "bitsandbytes";
	if (q->method == HFQ_NONE) {
		snprintf(err, errlen, "%s.quant_method \"%s\" is not supported (gptq, awq, bitsandbytes, exl2)", where, m);
		goto out;
	}
	if (q->method == HFQ_EXL2) { /* bits is the average bits per weight; each linear's q_groups says its own */
		rc = 0;
		goto out;
	}
	if (q->method == HFQ_BNB4) {
		bool b4 = json_is_true(json_object_get(qc, "load_in_4bit")) || json_is_true(json_object_get(qc, "_load_in_4bit"));
		const char *qt = json_string_value(json_object_get(qc, "bnb_4bit_quant_type"));
		bool b8 = json_is_true(json_object_get(qc, "load_in_8bit")) || json_is_true(json_object_get(qc, "_load_in_8bit"));
		if (!b4 && b8) {
			q->method = HFQ_BNB8, q->bits = 8, q->group = -1;
			rc = 0;
			goto out;
		}
		if (!b4) {
			snprintf(err, errlen, "%s: neither load_in_4bit nor load_in_8bit is true", where);
			goto out;
		}
		qt = qt ? qt : "fp4"; /* transformers' BitsAndBytesConfig default */
		if (strcmp(qt, "nf4") && strcmp(qt, "fp4")) {
			snprintf(err, errlen, "%s.bnb_4bit_quant_type \"%s\" is not supported (nf4, fp4)", where, qt);
			goto out;
		}
		q->fp4 = !strcmp(qt, "fp4");
		q->bits = 4, q->group = 64;
		q->double_quant = json_is_true(json_object_get(qc, "bnb_4bit_use_double_quant"));
		rc = 0;
		goto out;
	}
	q->bits = json_int_of(qc, "bits", "w_bit", -1000);
	q->group = json_int_of(qc, "group_size", "q_group_size", -1000);
	if (q->method == HFQ_GPTQ ? q->bits != 2 && q->bits != 3 && q->bits != 4 && q->bits != 8 : q->bits != 4) {
		snprintf(err, errlen, "%s.bits: %s %d bits are not supported (%s)", where, q->name, q->bits,
			 q->method == HFQ_GPTQ ? "2, 3, 4, 8" : "4");
		goto out;
	}
	if (q->group != -1 && (q->group <= 0 || q->group % 32)) {
		snprintf(err, errlen, "%s.group_size: %d is not supported (a multiple of 32, or -1)", where, q->group);
		goto out;
	}
	if (q->method == HFQ_GPTQ) {
		const char *f = json_string_value(json_object_get(qc, "checkpoint_format"));
		q->desc_act = json_is_true(json_object_get(qc, "desc_act"));
		if (f && strcmp(f, "gptq") && strcmp(f, "gptq_v2")) {
			snprintf(err, errlen, "%s.checkpoint_format \"%s\" is not supported (gptq, gptq_v2)", where, f);
			goto out;
		}
		q->v2 = f && !strcmp(f, "gptq_v2");
	} else {
		const char *v = json_string_value(json_object_get(qc, "version"));
		const json_t *zp = json_object_get(qc, "zero_point");
		if ((v && strcmp(v, "gemm") && strcmp(v, "GEMM")) || (zp && !json_is_true(zp))) {
			snprintf(err, errlen, "%s: AWQ version \"%s\"%s is not supported (gemm with zero points)", where,
				 v ? v : "gemm", zp && !json_is_true(zp) ? " without zero points" : "");
			goto out;
		}
	}
	rc = 0;
out:
	json_decref(own);
	if (rc)
		q->method = HFQ_NONE;
	return rc;
}

void hfq_config_from_tensors(const struct st_set *st, struct hfq_config *q)
{
	for (int i = 0; q->method == HFQ_NONE && i < st->n_tensors; i++) {
		size_t l = strlen(st->tensors[i].name);
		if (l > 9 && !strcmp(st->tensors[i].name + l - 9, ".q_groups")) {
			memset(q, 0, sizeof(*q));
			q->method = HFQ_EXL2, q->name = "exl2";
		}
	}
}

bool hfq_present(const struct hfq_config *cfg, const struct st_set *st, const char *base)
{
	char name[512];
	if (cfg->method == HFQ_EXL2) { /* any of its parts: hfq_open says which one is missing */
		static const char *parts[] = {"q_weight", "q_groups", "q_scale", "q_scale_max", "q_invperm", "q_perm"};
		for (size_t i = 0; i < sizeof(parts) / sizeof(parts[0]); i++) {
			snprintf(name, sizeof(name), "%s.%s", base, parts[i]);
			if (st_find(st, name))
				return true;
		}
		return false;
	}
	if (cfg->method == HFQ_BNB8) { /* an int8 weight without its SCB is one too (hfq_open says what is missing) */
		snprintf(name, sizeof(name), "%s.weight", base);
		const struct st_tensor *w = st_find(st, name);
		snprintf(name, sizeof(name), "%s.SCB", base);
		return st_find(st, name) || (w && !strcmp(w->dtype, "I8"));
	}
	snprintf(name, sizeof(name), cfg->method == HFQ_BNB4 ? "%s.weight.absmax" : "%s.qweight", base);
	return st_find(st, name) != NULL;
}

static const struct st_tensor *part(const struct st_set *st, const char *base, const char *suffix, const char *dtype,
				    int64_t d0, int64_t d1, bool need, int *rc, char *err, size_t errlen)
{
	char name[512];
	snprintf(name, sizeof(name), *suffix ? "%s.%s" : "%s", base, suffix);
	const struct st_tensor *t = st_find(st, name);
	if (!t) {
		if (need) {
			snprintf(err, errlen, "tensor %s not found (part of a quantized linear%s)", name,
				 !strcmp(suffix, "g_idx") ? ": desc_act needs g_idx" : "");
			*rc = -ENOENT;
		}
		return NULL;
	}
	bool two = d1 >= 0;
	if (strcmp(t->dtype, dtype) || t->ndim != (two ? 2 : 1) || t->shape[0] != d0 || (two && t->shape[1] != d1)) {
		char want[64], got[96] = "";
		snprintf(want, sizeof(want), two ? "%lld, %lld" : "%lld", (long long)d0, (long long)d1);
		for (int d = 0; d < t->ndim; d++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
		snprintf(err, errlen, "%s: tensor %s is %s [%s], the quantization config implies %s [%s]",
			 st->files[t->file].path, name, t->dtype, got, dtype, want);
		*rc = -EINVAL;
		return NULL;
	}
	return t;
}

static uint32_t word(const uint8_t *p, int64_t i)
{
	uint32_t w;
	memcpy(&w, p + 4 * i, 4);
	return w;
}

/* Value at bit pos of a stream of words spaced stride words apart from word 0 at p */
static int stream_at(const uint8_t *p, int64_t stride, int64_t pos, int bits)
{
	int64_t w = pos / 32;
	int sh = (int)(pos % 32);
	uint64_t v = word(p, w * stride);
	if (sh + bits > 32)
		v |= (uint64_t)word(p, (w + 1) * stride) << 32;
	return (int)(v >> sh & ((1u << bits) - 1));
}

/* The checkpoint row of stored column k */
static int64_t src_row(const struct hfq_tensor *t, int64_t k)
{
	return t->perm ? t->perm[k] : k;
}

static int group_of(const struct hfq_tensor *t, int64_t k)
{
	if (t->gmap) /* EXL2: its rows are already in the stored order */
		return t->gmap[k];
	if (t->g_idx)
		return (int)word(t->g_idx->data, src_row(t, k));
	return t->cfg->group < 0 ? 0 : (int)(k / t->cfg->group);
}

static int code_at(const struct hfq_tensor *t, int64_t k, int64_t n)
{
	if (t->gmap) {
		int g = t->gmap[k], b = t->gbits[g];
		return stream_at(t->qweight->data + 4 * (t->gqrow0[g] * t->Npad + n), t->Npad, b * (k - t->grow0[g]), b);
	}
	k = src_row(t, k);
	if (t->cfg->method == HFQ_AWQ)
		return (int)(word(t->qweight->data, k * (t->N / 8) + n / 8) >> (4 * AWQ_NIBBLE[n % 8]) & 15);
	return stream_at(t->qweight->data + 4 * n, t->N, t->cfg->bits * k, t->cfg->bits);
}

static int zero_at(const struct hfq_tensor *t, int g, int64_t n)
{
	if (t->gmap)
		return 1 << (t->gbits[g] - 1);
	if (t->cfg->method == HFQ_AWQ)
		return (int)(word(t->qzeros->data, g * (t->N / 8) + n / 8) >> (4 * AWQ_NIBBLE[n % 8]) & 15);
	int bits = t->cfg->bits;
	int z = stream_at(t->qzeros->data + 4 * (g * (t->N * bits / 32)), 1, bits * n, bits);
	return t->cfg->v2 ? z : z + 1;
}

static uint16_t scale_at(const struct hfq_tensor *t, int g, int64_t n)
{
	uint16_t h;
	if (t->gmap) { /* ExLlamaV2's f16 scale: f16((qs + 1)^2) f16(q_scale_max / 256), rounded to f16 */
		int qs = (int)(word(t->scales->data, g * (t->Npad / 8) + n / 8) >> (4 * (n % 8)) & 15);
		memcpy(&h, t->scale_max->data + 2 * g, 2);
		float m = f16_to_f32(f32_to_f16(f16_to_f32(h) / 256.0f));
		return f32_to_f16((float)((qs + 1) * (qs + 1)) * m);
	}
	memcpy(&h, t->scales->data + 2 * (g * t->N + n), 2);
	return h;
}

static const float nf4_values[16] = NF4_VALUES, fp4_values[16] = BNB_FP4_VALUES;

/* P.weight.quant_state.bitsandbytes__nf4 (__fp4): the JSON bytes of bitsandbytes' QuantState (quant_type,
 * blocksize, shape, nested_blocksize, nested_offset) */
static int bnb_state(const struct st_set *st, const char *base, struct hfq_tensor *t, char *err, size_t errlen)
{
	char name[512];
	const char *type = t->cfg->fp4 ? "fp4" : "nf4";
	snprintf(name, sizeof(name), "%s.weight.quant_state.bitsandbytes__%s", base, type);
	const struct st_tensor *s = st_find(st, name);
	if (!s) {
		snprintf(err, errlen, "tensor %s not found (bitsandbytes' quant_state of an %s weight, as config.json's "
			 "bnb_4bit_quant_type says)", name, type);
		return -ENOENT;
	}
	json_error_t je;
	json_t *j = json_loadb((const char *)s->data, s->bytes, 0, &je);
	const json_t *shape = json_object_get(j, "shape");
	const char *qt = json_string_value(json_object_get(j, "quant_type"));
	t->blocksize = json_integer_value(json_object_get(j, "blocksize"));
	t->nested_blocksize = json_integer_value(json_object_get(j, "nested_blocksize"));
	t->nested_offset = (float)json_number_value(json_object_get(j, "nested_offset"));
	bool ok = qt && !strcmp(qt, type) && json_array_size(shape) == 2 &&
		  json_integer_value(json_array_get(shape, 0)) == t->N && json_integer_value(json_array_get(shape, 1)) == t->K;
	json_decref(j);
	if (!ok) {
		snprintf(err, errlen, "tensor %s: not a quant_state of quant_type %s and shape [%lld, %lld]", name, type,
			 (long long)t->N, (long long)t->K);
		return -EINVAL;
	}
	if (t->blocksize <= 0 || t->blocksize % 64 || t->K % 64) {
		snprintf(err, errlen, "tensor %s: blocksize %lld with rows of %lld: NF4/FP4 need both multiples of 64", name,
			 (long long)t->blocksize, (long long)t->K);
		return -EINVAL;
	}
	return 0;
}

static int open_bnb(const struct st_set *st, const char *base, struct hfq_tensor *t, char *err, size_t errlen)
{
	int rc = bnb_state(st, base, t, err, errlen);
	if (rc)
		return rc;
	char wname[512];
	snprintf(wname, sizeof(wname), "%s.weight", base);
	int64_t nblk = t->N * t->K / t->blocksize, nnest = 0;
	bool dq = t->cfg->double_quant;
	if (dq && t->nested_blocksize <= 0) {
		snprintf(err, errlen, "tensor %s.weight.quant_state.bitsandbytes__%s: no nested_blocksize (double "
			 "quantization)", base, t->cfg->fp4 ? "fp4" : "nf4");
		return -EINVAL;
	}
	nnest = dq ? (nblk + t->nested_blocksize - 1) / t->nested_blocksize : 0;
	const struct st_tensor *map;
	if (!(t->qweight = part(st, wname, "", "U8", t->N * t->K / 2, 1, true, &rc, err, errlen)) ||
	    !(t->scales = part(st, wname, "absmax", dq ? "U8" : "F32", nblk, -1, true, &rc, err, errlen)) ||
	    !(map = part(st, wname, "quant_map", "F32", 16, -1, true, &rc, err, errlen)) ||
	    (dq && !(t->nested_absmax = part(st, wname, "nested_absmax", "F32", nnest, -1, true, &rc, err, errlen))) ||
	    (dq && !(t->nested_map = part(st, wname, "nested_quant_map", "F32", 256, -1, true, &rc, err, errlen))))
		return rc;
	if (memcmp(map->data, t->cfg->fp4 ? fp4_values : nf4_values, sizeof(nf4_values))) {
		snprintf(err, errlen, "tensor %s.quant_map: not bitsandbytes' %s table", wname, t->cfg->fp4 ? "FP4" : "NF4");
		return -EINVAL;
	}
	t->fmt = t->cfg->fp4 ? WFMT_BNB_FP4 : WFMT_NF4;
	return 0;
}

/* Whether every aligned run of 32 (of 128) stored columns lies in one group: the block of the Z formats */
static void blocks_of(const struct hfq_tensor *t, bool *one32, bool *one128)
{
	*one32 = true, *one128 = t->K % 128 == 0;
	for (int64_t k = 1; k < t->K; k++)
		if (group_of(t, k) != group_of(t, k - 1)) {
			*one32 &= k % 32 == 0;
			*one128 &= k % 128 == 0;
		}
}

/* t->perm: the rows in group order, each group's rows in their checkpoint order (a counting sort) */
static int sort_by_group(struct hfq_tensor *t)
{
	int64_t *at = calloc((size_t)t->G + 1, sizeof(*at));
	t->perm = malloc(sizeof(int32_t) * (size_t)t->K);
	if (!at || !t->perm) {
		free(at);
		hfq_close(t);
		return -ENOMEM;
	}
	for (int64_t k = 0; k < t->K; k++)
		at[word(t->g_idx->data, k) + 1]++;
	for (int64_t g = 0; g < t->G; g++)
		at[g + 1] += at[g];
	for (int64_t k = 0; k < t->K; k++)
		t->perm[at[word(t->g_idx->data, k)]++] = (int32_t)k;
	free(at);
	return 0;
}

/* LLM.int8: P.weight I8 [N, K], P.SCB F32 [N] (finite, SCB / 127 an f16 below 65504), P.weight_format 0 or
 * absent */
static int open_bnb8(const struct st_set *st, const char *base, struct hfq_tensor *t, char *err, size_t errlen)
{
	char wname[512];
	int rc = 0;
	snprintf(wname, sizeof(wname), "%s.weight", base);
	if (t->K % 32) {
		snprintf(err, errlen, "tensor %s: rows of %lld: Q8_0 needs a multiple of 32", wname, (long long)t->K);
		return -EINVAL;
	}
	if (!(t->qweight = part(st, wname, "", "I8", t->N, t->K, true, &rc, err, errlen)) ||
	    !(t->scales = part(st, base, "SCB", "F32", t->N, -1, true, &rc, err, errlen)))
		return rc;
	snprintf(wname, sizeof(wname), "%s.weight_format", base);
	const struct st_tensor *wf = st_find(st, wname);
	if (wf && (wf->bytes != 1 || wf->data[0] != 0)) {
		snprintf(err, errlen, "tensor %s: %s of %llu bytes, want a U8 0 (the row-major layout)", wname, wf->dtype,
			 (unsigned long long)wf->bytes);
		return -EINVAL;
	}
	for (int64_t n = 0; n < t->N; n++) {
		float s;
		memcpy(&s, t->scales->data + 4 * n, 4);
		if (!(s >= 0 && s / 127.0f <= 65504.0f)) {
			snprintf(err, errlen, "tensor %s.SCB[%lld] = %g: not a row absmax whose scale / 127 is an f16", base,
				 (long long)n, (double)s);
			return -EINVAL;
		}
	}
	t->fmt = WFMT_Q8_0;
	return 0;
}

/* EXL2's act-order: q_perm (stored row j is input row q_perm[j]) from P.q_perm, else the inverse of
 * P.q_invperm (I32 or I16 [K], a permutation; both present: they must agree); NULL where it is the identity */
static int exl2_perm(const struct st_set *st, const char *base, struct hfq_tensor *t, char *err, size_t errlen)
{
	const struct st_tensor *pt[2];
	const char *suffix[2] = {"q_perm", "q_invperm"};
	char name[512];
	for (int i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "%s.%s", base, suffix[i]);
		pt[i] = st_find(st, name);
		if (pt[i] && ((strcmp(pt[i]->dtype, "I32") && strcmp(pt[i]->dtype, "I16")) || pt[i]->ndim != 1 ||
			      pt[i]->shape[0] != t->K)) {
			snprintf(err, errlen, "%s: tensor %s is %s of %d dims, want I32 or I16 [%lld]", st->files[pt[i]->file].path,
				 name, pt[i]->dtype, pt[i]->ndim, (long long)t->K);
			return -EINVAL;
		}
	}
	if (!pt[0] && !pt[1]) {
		snprintf(err, errlen, "tensor %s.q_invperm not found (part of an EXL2 linear: its act-order)", base);
		return -ENOENT;
	}
	int32_t *v[2] = {NULL, NULL};
	uint8_t *seen = calloc((size_t)t->K, 1);
	t->perm = malloc(sizeof(int32_t) * (size_t)t->K);
	int rc = seen && t->perm ? 0 : -ENOMEM;
	for (int i = 0; !rc && i < 2; i++) {
		if (!pt[i])
			continue;
		if (!(v[i] = malloc(sizeof(int32_t) * (size_t)t->K))) {
			rc = -ENOMEM;
			break;
		}
		memset(seen, 0, (size_t)t->K);
		bool i16 = !strcmp(pt[i]->dtype, "I16");
		for (int64_t k = 0; !rc && k < t->K; k++) {
			int16_t h;
			if (i16)
				memcpy(&h, pt[i]->data + 2 * k, 2);
			int64_t x = i16 ? h : (int32_t)word(pt[i]->data, k);
			if (i16 && t->K > 32768) /* ExLlamaV2's int16 indices of a wider K wrap: read them unsigned */
				x = (uint16_t)h;
			if (x < 0 || x >= t->K || seen[x]) {
				snprintf(err, errlen, "%s.%s[%lld] = %lld: not a permutation of %lld rows", base, suffix[i],
					 (long long)k, (long long)x, (long long)t->K);
				rc = -EINVAL;
			}
			if (!rc)
				seen[x] = 1, v[i][k] = (int32_t)x;
		}
	}
	for (int64_t k = 0; !rc && k < t->K; k++) {
		if (v[0])
			t->perm[k] = v[0][k];
		else
			t->perm[v[1][k]] = (int32_t)k;
	}
	for (int64_t k = 0; !rc && v[0] && v[1] && k < t->K; k++)
		if (v[0][v[1][k]] != k) {
			snprintf(err, errlen, "%s.q_perm and %s.q_invperm are not inverse permutations (row %lld)", base, base,
				 (long long)k);
			rc = -EINVAL;
		}
	bool identity = true;
	for (int64_t k = 0; !rc && k < t->K; k++)
		identity &= t->perm[k] == k;
	free(v[0]);
	free(v[1]);
	free(seen);
	if (rc == -ENOMEM)
		snprintf(err, errlen, "out of memory reading %s's permutation", base);
	if (rc || identity) {
		free(t->perm);
		t->perm = NULL;
	}
	return rc;
}

/* EXL2: the groups (q_groups), checked against K and q_weight's rows, then scales, maxima and permutation */
static int open_exl2(const struct st_set *st, const char *base, struct hfq_tensor *t, char *err, size_t errlen)
{
	char name[512];
	int rc = 0;
	t->Npad = (t->N + 31) / 32 * 32;
	snprintf(name, sizeof(name), "%s.q_groups", base);
	const struct st_tensor *qg = st_find(st, name);
	if (!qg) {
		snprintf(err, errlen, "tensor %s not found (part of an EXL2 linear: its groups' bits and rows)", name);
		return -ENOENT;
	}
	if ((strcmp(qg->dtype, "I16") && strcmp(qg->dtype, "U16")) || qg->ndim != 1 || qg->shape[0] < 2 ||
	    qg->shape[0] % 2 || qg->shape[0] / 2 > t->K) {
		snprintf(err, errlen, "%s: tensor %s is %s of %d dims, want I16 [2 G] (bits, first packed row per group)",
			 st->files[qg->file].path, name, qg->dtype, qg->ndim);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "%s.q_weight", base);
	const struct st_tensor *w = st_find(st, name);
	if (!w) {
		snprintf(err, errlen, "tensor %s not found (part of an EXL2 linear)", name);
		return -ENOENT;
	}
	if (strcmp(w->dtype, "I32") || w->ndim != 2 || w->shape[1] != t->Npad) {
		snprintf(err, errlen, "%s: tensor %s is %s of %d dims (width %lld), want I32 [packed rows, %lld] for a "
			 "[%lld, %lld] weight", st->files[w->file].path, name, w->dtype, w->ndim,
			 (long long)(w->ndim == 2 ? w->shape[1] : -1), (long long)t->Npad, (long long)t->N, (long long)t->K);
		return -EINVAL;
	}
	t->qweight = w;
	t->G = qg->shape[0] / 2;
	t->gbits = malloc(sizeof(int) * (size_t)t->G);
	t->grow0 = malloc(sizeof(int64_t) * (size_t)(t->G + 1));
	t->gqrow0 = malloc(sizeof(int64_t) * (size_t)(t->G + 1));
	t->gmap = malloc(sizeof(int32_t) * (size_t)t->K);
	if (!t->gbits || !t->grow0 || !t->gqrow0 || !t->gmap) {
		snprintf(err, errlen, "out of memory reading %s", name);
		return -ENOMEM;
	}
	int64_t qrows = t->qweight->shape[0];
	t->grow0[0] = 0;
	for (int64_t g = 0; g < t->G; g++) {
		int16_t v[2], next = 0;
		memcpy(v, qg->data + 4 * g, 4);
		if (g + 1 < t->G)
			memcpy(&next, qg->data + 4 * (g + 1) + 2, 2);
		int b = v[0];
		t->gbits[g] = b, t->gqrow0[g] = v[1];
		int64_t qr = (g + 1 < t->G ? next : qrows) - v[1], rows = 0;
		const char *bad = NULL;
		if (b != 2 && b != 3 && b != 4 && b != 5 && b != 6 && b != 8)
			bad = "bits not 8, 6, 5, 4, 3 or 2";
		else if (g && b > t->gbits[g - 1])
			bad = "more bits than the group before (EXL2 orders them 8 .. 2)";
		else if (g == 0 && v[1] != 0)
			bad = "the first group does not start at packed row 0";
		else if (qr <= 0 || (g + 1 < t->G && qr * 32 % b))
			bad = "not a whole number of rows";
		else if ((rows = g + 1 < t->G ? qr * 32 / b : t->K - t->grow0[g]) <= 0 || t->grow0[g] + rows > t->K)
			bad = "rows beyond the weight's K";
		else if (g + 1 == t->G && qr != (rows * b + 31) / 32)
			bad = "q_weight's packed rows disagree with K";
		if (bad) {
			snprintf(err, errlen, "%s.q_groups[%lld] (bits %d, packed row %d): %s (K %lld, q_weight %lld packed rows)",
				 base, (long long)(2 * g), b, v[1], bad, (long long)t->K, (long long)qrows);
			return -EINVAL;
		}
		t->grow0[g + 1] = t->grow0[g] + rows;
		for (int64_t k = t->grow0[g]; k < t->grow0[g + 1]; k++)
			t->gmap[k] = (int32_t)g;
	}
	if (t->grow0[t->G] != t->K) {
		snprintf(err, errlen, "%s.q_groups: %lld rows in its groups, the weight has K = %lld", base,
			 (long long)t->grow0[t->G], (long long)t->K);
		return -EINVAL;
	}
	if (!(t->scales = part(st, base, "q_scale", "I32", t->G, t->Npad / 8, true, &rc, err, errlen)) ||
	    !(t->scale_max = part(st, base, "q_scale_max", "F16", t->G, -1, true, &rc, err, errlen)))
		return rc;
	if ((rc = exl2_perm(st, base, t, err, errlen)))
		return rc;
	int maxb = 0;
	for (int64_t g = 0; g < t->G; g++)
		maxb = t->gbits[g] > maxb ? t->gbits[g] : maxb;
	bool one32, one128;
	blocks_of(t, &one32, &one128);
	t->fmt = !one32 ? WFMT_F32 : maxb > 4 ? (one128 ? WFMT_Q8_Z128 : WFMT_Q8_Z) : one128 ? WFMT_Q4_Z128 : WFMT_Q4_Z;
	return 0;
}

int hfq_open(const struct hfq_config *cfg, const struct st_set *st, const char *base, int64_t N, int64_t K,
	     struct hfq_tensor *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->cfg = cfg, t->N = N, t->K = K;
	if (cfg->method == HFQ_BNB4)
		return open_bnb(st, base, t, err, errlen);
	if (cfg->method == HFQ_BNB8)
		return open_bnb8(st, base, t, err, errlen);
	if (cfg->method == HFQ_EXL2) {
		int rc = open_exl2(st, base, t, err, errlen);
		if (rc)
			hfq_close(t);
		return rc;
	}
	int bits = cfg->bits, rc = 0;
	bool awq = cfg->method == HFQ_AWQ;
	if (K % 32 || (awq ? N % 8 : (N * bits) % 32)) {
		snprintf(err, errlen, "%s.qweight: a [%lld, %lld] weight does not pack into whole %s words and blocks of 32",
			 base, (long long)N, (long long)K, cfg->name);
		return -EINVAL;
	}
	t->G = cfg->group < 0 ? 1 : (K + cfg->group - 1) / cfg->group;
	if (!(t->qweight = part(st, base, "qweight", "I32", awq ? K : K * bits / 32, awq ? N / 8 : N, true, &rc, err,
				errlen)) ||
	    !(t->qzeros = part(st, base, "qzeros", "I32", t->G, awq ? N / 8 : N * bits / 32, true, &rc, err, errlen)) ||
	    !(t->scales = part(st, base, "scales", "F16", t->G, N, true, &rc, err, errlen)))
		return rc;
	if (!awq) {
		t->g_idx = part(st, base, "g_idx", "I32", K, -1, cfg->desc_act, &rc, err, errlen);
		if (rc)
			return rc;
	}
	for (int64_t k = 0; t->g_idx && k < K; k++) {
		int64_t g = (int32_t)word(t->g_idx->data, k);
		if (g < 0 || g >= t->G) {
			snprintf(err, errlen, "%s.g_idx[%lld] = %lld: not a group of %lld", base, (long long)k, (long long)g,
				 (long long)t->G);
			return -EINVAL;
		}
	}
	bool one32, one128;
	blocks_of(t, &one32, &one128);
	if (!one32 && t->g_idx) { /* act-order mixing groups inside blocks: sort the columns by group */
		if ((rc = sort_by_group(t))) {
			snprintf(err, errlen, "out of memory permuting %s", base);
			return rc;
		}
		blocks_of(t, &one32, &one128);
		if (!one32)
			hfq_close(t);
	}
	t->fmt = !one32 ? WFMT_F32 : bits == 8 ? (one128 ? WFMT_Q8_Z128 : WFMT_Q8_Z) : one128 ? WFMT_Q4_Z128 : WFMT_Q4_Z;
	return 0;
}

void hfq_close(struct hfq_tensor *t)
{
	free(t->perm);
	free(t->gmap);
	free(t->gbits);
	free(t->grow0);
	free(t->gqrow0);
	t->perm = t->gmap = NULL, t->gbits = NULL, t->grow0 = t->gqrow0 = NULL;
}

/* The absmax of bitsandbytes block i: f32, or its double-quantized code through the nested tables */
static float bnb_absmax(const struct hfq_tensor *t, int64_t i)
{
	float a, code, nabs;
	if (!t->cfg->double_quant) {
		memcpy(&a, t->scales->data + 4 * i, 4);
		return a;
	}
	memcpy(&code, t->nested_map->data + 4 * t->scales->data[i], 4);
	memcpy(&nabs, t->nested_absmax->data + 4 * (i / t->nested_blocksize), 4);
	float p = code * nabs; /* rounded to f32 before the offset is added, as bitsandbytes does (ISO C: no FMA) */
	return p + t->nested_offset;
}

void hfq_rows(const struct hfq_tensor *t, int64_t n0, int64_t nn, void *out)
{
	int64_t K = t->K;
	size_t rb = wfmt_row_bytes(t->fmt, (uint64_t)K);
#pragma omp parallel for schedule(dynamic, 16)
	for (int64_t n = n0; n < n0 + nn; n++) {
		uint8_t *row = (uint8_t *)out + (size_t)(n - n0) * rb;
		if (t->fmt == WFMT_NF4 || t->fmt == WFMT_BNB_FP4) { /* one block layout, the table aside */
			for (int64_t b = 0; b < K / 64; b++) {
				struct block_nf4 *q = (struct block_nf4 *)row + b;
				int64_t flat = n * K + 64 * b;
				q->d = bnb_absmax(t, flat / t->blocksize);
				memcpy(q->qs, t->qweight->data + flat / 2, 32);
			}
			continue;
		}
		if (t->fmt == WFMT_Q8_0) { /* LLM.int8: one f16 scale per row, the int8 codes as they are */
			float s;
			memcpy(&s, t->scales->data + 4 * n, 4);
			uint16_t d = f32_to_f16(s / 127.0f);
			for (int64_t b = 0; b < K / 32; b++) {
				struct block_q8_0 *q = (struct block_q8_0 *)row + b;
				q->d = d;
				memcpy(q->qs, t->qweight->data + n * K + 32 * b, 32);
			}
			continue;
		}
		if (t->fmt == WFMT_F32) {
			float *y = (float *)row;
			for (int64_t k = 0; k < K; k++) {
				int g = group_of(t, k);
				y[k] = f16_to_f32(scale_at(t, g, n)) * (float)(code_at(t, k, n) - zero_at(t, g, n));
			}
			continue;
		}
		/* blocks of B = 32 sub values: d, z, then sub code arrays of 32 (Q8: q - 128 and z - 128) */
		int B = (int)wfmt_table[t->fmt].block, sub = B / 32;
		bool eight = t->fmt == WFMT_Q8_Z || t->fmt == WFMT_Q8_Z128;
		size_t bb = wfmt_table[t->fmt].block_bytes;
		for (int64_t b = 0; b < K / B; b++) {
			uint8_t *p = row + (size_t)b * bb;
			int g = group_of(t, B * b), zero = zero_at(t, g, n);
			/* 8-bit codes are stored minus an offset: 128 (GPTQ's zero varies), EXL2's own zero 2^(b-1), so z is
			 * 0 and the kernels' z sum (-d z sum x) does not cancel against the code dot */
			int off = eight ? (t->gmap ? zero : 128) : 0;
			int16_t z = (int16_t)(zero - off);
			uint16_t d = scale_at(t, g, n);
			memcpy(p, &d, 2);
			memcpy(p + 2, &z, 2);
			for (int s = 0; s < sub; s++) {
				int64_t k0 = B * b + 32 * s;
				uint8_t *qs = p + 4 + (eight ? 32 : 16) * s;
				for (int j = 0; eight && j < 32; j++)
					qs[j] = (uint8_t)(code_at(t, k0 + j, n) - off);
				for (int j = 0; !eight && j < 16; j++)
					qs[j] = (uint8_t)(code_at(t, k0 + j, n) | code_at(t, k0 + j + 16, n) << 4);
			}
		}
	}
}
