/*
 * hparams.c: struct layout_hparams <-> the "hparams" object of manifest.json. The reader checks every field
 * (presence, type, range) and names the first bad one.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout/layout.h"

static const char *rope_type_names[] = {"default", "linear", "dynamic", "yarn", "llama3"};
static const char *rope_style_names[] = {"neox", "norm"};

const char *layout_rope_type_name(int type)
{
	return type >= 0 && type <= ROPE_LLAMA3 ? rope_type_names[type] : "?";
}

int layout_hparams_check(const struct layout_hparams *hp, char *err, size_t errlen)
{
	const struct rope_params *r = &hp->rope;
	const char *bad = NULL;
	if (hp->n_layers < 1 || hp->n_layers > 100000)
		bad = "n_layers outside 1..100000";
	else if (hp->d_model < 1 || hp->d_model > LAYOUT_MAX_DIM || hp->ffn_dim < 1 || hp->ffn_dim > LAYOUT_MAX_DIM ||
		 hp->vocab < 1 || hp->vocab > LAYOUT_MAX_DIM)
		bad = "d_model, ffn_dim and vocab must be in 1..2^24";
	else if (hp->head_dim < 2 || hp->head_dim > LAYOUT_MAX_HEAD_DIM || hp->head_dim % 2)
		bad = "head_dim must be even and in 2..1024";
	else if (hp->n_heads < 1 || hp->n_kv_heads < 1 || hp->n_heads % hp->n_kv_heads ||
		 (int64_t)hp->n_heads * hp->head_dim > LAYOUT_MAX_DIM)
		bad = "n_heads must be a multiple of n_kv_heads, n_heads x head_dim at most 2^24";
	else if (!(hp->rms_eps > 0 && hp->rms_eps < 1))
		bad = "rms_eps must be in (0, 1)";
	else if (hp->max_pos < 1)
		bad = "max_pos must be >= 1";
	else if (!(r->theta > 0) || r->dim != hp->head_dim)
		bad = "rope theta must be > 0 and rope dim equal head_dim";
	else if (r->type != ROPE_DEFAULT && !(r->factor >= 1 && r->factor < 1e6))
		bad = "rope factor must be in [1, 1e6)";
	else if ((r->type == ROPE_DYNAMIC || r->type == ROPE_YARN || r->type == ROPE_LLAMA3) && r->original_max_pos < 1)
		bad = "rope original_max_pos must be >= 1";
	else if (r->type == ROPE_LLAMA3 && !(r->low_freq_factor > 0 && r->high_freq_factor > r->low_freq_factor))
		bad = "llama3 rope needs 0 < low_freq_factor < high_freq_factor";
	else if (r->type == ROPE_YARN && !(r->beta_fast > 0 && r->beta_slow > 0 && r->attention_factor >= 0))
		bad = "yarn rope needs beta_fast, beta_slow > 0 and attention_factor >= 0";
	else if (hp->has_rope_local && !(hp->rope_local.theta > 0 && hp->rope_local.dim == hp->head_dim &&
					 hp->rope_local.type == ROPE_DEFAULT))
		bad = "rope_local must be a default RoPE with theta > 0 and dim equal head_dim";
	else if (hp->act != ACT_SILU && hp->act != ACT_GELU_TANH && hp->act != ACT_SWIGLU_OAI)
		bad = "act must be silu, gelu_tanh or swiglu_oai";
	else if (!(hp->attn_scale >= 0 && hp->attn_scale < 1e6) || !(hp->embed_scale >= 0 && hp->embed_scale < 1e6) ||
		 !(hp->final_softcap >= 0 && hp->final_softcap < 1e6))
		bad = "attn_scale, embed_scale and final_softcap must be in [0, 1e6)";
	else if (hp->n_experts && (hp->n_experts < 2 || hp->n_experts > LAYOUT_MAX_EXPERTS || hp->n_experts_used < 1 ||
				   hp->n_experts_used > hp->n_experts || hp->expert_ffn < 1 ||
				   hp->expert_ffn > LAYOUT_MAX_DIM || hp->shared_ffn < 0 || hp->shared_ffn > LAYOUT_MAX_DIM))
		bad = "moe: experts must be in 2..1024, used in 1..experts, ffn and shared_ffn in 1..2^24";
	else if (!hp->n_experts && hp->shared_ffn)
		bad = "moe: a shared expert without experts";
	for (int i = 0; !bad && r->factors && i < r->dim / 2; i++)
		if (!(r->factors[i] > 0 && r->factors[i] < 1e9))
			bad = "rope factors must be in (0, 1e9)";
	for (int i = 0; !bad && hp->window && i < hp->n_layers; i++)
		if (hp->window[i] < 0 || hp->window[i] > (1 << 30))
			bad = "sliding_window entries must be in 0..2^30";
	if (bad) {
		snprintf(err, errlen, "hparams: %s", bad);
		return -EINVAL;
	}
	return 0;
}

static const char *act_names[] = {"silu", "gelu_tanh", "swiglu_oai"};

static json_t *rope_to_json(const struct rope_params *r)
{
	json_t *rope = json_pack("{s:s, s:s, s:f, s:i, s:f, s:i, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:b}", "type",
				 rope_type_names[r->type], "style", rope_style_names[r->style], "theta", r->theta, "dim",
				 r->dim, "factor", r->factor, "original_max_pos", r->original_max_pos, "low_freq_factor",
				 r->low_freq_factor, "high_freq_factor", r->high_freq_factor, "beta_fast", r->beta_fast,
				 "beta_slow", r->beta_slow, "attention_factor", r->attention_factor, "mscale", r->mscale,
				 "mscale_all_dim", r->mscale_all_dim, "truncate", r->truncate);
	if (r->factors) {
		json_t *f = json_array();
		for (int i = 0; i < r->dim / 2; i++)
			json_array_append_new(f, json_real(r->factors[i]));
		json_object_set_new(rope, "factors", f);
	}
	return rope;
}

void *layout_hparams_to_json(const struct layout_hparams *hp)
{
	json_t *rope = rope_to_json(&hp->rope);
	json_t *win = json_array();
	for (int i = 0; i < hp->n_layers; i++)
		json_array_append_new(win, json_integer(hp->window[i]));
	json_t *eos = json_array();
	for (int i = 0; i < hp->n_eos; i++)
		json_array_append_new(eos, json_integer(hp->eos_ids[i]));
	json_t *o = json_pack("{s:s, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:o, s:b, s:o, s:o, s:o, s:s}", "arch",
			      hp->arch, "n_layers", hp->n_layers, "d_model", hp->d_model, "n_heads", hp->n_heads,
			      "n_kv_heads", hp->n_kv_heads, "head_dim", hp->head_dim, "ffn_dim", hp->ffn_dim, "vocab",
			      hp->vocab, "max_pos", hp->max_pos, "rms_eps", hp->rms_eps, "rope", rope, "tied_embeddings",
			      hp->tied_embeddings, "sliding_window", win, "bos_token_id",
			      hp->bos_id >= 0 ? json_integer(hp->bos_id) : json_null(), "eos_token_ids", eos, "act",
			      act_names[hp->act]);
	if (hp->has_rope_local)
		json_object_set_new(o, "rope_local", rope_to_json(&hp->rope_local));
	if (hp->attn_scale > 0)
		json_object_set_new(o, "attn_scale", json_real(hp->attn_scale));
	if (hp->embed_scale > 0)
		json_object_set_new(o, "embed_scale", json_real(hp->embed_scale));
	if (hp->final_softcap > 0)
		json_object_set_new(o, "final_softcap", json_real(hp->final_softcap));
	if (hp->n_experts)
		json_object_set_new(o, "moe", json_pack("{s:i, s:i, s:i, s:b}", "experts", hp->n_experts, "used",
							hp->n_experts_used, "ffn", hp->expert_ffn, "norm_topk",
							hp->moe_norm_topk));
	if (hp->n_experts && hp->shared_ffn)
		json_object_set_new(json_object_get(o, "moe"), "shared_ffn", json_integer(hp->shared_ffn));
	return o;
}

/* An optional number: absent means 0. */
static int opt_num(const json_t *o, const char *key, double *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(o, key);
	*out = 0;
	if (!v)
		return 0;
	if (!json_is_number(v)) {
		snprintf(err, errlen, "hparams.%s: not a number", key);
		return -EINVAL;
	}
	*out = json_number_value(v);
	return 0;
}

