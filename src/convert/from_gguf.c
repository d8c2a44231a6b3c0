/*
 * convert_gguf.c: a GGUF file (llama.cpp's format; split sets too) -> model.ferry.
 *
 * Hyper-parameters come from the {arch}.* metadata, the tokenizer is kept as tokenizer.gguf (the file's
 * tokenizer.* keys, copied byte for byte into a GGUF with no tensors), the chat template from
 * tokenizer.chat_template (or, for Gemma 3 files that carry none, the Gemma 3 template; --chat-template
 * overrides both). Tensors are regrouped into per-layer files and copied block for block: no
 * re-quantization. Which architectures and tensors are accepted, which are required, and their shapes come
 * from the architecture table (src/layout/arch.c); each tensor's type and shape are checked before anything
 * is written for it, and a type ferry cannot compute with is refused by name.
 *
 * GGUF facts that matter here: ne[0] is the contiguous dimension (a Linear [out, in] is ne = [in, out]);
 * llama.cpp permutes the rows of llama's q and k so that RoPE pairs are interleaved (x[2i], x[2i+1]), which
 * ferry runs as the "norm" rope style rather than undoing it (the table's gguf_rope); qwen2 and gemma3 keep
 * rotate-half ("neox").
 * Gemma's norm weights already include the +1 of its (1 + w) RMSNorm.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "convert/chat_default.h"
#include "convert/convert.h"
#include "convert/imatrix.h"
#include "convert/quantize.h"
#include "layout/arch.h"
#include "layout/gguf.h"
#include "layout/layout.h"
#include "base/progress.h"
#include "base/util.h"

struct gconv {
	const char *path;
	struct gguf g;
	struct layout_writer *w;
	struct layout_hparams hp;
	char arch[32];         /* general.architecture, the prefix of the metadata keys */
	const struct arch *a;
	struct progress prog;
	const struct quant_mix *mix; /* NULL: keep every tensor's type */
	int layer;                   /* the layer being written, -1 outside */
	int n_fallback;              /* matrices whose rows are not whole blocks of the mix's format */
	struct imatrix im;           /* --imatrix (n 0: none) */
	const char *im_path;
	int im_used;                 /* matrices it weighted */
	int n_kept;                  /* matrices already quantized, kept as they are under a mix */
	char *err;
	size_t errlen;
};

/* {arch}.suffix as an integer: 0, -ENOENT when absent (def is used), or -EINVAL with a message. */
static int arch_int(struct gconv *c, const char *suffix, int64_t def, int64_t lo, int64_t hi, int *out)
{
	char key[128];
	int64_t v = def;
	snprintf(key, sizeof(key), "%s.%s", c->arch, suffix);
	int rc = gguf_get_int(&c->g, key, &v);
	if (rc == -ENOENT && def < 0) {
		snprintf(c->err, c->errlen, "%s: metadata key %s is missing", c->path, key);
		return -EINVAL;
	}
	if ((rc && rc != -ENOENT) || v < lo || v > hi) {
		const struct gguf_kv *kv = gguf_find(&c->g, key);
		snprintf(c->err, c->errlen, "%s: metadata key %s must be %s in %lld..%lld", c->path, key,
			 kv && kv->type == GGUF_TYPE_ARRAY ? "one integer (per-layer arrays are not supported)"
							   : "an integer",
			 (long long)lo, (long long)hi);
		return -EINVAL;
	}
	*out = (int)v;
	return 0;
}

static int arch_float(struct gconv *c, const char *suffix, double def, double *out)
{
	char key[128];
	snprintf(key, sizeof(key), "%s.%s", c->arch, suffix);
	*out = def;
	int rc = gguf_get_float(&c->g, key, out);
	if (rc == -ENOENT && !isnan(def))
		return 0;
	if (rc || !isfinite(*out)) {
		snprintf(c->err, c->errlen, "%s: metadata key %s %s", c->path, key,
			 rc == -ENOENT ? "is missing" : "must be a finite number");
		return -EINVAL;
	}
	return 0;
}

