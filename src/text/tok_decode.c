/*
 * tok_decode.c: ids -> text. Token pieces through the decoder (GPT-2 byte map, <0xXX> byte fallback,
 * "▁" -> " "), the leading-space strip at the start of a sequence, UTF-8-safe streaming, and the lossy
 * text form that `tokenizers` returns.
 *
 * Two conventions, chosen by the loader (t->hf):
 *   - GGUF (llama.cpp): user-defined tokens are copied verbatim, control tokens rendered only on request;
 *     the byte map applies per character.
 *   - tokenizer.json (Hugging Face): every token that is not a skipped special goes through the decoder
 *     chain; ByteLevel maps a token only if every character is in the byte map, else copies it raw; the
 *     Metaspace decoder drops every replacement character of the first token; with no decoder at all the
 *     tokens are joined with spaces.
 * Decoding returns raw bytes (a byte-level vocabulary can split a character across tokens);
 * tokenizer_decode_text gives what `tokenizers` decode returns: byte-fallback groups that are not UTF-8
 * become one U+FFFD per byte token, and what is left invalid is replaced as String::from_utf8_lossy does.
 */
#include <errno.h>
#include <string.h>

#include "tok_internal.h"

static const char REPLACEMENT_CHAR[] = "\xef\xbf\xbd";

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* The byte of a "<0xXX>" token text, or -1. */
static int byte_piece(const char *s, size_t n)
{
	if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>' || hexval(s[3]) < 0 || hexval(s[4]) < 0)
		return -1;
	return hexval(s[3]) << 4 | hexval(s[4]);
}

/* A special token that decoding leaves out. */
static bool skipped(const struct tokenizer *t, int32_t id, bool special)
{
	return !special && (t->type[id] == TOK_TYPE_CONTROL || t->type[id] == TOK_TYPE_UNKNOWN);
}

/* The code point of a 1- or 2-byte UTF-8 sequence at s (byte-level symbols are < 324), else 0xFFFFFFFF. */
static uint32_t small_cp(const char *s, size_t k)
{
	return k == 1 ? (uint8_t)s[0] : k == 2 ? (uint32_t)(s[0] & 31) << 6 | (s[1] & 63) : 0xFFFFFFFF;
}

