/*
 * tok_json.c: a tokenizer from a Hugging Face tokenizer.json (model BPE) and tokenizer_config.json.
 * Every component is mapped onto ferry's pipeline; a component ferry does not implement is refused with
 * its JSON path and type, never approximated.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

struct ctx {
	struct tokenizer *t;
	const char *file;
	char *err;
	size_t errlen;
	bool fused; /* an earlier decoder step (Fuse, ByteLevel) made the tokens one string */
};

static int bad(struct ctx *c, const char *where, const char *what)
{
	snprintf(c->err, c->errlen, "%s: %s: %s", c->file, where, what);
	return -EINVAL;
}

static int unsupported(struct ctx *c, const char *where, const json_t *obj)
{
	const char *type = json_string_value(json_object_get(obj, "type"));
	snprintf(c->err, c->errlen, "%s: %s type '%s' is not supported", c->file, where, type ? type : "?");
	return -ENOTSUP;
}

static bool is_type(const json_t *o, const char *type)
{
	const char *t = json_string_value(json_object_get(o, "type"));
	return t && !strcmp(t, type);
}

static bool get_bool(const json_t *o, const char *key, bool def)
{
	const json_t *v = json_object_get(o, key);
	return json_is_boolean(v) ? json_is_true(v) : def;
}

/* A literal as a PCRE2 pattern. */
static char *escape_literal(const char *s, size_t n)
{
	char *r = malloc(2 * n + 1), *p = r;
	if (!r)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch < 0x80 && !((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z')))
			*p++ = '\\';
		*p++ = (char)ch;
	}
	*p = 0;
	return r;
}

/* A {"String": s} or {"Regex": r} pattern compiled as a regex. */
static pcre2_code *pattern(struct ctx *c, const json_t *pat, const char *where)
{
	const json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
	if (json_is_string(s)) {
		char *e = escape_literal(json_string_value(s), json_string_length(s));
		pcre2_code *re = e ? tok_regex(e, strlen(e), c->err, c->errlen) : NULL;
		free(e);
		return re;
	}
	if (json_is_string(r))
		return tok_regex(json_string_value(r), json_string_length(r), c->err, c->errlen);
	bad(c, where, "pattern is neither {\"String\": ...} nor {\"Regex\": ...}");
	return NULL;
}

static int normalizer(struct ctx *c, const json_t *n)
{
	if (json_is_null(n) || !n)
		return 0;
	struct tok_norm nm = {0};
	if (is_type(n, "Sequence")) {
		const json_t *list = json_object_get(n, "normalizers");
		size_t i;
		const json_t *v;
		int rc = json_is_array(list) ? 0 : bad(c, "normalizer", "Sequence without a normalizers list");
		json_array_foreach(list, i, v) if (!rc) rc = normalizer(c, v);
		return rc;
	}
	static const struct {
		const char *name;
		enum tok_norm_kind kind;
	} simple[] = {{"NFC", TN_NFC}, {"NFD", TN_NFD}, {"NFKC", TN_NFKC}, {"NFKD", TN_NFKD}, {"Lowercase", TN_LOWERCASE}};
	for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++)
		if (is_type(n, simple[i].name)) {
			nm.kind = simple[i].kind;
			return tok_norm_push(c->t, nm);
		}
	if (is_type(n, "Prepend")) {
		const json_t *p = json_object_get(n, "prepend");
		if (!json_is_string(p))
			return bad(c, "normalizer Prepend", "prepend is not a string");
		nm.kind = TN_PREPEND;
		nm.na = json_string_length(p);
		nm.a = strndup(json_string_value(p), nm.na);
		return nm.a ? tok_norm_push(c->t, nm) : -ENOMEM;
	}
	if (is_type(n, "Replace")) {
		const json_t *pat = json_object_get(n, "pattern"), *to = json_object_get(n, "content");
		const json_t *lit = json_object_get(pat, "String");
		const json_t *re = json_object_get(pat, "Regex");
		if (!json_is_string(to))
			return bad(c, "normalizer Replace", "content is not a string");
		if ((json_is_string(lit) && !json_string_length(lit)) || (json_is_string(re) && !json_string_length(re)))
			return bad(c, "normalizer Replace", "the pattern is empty (tokenizers panics on empty matches)");
		nm.kind = TN_REPLACE;
		nm.nb = json_string_length(to);
		nm.b = strndup(json_string_value(to), nm.nb);
		if (json_is_string(lit)) {
			nm.na = json_string_length(lit);
			nm.a = strndup(json_string_value(lit), nm.na);
		} else if (!(nm.re = pattern(c, pat, "normalizer Replace"))) {
			free(nm.b);
			return -EINVAL;
		} else {
			uint32_t min = 1;
			pcre2_pattern_info(nm.re, PCRE2_INFO_MINLENGTH, &min);
			if (!min) {
				pcre2_code_free(nm.re);
				free(nm.b);
				return bad(c, "normalizer Replace", "the pattern can match the empty string (tokenizers panics on empty matches)");
			}
		}
		return tok_norm_push(c->t, nm);
	}
	if (is_type(n, "Strip")) {
		nm.kind = TN_STRIP;
		nm.left = get_bool(n, "strip_left", true);
		nm.right = get_bool(n, "strip_right", true);
		return tok_norm_push(c->t, nm);
	}
	return unsupported(c, "normalizer", n);
}