static int read_rope(struct gconv *c)
{
	struct rope_params *r = &c->hp.rope;
	int rc = arch_float(c, "rope.freq_base", 10000.0, &r->theta);
	int dim = c->hp.head_dim;
	rc = rc ? rc : arch_int(c, "rope.dimension_count", c->hp.head_dim, 2, LAYOUT_MAX_HEAD_DIM, &dim);
	if (rc)
		return rc;
	if (dim != c->hp.head_dim) {
		snprintf(c->err, c->errlen, "%s: %s.rope.dimension_count %d differs from the head size %d (partial "
			 "rotary embeddings are not supported)", c->path, c->arch, dim, c->hp.head_dim);
		return -ENOTSUP;
	}
	r->dim = dim;
	r->style = c->a->gguf_rope;
	r->factor = 1;
	r->truncate = true;
	char key[128];
	struct gguf_str type = {"none", 4};
	snprintf(key, sizeof(key), "%s.rope.scaling.type", c->arch);
	gguf_get_str(&c->g, key, &type);
	double factor = 1, linear = 0;
	rc = arch_float(c, "rope.scaling.factor", 1.0, &factor);
	rc = rc ? rc : arch_float(c, "rope.scale_linear", 0.0, &linear); /* older files */
	if (rc)
		return rc;
	if (linear > 0 && gguf_str_eq(type, "none")) {
		type = (struct gguf_str){"linear", 6};
		factor = linear;
	}
	if (gguf_str_eq(type, "linear") && factor != 1) {
		r->type = ROPE_LINEAR;
		r->factor = factor;
	} else if (gguf_str_eq(type, "yarn")) {
		/* llama.cpp's YaRN: the correction dims floored and ceiled (truncate), mscale 0.1 ln(factor) + 1 */
		r->type = ROPE_YARN;
		r->factor = factor;
		rc = arch_int(c, "rope.scaling.original_context_length", -1, 1, 1 << 30, &r->original_max_pos);
		rc = rc ? rc : arch_float(c, "rope.scaling.yarn_beta_fast", 32.0, &r->beta_fast);
		rc = rc ? rc : arch_float(c, "rope.scaling.yarn_beta_slow", 1.0, &r->beta_slow);
		if (rc)
			return rc;
		if (factor < 1) {
			snprintf(c->err, c->errlen, "%s: %s.rope.scaling.factor %g must be >= 1", c->path, c->arch, factor);
			return -EINVAL;
		}
	} else if (!gguf_str_eq(type, "none") && !gguf_str_eq(type, "linear")) {
		snprintf(c->err, c->errlen, "%s: %s is '%.*s'; ferry converts GGUF files with rope scaling none, linear or "
			 "yarn", c->path, key, (int)(type.n > 40 ? 40 : type.n), type.p);
		return -ENOTSUP;
	}
	/* Llama 3.1+ files carry their frequency scaling as the tensor rope_freqs (theta_i divided by it). */
	const struct gguf_tensor *t = gguf_tensor_find(&c->g, "rope_freqs.weight");
	if (t) {
		if (t->type != 0 || t->n_dims != 1 || t->ne[0] != (uint64_t)dim / 2) {
			snprintf(c->err, c->errlen, "%s: tensor rope_freqs.weight must be F32 [%d]", c->path, dim / 2);
			return -EINVAL;
		}
		double *f = malloc(sizeof(double) * (size_t)(dim / 2));
		if (!f)
			return -ENOMEM;
		for (int i = 0; i < dim / 2; i++) {
			float v;
			memcpy(&v, t->data + 4 * i, 4);
			f[i] = v;
		}
		r->factors = f;
	}
	return 0;
}

/* Gemma 3: every 6th layer (5, 11, ...) is global, the others see the last sliding_window tokens with their
 * own rope base; GELU-tanh MLP; embeddings scaled by sqrt(d_model). */
