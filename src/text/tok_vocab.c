/*
 * tok_vocab.c: building a tokenizer: token texts and their index, merges, byte tables, the added-token
 * trie, end-of-generation ids, and the owned pipeline steps. Loaders fill tokens, set the flags, then
 * call tok_finish.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* What HF's ByteLevel pre-tokenizer splits with (GPT-2's pattern). */
const char *const tok_gpt2_regex =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

int tok_buf_add(struct tok_buf *b, const void *p, size_t n)
{
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *q = realloc(b->p, cap);
		if (!q)
			return -ENOMEM;
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return 0;
}

void tok_buf_free(struct tok_buf *b)
{
	free(b->p);
	memset(b, 0, sizeof(*b));
}

int tok_ids_push(struct tok_ids *v, int32_t id)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		int32_t *p = realloc(v->ids, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		v->ids = p;
		v->cap = cap;
	}
	v->ids[v->n++] = id;
	return 0;
}

void tok_ids_free(struct tok_ids *v)
{
	free(v->ids);
	memset(v, 0, sizeof(*v));
}

static void byte_level_map(struct tokenizer *t);

struct tokenizer *tok_alloc(int32_t n_vocab, const char *name)
{
	struct tokenizer *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->n_vocab = n_vocab;
	t->off = calloc((size_t)n_vocab + 1, sizeof(*t->off));
	t->len = calloc((size_t)n_vocab + 1, sizeof(*t->len));
	t->score = calloc((size_t)n_vocab + 1, sizeof(*t->score));
	t->type = calloc((size_t)n_vocab + 1, 1);
	t->bos = t->eos = t->unk = -1;
	pthread_mutex_init(&t->lock, NULL);
	if (!t->off || !t->len || !t->score || !t->type || strmap_init(&t->vocab, (uint32_t)n_vocab) ||
	    strmap_init(&t->cache, 1024) || pairmap_init(&t->merges, 16) || tok_buf_add(&t->texts, "", 0)) {
		tokenizer_free(t);
		return NULL;
	}
	memset(t->type, TOK_TYPE_NORMAL, (size_t)n_vocab);
	byte_level_map(t);
	return t;
}

int tok_set_token(struct tokenizer *t, int32_t id, const char *s, size_t n, float score, int type)
{
	if (id < 0 || id >= t->n_vocab || n >= UINT32_MAX)
		return -EINVAL;
	t->off[id] = t->texts.n;
	t->len[id] = (uint32_t)n;
	t->score[id] = score;
	t->type[id] = (uint8_t)type;
	return tok_buf_add(&t->texts, s, n);
}

int tok_add_merge(struct tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank)
{
	int32_t ia = strmap_get(&t->vocab, a, na), ib = strmap_get(&t->vocab, b, nb);
	if (ia < 0 || ib < 0)
		return -ENOENT;
	char stack[256];
	char *ab = na + nb <= sizeof(stack) ? stack : malloc(na + nb);
	if (!ab)
		return -ENOMEM;
	memcpy(ab, a, na);
	memcpy(ab + na, b, nb);
	int32_t id = strmap_get(&t->vocab, ab, na + nb);
	if (ab != stack)
		free(ab);
	if (id < 0)
		return -ENOENT;
	return pairmap_put(&t->merges, (uint64_t)ia << 32 | (uint32_t)ib, rank, id);
}

int tok_added_push(struct tokenizer *t, struct tok_added a)
{
	if (a.id < 0 || a.id >= t->n_vocab || t->len[a.id] == 0)
		return 0;
	for (int i = 0; i < t->n_added; i++)
		if (t->added[i].id == a.id) {
			t->added[i] = a;
			return 0;
		}
	/* Capacity is the next power of two: grow when the count reaches one. */
	if ((t->n_added & (t->n_added - 1)) == 0) {
		struct tok_added *p = realloc(t->added, sizeof(*p) * (size_t)(t->n_added ? 2 * t->n_added : 1));
		if (!p)
			return -ENOMEM;
		t->added = p;
	}
	t->added[t->n_added++] = a;
	return 0;
}

static int32_t trie_new(struct tok_trie *tr, uint8_t byte)
{
	if (tr->n == tr->cap) {
		int cap = tr->cap ? 2 * tr->cap : 256;
		struct tok_trie_node *n = realloc(tr->node, sizeof(*n) * (size_t)cap);
		if (!n)
			return -1;
		tr->node = n;
		tr->cap = cap;
	}
	tr->node[tr->n] = (struct tok_trie_node){-1, -1, byte, -1};
	return tr->n++;
}

