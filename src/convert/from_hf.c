/*
 * convert_hf.c: Hugging Face safetensors directory -> model.ferry.
 *
 * Tensors are copied one at a time from the mmapped checkpoint into the per-unit files, in chunks, and the
 * copied pages are dropped from the resident set right away: peak RSS stays far below one layer whatever
 * the model size. Weights keep their dtype (F32, F16, BF16). Which tensors a checkpoint has, their names
 * and their shapes come from the architecture table (src/layout/arch.c); every tensor's shape is checked
 * against config.json before anything is written for it. The RMSNorm weights w of an architecture whose
 * norms multiply by (1 + w) (Gemma 3) become F32 1 + w (GGUF files store them that way too).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "text/chat.h"
#include "convert/convert.h"
#include "convert/hf_config.h"
#include "convert/hf_quant.h"
#include "convert/imatrix.h"
#include "convert/quantize.h"
#include "layout/arch.h"
#include "layout/layout.h"
#include "layout/quant.h"
#include "base/progress.h"
#include "layout/safetensors.h"

struct conv {
	const char *dir;
	struct st_set st;
	struct layout_writer *w;
	const json_t *config;
	struct layout_hparams hp;
	const struct arch *arch;
	struct progress prog;
	const struct quant_mix *mix; /* NULL: keep the dtype */
	int layer;                   /* the layer being written, -1 outside */
	int n_fallback;              /* matrices whose rows are not whole blocks of the mix's format */
	struct imatrix im;           /* --imatrix (n 0: none) */
	const char *im_path;
	int im_used;                 /* matrices it weighted */
	struct hfq_config q;         /* quantization_config (GPTQ, AWQ, bitsandbytes, EXL2), method HFQ_NONE: none */
	int n_quantized, n_act_f32;  /* its linears repacked; of them, act-order ones written as F32 */
	int n_act_perm;              /* act-order ones stored with permuted columns (P.perm) */
	char *err;
	size_t errlen;
};

static int st_dtype_fmt(const char *dtype)
{
	if (!strcmp(dtype, "F32"))
		return WFMT_F32;
	if (!strcmp(dtype, "F16"))
		return WFMT_F16;
	if (!strcmp(dtype, "BF16"))
		return WFMT_BF16;
	return -1;
}

struct qsink {
	struct conv *c;
	const struct st_tensor *t;
	uint64_t row_bytes; /* of the source */
};

static int qsink_write(const void *out, size_t bytes, int64_t r0, int64_t n, void *ctx)
{
	struct qsink *q = ctx;
	int rc = layout_writer_tensor_write(q->c->w, out, bytes);
	st_release(&q->c->st, q->t, (uint64_t)r0 * q->row_bytes, (uint64_t)n * q->row_bytes);
	return rc;
}

/* Writes the matrix t ([d0, d1] in source format sfmt) quantized to qfmt, the source pages dropped once read. */
static int write_quantized(struct conv *c, const struct st_tensor *t, const char *dst, int expert, int sfmt, int qfmt,
			   int64_t d0, int64_t d1)
{
	struct qsink q = {c, t, (uint64_t)d1 * (sfmt == WFMT_F32 ? 4 : 2)};
	const float *imp;
	int rc = imatrix_lookup(&c->im, c->im_path, dst, c->layer, expert, d1, &imp, &c->im_used, c->err, c->errlen);
	rc = rc ? rc : quant_matrix(qfmt, t->data, sfmt, d0, d1, imp, qsink_write, &q);
	if (rc == -ENOMEM)
		snprintf(c->err, c->errlen, "out of memory quantizing rows of %lld values", (long long)d1);
	return rc;
}

static int fused_sink(const void *out, size_t bytes, int64_t r0, int64_t n, void *ctx)
{
	(void)r0;
	(void)n;
	struct conv *c = ctx;
	return layout_writer_tensor_write(c->w, out, bytes);
}

/* Checkpoint tensor src, checked to have shape [d0] or [d0, d1] (d1 < 0: rank 1) in a format ferry reads;
 * NULL with a message otherwise. */