static int get_int(const json_t *o, const char *key, int lo, int *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > 1 << 30) {
		snprintf(err, errlen, "hparams.%s: missing or not an integer in %d..2^30", key, lo);
		return -EINVAL;
	}
	*out = (int)json_integer_value(v);
	return 0;
}

static int get_num(const json_t *o, const char *key, double *out, char *err, size_t errlen)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_number(v)) {
		snprintf(err, errlen, "hparams.%s: missing or not a number", key);
		return -EINVAL;
	}
	*out = json_number_value(v);
	return 0;
}

static int get_enum(const json_t *o, const char *key, const char **names, int n, int *out, char *err,
		    size_t errlen)
{
	const char *s = json_string_value(json_object_get(o, key));
	for (int i = 0; s && i < n; i++)
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return 0;
		}
	snprintf(err, errlen, "hparams.rope.%s: missing or unknown value '%s'", key, s ? s : "");
	return -EINVAL;
}

static int rope_from_json(struct rope_params *r, const json_t *o, char *err, size_t errlen)
{
	int type, style, truncate;
	if (!json_is_object(o)) {
		snprintf(err, errlen, "hparams.rope: missing or not an object");
		return -EINVAL;
	}
	if (get_enum(o, "type", rope_type_names, 5, &type, err, errlen) ||
	    get_enum(o, "style", rope_style_names, 2, &style, err, errlen) ||
	    get_num(o, "theta", &r->theta, err, errlen) || get_int(o, "dim", 2, &r->dim, err, errlen) ||
	    get_num(o, "factor", &r->factor, err, errlen) ||
	    get_int(o, "original_max_pos", 0, &r->original_max_pos, err, errlen) ||
	    get_num(o, "low_freq_factor", &r->low_freq_factor, err, errlen) ||
	    get_num(o, "high_freq_factor", &r->high_freq_factor, err, errlen) ||
	    get_num(o, "beta_fast", &r->beta_fast, err, errlen) || get_num(o, "beta_slow", &r->beta_slow, err, errlen) ||
	    get_num(o, "attention_factor", &r->attention_factor, err, errlen) ||
	    get_num(o, "mscale", &r->mscale, err, errlen) ||
	    get_num(o, "mscale_all_dim", &r->mscale_all_dim, err, errlen))
		return -EINVAL;
	truncate = json_is_true(json_object_get(o, "truncate"));
	r->type = (enum rope_type)type;
	r->style = (enum rope_style)style;
	r->truncate = truncate;
	if (r->theta <= 0 || r->dim % 2 || r->dim > 2 * LAYOUT_MAX_HEAD_DIM) {
		snprintf(err, errlen, "hparams.rope: theta %g must be > 0 and dim %d even and at most %d", r->theta, r->dim,
			 2 * LAYOUT_MAX_HEAD_DIM);
		return -EINVAL;
	}
	const json_t *f = json_object_get(o, "factors");
	if (!f)
		return 0;
	if (!json_is_array(f) || (int)json_array_size(f) != r->dim / 2) {
		snprintf(err, errlen, "hparams.rope.factors: must be an array of %d numbers", r->dim / 2);
		return -EINVAL;
	}
	double *v = malloc(sizeof(double) * (size_t)(r->dim / 2));
	if (!v) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < r->dim / 2; i++) {
		const json_t *e = json_array_get(f, (size_t)i);
		if (!json_is_number(e)) {
			snprintf(err, errlen, "hparams.rope.factors[%d]: not a number", i);
			free(v);
			return -EINVAL;
		}
		v[i] = json_number_value(e);
	}
	r->factors = v;
	return 0;
}

