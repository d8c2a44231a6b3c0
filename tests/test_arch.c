/* test_arch.c: the architecture table (src/layout/arch.c) is consistent: names unique and found, every
 * row well formed (a name that fits the file format, a shape, an optional row with its config.json key, a
 * slot used once), every architecture has the tensors the forward always runs, a bias only with its
 * weight and of its weight's rows (the experts' stacked biases of their stacked weights'), sinks one per
 * query head, and shapes follow the hyper-parameters. */
#include <string.h>

#include "check.h"
#include "layout/arch.h"

/* the tensors src/engine/model.c runs in every layer, whatever the architecture */
static const enum arch_slot always[] = {ARCH_SLOT_ATTN_NORM, ARCH_SLOT_WQ, ARCH_SLOT_WK,
					ARCH_SLOT_WV,        ARCH_SLOT_WO, ARCH_SLOT_FFN_NORM};
/* and either a dense MLP or a mixture of experts, all of it */
static const enum arch_slot dense[] = {ARCH_SLOT_W_GATE, ARCH_SLOT_W_UP, ARCH_SLOT_W_DOWN};
static const enum arch_slot moe[] = {ARCH_SLOT_ROUTER, ARCH_SLOT_W_GATE_EXPS, ARCH_SLOT_W_UP_EXPS,
				     ARCH_SLOT_W_DOWN_EXPS};
/* bias slot -> its weight's slot */
static const enum arch_slot bias_of[][2] = {
	{ARCH_SLOT_BQ, ARCH_SLOT_WQ},         {ARCH_SLOT_BK, ARCH_SLOT_WK},     {ARCH_SLOT_BV, ARCH_SLOT_WV},
	{ARCH_SLOT_BO, ARCH_SLOT_WO},         {ARCH_SLOT_B_GATE, ARCH_SLOT_W_GATE}, {ARCH_SLOT_B_UP, ARCH_SLOT_W_UP},
	{ARCH_SLOT_B_DOWN, ARCH_SLOT_W_DOWN}, {ARCH_SLOT_B_ROUTER, ARCH_SLOT_ROUTER},
};
/* stacked experts' bias slot [E, rows] -> its weight's slot [E, rows, cols] (gpt-oss) */
static const enum arch_slot exp_bias_of[][2] = {
	{ARCH_SLOT_B_GATE_EXPS, ARCH_SLOT_W_GATE_EXPS},
	{ARCH_SLOT_B_UP_EXPS, ARCH_SLOT_W_UP_EXPS},
	{ARCH_SLOT_B_DOWN_EXPS, ARCH_SLOT_W_DOWN_EXPS},
};

static void check_row(const struct arch *a, const struct arch_tensor *t)
{
	CHECK_MSG(t->name && strlen(t->name) < LAYOUT_NAME_MAX, "%s: name", a->name);
	CHECK_MSG(t->hf && t->hf[0], "%s %s: HF name", a->name, t->name);
	CHECK_MSG(t->shape[0] != ARCH_DIM_NONE, "%s %s: no shape", a->name, t->name);
	CHECK_MSG((t->need == ARCH_OPTIONAL) == (t->hf_key != NULL), "%s %s: optional iff a config key", a->name,
		  t->name);
	CHECK_MSG(!t->norm || t->shape[1] == ARCH_DIM_NONE, "%s %s: a norm is a vector", a->name, t->name);
}