static int read_gemma3(struct gconv *c)
{
	struct layout_hparams *hp = &c->hp;
	int window, pattern;
	double softcap, attn_softcap, local_base;
	int rc = arch_int(c, "attention.sliding_window", -1, 1, 1 << 30, &window);
	rc = rc ? rc : arch_int(c, "attention.sliding_window_pattern", 6, 1, 1 << 20, &pattern);
	rc = rc ? rc : arch_float(c, "final_logit_softcapping", 0.0, &softcap);
	rc = rc ? rc : arch_float(c, "attn_logit_softcapping", 0.0, &attn_softcap);
	rc = rc ? rc : arch_float(c, "rope.freq_base_swa", 10000.0, &local_base);
	if (rc)
		return rc;
	if (attn_softcap > 0) {
		snprintf(c->err, c->errlen, "%s: %s.attn_logit_softcapping is set; ferry does not cap attention scores",
			 c->path, c->arch);
		return -ENOTSUP;
	}
	for (int i = 0; i < hp->n_layers; i++)
		hp->window[i] = i % pattern < pattern - 1 ? window : 0;
	hp->has_rope_local = true;
	hp->rope_local = (struct rope_params){.type = ROPE_DEFAULT, .style = ROPE_STYLE_NEOX, .theta = local_base,
					      .dim = hp->head_dim, .factor = 1, .truncate = true};
	hp->act = ACT_GELU_TANH;
	hp->embed_scale = sqrt((double)hp->d_model);
	hp->final_softcap = softcap > 0 ? softcap : 0;
	/* llama.cpp's rule: Gemma 3 27B (62 layers) scales scores by 1/sqrt(d_model / n_heads), the others by
	 * 1/sqrt(head_dim) (transformers: query_pre_attn_scalar). */
	if (hp->n_layers == 62)
		hp->attn_scale = 1.0 / sqrt((double)hp->d_model / hp->n_heads);
	return arch_float(c, "attention.scale", hp->attn_scale, &hp->attn_scale); /* explicit wins */
}

/* gpt-oss: layers 0, 2, ... see the last sliding_window tokens (llama.cpp's swa pattern 2), the rest all;
 * the clamped SwiGLU; YaRN's correction dims exact (not truncated), as transformers' GptOssConfig and the
 * reference implementation compute them. */
static int read_gptoss(struct gconv *c)
{
	struct layout_hparams *hp = &c->hp;
	int window, pattern;
	int rc = arch_int(c, "attention.sliding_window", -1, 1, 1 << 30, &window);
	rc = rc ? rc : arch_int(c, "attention.sliding_window_pattern", 2, 1, 1 << 20, &pattern);
	if (rc)
		return rc;
	for (int i = 0; i < hp->n_layers; i++)
		hp->window[i] = i % pattern < pattern - 1 ? window : 0;
	hp->act = ACT_SWIGLU_OAI;
	hp->rope.truncate = false;
	return 0;
}

static void token_id(struct gconv *c, const char *key, int *out)
{
	int64_t v;
	if (gguf_get_int(&c->g, key, &v) == 0 && v >= 0 && v < c->hp.vocab)
		*out = (int)v;
}