static const struct st_tensor *find_checked(struct conv *c, const char *src, int64_t d0, int64_t d1, int *fmt)
{
	const struct st_tensor *t = st_find(&c->st, src);
	if (!t) {
		snprintf(c->err, c->errlen, "%s: tensor %s not found in the checkpoint", c->dir, src);
		return NULL;
	}
	const char *file = c->st.files[t->file].path;
	*fmt = st_dtype_fmt(t->dtype);
	if (*fmt < 0) {
		snprintf(c->err, c->errlen, "%s: tensor %s has dtype %s; supported: F32, F16, BF16", file, src, t->dtype);
		return NULL;
	}
	int ndim = d1 < 0 ? 1 : 2;
	if (t->ndim != ndim || t->shape[0] != d0 || (ndim == 2 && t->shape[1] != d1)) {
		char got[96] = "", want[48];
		for (int d = 0; d < t->ndim; d++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), d ? ", %lld" : "%lld", (long long)t->shape[d]);
		if (ndim == 1)
			snprintf(want, sizeof(want), "%lld", (long long)d0);
		else
			snprintf(want, sizeof(want), "%lld, %lld", (long long)d0, (long long)d1);
		snprintf(c->err, c->errlen, "%s: tensor %s has shape [%s], config.json implies [%s]", file, src, got, want);
		return NULL;
	}
	return t;
}

/* t's bytes into the open tensor, quantized to qfmt when it differs from t's format. */
static int write_body(struct conv *c, const struct st_tensor *t, const char *dst, int expert, int fmt, int qfmt,
		      int64_t d0, int64_t d1)
{
	if (qfmt != fmt)
		return write_quantized(c, t, dst, expert, fmt, qfmt, d0, d1);
	enum { CHUNK = 16 << 20 };
	int rc = 0;
	for (uint64_t off = 0; !rc && off < t->bytes; off += CHUNK) {
		uint64_t n = t->bytes - off < CHUNK ? t->bytes - off : CHUNK;
		rc = layout_writer_tensor_write(c->w, t->data + off, (size_t)n);
		st_release(&c->st, t, off, n);
	}
	return rc;
}

static int writer_done(struct conv *c, int rc)
{
	rc = rc ? rc : layout_writer_tensor_end(c->w);
	if (rc && !c->err[0])
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	return rc;
}

/* The format tensor dst is written in: the --quant mix's pick for a matrix, else the source's (F16 from a
 * mix keeps the source format: no whole blocks). */
static int dst_format(struct conv *c, const char *dst, int fmt, int ndim, int64_t cols)
{
	int qfmt = c->mix && ndim >= 2 ? quant_mix_pick_im(c->mix, dst, c->layer, &c->hp, cols, c->im.n > 0) : fmt;
	return qfmt == WFMT_F16 && fmt != WFMT_F16 ? fmt : qfmt;
}

/* The permutation of an act-order linear dst ("P.weight") as tensor "P.perm": F32 [K] holding the checkpoint row
 * of each stored column (integers below 2^24, so exact in f32; every backend already takes F32 tensors, and
 * no weight-format code is spent on a vector of indices). */
static int write_perm(struct conv *c, const char *dst, const int32_t *perm, int64_t K)
{
	char name[LAYOUT_NAME_MAX];
	size_t ld = strlen(dst);
	if (ld < 7 || ld - 7 + 6 >= sizeof(name) || K >= 1 << 24) {
		snprintf(c->err, c->errlen, "%s: no permutation tensor for a weight of %lld columns", dst, (long long)K);
		return -EINVAL;
	}
	snprintf(name, sizeof(name), "%.*s.perm", (int)(ld - 7), dst);
	float *v = malloc(sizeof(float) * (size_t)K);
	if (!v)
		return -ENOMEM;
	for (int64_t k = 0; k < K; k++)
		v[k] = (float)perm[k];
	int64_t shape[1] = {K};
	int rc = layout_writer_tensor_begin(c->w, name, WFMT_F32, 1, shape);
	rc = rc ? rc : layout_writer_tensor_write(c->w, v, sizeof(float) * (size_t)K);
	free(v);
	return writer_done(c, rc);
}

/* A GPTQ/AWQ linear `base` ([d0, d1]) repacked into Q4_Z/Q8_Z (an act-order one with its columns permuted and
 * the permutation beside it; F32 where even that leaves groups mixing inside a block), in chunks of about
 * 4 MiB. */