static size_t char_len(uint8_t c)
{
	return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int piece_byte_level(const struct tokenizer *t, const char *s, size_t n, struct tok_buf *out)
{
	if (t->hf) {
		for (size_t i = 0; i < n;) {
			size_t k = char_len((uint8_t)s[i]);
			k = k > n - i ? n - i : k;
			if (tok_cp_byte(t, small_cp(s + i, k)) < 0)
				return tok_buf_add(out, s, n);
			i += k;
		}
	}
	int rc = 0;
	for (size_t i = 0; !rc && i < n;) {
		size_t k = char_len((uint8_t)s[i]);
		k = k > n - i ? n - i : k;
		int b = tok_cp_byte(t, small_cp(s + i, k));
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

/* One token's text. first: the first token of a sequence, whose "▁" the Metaspace decoder drops. */
static int piece(const struct tokenizer *t, int32_t id, bool special, bool first, struct tok_buf *out)
{
	if (id < 0 || id >= t->n_vocab)
		return -EINVAL;
	const char *s = t->texts.p + t->off[id];
	size_t n = t->len[id];
	if (skipped(t, id, special))
		return 0;
	if (!t->hf && (t->type[id] == TOK_TYPE_CONTROL || t->type[id] == TOK_TYPE_UNKNOWN || t->type[id] == TOK_TYPE_USER))
		return tok_buf_add(out, s, n);
	int b = t->dec_byte_fallback && (t->hf || t->type[id] == TOK_TYPE_BYTE) ? byte_piece(s, n) : -1;
	if (b >= 0) {
		char ch = (char)b;
		return tok_buf_add(out, &ch, 1);
	}
	if (t->dec_byte_level)
		return piece_byte_level(t, s, n, out);
	int rc = 0;
	const char *sp = first && t->dec_meta_first ? "" : " ";
	for (size_t i = 0; !rc && i < n;) {
		if (t->dec_space && i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
			rc = tok_buf_add(out, sp, strlen(sp));
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
	s->strip = at_start && (t->dec_strip > 0 || t->dec_meta_first);
	s->started = !at_start;
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

/* Length of the valid UTF-8 sequence at s[0..n), or 0 if it is not one. */
static size_t utf8_valid_len(const uint8_t *s, size_t n)
{
	uint8_t c = s[0];
	if (c < 0x80)
		return 1;
	size_t k = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
	if (!k || n < 2)
		return 0;
	uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (size_t j = 2; j < k; j++)
		if (j >= n || (s[j] & 0xC0) != 0x80)
			return 0;
	return k;
}

/* Replaces out[start..) by its lossy form. Held-back tails are never inside it, and what precedes a cut is
 * a whole character or an invalid byte, so the pieces' replacements equal those of the whole text. */
static int make_lossy(struct tok_buf *out, size_t start)
{
	size_t i = start, k;
	while (i < out->n && (k = utf8_valid_len((const uint8_t *)out->p + i, out->n - i)))
		i += k;
	if (i == out->n) /* the usual case: nothing to replace */
		return 0;
	size_t n = out->n - start;
	char *raw = malloc(n ? n : 1);
	if (!raw)
		return -ENOMEM;
	memcpy(raw, out->p + start, n);
	out->n = start;
	int rc = tok_buf_add_lossy(out, raw, n);
	free(raw);
	return rc;
}

/* Appends one token's text (id) or, for id < 0, the given text, with the strip and hold-back rules. */
static int stream_add(struct tok_stream *s, int32_t id, const char *text, size_t len, struct tok_buf *out)
{
	const struct tokenizer *t = s->t;
	bool skip = id >= 0 && id < t->n_vocab && skipped(t, id, s->special);
	size_t start = out->n;
	int rc = tok_buf_add(out, s->hold, (size_t)s->n_hold);
	s->n_hold = 0;
	if (!rc && t->dec_join && !skip && s->started)
		rc = tok_buf_add(out, " ", 1);
	size_t at = out->n;
	bool first = s->strip && !skip;
	rc = rc ? rc : id >= 0 ? piece(t, id, s->special, first, out) : tok_buf_add(out, text, len);
	if (rc)
		return rc;
	s->started = s->started || !skip;
	if (first && t->dec_meta_first) {
		s->strip = false;
	} else if (s->strip && out->n > at) {
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
	return s->lossy ? make_lossy(out, start) : 0;
}

int tok_stream_push(struct tok_stream *s, int32_t id, struct tok_buf *out)
{
	return id < 0 ? -EINVAL : stream_add(s, id, NULL, 0, out);
}

int tok_stream_flush(struct tok_stream *s, struct tok_buf *out)
{
	int rc = s->lossy ? tok_buf_add_lossy(out, (const char *)s->hold, (size_t)s->n_hold)
			  : tok_buf_add(out, s->hold, (size_t)s->n_hold);
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

int tok_buf_add_lossy(struct tok_buf *out, const char *p, size_t n)
{
	const uint8_t *s = (const uint8_t *)p;
	int rc = 0;
	size_t i = 0, start = 0;
	while (!rc && i < n) {
		size_t k = utf8_valid_len(s + i, n - i);
		if (k) {
			i += k;
			continue;
		}
		rc = tok_buf_add(out, p + start, i - start);
		/* One U+FFFD per maximal prefix of a valid sequence (Unicode's "maximal subpart"). */
		size_t bad = 1;
		uint8_t c = s[i];
		size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
		if (need && i + 1 < n) {
			uint8_t lo = c == 0xE0 ? 0xA0 : c == 0xF0 ? 0x90 : 0x80, hi = c == 0xED ? 0x9F : c == 0xF4 ? 0x8F : 0xBF;
			if (s[i + 1] >= lo && s[i + 1] <= hi) {
				bad = 2;
				while (bad < need && i + bad < n && (s[i + bad] & 0xC0) == 0x80)
					bad++;
			}
		}
		rc = rc ? rc : tok_buf_add(out, REPLACEMENT_CHAR, 3);
		i += bad;
		start = i;
	}
	return rc ? rc : tok_buf_add(out, p + start, n - start);
}

/* hf ByteFallback: a run of byte tokens that is not UTF-8 decodes to one U+FFFD per token. Returns the
 * index after the run (skipped specials inside it are dropped before the decoder, as in `tokenizers`). */
static int byte_run(struct tok_stream *st, const int32_t *ids, size_t n, size_t i, size_t *next, struct tok_buf *out)
{
	const struct tokenizer *t = st->t;
	struct tok_buf bytes = {0};
	size_t j = i;
	int rc = 0;
	for (; !rc && j < n; j++) {
		if (ids[j] < 0 || ids[j] >= t->n_vocab)
			break;
		if (skipped(t, ids[j], st->special))
			continue;
		int b = byte_piece(t->texts.p + t->off[ids[j]], t->len[ids[j]]);
		if (b < 0)
			break;
		char c = (char)b;
		rc = tok_buf_add(&bytes, &c, 1);
	}
	*next = j;
	bool valid = true;
	for (size_t k = 0; valid && k < bytes.n;) {
		size_t l = utf8_valid_len((const uint8_t *)bytes.p + k, bytes.n - k);
		valid = l > 0;
		k += l;
	}
	tok_buf_free(&bytes);
	for (size_t k = i; !rc && k < j; k++)
		rc = valid || skipped(t, ids[k], st->special) ? stream_add(st, ids[k], NULL, 0, out)
							    : stream_add(st, -1, REPLACEMENT_CHAR, 3, out);
	return rc;
}

int tokenizer_decode_text(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, struct tok_buf *out)
{
	struct tok_buf raw = {0};
	struct tok_stream s;
	tok_stream_init(&s, t, special, true);
	int rc = 0;
	for (size_t i = 0; !rc && i < n;) {
		if (ids[i] < 0 || ids[i] >= t->n_vocab) {
			rc = -EINVAL;
		} else if (t->hf && t->dec_byte_fallback && !skipped(t, ids[i], special) &&
			   byte_piece(t->texts.p + t->off[ids[i]], t->len[ids[i]]) >= 0) {
			rc = byte_run(&s, ids, n, i, &i, &raw);
		} else {
			rc = stream_add(&s, ids[i], NULL, 0, &raw);
			i++;
		}
	}
	rc = rc ? rc : tok_stream_flush(&s, &raw);
	rc = rc ? rc : tok_buf_add_lossy(out, raw.p ? raw.p : "", raw.n);
	tok_buf_free(&raw);
	return rc;
}