static int read_hparams(struct gconv *c)
{
	struct layout_hparams *hp = &c->hp;
	struct gguf_str arch;
	if (gguf_get_str(&c->g, "general.architecture", &arch) || arch.n == 0 || arch.n >= sizeof(c->arch)) {
		snprintf(c->err, c->errlen, "%s: metadata key general.architecture is missing or not a short string",
			 c->path);
		return -EINVAL;
	}
	memcpy(c->arch, arch.p, arch.n);
	c->arch[arch.n] = 0;
	int n_exp = 0;
	int rc = arch_int(c, "expert_count", 0, 0, LAYOUT_MAX_EXPERTS, &n_exp);
	if (rc)
		return rc;
	c->a = arch_find_gguf(c->arch, n_exp > 0);
	if (!c->a && arch_find(ARCH_KEY_GGUF, c->arch)) {
		snprintf(c->err, c->errlen, "%s: %s.expert_count %d: ferry runs %s models %s experts", c->path, c->arch,
			 n_exp, c->arch, n_exp > 0 ? "without" : "with");
		return -ENOTSUP;
	}
	if (!c->a) {
		char list[256];
		snprintf(c->err, c->errlen, "%s: architecture '%s' is not supported (%s)", c->path, c->arch,
			 arch_list(ARCH_KEY_GGUF, list, sizeof(list)));
		return -ENOTSUP;
	}
	snprintf(hp->arch, sizeof(hp->arch), "%s", c->a->name);
	const int MAXD = LAYOUT_MAX_DIM;
	rc = arch_int(c, "block_count", -1, 1, 100000, &hp->n_layers);
	rc = rc ? rc : arch_int(c, "embedding_length", -1, 1, MAXD, &hp->d_model);
	rc = rc ? rc : arch_int(c, "feed_forward_length", -1, 1, MAXD, &hp->ffn_dim);
	rc = rc ? rc : arch_int(c, "attention.head_count", -1, 1, MAXD, &hp->n_heads);
	rc = rc ? rc : arch_int(c, "attention.head_count_kv", hp->n_heads, 1, MAXD, &hp->n_kv_heads);
	rc = rc ? rc : arch_int(c, "attention.key_length", hp->d_model / hp->n_heads, 2, LAYOUT_MAX_HEAD_DIM,
				&hp->head_dim);
	int vlen = 0;
	rc = rc ? rc : arch_int(c, "attention.value_length", hp->head_dim, 1, LAYOUT_MAX_HEAD_DIM, &vlen);
	rc = rc ? rc : arch_int(c, "context_length", 2048, 1, 1 << 30, &hp->max_pos);
	rc = rc ? rc : arch_float(c, "attention.layer_norm_rms_epsilon", NAN, &hp->rms_eps);
	if (rc)
		return rc;
	if (n_exp) {
		hp->n_experts = n_exp;
		rc = arch_int(c, "expert_used_count", -1, 1, n_exp, &hp->n_experts_used);
		rc = rc ? rc : arch_int(c, "expert_feed_forward_length", hp->ffn_dim, 1, MAXD, &hp->expert_ffn);
		char key[96];
		snprintf(key, sizeof(key), "%s.expert_weights_norm", c->arch);
		hp->moe_norm_topk = c->a->gguf_norm_topk;
		if (!rc && arch_slot_tensor(c->a, ARCH_SLOT_W_GATE_SHEXP))
			rc = arch_int(c, "expert_shared_feed_forward_length", hp->ffn_dim, 1, MAXD, &hp->shared_ffn);
		if (!rc && gguf_get_bool(&c->g, key, &hp->moe_norm_topk) == -EINVAL) {
			snprintf(c->err, c->errlen, "%s: metadata key %s must be a bool", c->path, key);
			rc = -EINVAL;
		}
		if (rc)
			return rc;
	}
	if (vlen != hp->head_dim) {
		snprintf(c->err, c->errlen, "%s: %s.attention.value_length %d differs from key_length %d", c->path,
			 c->arch, vlen, hp->head_dim);
		return -ENOTSUP;
	}
	const struct gguf_tensor *emb = gguf_tensor_find(&c->g, arch_token_embd.name);
	if (!emb || emb->n_dims != 2 || emb->ne[1] > (uint64_t)MAXD) {
		snprintf(c->err, c->errlen, "%s: tensor %s is missing or not 2-D", c->path, arch_token_embd.name);
		return -EINVAL;
	}
	hp->vocab = (int)emb->ne[1];
	hp->tied_embeddings = gguf_tensor_find(&c->g, arch_output.name) == NULL;
	hp->window = calloc((size_t)hp->n_layers, sizeof(int));
	if (!hp->window)
		return -ENOMEM;
	rc = read_rope(c);
	rc = rc ? rc : c->a->hparams == ARCH_HPARAMS_GEMMA3 ? read_gemma3(c) : 0;
	rc = rc ? rc : c->a->hparams == ARCH_HPARAMS_GPTOSS ? read_gptoss(c) : 0;
	if (rc)
		return rc;
	hp->bos_id = -1;
	token_id(c, "tokenizer.ggml.bos_token_id", &hp->bos_id);
	const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
				  "tokenizer.ggml.eom_token_id"};
	for (size_t i = 0; i < sizeof(eos_keys) / sizeof(eos_keys[0]); i++) {
		int id = -1;
		token_id(c, eos_keys[i], &id);
		bool dup = false;
		for (int j = 0; j < hp->n_eos; j++)
			dup = dup || hp->eos_ids[j] == id;
		if (id >= 0 && !dup)
			hp->eos_ids[hp->n_eos++] = id;
	}
	return layout_hparams_check(hp, c->err, c->errlen);
}

static int writer_err(struct gconv *c, int rc)
{
	if (rc && !c->err[0])
		snprintf(c->err, c->errlen, "%s", layout_writer_error(c->w));
	return rc;
}

/* Drops the pages of [p, p + n) from the resident set (whole pages inside it only). */
static void drop_pages(const uint8_t *p, uint64_t n, long page)
{
	uintptr_t a = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
	uintptr_t e = (uintptr_t)(p + n) & ~((uintptr_t)page - 1);
	if (e > a)
		madvise((void *)a, e - a, MADV_DONTNEED);
}

struct qsink {
	struct gconv *c;
	const uint8_t *data;
	uint64_t row_bytes; /* of the source */
	long page;
};