static int copy_quantized(struct conv *c, const char *base, const char *dst, int64_t d0, int64_t d1)
{
	struct hfq_tensor t;
	int rc = hfq_open(&c->q, &c->st, base, d0, d1, &t, c->err, c->errlen);
	if (rc)
		return rc;
	c->n_quantized++;
	c->n_act_f32 += t.fmt == WFMT_F32;
	c->n_act_perm += t.perm != NULL;
	int64_t shape[2] = {d0, d1};
	size_t rb = wfmt_row_bytes(t.fmt, (uint64_t)d1);
	int64_t chunk = (int64_t)((4u << 20) / rb) + 1;
	void *buf = malloc(rb * (size_t)chunk);
	if (!buf) {
		hfq_close(&t);
		snprintf(c->err, c->errlen, "out of memory repacking %s", base);
		return -ENOMEM;
	}
	rc = layout_writer_tensor_begin(c->w, dst, t.fmt, 2, shape);
	for (int64_t n0 = 0; !rc && n0 < d0; n0 += chunk) {
		int64_t nn = d0 - n0 < chunk ? d0 - n0 : chunk;
		hfq_rows(&t, n0, nn, buf);
		rc = layout_writer_tensor_write(c->w, buf, rb * (size_t)nn);
	}
	free(buf);
	rc = writer_done(c, rc);
	if (!rc && t.perm)
		rc = write_perm(c, dst, t.perm, d1);
	hfq_close(&t);
	return rc;
}

/* Copies checkpoint tensor `src` as `dst` after checking it has shape [d0] or [d0, d1] (d1 < 0: rank 1); a
 * quantized checkpoint's linear (src P.weight stored as P.qweight ...) is repacked. */
static int copy_tensor(struct conv *c, const char *src, const char *dst, int64_t d0, int64_t d1)
{
	size_t ls = strlen(src);
	if (c->q.method != HFQ_NONE && d1 >= 0 && ls > 7 && ls < 256 && !strcmp(src + ls - 7, ".weight")) {
		char base[256];
		snprintf(base, sizeof(base), "%.*s", (int)(ls - 7), src);
		if (hfq_present(&c->q, &c->st, base))
			return copy_quantized(c, base, dst, d0, d1);
	}
	int fmt;
	const struct st_tensor *t = find_checked(c, src, d0, d1, &fmt);
	if (!t)
		return c->err[0] && strstr(c->err, "not found") ? -ENOENT : -EINVAL;
	int ndim = d1 < 0 ? 1 : 2;
	int64_t shape[2] = {d0, d1};
	int qfmt = dst_format(c, dst, fmt, ndim, d1);
	c->n_fallback += qfmt != fmt && quant_mix_fell_back(c->mix, dst, c->layer, &c->hp, d1, c->im.n > 0);
	int rc = layout_writer_tensor_begin(c->w, dst, qfmt, ndim, shape);
	return writer_done(c, rc ? rc : write_body(c, t, dst, -1, fmt, qfmt, d0, d1));
}

/* The experts' matrices, one checkpoint tensor each (src_fmt: a name with %d for the expert), stacked into
 * dst [E, d0, d1]; every expert in the same source format. */
static int copy_experts(struct conv *c, const char *src_fmt, const char *dst, int64_t E, int64_t d0, int64_t d1)
{
	const struct st_tensor *t[LAYOUT_MAX_EXPERTS];
	int fmt = -1;
	for (int64_t e = 0; e < E; e++) {
		char src[256];
		int f;
		snprintf(src, sizeof(src), src_fmt, (int)e);
		if (!(t[e] = find_checked(c, src, d0, d1, &f)))
			return strstr(c->err, "not found") ? -ENOENT : -EINVAL;
		if (e && f != fmt) {
			snprintf(c->err, c->errlen, "%s: tensor %s is %s, expert 0's is %s", c->dir, src, wfmt_name(f),
				 wfmt_name(fmt));
			return -EINVAL;
		}
		fmt = f;
	}
	int64_t shape[3] = {E, d0, d1};
	int qfmt = dst_format(c, dst, fmt, 3, d1);
	c->n_fallback += qfmt != fmt && quant_mix_fell_back(c->mix, dst, c->layer, &c->hp, d1, c->im.n > 0);
	int rc = layout_writer_tensor_begin(c->w, dst, qfmt, 3, shape);
	for (int64_t e = 0; !rc && e < E; e++)
		rc = write_body(c, t[e], dst, (int)e, fmt, qfmt, d0, d1);
	return writer_done(c, rc);
}