static int split_behavior(struct ctx *c, const json_t *o, enum tok_split *b)
{
	static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous"};
	const char *s = json_string_value(json_object_get(o, "behavior"));
	for (int i = 0; s && i < 5; i++)
		if (!strcmp(s, names[i])) {
			*b = (enum tok_split)i;
			return 0;
		}
	return bad(c, "pre_tokenizer Split", "behavior is not one of Removed, Isolated, MergedWithPrevious, "
					     "MergedWithNext, Contiguous");
}

static int regex_split(struct ctx *c, const char *re, enum tok_split b, bool invert)
{
	struct tok_pre p = {.kind = TP_SPLIT, .behavior = b, .invert = invert};
	if (!(p.re = tok_regex(re, strlen(re), c->err, c->errlen)))
		return -EINVAL;
	return tok_pre_push(c->t, p);
}

static int pre_tokenizer(struct ctx *c, const json_t *n)
{
	if (json_is_null(n) || !n)
		return 0;
	struct tok_pre p = {0};
	if (is_type(n, "Sequence")) {
		const json_t *list = json_object_get(n, "pretokenizers");
		size_t i;
		const json_t *v;
		int rc = json_is_array(list) ? 0 : bad(c, "pre_tokenizer", "Sequence without a pretokenizers list");
		json_array_foreach(list, i, v) if (!rc) rc = pre_tokenizer(c, v);
		return rc;
	}
	if (is_type(n, "Split")) {
		p.kind = TP_SPLIT;
		p.invert = get_bool(n, "invert", false);
		int rc = split_behavior(c, n, &p.behavior);
		if (rc || !(p.re = pattern(c, json_object_get(n, "pattern"), "pre_tokenizer Split")))
			return rc ? rc : -EINVAL;
		return tok_pre_push(c->t, p);
	}
	if (is_type(n, "ByteLevel")) {
		p.kind = TP_BYTELEVEL;
		p.add_prefix_space = get_bool(n, "add_prefix_space", true);
		if (get_bool(n, "use_regex", true) && !(p.re = tok_regex(tok_gpt2_regex, strlen(tok_gpt2_regex), c->err, c->errlen)))
			return -EINVAL;
		c->t->byte_level = true;
		return tok_pre_push(c->t, p);
	}
	if (is_type(n, "Metaspace")) {
		const json_t *r = json_object_get(n, "replacement");
		const char *scheme = json_string_value(json_object_get(n, "prepend_scheme"));
		if (!json_is_string(r) || json_string_length(r) >= sizeof(p.repl) || json_string_length(r) == 0)
			return bad(c, "pre_tokenizer Metaspace", "replacement is not a short string");
		p.kind = TP_METASPACE;
		p.nrepl = json_string_length(r);
		memcpy(p.repl, json_string_value(r), p.nrepl);
		p.split = get_bool(n, "split", true);
		if (scheme)
			p.prepend = !strcmp(scheme, "first") ? PREPEND_FIRST : !strcmp(scheme, "never") ? PREPEND_NEVER : PREPEND_ALWAYS;
		else
			p.prepend = get_bool(n, "add_prefix_space", true) ? PREPEND_ALWAYS : PREPEND_NEVER;
		return tok_pre_push(c->t, p);
	}
	if (is_type(n, "Digits"))
		return regex_split(c, "\\p{N}", get_bool(n, "individual_digits", false) ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS,
				   false);
	/* HF's \w+|[^\w\s]+ with Rust regex's classes: \w is Alphabetic, M, Nd, Pc, Join_Control; \s and
	 * char::is_whitespace are White_Space (PCRE2's differ: its \w lacks marks, its \s lacks U+0085). */
	if (is_type(n, "Whitespace"))
		return regex_split(c, "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]+|"
				      "[^\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}\\p{White_Space}]+",
				   SPLIT_REMOVED, true);
	if (is_type(n, "WhitespaceSplit"))
		return regex_split(c, "\\p{White_Space}+", SPLIT_REMOVED, false);
	if (is_type(n, "Punctuation")) {
		enum tok_split b = SPLIT_ISOLATED;
		int rc = json_object_get(n, "behavior") ? split_behavior(c, n, &b) : 0;
		return rc ? rc : regex_split(c, "[\\p{P}!-/:-@\\[-`{-~]", b, false);
	}
	return unsupported(c, "pre_tokenizer", n);
}

