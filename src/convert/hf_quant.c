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
														: HFQ_NONE;
	q->name = q->method == HFQ_GPTQ ? "gptq" : q->method == HFQ_AWQ ? "awq" : "bitsandbytes";
	if (q->method == HFQ_NONE) {
		snprintf(err, errlen, "%s.quant_method \"%s\" is not supported (gptq, awq, bitsandbytes)", where, m);
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

bool hfq_present(const struct hfq_config *cfg, const struct st_set *st, const char *base)
{
	char name[512];
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
	if (t->g_idx)
		return (int)word(t->g_idx->data, src_row(t, k));
	return t->cfg->group < 0 ? 0 : (int)(k / t->cfg->group);
}

static int code_at(const struct hfq_tensor *t, int64_t k, int64_t n)
{
	k = src_row(t, k);
	if (t->cfg->method == HFQ_AWQ)
		return (int)(word(t->qweight->data, k * (t->N / 8) + n / 8) >> (4 * AWQ_NIBBLE[n % 8]) & 15);
	return stream_at(t->qweight->data + 4 * n, t->N, t->cfg->bits * k, t->cfg->bits);
}

static int zero_at(const struct hfq_tensor *t, int g, int64_t n)
{
	if (t->cfg->method == HFQ_AWQ)
		return (int)(word(t->qzeros->data, g * (t->N / 8) + n / 8) >> (4 * AWQ_NIBBLE[n % 8]) & 15);
	int bits = t->cfg->bits;
	int z = stream_at(t->qzeros->data + 4 * (g * (t->N * bits / 32)), 1, bits * n, bits);
	return t->cfg->v2 ? z : z + 1;
}

static uint16_t scale_at(const struct hfq_tensor *t, int g, int64_t n)
{
	uint16_t h;
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

int hfq_open(const struct hfq_config *cfg, const struct st_set *st, const char *base, int64_t N, int64_t K,
	     struct hfq_tensor *t, char *err, size_t errlen)
{
	memset(t, 0, sizeof(*t));
	t->cfg = cfg, t->N = N, t->K = K;
	if (cfg->method == HFQ_BNB4)
		return open_bnb(st, base, t, err, errlen);
	if (cfg->method == HFQ_BNB8)
		return open_bnb8(st, base, t, err, errlen);
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
	t->perm = NULL;
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
			int g = group_of(t, B * b);
			int16_t z = (int16_t)(zero_at(t, g, n) - (eight ? 128 : 0));
			uint16_t d = scale_at(t, g, n);
			memcpy(p, &d, 2);
			memcpy(p + 2, &z, 2);
			for (int s = 0; s < sub; s++) {
				int64_t k0 = B * b + 32 * s;
				uint8_t *qs = p + 4 + (eight ? 32 : 16) * s;
				for (int j = 0; eight && j < 32; j++)
					qs[j] = (uint8_t)(code_at(t, k0 + j, n) - 128);
				for (int j = 0; !eight && j < 16; j++)
					qs[j] = (uint8_t)(code_at(t, k0 + j, n) | code_at(t, k0 + j + 16, n) << 4);
			}
		}
	}
}