static void check_arch(const struct arch *a)
{
	CHECK(arch_find(ARCH_KEY_NAME, a->name) == a);
	CHECK(!a->hf_class || arch_find(ARCH_KEY_HF, a->hf_class) == a);
	CHECK(!a->gguf || arch_find_gguf(a->gguf, arch_is_moe(a)) == a);
	CHECK_MSG(strlen(a->name) < sizeof(((struct layout_hparams *)0)->arch), "%s", a->name);
	int seen[ARCH_SLOT_COUNT] = {0};
	for (int i = 0; i < a->n_layer; i++) {
		const struct arch_tensor *t = &a->layer[i];
		check_row(a, t);
		CHECK_MSG(t->slot >= 0 && t->slot < ARCH_SLOT_COUNT && !seen[t->slot]++, "%s %s: slot", a->name, t->name);
		for (int j = 0; j < i; j++) {
			CHECK_MSG(strcmp(t->name, a->layer[j].name), "%s: %s twice", a->name, t->name);
			CHECK_MSG(strcmp(t->hf, a->layer[j].hf), "%s: %s twice", a->name, t->hf);
		}
	}
	for (size_t i = 0; i < sizeof(always) / sizeof(always[0]); i++) {
		const struct arch_tensor *t = arch_slot_tensor(a, always[i]);
		CHECK_MSG(t && t->need == ARCH_REQUIRED, "%s: slot %d is not a required row", a->name, (int)always[i]);
	}
	bool is_moe = arch_is_moe(a);
	for (size_t i = 0; i < 4; i++) {
		const struct arch_tensor *t = i < 3 ? arch_slot_tensor(a, dense[i]) : NULL;
		CHECK_MSG(i == 3 || (is_moe ? !t : t && t->need == ARCH_REQUIRED), "%s: dense MLP slot %zu", a->name, i);
		t = arch_slot_tensor(a, moe[i]);
		/* an expert row's HF name: one expert's ("%d"), or a tensor of all of them with its rearrangement */
		CHECK_MSG(is_moe ? t && t->need == ARCH_REQUIRED && (i == 0) != arch_is_experts(t) &&
					   (i == 0 || strstr(t->hf, "%d") || strchr(t->hf, ':'))
				 : !t,
			  "%s: expert slot %zu", a->name, i);
	}
	CHECK_MSG(!is_moe || (a->hf_experts && a->hf_used && a->hf_expert_ffn), "%s: expert config keys", a->name);
	for (size_t i = 0; i < sizeof(bias_of) / sizeof(bias_of[0]); i++) {
		const struct arch_tensor *b = arch_slot_tensor(a, bias_of[i][0]), *w = arch_slot_tensor(a, bias_of[i][1]);
		CHECK_MSG(!b || (w && b->shape[0] == w->shape[0] && b->shape[1] == ARCH_DIM_NONE), "%s: bias %s", a->name,
			  b ? b->name : "");
	}
	for (size_t i = 0; i < sizeof(exp_bias_of) / sizeof(exp_bias_of[0]); i++) {
		const struct arch_tensor *b = arch_slot_tensor(a, exp_bias_of[i][0]),
					 *w = arch_slot_tensor(a, exp_bias_of[i][1]);
		CHECK_MSG(!b || (w && !arch_is_experts(b) && b->shape[0] == w->shape[0] && b->shape[1] == w->shape[1]),
			  "%s: experts' bias %s", a->name, b ? b->name : "");
	}
	const struct arch_tensor *sinks = arch_slot_tensor(a, ARCH_SLOT_ATTN_SINKS);
	CHECK_MSG(!sinks || (sinks->shape[0] == ARCH_DIM_H && sinks->shape[1] == ARCH_DIM_NONE), "%s: sinks", a->name);
}