/* A vector stored as F32 plus `add`: a Gemma RMSNorm weight (add 1: transformers multiplies by (1 + w) in f32,
 * so 1 + w is stored and the forward multiplies by it like any other norm weight), gpt-oss's sinks (add 0:
 * the attention kernels read them as f32). */
static int copy_vector_f32(struct conv *c, const char *src, const char *dst, int64_t n, float add)
{
	const struct st_tensor *t = st_find(&c->st, src);
	int fmt = t ? st_dtype_fmt(t->dtype) : -1;
	if (!t || fmt < 0 || t->ndim != 1 || t->shape[0] != n) {
		snprintf(c->err, c->errlen, "%s: tensor %s missing, or not a vector of %lld F32/F16/BF16 values", c->dir, src,
			 (long long)n);
		return t ? -EINVAL : -ENOENT;
	}
	float *v = malloc(sizeof(float) * (size_t)n);
	if (!v)
		return -ENOMEM;
	for (int64_t i = 0; i < n; i++) {
		const uint8_t *p = t->data + i * (fmt == WFMT_F32 ? 4 : 2);
		uint16_t h;
		memcpy(&h, p, 2);
		float w;
		if (fmt == WFMT_F32)
			memcpy(&w, p, 4);
		else
			w = fmt == WFMT_F16 ? f16_to_f32(h) : bf16_to_f32(h);
		v[i] = add + w;
	}
	int64_t shape[1] = {n};
	int rc = layout_writer_tensor_begin(c->w, dst, WFMT_F32, 1, shape);
	rc = rc ? rc : layout_writer_tensor_write(c->w, v, sizeof(float) * (size_t)n);
	rc = rc ? rc : layout_writer_tensor_end(c->w);
	free(v);
	if (rc && !c->err[0])
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	return rc;
}

/* The released gpt-oss checkpoints' MXFP4 form of tensor src: src_blocks (U8 [E, R, K/32, 16]: byte i of a
 * block holds value 2i in its low nibble, 2i + 1 in its high one) and src_scales (U8 [E, R, K/32]: e8m0). */
static bool mxfp4_of(struct conv *c, const char *src, const struct st_tensor **blocks, const struct st_tensor **scales)
{
	char name[300];
	snprintf(name, sizeof(name), "%s_blocks", src);
	const struct st_tensor *b = st_find(&c->st, name);
	snprintf(name, sizeof(name), "%s_scales", src);
	const struct st_tensor *s = st_find(&c->st, name);
	if (blocks)
		*blocks = b;
	if (scales)
		*scales = s;
	return b && s;
}

/* Experts in MXFP4 (mxfp4_of) as dst shape[] [E, rows, cols]: already [out, in], so row i is the source's row
 * i, or 2i + parity of the fused gate_up (as the bf16 form's columns); each block's nibbles put in ggml's
 * order (value j low, j + 16 high), its scale kept: the same values, not quantized again. */