static int qsink_write(const void *out, size_t bytes, int64_t r0, int64_t n, void *ctx)
{
	struct qsink *q = ctx;
	int rc = writer_err(q->c, layout_writer_tensor_write(q->c->w, out, bytes));
	drop_pages(q->data + (uint64_t)r0 * q->row_bytes, (uint64_t)n * q->row_bytes, q->page);
	return rc;
}

/* GGUF tensor t (n_mat matrices of rows / n_mat rows of cols values, F32/F16/BF16) quantized to qfmt, each
 * matrix (expert) weighted by its own row of the imatrix. */
static int write_quantized(struct gconv *c, const struct gguf_tensor *t, const char *dst, int sfmt, int qfmt,
			   int64_t n_mat, int64_t rows, int64_t cols, long page)
{
	uint64_t rb = (uint64_t)cols * (sfmt == WFMT_F32 ? 4 : 2);
	int64_t mrows = rows / n_mat;
	int rc = 0;
	for (int64_t e = 0; !rc && e < n_mat; e++) {
		const uint8_t *src = t->data + (uint64_t)(e * mrows) * rb;
		struct qsink q = {c, src, rb, page};
		const float *imp;
		rc = imatrix_lookup(&c->im, c->im_path, dst, c->layer, n_mat > 1 ? (int)e : -1, cols, &imp, &c->im_used,
				    c->err, c->errlen);
		rc = rc ? rc : quant_matrix(qfmt, src, sfmt, mrows, cols, imp, qsink_write, &q);
	}
	if (rc == -ENOMEM)
		snprintf(c->err, c->errlen, "out of memory quantizing rows of %lld values", (long long)cols);
	return rc ? rc : writer_err(c, layout_writer_tensor_end(c->w));
}

/* The format tensor dst of source format fmt is written in: the --quant mix's pick for an F32/F16/BF16
 * matrix, else the source's (also where the mix picks F16 for rows without whole blocks). */
static int dst_format(struct gconv *c, const char *dst, int fmt, int ndim, int64_t cols)
{
	bool plain = fmt == WFMT_F32 || fmt == WFMT_F16 || fmt == WFMT_BF16;
	int qfmt = c->mix && ndim >= 2 && plain ? quant_mix_pick_im(c->mix, dst, c->layer, &c->hp, cols, c->im.n > 0) : fmt;
	return qfmt == WFMT_F16 && fmt != WFMT_F16 ? fmt : qfmt;
}

/* Plans layer l's stacked experts expert-major (layout_writer_experts) in the formats copy_tensor will
 * write; a tensor missing or of a type ferry cannot read is left to copy_tensor to report. */
static int plan_experts(struct gconv *c, int l)
{
	const char *names[4];
	int fmts[4], n = 0;
	int64_t shapes[4][3];
	for (int s = 0; s < ARCH_SLOT_COUNT && n < 4; s++) {
		const struct arch_tensor *t = arch_slot_tensor(c->a, (enum arch_slot)s);
		char src[96];
		if (!t || !arch_is_experts(t))
			continue;
		snprintf(src, sizeof(src), "blk.%d.%s", l, t->name);
		const struct gguf_tensor *g = gguf_tensor_find(&c->g, src);
		const struct wfmt_ggml *gt = g ? wfmt_ggml_find(g->type) : NULL;
		if (!gt || gt->wfmt < 0)
			return 0;
		arch_shape(&c->hp, t, shapes[n]);
		names[n] = t->name;
		fmts[n] = dst_format(c, t->name, gt->wfmt, 3, shapes[n][2]);
		n++;
	}
	return writer_err(c, layout_writer_experts(c->w, n, names, fmts, (const int64_t(*)[3])shapes));
}

/* Copies GGUF tensor `src` as `dst` after checking its type and its shape (ndim dims, outermost first;
 * GGUF's ne is innermost first). */
