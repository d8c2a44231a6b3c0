/*
 * tokenizer.c: encoding (added-token partition, then the pipeline per segment) and tokenizer_open.
 * Decoding is in tok_decode.c.
 *
 * Added tokens are found leftmost-longest with a byte trie, like the reference's Aho-Corasick matcher.
 * Their lstrip/rstrip flags swallow the ASCII whitespace beside them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "tok_internal.h"

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

static bool ascii_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool word_byte(uint8_t c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c >= 0x80;
}

/* The longest added token matching at s[pos..] that the flags allow; its end in *end, or -1. */
static int match_added(const struct tokenizer *t, const char *s, size_t n, size_t pos, bool parse_special,
		       size_t *end)
{
	int best = -1;
	int32_t node = 0;
	for (size_t i = pos; i < n; i++) {
		int32_t c = t->trie[node].child;
		while (c >= 0 && t->trie[c].byte != (uint8_t)s[i])
			c = t->trie[c].sibling;
		if (c < 0)
			break;
		node = c;
		int a = t->trie[node].added;
		if (a < 0 || (t->added[a].special && !parse_special))
			continue;
		if (t->added[a].single_word && ((pos > 0 && word_byte((uint8_t)s[pos - 1])) ||
						(i + 1 < n && word_byte((uint8_t)s[i + 1]))))
			continue;
		best = a;
		*end = i + 1;
	}
	return best;
}

static int encode_segment(struct tokenizer *t, const char *s, size_t n, bool first, struct tok_work *w,
			  struct tok_ids *out, char *err, size_t errlen)
{
	if (!n)
		return 0;
	int rc = tok_normalize(t, s, n, w, err, errlen);
	rc = rc ? rc : tok_pretokenize(t, first, w, err, errlen);
	for (size_t i = 0; !rc && i < w->n; i++)
		rc = tok_bpe_word(t, w->text.p + w->pieces[i].off, w->pieces[i].len, w, out);
	if (rc && !err[0])
		snprintf(err, errlen, "out of memory while tokenizing");
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
	bool parse_special = flags & TOK_PARSE_SPECIAL;
	int rc = 0;
	if ((flags & TOK_ADD_SPECIAL) && t->add_bos && t->bos >= 0)
		rc = tok_ids_push(out, t->bos);
	struct tok_work w = {0};
	size_t seg = 0, pos = 0;
	while (!rc && pos < len) {
		size_t end;
		int a = t->first_byte[(uint8_t)text[pos]] ? match_added(t, text, len, pos, parse_special, &end) : -1;
		if (a < 0) {
			pos++;
			continue;
		}
		size_t seg_end = pos;
		while (t->added[a].lstrip && seg_end > seg && ascii_space(text[seg_end - 1]))
			seg_end--;
		rc = encode_segment(t, text + seg, seg_end - seg, seg == 0, &w, out, err, errlen);
		rc = rc ? rc : tok_ids_push(out, t->added[a].id);
		pos = end;
		while (t->added[a].rstrip && pos < len && ascii_space(text[pos]))
			pos++;
		seg = pos;
	}
	rc = rc ? rc : encode_segment(t, text + seg, len - seg, seg == 0, &w, out, err, errlen);
	if (!rc && (flags & TOK_ADD_SPECIAL) && t->add_eos && t->eos >= 0)
		rc = tok_ids_push(out, t->eos);
	tok_work_free(&w);
	if (rc && !err[0])
		snprintf(err, errlen, "out of memory while tokenizing");
	return rc;
}

/* ---- opening ---- */

static bool is_file(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

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
		if (is_file(json))
			return tokenizer_from_json(t, json, is_file(cfg) ? cfg : NULL, err, errlen);
		if (!is_file(gg)) {
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
	return tokenizer_from_json(t, path, is_file(cfg) ? cfg : NULL, err, errlen);
}