static int copy_mxfp4(struct conv *c, const char *src, const struct arch_tensor *row, const int64_t *shape, int parity)
{
	const struct st_tensor *b, *s;
	mxfp4_of(c, src, &b, &s);
	int64_t E = shape[0], rows = shape[1], nb = shape[2] / 32, R = rows * (parity >= 0 ? 2 : 1);
	if (strcmp(b->dtype, "U8") || strcmp(s->dtype, "U8") || shape[2] % 32 || b->ndim != 4 || s->ndim != 3 ||
	    b->shape[0] != E || b->shape[1] != R || b->shape[2] != nb || b->shape[3] != 16 || s->shape[0] != E ||
	    s->shape[1] != R || s->shape[2] != nb) {
		snprintf(c->err, c->errlen, "%s: tensors %s_blocks / _scales are not U8 [%lld, %lld, %lld, 16] / [%lld, "
			 "%lld, %lld] as config.json implies", c->st.files[b->file].path, src, (long long)E, (long long)R,
			 (long long)nb, (long long)E, (long long)R, (long long)nb);
		return -EINVAL;
	}
	int rc = layout_writer_tensor_begin(c->w, row->name, WFMT_MXFP4, 3, shape);
	struct block_mxfp4 *buf = rc ? NULL : malloc(sizeof(*buf) * (size_t)(rows * nb));
	if (!rc && !buf)
		rc = -ENOMEM;
	for (int64_t e = 0; !rc && e < E; e++) {
		for (int64_t i = 0; i < rows; i++) {
			int64_t sr = (e * R + (parity >= 0 ? 2 * i + parity : i)) * nb;
			for (int64_t k = 0; k < nb; k++) {
				const uint8_t *q = b->data + (uint64_t)(sr + k) * 16;
				struct block_mxfp4 *o = &buf[i * nb + k];
				o->e = s->data[sr + k];
				for (int j = 0; j < 16; j++) /* value j is nibble j of q, value j + 16 nibble j + 16 */
					o->qs[j] = (uint8_t)(((q[j / 2] >> (4 * (j & 1))) & 15) |
							     (((q[8 + j / 2] >> (4 * (j & 1))) & 15) << 4));
			}
		}
		rc = layout_writer_tensor_write(c->w, buf, sizeof(*buf) * (size_t)(rows * nb));
	}
	free(buf);
	return writer_done(c, rc);
}

/* A tensor of all experts (gpt-oss), named "NAME:even", "NAME:odd", "NAME:t" or both (arch.h): the source
 * [E, R, C] (a bias: [E, C]), of which the even or odd entries of the last dimension are taken and, with
 * ":t", the matrices' rows and cols swapped, into dst shape[] ([E, rows, cols] or [E, cols]). Each expert's
 * matrix is rearranged in the source format in memory, then written (or quantized) as one. */
static int copy_fused(struct conv *c, const char *src_spec, const struct arch_tensor *row, const int64_t *shape,
		      int ndim)
{
	char src[256];
	snprintf(src, sizeof(src), "%s", src_spec);
	int parity = strstr(src, ":even") ? 0 : strstr(src, ":odd") ? 1 : -1;
	bool tr = strstr(src, ":t") != NULL;
	*strchr(src, ':') = 0;
	const struct st_tensor *t = st_find(&c->st, src);
	if (!t && ndim == 3 && mxfp4_of(c, src, NULL, NULL))
		return copy_mxfp4(c, src, row, shape, parity);
	if (!t) {
		snprintf(c->err, c->errlen, "%s: tensor %s not found in the checkpoint", c->dir, src);
		return -ENOENT;
	}
	int fmt = st_dtype_fmt(t->dtype);
	int64_t E = shape[0], rows = ndim == 3 ? shape[1] : 1, cols = shape[ndim - 1];
	/* the source's [E, R, C] that gives dst's rows x cols; a matrix may also come as [E, C, R] (swapped: the
	 * layout of transformers versions that keep experts as [out, in]), told apart by the shape */
	int64_t R = tr ? cols : rows, C = (tr ? rows : cols) * (parity >= 0 ? 2 : 1);
	bool ok = fmt >= 0 && t->ndim == (ndim == 3 ? 3 : 2) && t->shape[0] == E &&
		  (ndim == 3 ? t->shape[1] == R && t->shape[2] == C : t->shape[1] == C);
	bool swapped = !ok && fmt >= 0 && ndim == 3 && t->ndim == 3 && t->shape[0] == E && t->shape[1] == C &&
		       t->shape[2] == R;
	ok = ok || swapped;
	if (!ok) {
		char want[64];
		if (ndim == 3)
			snprintf(want, sizeof(want), "%lld, %lld, %lld", (long long)E, (long long)R, (long long)C);
		else
			snprintf(want, sizeof(want), "%lld, %lld", (long long)E, (long long)C);
		snprintf(c->err, c->errlen, "%s: tensor %s is not F32/F16/BF16 [%s] as config.json implies (%s, %d dims)",
			 c->st.files[t->file].path, src, want, t->dtype, t->ndim);
		return -EINVAL;
	}
	size_t es = fmt == WFMT_F32 ? 4 : 2;
	int qfmt = dst_format(c, row->name, fmt, ndim, cols);
	int rc = layout_writer_tensor_begin(c->w, row->name, qfmt, ndim, shape);
	uint8_t *buf = rc ? NULL : malloc((size_t)(rows * cols) * es);
	if (!rc && !buf)
		rc = -ENOMEM;
	for (int64_t e = 0; !rc && e < E; e++) {
		const uint8_t *m = t->data + (uint64_t)e * (uint64_t)(R * C) * es;
		for (int64_t i = 0; i < rows; i++)
			for (int64_t j = 0; j < cols; j++) {
				int64_t si = tr ? j : i, sj = tr ? i : j;
				sj = parity >= 0 ? 2 * sj + parity : sj;
				int64_t at = swapped ? sj * R + si : si * C + sj;
				memcpy(buf + (size_t)(i * cols + j) * es, m + (size_t)at * es, es);
			}
		st_release(&c->st, t, (uint64_t)e * (uint64_t)(R * C) * es, (uint64_t)(R * C) * es);
		if (qfmt != fmt) {
			const float *imp;
			rc = imatrix_lookup(&c->im, c->im_path, row->name, c->layer, (int)e, cols, &imp, &c->im_used, c->err,
					    c->errlen);
			rc = rc ? rc : quant_matrix(qfmt, buf, fmt, rows, cols, imp, fused_sink, c);
		} else {
			rc = layout_writer_tensor_write(c->w, buf, (size_t)(rows * cols) * es);
		}
	}
	free(buf);
	return writer_done(c, rc);
}

