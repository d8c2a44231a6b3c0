/*
 * tokenizer.c: encoding (added-token partition, then the pipeline per segment) and tokenizer_open.
 * Decoding is in tok_decode.c.
 *
 * Added tokens are found leftmost-longest with a byte trie, like the reference's Aho-Corasick matcher, in
 * two passes as Hugging Face does: tokens with normalized:false in the raw text, then tokens with
 * normalized:true (by their normalized content) in each normalized segment. Their lstrip/rstrip flags
 * swallow the whitespace beside them (Unicode White_Space; ASCII for GGUF, as llama.cpp).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <utf8proc.h>

#include "layout/gguf.h"
#include "tok_internal.h"
#include "base/util.h"

/* Offset of the first invalid UTF-8 sequence (overlongs, surrogates and > U+10FFFF included), or n. */
static size_t utf8_check(const uint8_t *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		uint8_t c = s[i];
		if (c < 0x80) {
			i++;
			continue;
		}
		int k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		if (!k || i + (size_t)k > n)
			return i;
		for (int j = 1; j < k; j++)
			if ((s[i + j] & 0xC0) != 0x80)
				return i;
		if ((c == 0xE0 && s[i + 1] < 0xA0) || (c == 0xED && s[i + 1] >= 0xA0) || (c == 0xF0 && s[i + 1] < 0x90) ||
		    (c == 0xF4 && s[i + 1] >= 0x90))
			return i;
		i += (size_t)k;
	}
	return n;
}

/* One encode call: the flags, the scratch space and the output. */
struct enc {
	struct tokenizer *t;
	bool parse_special;
	struct tok_work w;
	struct tok_ids *out;
	char *err;
	size_t errlen;
};

static bool ascii_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Length of the character at s[i..n) if it is whitespace, else 0: Unicode White_Space for tokenizer.json
 * (Rust's char::is_whitespace), ASCII for GGUF (llama.cpp's isspace). */
static size_t space_at(const struct tokenizer *t, const char *s, size_t n, size_t i)
{
	if (!t->hf)
		return ascii_space(s[i]);
	utf8proc_int32_t cp;
	utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
	return k > 0 && tok_is_space((uint32_t)cp) ? (size_t)k : 0;
}

/* Start of the character that ends at s + i (i > 0). */
static size_t char_start(const char *s, size_t i)
{
	size_t j = i - 1;
	while (j > 0 && i - j < 4 && ((uint8_t)s[j] & 0xC0) == 0x80)
		j--;
	return j;
}

/* Whether the character at s[i..n) is a word character (\w of Rust's regex: HF's single_word check). */
static bool word_at(const struct enc *e, const char *s, size_t n, size_t i)
{
	return i < n && pcre2_match(e->t->word_re, (PCRE2_SPTR)s, n, i, PCRE2_ANCHORED | PCRE2_NO_UTF_CHECK, e->w.md, NULL) > 0;
}

/* The longest word of tr at s[pos..n): its index in added[] and end in *end, or -1. skip_special: special
 * tokens do not count as words (GGUF without parse_special). */
static int trie_longest(const struct tokenizer *t, const struct tok_trie *tr, const char *s, size_t n, size_t pos,
			bool skip_special, size_t *end)
{
	int best = -1;
	int32_t node = 0;
	for (size_t i = pos; i < n; i++) {
		int32_t c = tr->node[node].child;
		while (c >= 0 && tr->node[c].byte != (uint8_t)s[i])
			c = tr->node[c].sibling;
		if (c < 0)
			break;
		node = c;
		int a = tr->node[node].added;
		if (a < 0 || (skip_special && t->added[a].special))
			continue;
		best = a;
		*end = i + 1;
	}
	return best;
}

static int split_added(struct enc *e, int level, const char *const *sp, size_t n, bool first);

/* Pre-tokenizes and encodes w.text[off..off+len). */
static int encode_pieces(struct enc *e, size_t off, size_t len, bool first)
{
	if (!len)
		return 0;
	struct tok_work *w = &e->w;
	int rc = tok_pretokenize(e->t, (uint32_t)off, (uint32_t)len, first ? (uint32_t)off : UINT32_MAX, w, e->err, e->errlen);
	for (size_t i = 0; !rc && i < w->n; i++)
		rc = tok_bpe_word(e->t, w->text.p + w->pieces[i].off, w->pieces[i].len, w, e->out);
	return rc;
}

/* A segment of the level's text between added tokens. Level 0 (raw text): normalized, then split at the
 * normalized added tokens (level 1), whose segments are pre-tokenized. first: the segment starts at the
 * input's offset 0. */
static int encode_segment(struct enc *e, int level, const char *s, size_t off, size_t len, bool first)
{
	if (level)
		return encode_pieces(e, off, len, first);
	if (!len)
		return 0;
	int rc = tok_normalize(e->t, s + off, len, &e->w, e->err, e->errlen);
	first = first && e->w.origin_kept;
	if (rc || !e->t->trie_norm.n_words)
		return rc ? rc : encode_pieces(e, 0, e->w.text.n, first);
	return split_added(e, 1, (const char *const *)&e->w.text.p, e->w.text.n, first);
}