int layout_hparams_from_json(struct layout_hparams *hp, const void *json, char *err, size_t errlen)
{
	const json_t *o = json;
	memset(hp, 0, sizeof(*hp));
	if (!json_is_object(o)) {
		snprintf(err, errlen, "hparams: missing or not an object");
		return -EINVAL;
	}
	const char *arch = json_string_value(json_object_get(o, "arch"));
	if (!arch || strlen(arch) >= sizeof(hp->arch)) {
		snprintf(err, errlen, "hparams.arch: missing or too long");
		return -EINVAL;
	}
	strcpy(hp->arch, arch);
	if (get_int(o, "n_layers", 1, &hp->n_layers, err, errlen) || get_int(o, "d_model", 1, &hp->d_model, err, errlen) ||
	    get_int(o, "n_heads", 1, &hp->n_heads, err, errlen) ||
	    get_int(o, "n_kv_heads", 1, &hp->n_kv_heads, err, errlen) ||
	    get_int(o, "head_dim", 2, &hp->head_dim, err, errlen) || get_int(o, "ffn_dim", 1, &hp->ffn_dim, err, errlen) ||
	    get_int(o, "vocab", 1, &hp->vocab, err, errlen) || get_int(o, "max_pos", 1, &hp->max_pos, err, errlen) ||
	    get_num(o, "rms_eps", &hp->rms_eps, err, errlen) ||
	    rope_from_json(&hp->rope, json_object_get(o, "rope"), err, errlen))
		return -EINVAL;
	hp->tied_embeddings = json_is_true(json_object_get(o, "tied_embeddings"));
	const json_t *local = json_object_get(o, "rope_local");
	int rc = 0;
	if (local) {
		hp->has_rope_local = true;
		rc = rope_from_json(&hp->rope_local, local, err, errlen);
		free((void *)hp->rope_local.factors); /* local layers take no factors */
		hp->rope_local.factors = NULL;
	}
	const char *act = json_string_value(json_object_get(o, "act"));
	hp->act = -1;
	for (int i = 0; i < 3; i++)
		if (!act || !strcmp(act, act_names[i]))
			hp->act = act ? i : ACT_SILU;
	if (!rc && hp->act < 0) {
		snprintf(err, errlen, "hparams.act: unknown activation '%s'", act);
		rc = -EINVAL;
	}
	rc = rc ? rc : opt_num(o, "attn_scale", &hp->attn_scale, err, errlen);
	rc = rc ? rc : opt_num(o, "embed_scale", &hp->embed_scale, err, errlen);
	rc = rc ? rc : opt_num(o, "final_softcap", &hp->final_softcap, err, errlen);
	const json_t *moe = json_object_get(o, "moe");
	if (!rc && moe) {
		rc = !json_is_object(moe) ? -EINVAL : 0;
		if (rc)
			snprintf(err, errlen, "hparams.moe: not an object");
		rc = rc ? rc : get_int(moe, "experts", 2, &hp->n_experts, err, errlen);
		rc = rc ? rc : get_int(moe, "used", 1, &hp->n_experts_used, err, errlen);
		rc = rc ? rc : get_int(moe, "ffn", 1, &hp->expert_ffn, err, errlen);
		hp->moe_norm_topk = json_is_true(json_object_get(moe, "norm_topk"));
		if (!rc && json_object_get(moe, "shared_ffn"))
			rc = get_int(moe, "shared_ffn", 1, &hp->shared_ffn, err, errlen);
	}
	if (rc) {
		layout_hparams_free(hp);
		return rc;
	}
	const json_t *win = json_object_get(o, "sliding_window");
	if (!json_is_array(win) || (int)json_array_size(win) != hp->n_layers) {
		snprintf(err, errlen, "hparams.sliding_window: must be an array of %d integers", hp->n_layers);
		layout_hparams_free(hp);
		return -EINVAL;
	}
	hp->window = calloc((size_t)hp->n_layers, sizeof(int));
	if (!hp->window) {
		snprintf(err, errlen, "out of memory");
		layout_hparams_free(hp);
		return -ENOMEM;
	}
	for (int i = 0; i < hp->n_layers; i++) {
		const json_t *v = json_array_get(win, (size_t)i);
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30)) {
			snprintf(err, errlen, "hparams.sliding_window[%d]: not an integer in 0..2^30", i);
			layout_hparams_free(hp);
			return -EINVAL;
		}
		hp->window[i] = (int)json_integer_value(v);
	}
	const json_t *bos = json_object_get(o, "bos_token_id");
	hp->bos_id = json_is_integer(bos) && json_integer_value(bos) >= 0 && json_integer_value(bos) < hp->vocab
			     ? (int)json_integer_value(bos)
			     : -1;
	const json_t *eos = json_object_get(o, "eos_token_ids");
	size_t i;
	const json_t *v;
	json_array_foreach(eos, i, v)
	{
		if (json_is_integer(v) && json_integer_value(v) >= 0 && json_integer_value(v) < hp->vocab &&
		    hp->n_eos < (int)(sizeof(hp->eos_ids) / sizeof(hp->eos_ids[0])))
			hp->eos_ids[hp->n_eos++] = (int)json_integer_value(v);
	}
	rc = layout_hparams_check(hp, err, errlen);
	if (rc)
		layout_hparams_free(hp);
	return rc;
}

void layout_hparams_free(struct layout_hparams *hp)
{
	free(hp->window);
	hp->window = NULL;
	free((void *)hp->rope.factors);
	hp->rope.factors = NULL;
}