/* Checkpoint tensor src as table row t: its shape from the hyper-parameters, norms as 1 + w where the
 * architecture says so. */
static int copy_row(struct conv *c, const char *src, const struct arch_tensor *t)
{
	int64_t shape[3];
	int ndim = arch_shape(&c->hp, t, shape);
	if (strchr(t->hf, ':'))
		return copy_fused(c, src, t, shape, ndim);
	if (arch_is_experts(t))
		return copy_experts(c, src, t->name, shape[0], shape[1], shape[2]);
	if (t->norm && c->arch->hf_norm_plus_one)
		return copy_vector_f32(c, src, t->name, shape[0], 1.0f);
	if (t->slot == ARCH_SLOT_ATTN_SINKS)
		return copy_vector_f32(c, src, t->name, shape[0], 0.0f);
	return copy_tensor(c, src, t->name, shape[0], ndim == 2 ? shape[1] : -1);
}

/* Plans layer i's expert rows expert-major (layout_writer_experts): their formats are those copy_experts
 * will write (expert 0's source format, or the --quant mix's pick). */
static int plan_experts(struct conv *c, int i)
{
	const char *names[4];
	int fmts[4], n = 0;
	int64_t shapes[4][3];
	for (int k = 0; k < c->arch->n_layer && n < 4; k++) {
		const struct arch_tensor *t = &c->arch->layer[k];
		if (!arch_is_experts(t))
			continue;
		char src_fmt[256], src[256];
		snprintf(src_fmt, sizeof(src_fmt), "model.layers.%d.%s", i, t->hf);
		snprintf(src, sizeof(src), src_fmt, 0);
		arch_shape(&c->hp, t, shapes[n]);
		int fmt;
		if (strchr(src, ':')) { /* all experts in one tensor (or its MXFP4 form): copy_fused checks it */
			*strchr(src, ':') = 0;
			const struct st_tensor *st = st_find(&c->st, src);
			if (!st && mxfp4_of(c, src, NULL, NULL)) {
				names[n] = t->name;
				fmts[n++] = WFMT_MXFP4;
				continue;
			}
			if (!st || (fmt = st_dtype_fmt(st->dtype)) < 0)
				return 0;
		} else if (!find_checked(c, src, shapes[n][1], shapes[n][2], &fmt))
			return strstr(c->err, "not found") ? -ENOENT : -EINVAL;
		names[n] = t->name;
		fmts[n] = dst_format(c, t->name, fmt, 3, shapes[n][2]);
		n++;
	}
	int rc = layout_writer_experts(c->w, n, names, fmts, (const int64_t(*)[3])shapes);
	if (rc)
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	return rc;
}