static int trie_insert(struct tok_trie *tr, const uint8_t *s, size_t n, int32_t added)
{
	if (!n)
		return 0;
	int32_t node = 0;
	for (size_t i = 0; i < n; i++) {
		int32_t c = tr->node[node].child;
		while (c >= 0 && tr->node[c].byte != s[i])
			c = tr->node[c].sibling;
		if (c < 0) {
			if ((c = trie_new(tr, s[i])) < 0)
				return -ENOMEM;
			tr->node[c].sibling = tr->node[node].child;
			tr->node[node].child = c;
		}
		node = c;
	}
	tr->node[node].added = added;
	tr->first_byte[s[0]] = 1;
	tr->n_words++;
	return 0;
}

static int trie_reset(struct tok_trie *tr)
{
	tr->n = tr->n_words = 0;
	memset(tr->first_byte, 0, sizeof(tr->first_byte));
	return trie_new(tr, 0) < 0 ? -ENOMEM : 0;
}

pcre2_code *tok_regex(const char *pattern, size_t len, char *err, size_t errlen)
{
	int ec;
	PCRE2_SIZE eo;
	pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
	if (!re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(ec, msg, sizeof(msg));
		snprintf(err, errlen, "regex /%.*s/ at offset %zu: %s", (int)(len > 80 ? 80 : len), pattern, (size_t)eo,
			 (const char *)msg);
		return NULL;
	}
	pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter where JIT is unavailable */
	return re;
}

int tok_norm_push(struct tokenizer *t, struct tok_norm n)
{
	struct tok_norm *p = realloc(t->norm, sizeof(*p) * (size_t)(t->n_norm + 1));
	if (!p)
		return -ENOMEM;
	t->norm = p;
	t->norm[t->n_norm++] = n;
	return 0;
}

int tok_pre_push(struct tokenizer *t, struct tok_pre p)
{
	struct tok_pre *q = realloc(t->pre, sizeof(*q) * (size_t)(t->n_pre + 1));
	if (!q)
		return -ENOMEM;
	t->pre = q;
	t->pre[t->n_pre++] = p;
	return 0;
}

/* GPT-2's byte -> code point table: printable Latin-1 bytes map to themselves, the other 68 to 256.. */
static void byte_level_map(struct tokenizer *t)
{
	int next = 256;
	for (int cp = 0; cp < 324; cp++)
		t->cp_byte[cp] = -1;
	for (int b = 0; b < 256; b++) {
		bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
		int cp = keep ? b : next++;
		t->cp_byte[cp] = (int16_t)b;
		if (cp < 0x80) {
			t->byte_map[b][0] = (char)cp;
			t->byte_map_len[b] = 1;
		} else {
			t->byte_map[b][0] = (char)(0xC0 | cp >> 6);
			t->byte_map[b][1] = (char)(0x80 | (cp & 63));
			t->byte_map_len[b] = 2;
		}
	}
}

void tok_add_eog_text(struct tokenizer *t)
{
	static const char *const eog_texts[] = {"<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",
						"<|endoftext|>", "<|eom_id|>", "<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>"};
	for (size_t i = 0; i < sizeof(eog_texts) / sizeof(eog_texts[0]); i++) {
		int32_t id = tokenizer_find(t, eog_texts[i]);
		if (id >= 0)
			tokenizer_add_eog(t, id);
	}
	if (t->eos >= 0)
		tokenizer_add_eog(t, t->eos);
}