static int decoder(struct ctx *c, const json_t *n)
{
	struct tokenizer *t = c->t;
	if (json_is_null(n) || !n) {
		t->dec_join = true; /* `tokenizers` joins the tokens with spaces when there is no decoder */
		return 0;
	}
	if (is_type(n, "Sequence")) {
		const json_t *list = json_object_get(n, "decoders");
		size_t i;
		const json_t *v;
		int rc = json_is_array(list) ? 0 : bad(c, "decoder", "Sequence without a decoders list");
		json_array_foreach(list, i, v) if (!rc) rc = decoder(c, v);
		return rc;
	}
	if (is_type(n, "ByteLevel")) {
		t->dec_byte_level = true;
		c->fused = true;
		return 0;
	}
	if (is_type(n, "ByteFallback")) {
		t->dec_byte_fallback = true;
		return 0;
	}
	if (is_type(n, "Fuse")) {
		c->fused = true;
		return 0;
	}
	if (is_type(n, "Replace")) {
		const char *from = json_string_value(json_object_get(json_object_get(n, "pattern"), "String"));
		const char *to = json_string_value(json_object_get(n, "content"));
		if (!from || !to || strcmp(from, "\xe2\x96\x81") || strcmp(to, " "))
			return bad(c, "decoder Replace", "only the replacement of \"\xe2\x96\x81\" by \" \" is supported");
		t->dec_space = true;
		return 0;
	}
	if (is_type(n, "Strip")) {
		const char *content = json_string_value(json_object_get(n, "content"));
		json_int_t start = json_integer_value(json_object_get(n, "start"));
		json_int_t stop = json_integer_value(json_object_get(n, "stop"));
		if (!content || strcmp(content, " ") || start < 0 || start > 1 || stop != 0)
			return bad(c, "decoder Strip", "only stripping one leading space is supported");
		if (!c->fused && start)
			return bad(c, "decoder Strip", "only after Fuse (stripping the text, not every token) is supported");
		t->dec_strip = (int)start;
		return 0;
	}
	if (is_type(n, "Metaspace")) {
		const char *scheme = json_string_value(json_object_get(n, "prepend_scheme"));
		const char *repl = json_string_value(json_object_get(n, "replacement"));
		bool prepend = scheme ? strcmp(scheme, "never") != 0 : get_bool(n, "add_prefix_space", true);
		if (repl && strcmp(repl, "\xe2\x96\x81"))
			return bad(c, "decoder Metaspace", "only the replacement \"\xe2\x96\x81\" is supported");
		if (c->fused && prepend)
			return bad(c, "decoder Metaspace", "after Fuse or ByteLevel is not supported");
		t->dec_space = true;
		/* `tokenizers` drops every replacement character of the first token (not just one space). */
		t->dec_meta_first = prepend;
		return 0;
	}
	return unsupported(c, "decoder", n);
}

/* Appends the ids of a TemplateProcessing special token (its special_tokens entry, or the token itself). */
static int special_ids(struct ctx *c, const json_t *specials, const char *name, int32_t **v, int *n)
{
	const json_t *ids = json_object_get(json_object_get(specials, name), "ids");
	size_t k = json_is_array(ids) ? json_array_size(ids) : 1;
	int32_t *p = realloc(*v, sizeof(*p) * (*n + k));
	if (!p)
		return -ENOMEM;
	*v = p;
	for (size_t i = 0; i < k; i++) {
		int32_t id = json_is_array(ids) ? (int32_t)json_integer_value(json_array_get(ids, i)) : tokenizer_find(c->t, name);
		if (id < 0 || id >= c->t->n_vocab)
			return bad(c, "post_processor", "TemplateProcessing names a special token that is not in the vocabulary");
		p[(*n)++] = id;
	}
	return 0;
}