static int write_layer(struct conv *c, int i)
{
	c->layer = i;
	int rc = layout_writer_file_begin(c->w, LAYOUT_KIND_LAYER, i);
	if (rc) {
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
		return rc;
	}
	bool planned = false;
	for (int k = 0; !rc && k < c->arch->n_layer; k++) {
		const struct arch_tensor *t = &c->arch->layer[k];
		if (t->need == ARCH_OPTIONAL && !json_is_true(json_object_get(c->config, t->hf_key)))
			continue; /* config.json says this checkpoint has none */
		if (arch_is_experts(t) && !planned && (rc = plan_experts(c, i)))
			break;
		planned |= arch_is_experts(t);
		char src[256];
		snprintf(src, sizeof(src), "model.layers.%d.%s", i, t->hf);
		rc = copy_row(c, src, t);
	}
	if (!rc && (rc = layout_writer_file_end(c->w)))
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	c->layer = -1;
	return rc;
}

static json_t *load_json(const char *dir, const char *name, bool required, char *err, size_t errlen, int *rc)
{
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	*rc = 0;
	if (stat(path, &st)) {
		if (required) {
			snprintf(err, errlen, "%s: not found", path);
			*rc = -ENOENT;
		}
		return NULL;
	}
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	if (!json_is_object(j)) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, j ? "not a JSON object" : je.text);
		json_decref(j);
		*rc = -EINVAL;
		return NULL;
	}
	return j;
}

/* Tokenizer files, chat template and generation defaults go into the output beside the weights. */
static int copy_extras(struct conv *c, json_t *config, json_t *gen, json_t *extra)
{
	char path[4096];
	struct stat st;
	int rc = 0;
	json_object_set_new(extra, "source", json_pack("{s:s, s:O}", "format", "hf-safetensors", "config", config));
	if (gen)
		json_object_set(extra, "generation", gen);
	json_t *tok = json_object();
	json_object_set_new(extra, "tokenizer", tok);
	snprintf(path, sizeof(path), "%s/tokenizer.json", c->dir);
	if (stat(path, &st) == 0) {
		if ((rc = layout_writer_copy_file(c->w, path, "tokenizer.json")))
			return rc;
		json_object_set_new(tok, "file", json_string("tokenizer.json"));
	}
	int jrc;
	json_t *tc = load_json(c->dir, "tokenizer_config.json", false, c->err, c->errlen, &jrc);
	if (jrc)
		return jrc;
	if (tc) {
		snprintf(path, sizeof(path), "%s/tokenizer_config.json", c->dir);
		rc = layout_writer_copy_file(c->w, path, "tokenizer_config.json");
		json_object_set_new(tok, "config_file", json_string("tokenizer_config.json"));
	}
	/* The chat template: chat_template.jinja beside the weights, else tokenizer_config's chat_template
	 * (a string, or a list of {name, template} of which "default" is the one used for chat). */
	const char *tmpl = chat_template_of_config(tc);
	snprintf(path, sizeof(path), "%s/chat_template.jinja", c->dir);
	if (!rc && stat(path, &st) == 0)
		rc = layout_writer_copy_file(c->w, path, "chat_template.jinja");
	else if (!rc && tmpl)
		rc = layout_writer_write_text(c->w, "chat_template.jinja", tmpl, strlen(tmpl));
	if (!rc && (tmpl || stat(path, &st) == 0))
		json_object_set_new(extra, "chat_template", json_pack("{s:s}", "file", "chat_template.jinja"));
	json_decref(tc);
	if (rc)
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	return rc;
}

