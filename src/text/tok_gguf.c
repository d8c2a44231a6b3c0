/*
 * tok_gguf.c: a tokenizer from GGUF metadata (tokenizer.ggml.*), with llama.cpp's conventions:
 * "gpt2" = byte-level BPE whose pre-tokenizer is chosen by tokenizer.ggml.pre (a list of regexes, each
 * splitting the pieces of the one before, matches isolated); "llama" = SentencePiece BPE by scores with
 * byte fallback, "▁" for spaces and a space prefix unless tokenizer.ggml.add_space_prefix is false.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "layout/gguf.h"
#include "tok_internal.h"

#define LLAMA3_RE                                                                                              \
	"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "     \
	"?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define QWEN2_RE                                                                                               \
	"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "          \
	"?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define GPT2_RE "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)"
#define CJK_RE "[\xe4\xb8\x80-\xe9\xbe\xa5\xe0\xa0\x80-\xe4\xb8\x80\xea\xb0\x80-\xed\x9f\xbf]+"

/* Pre-tokenizer regex lists by tokenizer.ggml.pre (facts from llama.cpp's llama-vocab.cpp). */
static const struct pre_def {
	const char *names; /* '|'-separated */
	bool ignore_merges;
	const char *re[6];
} pre_defs[] = {
	{"default", false, {"[\\p{P}\\$\\+<=>\\^~\\|]+", GPT2_RE, "\\p{N}+", "[0-9][0-9][0-9]"}},
	{"llama3|llama-v3|llama-bpe|falcon3", true, {LLAMA3_RE}},
	{"dbrx|smaug-bpe|chatglm-bpe", false, {LLAMA3_RE}},
	{"qwen2|stablelm2|megrez|deepseek-r1-qwen", false, {QWEN2_RE}},
	{"gpt-2|phi-2|jina-es|jina-de|gigachat|jina-v1-en|jina-v2-es|jina-v2-de|jina-v2-code|roberta-bpe|mpt|olmo|jais",
	 false,
	 {GPT2_RE}},
	{"starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b", false, {"\\p{N}", GPT2_RE}},
	{"falcon", false, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", GPT2_RE, "[0-9][0-9][0-9]"}},
	{"deepseek-coder", false, {"[\r\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", CJK_RE, "\\p{N}"}},
	{"deepseek-llm",
	 false,
	 {"[\r\n]",
	  "\\s?[A-Za-z\xc2\xb5\xc3\x80-\xc3\x96\xc3\x98-\xc3\xb6\xc3\xb8-\xc6\xba\xc6\xbc-\xc6\xbf\xc7\x84-\xca\x93"
	  "\xca\x95-\xca\xaf\xcd\xb0-\xcd\xb3\xcd\xb6\xcd\xb7\xcd\xbb-\xcd\xbd\xcd\xbf\xce\x86\xce\x88-\xce\x8a\xce\x8c"
	  "\xce\x8e-\xce\xa1\xce\xa3-\xcf\xb5\xcf\xb7-\xd2\x81\xd2\x8a-\xd4\xaf\xd4\xb1-\xd5\x96\xe1\x82\xa0-\xe1\x83\x85"
	  "\xe1\x8e\xa0-\xe1\x8f\xb5\xe1\x8f\xb8-\xe1\x8f\xbd\xe1\xb2\x90-\xe1\xb2\xba\xe1\xb2\xbd-\xe1\xb2\xbf"
	  "\xe1\xb4\x80-\xe1\xb4\xab\xe1\xb5\xab-\xe1\xb5\xb7\xe1\xb5\xb9-\xe1\xb6\x9a\xe1\xb8\x80-\xe1\xbc\x95"
	  "\xe1\xbc\x98-\xe1\xbc\x9d\xe1\xbc\xa0-\xe1\xbd\x85\xe1\xbd\x88-\xe1\xbd\x8d\xe1\xbd\x90-\xe1\xbd\x97\xe1\xbd\x99"
	  "\xe1\xbd\x9b\xe1\xbd\x9d\xe1\xbd\x9f-\xe1\xbd\xbd\xe1\xbe\x80-\xe1\xbe\xb4\xe1\xbe\xb6-\xe1\xbe\xbc\xe1\xbe\xbe"
	  "\xe1\xbf\x82-\xe1\xbf\x84\xe1\xbf\x86-\xe1\xbf\x8c\xe1\xbf\x90-\xe1\xbf\x93\xe1\xbf\x96-\xe1\xbf\x9b"
	  "\xe1\xbf\xa0-\xe1\xbf\xac\xe1\xbf\xb2-\xe1\xbf\xb4\xe1\xbf\xb6-\xe1\xbf\xbc\xe2\x84\x82\xe2\x84\x87"
	  "\xe2\x84\x8a-\xe2\x84\x93\xe2\x84\x95\xe2\x84\x99-\xe2\x84\x9d\xe2\x84\xa4\xe2\x84\xa6\xe2\x84\xa8"
	  "\xe2\x84\xaa-\xe2\x84\xad\xe2\x84\xaf-\xe2\x84\xb4\xe2\x84\xb9\xe2\x84\xbc-\xe2\x84\xbf\xe2\x85\x85-\xe2\x85\x89"
	  "\xe2\x85\x8e\xe2\x86\x83\xe2\x86\x84\xe2\xb0\x80-\xe2\xb1\xbb\xe2\xb1\xbe-\xe2\xb3\xa4\xe2\xb3\xab-\xe2\xb3\xae"
	  "\xe2\xb3\xb2\xe2\xb3\xb3\xea\x99\x80-\xea\x99\xad\xea\x9a\x80-\xea\x9a\x9b\xea\x9c\xa2-\xea\x9d\xaf"
	  "\xea\x9d\xb1-\xea\x9e\x87\xea\x9e\x8b-\xea\x9e\x8e\xea\xad\xb0-\xea\xae\xbf\xef\xac\x80-\xef\xac\x86"
	  "\xef\xac\x93-\xef\xac\x97\xef\xbc\xa1-\xef\xbc\xba\xef\xbd\x81-\xef\xbd\x9a\xf0\x90\x90\x80-\xf0\x90\x91\x8f"
	  "\xf0\x90\x92\xb0-\xf0\x90\x93\x93\xf0\x90\x93\x98-\xf0\x90\x93\xbb\xf0\x90\xb2\x80-\xf0\x90\xb2\xb2"
	  "\xf0\x90\xb3\x80-\xf0\x90\xb3\xb2\xf0\x91\xa2\xa0-\xf0\x91\xa3\x9f\xf0\x9e\xa4\x80-\xf0\x9e\xa5\x83]+",
	  "\\s?[!-/:-~\xef\xbc\x81-\xef\xbc\x8f\xef\xbc\x9a-\xef\xbd\x9e\xe2\x80\x98-\xe2\x80\x9f\xe3\x80\x80-\xe3\x80\x82]+",
	  "\\s+$", CJK_RE, "\\p{N}+"}},
	{"deepseek-v3",
	 false,
	 {"\\p{N}{1,3}", "[\xe4\xb8\x80-\xe9\xbe\xa5\xe3\x81\x80-\xe3\x82\x9f\xe3\x82\xa0-\xe3\x83\xbf]+",
	  "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| "
	  "?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}},
	{"poro-chat|bloom|gpt3-finnish", false, {" ?[^(\\s|.,!?\xe2\x80\xa6\xe3\x80\x82\xef\xbc\x8c\xe3\x80\x81\xe0\xa5\xa4\xdb\x94\xd8\x8c)]+"}},
};

static const struct pre_def *find_pre(struct gguf_str pre)
{
	for (size_t i = 0; i < sizeof(pre_defs) / sizeof(pre_defs[0]); i++) {
		const char *p = pre_defs[i].names;
		while (*p) {
			size_t n = strcspn(p, "|");
			if (n == pre.n && !memcmp(p, pre.p, n))
				return &pre_defs[i];
			p += n + (p[n] == '|');
		}
	}
	return NULL;
}

static int get_id(const struct gguf *g, const char *key, int32_t n_vocab, int32_t *id)
{
	int64_t v;
	if (gguf_get_int(g, key, &v) == 0 && v >= 0 && v < n_vocab)
		*id = (int32_t)v;
	return 0;
}

static int setup_bpe(struct tokenizer *t, const struct gguf *g, const char *name, char *err, size_t errlen)
{
	struct gguf_str pre = {"default", 7};
	gguf_get_str(g, "tokenizer.ggml.pre", &pre);
	const struct pre_def *d = find_pre(pre);
	if (!d) {
		snprintf(err, errlen, "%s: tokenizer.ggml.pre '%.*s' is not a supported pre-tokenizer", name,
			 (int)(pre.n > 64 ? 64 : pre.n), pre.p);
		return -ENOTSUP;
	}
	t->merge = TOK_MERGE_RANKS;
	t->byte_level = t->dec_byte_level = true;
	t->ignore_merges = d->ignore_merges;
	t->add_bos = d->ignore_merges; /* llama.cpp: the Llama 3 family adds BOS unless the file says otherwise */
	for (int i = 0; i < 6 && d->re[i]; i++) {
		struct tok_pre p = {.kind = TP_SPLIT, .behavior = SPLIT_ISOLATED};
		if (!(p.re = tok_regex(d->re[i], strlen(d->re[i]), err, errlen)) || tok_pre_push(t, p))
			return -EINVAL;
	}
	return tok_pre_push(t, (struct tok_pre){.kind = TP_BYTELEVEL});
}

static int setup_spm(struct tokenizer *t, const struct gguf *g)
{
	bool prefix = true;
	gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &prefix);
	t->merge = TOK_MERGE_SCORES;
	t->byte_fallback = t->dec_byte_fallback = t->dec_space = true;
	t->dec_strip = prefix;
	t->add_bos = true;
	t->bos = 1 < t->n_vocab ? 1 : -1;
	t->eos = 2 < t->n_vocab ? 2 : -1;
	t->unk = 0;
	int rc = 0;
	if (prefix) {
		struct tok_norm n = {.kind = TN_PREPEND, .a = strdup("\xe2\x96\x81"), .na = 3};
		rc = n.a ? tok_norm_push(t, n) : -ENOMEM;
	}
	struct tok_norm r = {.kind = TN_REPLACE, .a = strdup(" "), .na = 1, .b = strdup("\xe2\x96\x81"), .nb = 3};
	return rc ? rc : r.a && r.b ? tok_norm_push(t, r) : -ENOMEM;
}

int tokenizer_from_gguf(struct tokenizer **out, const struct gguf *g, const char *name, char *err, size_t errlen)
{
	struct gguf_str model;
	if (gguf_get_str(g, "tokenizer.ggml.model", &model)) {
		snprintf(err, errlen, "%s: no tokenizer (tokenizer.ggml.model is missing)", name);
		return -ENOENT;
	}
	bool bpe = gguf_str_eq(model, "gpt2"), spm = gguf_str_eq(model, "llama");
	if (!bpe && !spm) {
		snprintf(err, errlen, "%s: tokenizer.ggml.model '%.*s' is not supported (gpt2, llama)", name,
			 (int)(model.n > 32 ? 32 : model.n), model.p);
		return -ENOTSUP;
	}
	const struct gguf_kv *toks = gguf_find(g, "tokenizer.ggml.tokens");
	const struct gguf_kv *scores = gguf_find(g, "tokenizer.ggml.scores");
	const struct gguf_kv *types = gguf_find(g, "tokenizer.ggml.token_type");
	const struct gguf_kv *merges = gguf_find(g, "tokenizer.ggml.merges");
	if (!toks || toks->type != GGUF_TYPE_ARRAY || toks->arr_type != GGUF_TYPE_STRING || toks->arr_n == 0 ||
	    toks->arr_n > INT32_MAX / 2) {
		snprintf(err, errlen, "%s: tokenizer.ggml.tokens missing or not a non-empty string array", name);
		return -EINVAL;
	}
	int32_t n = (int32_t)toks->arr_n;
	const struct gguf_kv *arrs[] = {scores, types};
	const char *arr_names[] = {"tokenizer.ggml.scores", "tokenizer.ggml.token_type"};
	for (int i = 0; i < 2; i++)
		if (arrs[i] && (arrs[i]->type != GGUF_TYPE_ARRAY || arrs[i]->arr_type == GGUF_TYPE_STRING ||
				arrs[i]->arr_n != toks->arr_n)) {
			snprintf(err, errlen, "%s: %s must be a numeric array of %d entries", name, arr_names[i], n);
			return -EINVAL;
		}
	if (bpe && (!merges || merges->type != GGUF_TYPE_ARRAY || merges->arr_type != GGUF_TYPE_STRING)) {
		snprintf(err, errlen, "%s: tokenizer.ggml.merges missing or not a string array", name);
		return -EINVAL;
	}
	struct tokenizer *t = tok_alloc(n, name);
	if (!t)
		return -ENOMEM;
	int rc = 0;
	for (int32_t i = 0; !rc && i < n; i++) {
		struct gguf_str s = gguf_arr_str(toks, (uint64_t)i);
		int type = types ? (int)gguf_arr_int(types, (uint64_t)i) : TOK_TYPE_NORMAL;
		rc = tok_set_token(t, i, s.p, s.n, scores ? (float)gguf_arr_float(scores, (uint64_t)i) : 0.0f, type);
		/* Control, user-defined and unknown tokens are matched in text before the pre-tokenizer. */
		if (!rc && (type == TOK_TYPE_CONTROL || type == TOK_TYPE_USER || type == TOK_TYPE_UNKNOWN))
			rc = tok_added_push(t, (struct tok_added){.id = i, .special = type != TOK_TYPE_USER});
	}
	if (rc)
		snprintf(err, errlen, "out of memory");
	else
		rc = bpe ? setup_bpe(t, g, name, err, errlen) : setup_spm(t, g);
	rc = rc ? rc : tok_finish(t, err, errlen);
	for (uint64_t i = 0; !rc && bpe && i < merges->arr_n; i++) {
		struct gguf_str m = gguf_arr_str(merges, i);
		const char *sp = m.n > 1 ? memchr(m.p + 1, ' ', m.n - 1) : NULL;
		if (!sp) {
			snprintf(err, errlen, "%s: tokenizer.ggml.merges[%llu] is not two tokens separated by a space", name,
				 (unsigned long long)i);
			rc = -EINVAL;
			break;
		}
		/* A merge whose parts or result are not tokens can never apply: skipped, as llama.cpp ends up doing. */
		int r = tok_add_merge(t, m.p, (size_t)(sp - m.p), sp + 1, m.n - (size_t)(sp - m.p) - 1, (int32_t)i);
		rc = r == -ENOENT ? 0 : r;
	}
	get_id(g, "tokenizer.ggml.bos_token_id", n, &t->bos);
	get_id(g, "tokenizer.ggml.eos_token_id", n, &t->eos);
	get_id(g, "tokenizer.ggml.unknown_token_id", n, &t->unk);
	gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
	gguf_get_bool(g, "tokenizer.ggml.add_eos_token", &t->add_eos);
	int32_t eot = -1, eom = -1;
	get_id(g, "tokenizer.ggml.eot_token_id", n, &eot);
	get_id(g, "tokenizer.ggml.eom_token_id", n, &eom);
	if (!rc) {
		tokenizer_add_eog(t, eot);
		tokenizer_add_eog(t, eom);
		tok_add_eog_text(t);
	}
	/* Phi-3's special tokens swallow the whitespace after them (llama.cpp sets this by model name). */
	struct gguf_str gname = {"", 0};
	gguf_get_str(g, "general.name", &gname);
	bool phi3 = false;
	for (uint64_t i = 0; i + 4 <= gname.n; i++)
		phi3 = phi3 || !strncasecmp(gname.p + i, "phi3", 4) || (i + 5 <= gname.n && !strncasecmp(gname.p + i, "phi-3", 5));
	for (int i = 0; !rc && phi3 && i < t->n_added; i++) {
		size_t len;
		const char *s = tokenizer_text(t, t->added[i].id, &len);
		bool keep = (len == 5 && !memcmp(s, "<unk>", 5)) || (len == 3 && !memcmp(s, "<s>", 3)) ||
			    (len == 13 && !memcmp(s, "<|endoftext|>", 13));
		t->added[i].rstrip = !keep;
	}
	if (rc) {
		tokenizer_free(t);
		return rc;
	}
	*out = t;
	return 0;
}
