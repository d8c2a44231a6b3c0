/*
 * hf_config.c: normalizes the config.json of the HF classes of the architecture table (src/layout/arch.c:
 * LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Gemma3ForCausalLM, the MoE classes, GptOssForCausalLM)
 * into layout_hparams. Defaults
 * are those of the transformers config classes when a key is absent (the table holds those that differ by
 * class). RoPE comes either as legacy rope_theta + rope_scaling or as transformers-5 rope_parameters.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/hf_config.h"

static int req_int(const json_t *c, const char *key, const char *path, int *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(c, key);
	if (!v) {
		snprintf(err, errlen, "%s: missing key '%s'", path, key);
		return -EINVAL;
	}
	if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > (1 << 30)) {
		snprintf(err, errlen, "%s: '%s' must be a positive integer", path, key);
		return -EINVAL;
	}
	*out = (int)json_integer_value(v);
	return 0;
}

static int opt_int(const json_t *c, const char *key, int def, const char *path, int *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(c, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	return req_int(c, key, path, out, err, errlen);
}

static int opt_num(const json_t *c, const char *key, double def, const char *path, double *out, char *err,
		   size_t errlen)
{
	const json_t *v = json_object_get(c, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return 0;
	}
	if (!json_is_number(v)) {
		snprintf(err, errlen, "%s: '%s' must be a number", path, key);
		return -EINVAL;
	}
	*out = json_number_value(v);
	return 0;
}

static int parse_rope(const json_t *c, const char *path, struct layout_hparams *hp, char *err, size_t errlen)
{
	struct rope_params *r = &hp->rope;
	memset(r, 0, sizeof(*r));
	r->style = ROPE_STYLE_NEOX; /* HF checkpoints use rotate-half */
	r->dim = hp->head_dim;
	r->factor = 1;
	r->truncate = true;
	/* legacy rope_scaling wins over transformers-5 rope_parameters when both are present, as in transformers */
	const json_t *s = json_object_get(c, "rope_scaling");
	const char *skey = "rope_scaling";
	if (!json_is_object(s)) {
		s = json_object_get(c, "rope_parameters");
		skey = "rope_parameters";
	}
	if (s && !json_is_null(s) && !json_is_object(s)) {
		snprintf(err, errlen, "%s: '%s' must be an object or null", path, skey);
		return -EINVAL;
	}
	if (opt_num(c, "rope_theta", 10000.0, path, &r->theta, err, errlen))
		return -EINVAL;
	if (json_is_object(s) && opt_num(s, "rope_theta", r->theta, path, &r->theta, err, errlen))
		return -EINVAL;
	if (r->theta <= 0) {
		snprintf(err, errlen, "%s: rope_theta must be > 0", path);
		return -EINVAL;
	}
	if (!json_is_object(s))
		return 0;
	const char *type = json_string_value(json_object_get(s, "rope_type"));
	if (!type)
		type = json_string_value(json_object_get(s, "type"));
	if (!type || !strcmp(type, "default"))
		return 0;
	if (!strcmp(type, "linear"))
		r->type = ROPE_LINEAR;
	else if (!strcmp(type, "dynamic"))
		r->type = ROPE_DYNAMIC;
	else if (!strcmp(type, "yarn"))
		r->type = ROPE_YARN;
	else if (!strcmp(type, "llama3"))
		r->type = ROPE_LLAMA3;
	else {
		snprintf(err, errlen, "%s: %s.rope_type '%s' is not supported (default, linear, dynamic, yarn, llama3)",
			 path, skey, type);
		return -EINVAL;
	}
	/* original context: a top-level key first, then the rope dict, then max_position_embeddings; dynamic NTK
	 * always measures against max_position_embeddings */
	const char *okey = "original_max_position_embeddings";
	const json_t *oc = json_object_get(c, okey) ? c : s;
	if (opt_int(oc, okey, hp->max_pos, path, &r->original_max_pos, err, errlen))
		return -EINVAL;
	if (r->type == ROPE_DYNAMIC)
		r->original_max_pos = hp->max_pos;
	const json_t *f = json_object_get(s, "factor");
	if (r->type == ROPE_YARN && !f) /* yarn without a factor: the context extension ratio */
		r->factor = (double)hp->max_pos / r->original_max_pos;
	else if (!json_is_number(f) || json_number_value(f) < 1) {
		snprintf(err, errlen, "%s: %s.factor: missing or < 1", path, skey);
		return -EINVAL;
	} else
		r->factor = json_number_value(f);
	if (r->type == ROPE_LLAMA3) {
		if (!json_object_get(s, "original_max_position_embeddings") ||
		    !json_is_number(json_object_get(s, "low_freq_factor")) ||
		    !json_is_number(json_object_get(s, "high_freq_factor"))) {
			snprintf(err, errlen, "%s: %s (llama3) needs low_freq_factor, high_freq_factor and "
				 "original_max_position_embeddings", path, skey);
			return -EINVAL;
		}
		r->low_freq_factor = json_number_value(json_object_get(s, "low_freq_factor"));
		r->high_freq_factor = json_number_value(json_object_get(s, "high_freq_factor"));
		if (r->high_freq_factor <= r->low_freq_factor) {
			snprintf(err, errlen, "%s: %s: high_freq_factor must exceed low_freq_factor", path, skey);
			return -EINVAL;
		}
	}
	if (r->type == ROPE_YARN) {
		const json_t *tr = json_object_get(s, "truncate");
		if (opt_num(s, "beta_fast", 32, path, &r->beta_fast, err, errlen) ||
		    opt_num(s, "beta_slow", 1, path, &r->beta_slow, err, errlen) ||
		    opt_num(s, "attention_factor", 0, path, &r->attention_factor, err, errlen) ||
		    opt_num(s, "mscale", 0, path, &r->mscale, err, errlen) ||
		    opt_num(s, "mscale_all_dim", 0, path, &r->mscale_all_dim, err, errlen))
			return -EINVAL;
		r->truncate = !json_is_false(tr);
	}
	return 0;
}