int convert_hf(const char *hf_dir, const char *out_dir, bool force, bool lz4, const char *quant,
	       const char *imatrix, char *err, size_t errlen)
{
	struct conv c = {.dir = hf_dir, .err = err, .errlen = errlen, .layer = -1, .im_path = imatrix};
	err[0] = 0;
	int rc;
	if (quant && (rc = quant_mix_open(quant, imatrix != NULL, &c.mix, err, errlen)))
		return rc;
	if (imatrix && (rc = imatrix_read(&c.im, imatrix, err, errlen)))
		return rc;
	char cpath[4096];
	snprintf(cpath, sizeof(cpath), "%s/config.json", hf_dir);
	json_t *config = load_json(hf_dir, "config.json", true, err, errlen, &rc);
	json_t *gen = config ? load_json(hf_dir, "generation_config.json", false, err, errlen, &rc) : NULL;
	json_t *extra = json_object();
	c.config = config;
	if (rc || (rc = hf_config_parse(config, gen, cpath, &c.hp, &c.arch, err, errlen)))
		goto out;
	if ((rc = hfq_config_read(config, hf_dir, &c.q, err, errlen)))
		goto out;
	if ((rc = st_open_dir(&c.st, hf_dir, err, errlen)))
		goto out;
	if (c.q.method == HFQ_NONE)
		hfq_config_from_tensors(&c.st, &c.q);
	if (c.q.method != HFQ_NONE && quant) {
		snprintf(err, errlen, "--quant %s: %s is already quantized (%s); converting it keeps its values exactly", quant,
			 hf_dir, c.q.name);
		rc = -EINVAL;
		goto out;
	}
	char head_base[256];
	snprintf(head_base, sizeof(head_base), "%.*s", (int)strlen(arch_output.hf) - 7, arch_output.hf);
	if (!c.hp.tied_embeddings && !st_find(&c.st, arch_output.hf) &&
	    !(c.q.method != HFQ_NONE && hfq_present(&c.q, &c.st, head_base))) { /* EXL2 quantizes the head */
		snprintf(err, errlen, "%s: tensor %s not found and tie_word_embeddings is false", hf_dir, arch_output.hf);
		rc = -ENOENT;
		goto out;
	}
	if ((rc = layout_writer_begin(&c.w, out_dir, force, err, errlen)))
		goto out;
	if ((rc = layout_writer_set_lz4(c.w, lz4))) {
		snprintf(err, errlen, "%s", layout_writer_error(c.w));
		goto out;
	}
	progress_begin(&c.prog, "convert", c.hp.n_layers + 2);
	rc = layout_writer_file_begin(c.w, LAYOUT_KIND_EMBED, -1);
	if (!rc)
		rc = copy_row(&c, arch_token_embd.hf, &arch_token_embd);
	if (!rc)
		rc = layout_writer_file_end(c.w);
	progress_update(&c.prog, 1, layout_writer_bytes_written(c.w));
	for (int i = 0; !rc && i < c.hp.n_layers; i++) {
		rc = write_layer(&c, i);
		progress_update(&c.prog, i + 2, layout_writer_bytes_written(c.w));
	}
	if (!rc)
		rc = layout_writer_file_begin(c.w, LAYOUT_KIND_HEAD, -1);
	if (!rc)
		rc = copy_row(&c, arch_output_norm.hf, &arch_output_norm);
	if (!rc)
		rc = c.hp.tied_embeddings ? layout_writer_alias(c.w, arch_output.name, -1, arch_token_embd.name)
					  : copy_row(&c, arch_output.hf, &arch_output);
	if (!rc)
		rc = layout_writer_file_end(c.w);
	progress_update(&c.prog, c.hp.n_layers + 2, layout_writer_bytes_written(c.w));
	progress_end(&c.prog);
	if (!rc)
		rc = copy_extras(&c, config, gen, extra);
	if (!rc)
		rc = imatrix_unused(&c.im, imatrix, c.im_used, err, errlen);
	if (!rc) {
		rc = layout_writer_finish(c.w, &c.hp, extra);
		extra = NULL;
		if (rc)
			snprintf(err, errlen, "%s", layout_writer_error(c.w));
		else
			c.w = NULL; /* finish released it */
		if (!rc && c.n_act_f32)
			fprintf(stderr, "ferry: %s: %d of %d %s matrices have act-order groups whose sizes are not whole "
					"blocks of 32 and were written as F32 (exact, 8x their packed size)\n",
				hf_dir, c.n_act_f32, c.n_quantized, c.q.name);
		if (!rc && c.n_fallback)
			fprintf(stderr, "ferry: %s: %d matrices have rows that are not whole blocks of --quant %s's format and "
					"took llama.cpp's fallback format (ferry inspect lists them)\n",
				hf_dir, c.n_fallback, quant);
	}
	if (rc && !err[0])
		snprintf(err, errlen, "%s", layout_writer_error(c.w));
out:
	if (c.w)
		layout_writer_abort(c.w); /* removes OUT.tmp */
	json_decref(extra);
	json_decref(config);
	json_decref(gen);
	st_close(&c.st);
	layout_hparams_free(&c.hp);
	imatrix_free(&c.im);
	return rc;
}