int main(void)
{
	for (int i = 0; i < arch_count; i++) {
		check_arch(&arch_table[i]);
		for (int j = 0; j < i; j++) {
			const struct arch *a = &arch_table[i], *b = &arch_table[j];
			CHECK(strcmp(a->name, b->name));
			CHECK(!a->hf_class || !b->hf_class || strcmp(a->hf_class, b->hf_class));
			CHECK(!a->gguf || !b->gguf || strcmp(a->gguf, b->gguf) || arch_is_moe(a) != arch_is_moe(b));
		}
	}
	const struct arch_tensor *outer[] = {&arch_token_embd, &arch_output_norm, &arch_output};
	for (size_t i = 0; i < sizeof(outer) / sizeof(outer[0]); i++)
		check_row(&arch_table[0], outer[i]);
	CHECK(!arch_find(ARCH_KEY_NAME, "gpt2") && !arch_find(ARCH_KEY_HF, "llama") && !arch_find(ARCH_KEY_GGUF, NULL));
	CHECK(!arch_find(ARCH_KEY_GGUF, "mistral")); /* llama.cpp writes Mistral as llama */
	char buf[256], want[256] = "";
	for (int i = 0; i < arch_count; i++)
		if (arch_table[i].gguf && !strstr(want, arch_table[i].gguf))
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", want[0] ? ", " : "",
				 arch_table[i].gguf);
	CHECK(!strcmp(arch_list(ARCH_KEY_GGUF, buf, sizeof(buf)), want));
	CHECK(!strncmp(arch_list(ARCH_KEY_HF, buf, sizeof(buf)), "LlamaForCausalLM, MistralForCausalLM, ", 38));
	CHECK(strlen(arch_list(ARCH_KEY_HF, buf, 12)) == 11); /* cut, terminated */

	struct layout_hparams hp = {.d_model = 64, .n_heads = 4, .n_kv_heads = 2, .head_dim = 32, .ffn_dim = 96,
				    .vocab = 500};
	const struct arch *g = arch_find(ARCH_KEY_NAME, "gemma3");
	int64_t s[3];
	CHECK(arch_shape(&hp, arch_slot_tensor(g, ARCH_SLOT_WO), s) == 2 && s[0] == 64 && s[1] == 128);
	CHECK(arch_shape(&hp, arch_slot_tensor(g, ARCH_SLOT_WK), s) == 2 && s[0] == 64 && s[1] == 64);
	CHECK(arch_shape(&hp, arch_slot_tensor(g, ARCH_SLOT_Q_NORM), s) == 1 && s[0] == 32);
	CHECK(arch_shape(&hp, arch_slot_tensor(g, ARCH_SLOT_W_DOWN), s) == 2 && s[0] == 64 && s[1] == 96);
	CHECK(arch_shape(&hp, &arch_output, s) == 2 && s[0] == 500 && s[1] == 64);
	hp.n_experts = 8;
	hp.expert_ffn = 32;
	const struct arch *q = arch_find(ARCH_KEY_NAME, "qwen3moe"), *x = arch_find_gguf("llama", true);
	CHECK(x && !strcmp(x->name, "mixtral") && !strcmp(arch_find_gguf("llama", false)->name, "llama"));
	CHECK(arch_shape(&hp, arch_slot_tensor(q, ARCH_SLOT_ROUTER), s) == 2 && s[0] == 8 && s[1] == 64);
	CHECK(arch_shape(&hp, arch_slot_tensor(q, ARCH_SLOT_W_UP_EXPS), s) == 3 && s[0] == 8 && s[1] == 32 && s[2] == 64);
	CHECK(arch_shape(&hp, arch_slot_tensor(x, ARCH_SLOT_W_DOWN_EXPS), s) == 3 && s[0] == 8 && s[1] == 64 &&
	      s[2] == 32);
	hp.shared_ffn = 48;
	const struct arch *q2 = arch_find_gguf("qwen2moe", true);
	CHECK(q2 && q2->hf_shared_ffn && !q2->gguf_norm_topk && q->gguf_norm_topk && x->gguf_norm_topk);
	CHECK(arch_shape(&hp, arch_slot_tensor(q2, ARCH_SLOT_SHEXP_GATE_INP), s) == 2 && s[0] == 1 && s[1] == 64);
	CHECK(arch_shape(&hp, arch_slot_tensor(q2, ARCH_SLOT_W_DOWN_SHEXP), s) == 2 && s[0] == 64 && s[1] == 48);
	CHECK(!arch_slot_tensor(q, ARCH_SLOT_W_GATE_SHEXP) && !q->hf_shared_ffn);
	const struct arch *o = arch_find_gguf("gpt-oss", true);
	CHECK(o && o == arch_find(ARCH_KEY_HF, "GptOssForCausalLM") && !arch_find_gguf("gpt-oss", false));
	CHECK(arch_shape(&hp, arch_slot_tensor(o, ARCH_SLOT_ATTN_SINKS), s) == 1 && s[0] == 4);
	CHECK(arch_shape(&hp, arch_slot_tensor(o, ARCH_SLOT_B_GATE_EXPS), s) == 2 && s[0] == 8 && s[1] == 32);
	CHECK(arch_shape(&hp, arch_slot_tensor(o, ARCH_SLOT_B_DOWN_EXPS), s) == 2 && s[0] == 8 && s[1] == 64);
	CHECK(arch_slot_tensor(o, ARCH_SLOT_FFN_NORM) && !strcmp(arch_slot_tensor(o, ARCH_SLOT_FFN_NORM)->name,
								"post_attention_norm.weight"));
	CHECK_DONE();
}