/* Sliding window per layer: explicit layer_types, else the architecture's rule (enum arch_windows). */
static int parse_windows(const json_t *c, const struct arch *a, const char *path, struct layout_hparams *hp,
			 char *err, size_t errlen)
{
	hp->window = calloc((size_t)hp->n_layers, sizeof(int));
	if (!hp->window)
		return -ENOMEM;
	/* the class's default window when the key is absent (MistralConfig: 4096); null means full attention */
	bool absent = !json_object_get(c, "sliding_window");
	int w = 0, def = absent ? a->hf_window : 0;
	if (opt_int(c, "sliding_window", def, path, &w, err, errlen))
		return -EINVAL;
	bool gated = a->hf_windows == ARCH_WINDOWS_GATED;
	if (gated && !json_is_true(json_object_get(c, "use_sliding_window")))
		w = 0;
	if (a->hf_windows == ARCH_WINDOWS_NONE)
		w = 0;
	/* MistralForCausalLM applies sliding_window to every layer whatever layer_types says */
	const json_t *types = a->hf_windows != ARCH_WINDOWS_ALL ? json_object_get(c, "layer_types") : NULL;
	if (json_is_array(types)) {
		if ((int)json_array_size(types) != hp->n_layers) {
			snprintf(err, errlen, "%s: layer_types has %zu entries, num_hidden_layers is %d", path,
				 json_array_size(types), hp->n_layers);
			return -EINVAL;
		}
		for (int i = 0; i < hp->n_layers; i++) {
			const char *t = json_string_value(json_array_get(types, (size_t)i));
			bool sliding = t && !strcmp(t, "sliding_attention");
			if (!t || (!sliding && strcmp(t, "full_attention"))) {
				snprintf(err, errlen, "%s: layer_types[%d]: unsupported value", path, i);
				return -EINVAL;
			}
			hp->window[i] = sliding ? w : 0;
		}
		return 0;
	}
	if (a->hf_windows == ARCH_WINDOWS_ALTERNATE) { /* GptOssConfig: sliding, full, sliding, ... */
		for (int i = 0; i < hp->n_layers; i++)
			hp->window[i] = i % 2 ? 0 : w;
		return 0;
	}
	if (a->hf_windows == ARCH_WINDOWS_PATTERN) { /* legacy configs: every pattern-th layer is global */
		int pattern;
		if (opt_int(c, "sliding_window_pattern", 6, path, &pattern, err, errlen))
			return -EINVAL;
		for (int i = 0; i < hp->n_layers; i++)
			hp->window[i] = (i + 1) % pattern ? w : 0;
		return 0;
	}
	int first = 0;
	if (gated && opt_int(c, "max_window_layers", 28, path, &first, err, errlen))
		return -EINVAL;
	for (int i = first; i < hp->n_layers; i++)
		hp->window[i] = w;
	return 0;
}