static int copy_tensor(struct gconv *c, const char *src, const char *dst, int ndim, const int64_t *shape)
{
	const struct gguf_tensor *t = gguf_tensor_find(&c->g, src);
	if (!t) {
		snprintf(c->err, c->errlen, "%s: tensor %s is missing", c->path, src);
		return -ENOENT;
	}
	const struct wfmt_ggml *gt = wfmt_ggml_find(t->type);
	int fmt = gt ? gt->wfmt : -1;
	if (fmt < 0) {
		char fmts[128];
		wfmt_names(fmts, sizeof(fmts), WFMT_NAMES_GGUF);
		snprintf(c->err, c->errlen, "%s: tensor %s has type %s (%u), which ferry does not support (%s)", c->path,
			 src, gguf_ggml_type_name(t->type), t->type, fmts);
		return -ENOTSUP;
	}
	/* a matrix of one row [1, n] is a vector of n in GGUF (Qwen2-MoE's shared expert gate): the same bytes */
	int gdim = ndim == 2 && shape[0] == 1 && t->n_dims == 1 ? 1 : ndim;
	bool same = (int)t->n_dims == gdim;
	for (int d = 0; same && d < gdim; d++)
		same = t->ne[d] == (uint64_t)shape[ndim - 1 - d];
	if (!same) {
		char got[96] = "", want[96] = "";
		for (int d = 0; d < (int)t->n_dims; d++)
			snprintf(got + strlen(got), sizeof(got) - strlen(got), d ? ", %llu" : "%llu",
				 (unsigned long long)t->ne[d]);
		for (int d = 0; d < ndim; d++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), d ? ", %lld" : "%lld",
				 (long long)shape[ndim - 1 - d]);
		snprintf(c->err, c->errlen, "%s: tensor %s has ne [%s], the hyper-parameters imply [%s]", c->path, src, got,
			 want);
		return -EINVAL;
	}
	int64_t cols = shape[ndim - 1], rows = 1;
	for (int d = 0; d < ndim - 1; d++)
		rows *= shape[d];
	int qfmt = dst_format(c, dst, fmt, ndim, cols);
	c->n_kept += c->mix && ndim >= 2 && !(fmt == WFMT_F32 || fmt == WFMT_F16 || fmt == WFMT_BF16);
	c->n_fallback += qfmt != fmt && quant_mix_fell_back(c->mix, dst, c->layer, &c->hp, cols, c->im.n > 0);
	int rc = writer_err(c, layout_writer_tensor_begin(c->w, dst, qfmt, ndim, shape));
	long page = sysconf(_SC_PAGESIZE);
	if (qfmt != fmt)
		return rc ? rc : write_quantized(c, t, dst, fmt, qfmt, ndim == 3 ? shape[0] : 1, rows, cols, page);
	enum { CHUNK = 16 << 20 };
	for (uint64_t off = 0; !rc && off < t->bytes; off += CHUNK) {
		uint64_t n = t->bytes - off < CHUNK ? t->bytes - off : CHUNK;
		rc = writer_err(c, layout_writer_tensor_write(c->w, t->data + off, (size_t)n));
		/* Drop the copied pages of the mapping: peak RSS stays near one chunk whatever the model size. */
		drop_pages(t->data + off, n, page);
	}
	return rc ? rc : writer_err(c, layout_writer_tensor_end(c->w));
}

/* Every tensor must be one ferry uses: an unknown one means a model variant this forward does not run. */
static int check_names(struct gconv *c)
{
	for (uint64_t i = 0; i < c->g.n_tensors; i++) {
		const struct gguf_tensor *t = &c->g.tensors[i];
		char name[80];
		snprintf(name, sizeof(name), "%.*s", (int)t->name.n, t->name.p);
		bool ok = !strcmp(name, arch_token_embd.name) || !strcmp(name, arch_output_norm.name) ||
			  !strcmp(name, arch_output.name) || !strcmp(name, "rope_freqs.weight");
		int layer, off = 0;
		if (!ok && sscanf(name, "blk.%d.%n", &layer, &off) == 1 && off > 0 && layer >= 0 &&
		    layer < c->hp.n_layers)
			for (int k = 0; !ok && k < c->a->n_layer; k++)
				ok = strcmp(name + off, c->a->layer[k].name) == 0;
		if (!ok) {
			snprintf(c->err, c->errlen, "%s: tensor %s is not part of the %s model ferry runs", c->path, name,
				 c->arch);
			return -ENOTSUP;
		}
	}
	return 0;
}

/* GGUF tensor src as table row t, shaped by the hyper-parameters. */
static int copy_row(struct gconv *c, const char *src, const struct arch_tensor *t)
{
	int64_t shape[3];
	int ndim = arch_shape(&c->hp, t, shape);
	return copy_tensor(c, src, t->name, ndim, shape);
}

