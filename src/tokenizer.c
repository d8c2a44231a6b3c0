/*
 * tokenizer.c: encoding (added-token partition, then the pipeline per segment) and decoding (token
 * pieces, the SentencePiece leading-space strip, UTF-8-safe streaming), and tokenizer_open.
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

/* ---- decoding ---- */

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int piece(const struct tokenizer *t, int32_t id, bool special, struct tok_buf *out)
{
	if (id < 0 || id >= t->n_vocab)
		return -EINVAL;
	const char *s = t->texts.p + t->off[id];
	size_t n = t->len[id];
	switch (t->type[id]) {
	case TOK_TYPE_CONTROL:
	case TOK_TYPE_UNKNOWN:
		return special ? tok_buf_add(out, s, n) : 0;
	case TOK_TYPE_USER:
		return tok_buf_add(out, s, n);
	case TOK_TYPE_BYTE:
		if (t->dec_byte_fallback && n == 6 && !memcmp(s, "<0x", 3) && s[5] == '>' && hexval(s[3]) >= 0 &&
		    hexval(s[4]) >= 0) {
			char b = (char)(hexval(s[3]) << 4 | hexval(s[4]));
			return tok_buf_add(out, &b, 1);
		}
		break;
	default:
		break;
	}
	int rc = 0;
	if (t->dec_byte_level) {
		for (size_t i = 0; !rc && i < n;) {
			uint8_t c = (uint8_t)s[i];
			size_t k = c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
			k = k > n - i ? n - i : k;
			uint32_t cp = k == 1 ? c : k == 2 ? (uint32_t)(c & 31) << 6 | (s[i + 1] & 63) : 0xFFFFFFFF;
			int b = tok_cp_byte(t, cp);
			if (b >= 0) {
				char ch = (char)b;
				rc = tok_buf_add(out, &ch, 1);
			} else {
				rc = tok_buf_add(out, s + i, k);
			}
			i += k;
		}
		return rc;
	}
	for (size_t i = 0; !rc && i < n;) {
		if (t->dec_space && i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
			rc = tok_buf_add(out, " ", 1);
			i += 3;
		} else {
			size_t j = i + 1;
			while (j < n && !(t->dec_space && j + 3 <= n && !memcmp(s + j, "\xe2\x96\x81", 3)))
				j++;
			rc = tok_buf_add(out, s + i, j - i);
			i = j;
		}
	}
	return rc;
}

void tok_stream_init(struct tok_stream *s, const struct tokenizer *t, bool special, bool at_start)
{
	memset(s, 0, sizeof(*s));
	s->t = t;
	s->special = special;
	s->strip = at_start && t->dec_strip > 0;
}

/* Length of a trailing prefix of a UTF-8 character that more bytes could complete (0 if none). */
static size_t partial_tail(const uint8_t *p, size_t n)
{
	for (size_t back = 1; back <= 3 && back <= n; back++) {
		uint8_t c = p[n - back];
		if ((c & 0xC0) == 0x80)
			continue;
		size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		return need > back ? back : 0;
	}
	return 0;
}

int tok_stream_push(struct tok_stream *s, int32_t id, struct tok_buf *out)
{
	size_t start = out->n;
	int rc = tok_buf_add(out, s->hold, (size_t)s->n_hold);
	s->n_hold = 0;
	size_t at = out->n;
	rc = rc ? rc : piece(s->t, id, s->special, out);
	if (rc)
		return rc;
	if (s->strip && out->n > at) {
		if (out->p[at] == ' ') {
			memmove(out->p + at, out->p + at + 1, out->n - at - 1);
			out->n--;
		}
		s->strip = false;
	}
	size_t tail = partial_tail((const uint8_t *)out->p + start, out->n - start);
	memcpy(s->hold, out->p + out->n - tail, tail);
	s->n_hold = (int)tail;
	out->n -= tail;
	if (out->p)
		out->p[out->n] = 0;
	return 0;
}

int tok_stream_flush(struct tok_stream *s, struct tok_buf *out)
{
	int rc = tok_buf_add(out, s->hold, (size_t)s->n_hold);
	s->n_hold = 0;
	return rc;
}

int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, bool at_start,
		     struct tok_buf *out)
{
	struct tok_stream s;
	tok_stream_init(&s, t, special, at_start);
	int rc = 0;
	for (size_t i = 0; !rc && i < n; i++)
		rc = tok_stream_push(&s, ids[i], out);
	return rc ? rc : tok_stream_flush(&s, out);
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