/* bos/eos from generation_config.json when present, else from config.json; eos may be a list. */
static void parse_special(const json_t *c, const json_t *gen, struct layout_hparams *hp)
{
	const json_t *bos = json_object_get(gen, "bos_token_id");
	if (!json_is_integer(bos))
		bos = json_object_get(c, "bos_token_id");
	hp->bos_id = json_is_integer(bos) ? (int)json_integer_value(bos) : -1;
	const json_t *eos = json_object_get(gen, "eos_token_id");
	if (!eos || json_is_null(eos))
		eos = json_object_get(c, "eos_token_id");
	hp->n_eos = 0;
	if (json_is_integer(eos)) {
		hp->eos_ids[hp->n_eos++] = (int)json_integer_value(eos);
	} else if (json_is_array(eos)) {
		size_t i;
		const json_t *v;
		json_array_foreach(eos, i, v)
		{
			if (json_is_integer(v) && hp->n_eos < 8)
				hp->eos_ids[hp->n_eos++] = (int)json_integer_value(v);
		}
	}
}

/* The experts of a mixture-of-experts class: every layer sparse (Qwen3-MoE's decoder_sparse_step 1, no
 * mlp_only_layers), the counts within each other (layout_hparams_check). */
static int parse_moe(const json_t *c, const struct arch *a, const char *path, struct layout_hparams *hp, char *err,
		     size_t errlen)
{
	if (req_int(c, a->hf_experts, path, &hp->n_experts, err, errlen) ||
	    req_int(c, a->hf_used, path, &hp->n_experts_used, err, errlen) ||
	    req_int(c, a->hf_expert_ffn, path, &hp->expert_ffn, err, errlen))
		return -EINVAL;
	if (hp->n_experts < 2 || hp->n_experts > LAYOUT_MAX_EXPERTS || hp->n_experts_used > hp->n_experts) {
		snprintf(err, errlen, "%s: %s %d must be in 2..%d and %s %d at most that", path, a->hf_experts,
			 hp->n_experts, LAYOUT_MAX_EXPERTS, a->hf_used, hp->n_experts_used);
		return -EINVAL;
	}
	int step = 1;
	const json_t *only = json_object_get(c, "mlp_only_layers");
	if (opt_int(c, "decoder_sparse_step", 1, path, &step, err, errlen))
		return -EINVAL;
	if (step != 1 || json_array_size(only) > 0) {
		snprintf(err, errlen, "%s: dense layers among the expert layers (decoder_sparse_step %d, %zu mlp_only_layers) "
			 "are not supported", path, step, json_array_size(only));
		return -EINVAL;
	}
	hp->moe_norm_topk = !a->hf_norm_key || json_is_true(json_object_get(c, a->hf_norm_key));
	if (a->hf_shared_ffn && req_int(c, a->hf_shared_ffn, path, &hp->shared_ffn, err, errlen))
		return -EINVAL;
	return 0;
}

/* Gemma 3: global layers take rope_theta (1e6) with any rope scaling, sliding layers rope_local_base_freq with
 * the default rope (transformers 5: rope_parameters = {full_attention: {...}, sliding_attention: {...}});
 * scores scaled by query_pre_attn_scalar^-0.5; GELU-tanh MLP; embeddings times sqrt(hidden_size). */