int tok_finish(struct tokenizer *t, char *err, size_t errlen)
{
	if (t->merge == TOK_MERGE_SCORES) {
		memset(t->barrier, 1, sizeof(t->barrier));
		for (size_t i = 0; i < t->texts.n; i++)
			if ((uint8_t)t->texts.p[i] < 128)
				t->barrier[(uint8_t)t->texts.p[i]] = false;
	}
	/* HF keeps a normalized:true added token under its normalized content: matched by it in the
	 * normalized text, decoded as it, and (when that differs from the content) no longer skipped as a
	 * special token. */
	struct tok_work w = {0};
	int rc = 0;
	for (int i = 0; !rc && i < t->n_added; i++) {
		const struct tok_added *a = &t->added[i];
		if (!a->normalized)
			continue;
		rc = tok_normalize(t, t->texts.p + t->off[a->id], t->len[a->id], &w, err, errlen);
		if (!rc && (w.text.n != t->len[a->id] || memcmp(w.text.p, t->texts.p + t->off[a->id], w.text.n)))
			rc = tok_set_token(t, a->id, w.text.p ? w.text.p : "", w.text.n, t->score[a->id],
					   t->type[a->id] == TOK_TYPE_CONTROL ? TOK_TYPE_USER : t->type[a->id]);
	}
	tok_work_free(&w);
	if (rc)
		return rc;
	for (int32_t id = t->n_vocab - 1; id >= 0; id--)
		if (strmap_put(&t->vocab, t->texts.p + t->off[id], t->len[id], id))
			return -ENOMEM;
	for (int b = 0; b < 256; b++) {
		char s[8];
		if (t->byte_level) {
			t->byte_tok[b] = strmap_get(&t->vocab, t->byte_map[b], t->byte_map_len[b]);
		} else {
			snprintf(s, sizeof(s), "<0x%02X>", b);
			t->byte_tok[b] = t->byte_fallback ? strmap_get(&t->vocab, s, 6) : -1;
		}
	}
	if (trie_reset(&t->trie) || trie_reset(&t->trie_norm))
		return -ENOMEM;
	bool single_word = false;
	for (int i = 0; !rc && i < t->n_added; i++) {
		const struct tok_added *a = &t->added[i];
		single_word = single_word || a->single_word;
		rc = trie_insert(a->normalized ? &t->trie_norm : &t->trie, (const uint8_t *)t->texts.p + t->off[a->id],
				 t->len[a->id], i);
	}
	if (rc)
		return rc;
	static const char word[] = "[\\p{Alphabetic}\\p{M}\\p{Nd}\\p{Pc}\\p{Join_Control}]";
	if (single_word && !t->word_re && !(t->word_re = tok_regex(word, strlen(word), err, errlen)))
		return -EINVAL;
	if ((t->bos >= t->n_vocab) || (t->eos >= t->n_vocab)) {
		snprintf(err, errlen, "%s: BOS/EOS id outside the vocabulary of %d tokens", t->name, t->n_vocab);
		return -EINVAL;
	}
	return 0;
}

void tokenizer_free(struct tokenizer *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->n_norm; i++) {
		free(t->norm[i].a);
		free(t->norm[i].b);
		pcre2_code_free(t->norm[i].re);
	}
	for (int i = 0; i < t->n_pre; i++)
		pcre2_code_free(t->pre[i].re);
	free(t->norm);
	free(t->pre);
	free(t->added);
	free(t->trie.node);
	free(t->trie_norm.node);
	pcre2_code_free(t->word_re);
	free(t->tmpl_pre);
	free(t->tmpl_post);
	free(t->eog);
	free(t->off);
	free(t->len);
	free(t->score);
	free(t->type);
	tok_buf_free(&t->texts);
	strmap_free(&t->vocab);
	strmap_free(&t->cache);
	tok_ids_free(&t->cache_ids);
	pairmap_free(&t->merges);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

int32_t tokenizer_n_vocab(const struct tokenizer *t)
{
	return t->n_vocab;
}

int32_t tokenizer_bos(const struct tokenizer *t)
{
	return t->bos;
}

int32_t tokenizer_eos(const struct tokenizer *t)
{
	return t->eos;
}

bool tokenizer_add_bos(const struct tokenizer *t)
{
	return t->add_bos && t->bos >= 0;
}

bool tokenizer_is_eog(const struct tokenizer *t, int32_t id)
{
	for (int i = 0; i < t->n_eog; i++)
		if (t->eog[i] == id)
			return true;
	return false;
}

int tokenizer_eog_ids(const struct tokenizer *t, const int32_t **ids)
{
	*ids = t->eog;
	return t->n_eog;
}

void tokenizer_add_eog(struct tokenizer *t, int32_t id)
{
	if (id < 0 || id >= t->n_vocab || tokenizer_is_eog(t, id))
		return;
	int32_t *e = realloc(t->eog, sizeof(*e) * (size_t)(t->n_eog + 1));
	if (!e)
		return;
	t->eog = e;
	t->eog[t->n_eog++] = id;
}

int32_t tokenizer_find(const struct tokenizer *t, const char *text)
{
	return strmap_get(&t->vocab, text, strlen(text));
}

const char *tokenizer_text(const struct tokenizer *t, int32_t id, size_t *len)
{
	if (id < 0 || id >= t->n_vocab)
		return NULL;
	*len = t->len[id];
	return t->texts.p + t->off[id];
}