/* Splits the text *sp[0..n) at added tokens as HF's AddedVocabulary::find_matches does: leftmost-longest
 * non-overlapping matches over all tokens; a match that its flags reject (a special token not parsed,
 * single_word next to a word character) is skipped whole. *sp is re-read after each segment (level 1
 * scans w.text, which pre-tokenizing appends to). GGUF follows llama.cpp: unparsed specials are no match. */
static int split_added(struct enc *e, int level, const char *const *sp, size_t n, bool first)
{
	const struct tokenizer *t = e->t;
	const struct tok_trie *tr = level ? &t->trie_norm : &t->trie;
	bool skip_special = !t->hf && !e->parse_special;
	size_t scan = 0, done = 0; /* done: start of the text not yet encoded (HF's start_offset) */
	int rc = 0;
	while (!rc && scan < n) {
		const char *s = *sp;
		size_t pos = scan, end = 0, k;
		int a = -1;
		for (; pos < n && a < 0; pos++)
			if (tr->first_byte[(uint8_t)s[pos]])
				a = trie_longest(t, tr, s, n, pos, skip_special, &end);
		if (a < 0)
			break;
		pos--;
		const struct tok_added *ad = &t->added[a];
		scan = end;
		if (ad->special && !e->parse_special)
			continue;
		if (ad->single_word && ((pos > 0 && word_at(e, s, n, char_start(s, pos))) || word_at(e, s, n, end)))
			continue;
		size_t start = pos, stop = end;
		while (ad->lstrip && start > done && space_at(t, s, n, char_start(s, start)))
			start = char_start(s, start);
		while (ad->rstrip && stop < n && (k = space_at(t, s, n, stop)))
			stop += k;
		if (start > done)
			rc = encode_segment(e, level, s, done, start - done, first && done == 0);
		rc = rc ? rc : tok_ids_push(e->out, ad->id);
		done = stop;
		if (!t->hf)
			scan = stop;
	}
	if (!rc && done < n)
		rc = encode_segment(e, level, *sp, done, n - done, first && done == 0);
	return rc;
}

static int push_list(struct tok_ids *out, const int32_t *ids, int n, int32_t one)
{
	int rc = n ? 0 : tok_ids_push(out, one);
	for (int i = 0; !rc && i < n; i++)
		rc = tok_ids_push(out, ids[i]);
	return rc;
}

int tokenizer_encode(struct tokenizer *t, const char *text, size_t len, unsigned flags, struct tok_ids *out,
		     char *err, size_t errlen)
{
	err[0] = 0;
	size_t bad = utf8_check((const uint8_t *)text, len);
	if (bad < len) {
		snprintf(err, errlen, "text is not valid UTF-8 at byte %zu", bad);
		return -EILSEQ;
	}
	struct enc e = {.t = t, .parse_special = flags & TOK_PARSE_SPECIAL, .out = out, .err = err, .errlen = errlen};
	int rc = (e.w.md = pcre2_match_data_create(16, NULL)) ? 0 : -ENOMEM;
	if (!rc && (flags & TOK_ADD_SPECIAL) && t->add_bos && t->bos >= 0)
		rc = push_list(out, t->tmpl_pre, t->n_tmpl_pre, t->bos);
	rc = rc ? rc : split_added(&e, 0, &text, len, true);
	if (!rc && (flags & TOK_ADD_SPECIAL) && t->add_eos && t->eos >= 0)
		rc = push_list(out, t->tmpl_post, t->n_tmpl_post, t->eos);
	tok_work_free(&e.w);
	if (rc && !err[0])
		snprintf(err, errlen, "out of memory while tokenizing");
	return rc;
}

/* ---- opening ---- */

int tokenizer_open(struct tokenizer **t, const char *path, char *err, size_t errlen)
{
	struct stat st;
	if (stat(path, &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return -errno;
	}
	char json[4096], cfg[4096], gg[4096];
	if (S_ISDIR(st.st_mode)) {
		snprintf(json, sizeof(json), "%s/tokenizer.json", path);
		snprintf(cfg, sizeof(cfg), "%s/tokenizer_config.json", path);
		snprintf(gg, sizeof(gg), "%s/tokenizer.gguf", path);
		if (path_is_file(json))
			return tokenizer_from_json(t, json, path_is_file(cfg) ? cfg : NULL, err, errlen);
		if (!path_is_file(gg)) {
			snprintf(err, errlen, "%s: no tokenizer.json or tokenizer.gguf in this directory", path);
			return -ENOENT;
		}
		path = gg;
	}
	size_t n = strlen(path);
	if (n >= 5 && !strcmp(path + n - 5, ".gguf")) {
		struct gguf g;
		int rc = gguf_open(&g, path, err, errlen);
		if (rc)
			return rc;
		rc = tokenizer_from_gguf(t, &g, path, err, errlen);
		gguf_close(&g);
		return rc;
	}
	const char *slash = strrchr(path, '/');
	snprintf(cfg, sizeof(cfg), "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
	return tokenizer_from_json(t, path, path_is_file(cfg) ? cfg : NULL, err, errlen);
}