static int parse_gemma3(const json_t *c, const char *path, struct layout_hparams *hp, char *err, size_t errlen)
{
	const json_t *rp = json_object_get(c, "rope_parameters");
	const json_t *full = json_object_get(rp, "full_attention"), *slide = json_object_get(rp, "sliding_attention");
	double theta, local, qscale, cap = 0;
	if (opt_num(c, "rope_theta", 1e6, path, &theta, err, errlen) ||
	    opt_num(c, "rope_local_base_freq", 10000, path, &local, err, errlen) ||
	    (slide && opt_num(slide, "rope_theta", local, path, &local, err, errlen)) ||
	    opt_num(c, "query_pre_attn_scalar", 256, path, &qscale, err, errlen) ||
	    opt_num(c, "final_logit_softcapping", 0, path, &cap, err, errlen))
		return -EINVAL;
	/* parse_rope on a config made of the global layers' parameters */
	json_t *g = json_pack("{s:f}", "rope_theta", theta);
	if (full)
		json_object_set(g, "rope_parameters", (json_t *)full);
	else if (json_object_get(c, "rope_scaling"))
		json_object_set(g, "rope_scaling", json_object_get(c, "rope_scaling"));
	if (json_object_get(c, "original_max_position_embeddings"))
		json_object_set(g, "original_max_position_embeddings", json_object_get(c, "original_max_position_embeddings"));
	int rc = parse_rope(g, path, hp, err, errlen);
	json_decref(g);
	if (rc)
		return rc;
	const char *stype = json_string_value(json_object_get(slide, "rope_type"));
	const json_t *acap = json_object_get(c, "attn_logit_softcapping");
	const char *act = json_string_value(json_object_get(c, "hidden_activation"));
	if (!act)
		act = json_string_value(json_object_get(c, "hidden_act"));
	const char *bad = NULL;
	if (stype && strcmp(stype, "default"))
		bad = "rope_parameters.sliding_attention.rope_type must be default";
	else if (acap && !json_is_null(acap))
		bad = "attn_logit_softcapping is not supported";
	else if (act && strcmp(act, "gelu_pytorch_tanh"))
		bad = "hidden_activation must be gelu_pytorch_tanh";
	else if (!(local > 0) || !(qscale > 0) || cap < 0)
		bad = "rope_local_base_freq and query_pre_attn_scalar must be > 0, final_logit_softcapping >= 0";
	if (bad) {
		snprintf(err, errlen, "%s: %s", path, bad);
		return -EINVAL;
	}
	hp->has_rope_local = true;
	hp->rope_local = (struct rope_params){.type = ROPE_DEFAULT, .style = ROPE_STYLE_NEOX, .theta = local,
					      .dim = hp->head_dim, .factor = 1, .truncate = true};
	hp->act = ACT_GELU_TANH;
	hp->attn_scale = 1.0 / sqrt(qscale);
	hp->embed_scale = sqrt((double)hp->d_model);
	hp->final_softcap = cap;
	return 0;
}

/* gpt-oss: GptOssConfig's defaults where config.json leaves them out (rope_theta 150000, YaRN factor 32 over
 * 4096 positions, beta 32 / 1, not truncated; rms_norm_eps 1e-5) and its clamped SwiGLU, whose constants
 * ferry has fixed (ACT_OAI_ALPHA, ACT_OAI_LIMIT): a config asking for others is refused. */
static int parse_gptoss(const json_t *c, const char *path, struct layout_hparams *hp, char *err, size_t errlen)
{
	bool has_rope = json_is_object(json_object_get(c, "rope_scaling")) ||
			json_is_object(json_object_get(c, "rope_parameters"));
	json_t *g = json_deep_copy(c);
	if (!json_object_get(g, "rope_theta"))
		json_object_set_new(g, "rope_theta", json_real(150000.0));
	if (!has_rope)
		json_object_set_new(g, "rope_scaling", json_pack("{s:s, s:f, s:f, s:f, s:b, s:i}", "rope_type", "yarn", "factor",
								 32.0, "beta_fast", 32.0, "beta_slow", 1.0, "truncate", 0,
								 "original_max_position_embeddings", 4096));
	int rc = parse_rope(g, path, hp, err, errlen);
	json_decref(g);
	double alpha, limit, eps;
	if (rc || opt_num(c, "swiglu_alpha", ACT_OAI_ALPHA, path, &alpha, err, errlen) ||
	    opt_num(c, "swiglu_limit", ACT_OAI_LIMIT, path, &limit, err, errlen) ||
	    opt_num(c, "rms_norm_eps", 1e-5, path, &eps, err, errlen))
		return -EINVAL;
	if ((float)alpha != ACT_OAI_ALPHA || (float)limit != ACT_OAI_LIMIT) {
		snprintf(err, errlen, "%s: swiglu_alpha %g and swiglu_limit %g: ferry runs gpt-oss's 1.702 and 7", path,
			 alpha, limit);
		return -EINVAL;
	}
	const char *act = json_string_value(json_object_get(c, "hidden_act"));
	if (act && strcmp(act, "silu")) {
		snprintf(err, errlen, "%s: hidden_act must be silu", path);
		return -EINVAL;
	}
	hp->rms_eps = eps;
	hp->act = ACT_SWIGLU_OAI;
	return 0;
}