/* Which special tokens a single sequence gets: TemplateProcessing's "single", or Roberta/Bert's cls/sep. */
static int post_processor(struct ctx *c, const json_t *n)
{
	struct tokenizer *t = c->t;
	if (!n || json_is_null(n) || is_type(n, "ByteLevel"))
		return 0;
	if (is_type(n, "Sequence")) {
		const json_t *list = json_object_get(n, "processors");
		size_t i;
		const json_t *v;
		int rc = 0;
		json_array_foreach(list, i, v) if (!rc) rc = post_processor(c, v);
		return rc;
	}
	if (is_type(n, "TemplateProcessing")) {
		const json_t *single = json_object_get(n, "single"), *specials = json_object_get(n, "special_tokens");
		size_t i;
		const json_t *item;
		int seqs = 0, rc = 0;
		json_array_foreach(single, i, item) {
			const json_t *sp = json_object_get(item, "SpecialToken");
			if (json_object_get(item, "Sequence")) {
				seqs++;
				continue;
			}
			const char *name = json_string_value(json_object_get(sp, "id"));
			if (!name)
				return bad(c, "post_processor", "TemplateProcessing item is neither SpecialToken nor Sequence");
			rc = seqs ? special_ids(c, specials, name, &t->tmpl_post, &t->n_tmpl_post)
				  : special_ids(c, specials, name, &t->tmpl_pre, &t->n_tmpl_pre);
			if (rc)
				return rc;
		}
		if (seqs != 1)
			return bad(c, "post_processor", "TemplateProcessing single must hold the sequence $A exactly once");
		if ((t->add_bos = t->n_tmpl_pre > 0))
			t->bos = t->tmpl_pre[t->n_tmpl_pre - 1];
		if ((t->add_eos = t->n_tmpl_post > 0))
			t->eos = t->tmpl_post[t->n_tmpl_post - 1];
		return 0;
	}
	if (is_type(n, "RobertaProcessing") || is_type(n, "BertProcessing")) {
		const json_t *cls = json_object_get(n, "cls"), *sep = json_object_get(n, "sep");
		t->bos = (int32_t)json_integer_value(json_array_get(cls, 1));
		t->eos = (int32_t)json_integer_value(json_array_get(sep, 1));
		t->add_bos = t->add_eos = true;
		return 0;
	}
	return unsupported(c, "post_processor", n);
}

/* tokenizer_config.json's token fields are strings or {"content": ...} objects. */
static int32_t config_token(struct tokenizer *t, const json_t *cfg, const char *key)
{
	const json_t *v = json_object_get(cfg, key);
	const char *s = json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "content"));
	return s ? tokenizer_find(t, s) : -1;
}