/* A layer's tensors in slot order (arch.h); optional ones when the file has them. */
static int write_layer(struct gconv *c, int l)
{
	c->layer = l;
	int rc = writer_err(c, layout_writer_file_begin(c->w, LAYOUT_KIND_LAYER, l));
	bool planned = false;
	for (int s = 0; !rc && s < ARCH_SLOT_COUNT; s++) {
		const struct arch_tensor *t = arch_slot_tensor(c->a, (enum arch_slot)s);
		char src[96];
		if (!t)
			continue;
		if (arch_is_experts(t) && !planned && (rc = plan_experts(c, l)))
			break;
		planned |= arch_is_experts(t);
		snprintf(src, sizeof(src), "blk.%d.%s", l, t->name);
		if (t->need == ARCH_OPTIONAL && !gguf_tensor_find(&c->g, src))
			continue;
		rc = copy_row(c, src, t);
	}
	c->layer = -1;
	return rc ? rc : writer_err(c, layout_writer_file_end(c->w));
}

/* tokenizer.gguf: a GGUF v3 with no tensors holding the tokenizer.* keys (and general.architecture/name),
 * each copied as stored; tokenizer_open reads it. */
static bool tokenizer_key(const struct gguf_kv *kv)
{
	return (kv->key.n > 10 && !memcmp(kv->key.p, "tokenizer.", 10)) || gguf_str_eq(kv->key, "general.architecture") ||
	       gguf_str_eq(kv->key, "general.name");
}

static int write_tokenizer(struct gconv *c)
{
	size_t n = 24, n_kv = 0;
	for (uint64_t i = 0; i < c->g.n_kv; i++)
		if (tokenizer_key(&c->g.kv[i])) {
			n += c->g.kv[i].raw_n;
			n_kv++;
		}
	if (!gguf_find(&c->g, "tokenizer.ggml.model")) {
		snprintf(c->err, c->errlen, "%s: no tokenizer (metadata key tokenizer.ggml.model is missing)", c->path);
		return -EINVAL;
	}
	uint8_t *buf = malloc(n), *p = buf;
	if (!buf)
		return -ENOMEM;
	uint32_t head32[2] = {0x46554747u, 3};
	uint64_t head64[2] = {0, n_kv};
	memcpy(p, head32, 8);
	memcpy(p + 8, head64, 16);
	p += 24;
	for (uint64_t i = 0; i < c->g.n_kv; i++)
		if (tokenizer_key(&c->g.kv[i])) {
			memcpy(p, c->g.kv[i].raw, c->g.kv[i].raw_n);
			p += c->g.kv[i].raw_n;
		}
	int rc = writer_err(c, layout_writer_write_text(c->w, "tokenizer.gguf", (const char *)buf, n));
	free(buf);
	return rc;
}

/* The chat template: --chat-template FILE, else tokenizer.chat_template, else the architecture's built-in
 * one (Gemma 3's for gemma3 files). */
static int write_template(struct gconv *c, const char *template_file, json_t *extra)
{
	struct gguf_str t = {0};
	const char *def, *def_name;
	int rc = 0;
	if (template_file) {
		rc = writer_err(c, layout_writer_copy_file(c->w, template_file, "chat_template.jinja"));
	} else if (gguf_get_str(&c->g, "tokenizer.chat_template", &t) == 0) {
		rc = writer_err(c, layout_writer_write_text(c->w, "chat_template.jinja", t.p, t.n));
	} else if ((def = chat_default_of(c->a->name, &def_name))) {
		fprintf(stderr, "ferry: %s has no tokenizer.chat_template; using the %s chat template\n", c->path,
			def_name);
		rc = writer_err(c, layout_writer_write_text(c->w, "chat_template.jinja", def, strlen(def)));
	} else {
		return 0;
	}
	if (!rc)
		json_object_set_new(extra, "chat_template", json_pack("{s:s}", "file", "chat_template.jinja"));
	return rc;
}