int hf_config_parse(const void *config, const void *gen, const char *path, struct layout_hparams *hp,
		    const struct arch **arch, char *err, size_t errlen)
{
	const json_t *c = config;
	memset(hp, 0, sizeof(*hp));
	*arch = NULL;
	const char *name = json_string_value(json_array_get(json_object_get(c, "architectures"), 0));
	if (!name) {
		snprintf(err, errlen, "%s: missing key 'architectures'", path);
		return -EINVAL;
	}
	const struct arch *a = arch_find(ARCH_KEY_HF, name);
	if (!a) {
		char list[256];
		snprintf(err, errlen, "%s: unknown architecture '%s' (supported: %s)", path, name,
			 arch_list(ARCH_KEY_HF, list, sizeof(list)));
		return -EINVAL;
	}
	snprintf(hp->arch, sizeof(hp->arch), "%s", a->name);
	if (req_int(c, "hidden_size", path, &hp->d_model, err, errlen) ||
	    req_int(c, "num_hidden_layers", path, &hp->n_layers, err, errlen) ||
	    req_int(c, "num_attention_heads", path, &hp->n_heads, err, errlen) ||
	    req_int(c, "intermediate_size", path, &hp->ffn_dim, err, errlen) ||
	    req_int(c, "vocab_size", path, &hp->vocab, err, errlen) ||
	    opt_int(c, "num_key_value_heads", hp->n_heads, path, &hp->n_kv_heads, err, errlen) ||
	    opt_int(c, "max_position_embeddings", a->hf_max_pos, path, &hp->max_pos, err, errlen) ||
	    opt_num(c, "rms_norm_eps", 1e-6, path, &hp->rms_eps, err, errlen))
		return -EINVAL;
	if (hp->n_heads % hp->n_kv_heads) {
		snprintf(err, errlen, "%s: num_attention_heads %d is not a multiple of num_key_value_heads %d", path,
			 hp->n_heads, hp->n_kv_heads);
		return -EINVAL;
	}
	if (!json_object_get(c, "head_dim") && hp->d_model % hp->n_heads && !a->hf_head_dim) {
		snprintf(err, errlen, "%s: hidden_size %d is not a multiple of num_attention_heads %d and no head_dim",
			 path, hp->d_model, hp->n_heads);
		return -EINVAL;
	}
	if (opt_int(c, "head_dim", a->hf_head_dim ? a->hf_head_dim : hp->d_model / hp->n_heads, path, &hp->head_dim,
		    err, errlen))
		return -EINVAL;
	if (hp->head_dim % 2) {
		snprintf(err, errlen, "%s: head_dim %d must be even", path, hp->head_dim);
		return -EINVAL;
	}
	if (json_is_number(json_object_get(c, "partial_rotary_factor")) &&
	    json_number_value(json_object_get(c, "partial_rotary_factor")) != 1.0) {
		snprintf(err, errlen, "%s: partial_rotary_factor != 1 is not supported", path);
		return -EINVAL;
	}
	if (a->hparams == ARCH_HPARAMS_GEMMA3   ? parse_gemma3(c, path, hp, err, errlen)
	    : a->hparams == ARCH_HPARAMS_GPTOSS ? parse_gptoss(c, path, hp, err, errlen)
						: parse_rope(c, path, hp, err, errlen))
		return -EINVAL;
	if (arch_is_moe(a) && parse_moe(c, a, path, hp, err, errlen))
		return -EINVAL;
	/* the class's default when the key is absent (Gemma3TextConfig ties) */
	const json_t *tie = json_object_get(c, "tie_word_embeddings");
	hp->tied_embeddings = json_is_true(tie) || (a->hf_tied && !tie);
	int rc = parse_windows(c, a, path, hp, err, errlen);
	if (rc) {
		layout_hparams_free(hp);
		return rc;
	}
	parse_special(c, gen, hp);
	char why[256];
	if ((rc = layout_hparams_check(hp, why, sizeof(why)))) {
		snprintf(err, errlen, "%s: %s", path, why);
		layout_hparams_free(hp);
		return rc;
	}
	*arch = a;
	return 0;
}