static int build(struct ctx *c, const json_t *root, const json_t *cfg)
{
	const json_t *model = json_object_get(root, "model");
	const json_t *vocab = json_object_get(model, "vocab"), *merges = json_object_get(model, "merges");
	const json_t *added = json_object_get(root, "added_tokens");
	const char *mtype = json_string_value(json_object_get(model, "type"));
	if (mtype && strcmp(mtype, "BPE"))
		return unsupported(c, "model", model);
	if (!json_is_object(vocab) || !json_is_array(merges))
		return bad(c, "model", "a BPE model needs a vocab object and a merges list");
	const char *keys[] = {"continuing_subword_prefix", "end_of_word_suffix", "dropout"};
	for (int i = 0; i < 3; i++) {
		const json_t *v = json_object_get(model, keys[i]);
		if (v && !json_is_null(v) && !(json_is_string(v) && json_string_length(v) == 0)) {
			snprintf(c->err, c->errlen, "%s: model.%s is set; ferry does not support it", c->file, keys[i]);
			return -ENOTSUP;
		}
	}
	int64_t n = 0;
	const char *k;
	const json_t *v;
	size_t i;
	json_object_foreach((json_t *)vocab, k, v) {
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= (1 << 24))
			return bad(c, "model.vocab", "token ids must be integers in 0..16777215");
		n = json_integer_value(v) + 1 > n ? json_integer_value(v) + 1 : n;
	}
	json_array_foreach(added, i, v) {
		json_int_t id = json_integer_value(json_object_get(v, "id"));
		if (!json_is_string(json_object_get(v, "content")) || id < 0 || id >= (1 << 24))
			return bad(c, "added_tokens", "each entry needs a content string and an id in 0..16777215");
		n = id + 1 > n ? id + 1 : n;
	}
	struct tokenizer *t = c->t = tok_alloc((int32_t)n, c->file);
	if (!t)
		return -ENOMEM;
	t->merge = TOK_MERGE_RANKS;
	t->hf = true;
	t->byte_fallback = get_bool(model, "byte_fallback", false);
	t->ignore_merges = get_bool(model, "ignore_merges", false);
	t->fuse_unk = get_bool(model, "fuse_unk", false);
	int rc = 0;
	json_object_foreach((json_t *)vocab, k, v) {
		int type = t->byte_fallback && strlen(k) == 6 && !strncmp(k, "<0x", 3) && k[5] == '>' ? TOK_TYPE_BYTE
												: TOK_TYPE_NORMAL;
		if (!rc)
			rc = tok_set_token(t, (int32_t)json_integer_value(v), k, strlen(k), 0.0f, type);
	}
	json_array_foreach(added, i, v) {
		int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
		const json_t *content = json_object_get(v, "content");
		bool special = get_bool(v, "special", false);
		rc = rc ? rc : tok_set_token(t, id, json_string_value(content), json_string_length(content), 0.0f,
					     special ? TOK_TYPE_CONTROL : TOK_TYPE_USER);
		struct tok_added a = {id, special, get_bool(v, "lstrip", false), get_bool(v, "rstrip", false),
				      get_bool(v, "single_word", false), get_bool(v, "normalized", false)};
		rc = rc ? rc : tok_added_push(t, a);
	}
	rc = rc ? rc : normalizer(c, json_object_get(root, "normalizer"));
	rc = rc ? rc : pre_tokenizer(c, json_object_get(root, "pre_tokenizer"));
	rc = rc ? rc : decoder(c, json_object_get(root, "decoder"));
	rc = rc ? rc : tok_finish(t, c->err, c->errlen);
	json_array_foreach(merges, i, v) {
		if (rc)
			break;
		const char *a, *b;
		size_t na, nb;
		if (json_is_string(v)) {
			a = json_string_value(v);
			const char *sp = strchr(a, ' ');
			if (!sp)
				return bad(c, "model.merges", "a merge string is not two tokens separated by a space");
			na = (size_t)(sp - a);
			b = sp + 1;
			nb = strlen(b);
		} else if (json_array_size(v) == 2 && json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
			a = json_string_value(json_array_get(v, 0));
			b = json_string_value(json_array_get(v, 1));
			na = json_string_length(json_array_get(v, 0));
			nb = json_string_length(json_array_get(v, 1));
		} else {
			return bad(c, "model.merges", "a merge is neither \"a b\" nor [\"a\", \"b\"]");
		}
		rc = tok_add_merge(t, a, na, b, nb, (int32_t)i);
		if (rc == -ENOENT) {
			snprintf(c->err, c->errlen, "%s: model.merges[%zu]: '%.*s' + '%.*s' is not in the vocabulary", c->file, i,
				 (int)(na > 40 ? 40 : na), a, (int)(nb > 40 ? 40 : nb), b);
			return -EINVAL;
		}
	}
	const char *unk = json_string_value(json_object_get(model, "unk_token"));
	t->unk = unk ? tokenizer_find(t, unk) : -1;
	rc = rc ? rc : post_processor(c, json_object_get(root, "post_processor"));
	if (!rc && cfg) {
		int32_t b = config_token(t, cfg, "bos_token"), e = config_token(t, cfg, "eos_token");
		/* The config's settings replace the template's specials (transformers rebuilds the template). */
		if (b >= 0 || json_object_get(cfg, "add_bos_token"))
			t->n_tmpl_pre = 0;
		if (e >= 0 || json_object_get(cfg, "add_eos_token"))
			t->n_tmpl_post = 0;
		t->bos = b >= 0 ? b : t->bos;
		t->eos = e >= 0 ? e : t->eos;
		t->add_bos = get_bool(cfg, "add_bos_token", t->add_bos);
		t->add_eos = get_bool(cfg, "add_eos_token", t->add_eos);
	}
	if (!rc)
		tok_add_eog_text(t);
	return rc;
}

int tokenizer_from_json(struct tokenizer **out, const char *json_path, const char *config_path, char *err,
			size_t errlen)
{
	json_error_t je;
	json_t *root = json_load_file(json_path, 0, &je), *cfg = NULL;
	if (!root) {
		snprintf(err, errlen, "%s:%d:%d: %s", json_path, je.line, je.column, je.text);
		return -EINVAL;
	}
	if (config_path && !(cfg = json_load_file(config_path, 0, &je))) {
		snprintf(err, errlen, "%s:%d:%d: %s", config_path, je.line, je.column, je.text);
		json_decref(root);
		return -EINVAL;
	}
	struct ctx c = {NULL, json_path, err, errlen, false};
	int rc = build(&c, root, cfg);
	json_decref(root);
	json_decref(cfg);
	if (rc) {
		if (rc == -ENOMEM)
			snprintf(err, errlen, "%s: out of memory", json_path);
		tokenizer_free(c.t);
		return rc;
	}
	*out = c.t;
	return 0;
}