static int write_model(struct gconv *c, const char *template_file, json_t *extra)
{
	const struct layout_hparams *hp = &c->hp;
	progress_begin(&c->prog, "convert", hp->n_layers + 2);
	int rc = writer_err(c, layout_writer_file_begin(c->w, LAYOUT_KIND_EMBED, -1));
	rc = rc ? rc : copy_row(c, arch_token_embd.name, &arch_token_embd);
	rc = rc ? rc : writer_err(c, layout_writer_file_end(c->w));
	progress_update(&c->prog, 1, layout_writer_bytes_written(c->w));
	for (int l = 0; !rc && l < hp->n_layers; l++) {
		rc = write_layer(c, l);
		progress_update(&c->prog, l + 2, layout_writer_bytes_written(c->w));
	}
	rc = rc ? rc : writer_err(c, layout_writer_file_begin(c->w, LAYOUT_KIND_HEAD, -1));
	rc = rc ? rc : copy_row(c, arch_output_norm.name, &arch_output_norm);
	if (!rc)
		rc = hp->tied_embeddings
			     ? writer_err(c, layout_writer_alias(c->w, arch_output.name, -1, arch_token_embd.name))
			     : copy_row(c, arch_output.name, &arch_output);
	rc = rc ? rc : writer_err(c, layout_writer_file_end(c->w));
	progress_update(&c->prog, hp->n_layers + 2, layout_writer_bytes_written(c->w));
	progress_end(&c->prog);
	rc = rc ? rc : write_tokenizer(c);
	rc = rc ? rc : write_template(c, template_file, extra);
	return rc;
}

int convert_gguf(const char *path, const char *out_dir, bool force, bool lz4, const char *template_file,
		 const char *quant, const char *imatrix, char *err, size_t errlen)
{
	struct gconv c = {.path = path, .err = err, .errlen = errlen, .layer = -1, .im_path = imatrix};
	err[0] = 0;
	json_t *extra = NULL;
	int rc = quant ? quant_mix_open(quant, imatrix != NULL, &c.mix, err, errlen) : 0;
	if (rc)
		return rc;
	rc = imatrix ? imatrix_read(&c.im, imatrix, err, errlen) : 0;
	if (rc)
		return rc;
	if ((rc = gguf_open(&c.g, path, err, errlen))) {
		imatrix_free(&c.im);
		return rc;
	}
	rc = read_hparams(&c);
	rc = rc ? rc : check_names(&c);
	if (!rc && template_file && !path_is_file(template_file)) {
		snprintf(err, errlen, "%s: chat template file not found", template_file);
		rc = -ENOENT;
	}
	rc = rc ? rc : layout_writer_begin(&c.w, out_dir, force, err, errlen);
	if (rc)
		goto out;
	/* where the model came from; a path or name that is not UTF-8 is left out (json_string* give NULL) */
	struct gguf_str name = {"", 0};
	gguf_get_str(&c.g, "general.name", &name);
	json_t *src = json_pack("{s:s, s:s}", "format", "gguf", "architecture", c.arch);
	json_object_set_new(src, "file", json_string(path));
	json_object_set_new(src, "name", json_stringn(name.p, (size_t)name.n));
	extra = json_pack("{s:o, s:{s:s}}", "source", src, "tokenizer", "file", "tokenizer.gguf");
	rc = extra ? 0 : -ENOMEM;
	rc = rc ? rc : writer_err(&c, layout_writer_set_lz4(c.w, lz4));
	rc = rc ? rc : write_model(&c, template_file, extra);
	rc = rc ? rc : imatrix_unused(&c.im, imatrix, c.im_used, err, errlen);
	if (!rc) {
		rc = layout_writer_finish(c.w, &c.hp, extra);
		extra = NULL;
		if (rc)
			writer_err(&c, rc);
		else
			c.w = NULL; /* finish released it */
		if (!rc && c.n_kept)
			fprintf(stderr, "ferry: %s: %d matrices were quantized already and are kept as they are (--quant %s "
					"applies to F32/F16/BF16 tensors: requantizing compounds the error)\n",
				path, c.n_kept, quant);
		if (!rc && c.n_fallback)
			fprintf(stderr, "ferry: %s: %d matrices have rows that are not whole blocks of --quant %s's format and "
					"took llama.cpp's fallback format (ferry inspect lists them)\n",
				path, c.n_fallback, quant);
	}
out:
	if (rc && c.w)
		writer_err(&c, rc);
	if (rc == -ENOMEM && !err[0])
		snprintf(err, errlen, "%s: out of memory", path);
	if (c.w)
		layout_writer_abort(c.w); /* removes OUT.tmp */
	json_decref(extra);
	layout_hparams_free(&c.hp);
	gguf_close(&c.g);
	imatrix_free(&c.im);
	return rc;
}
