/*
 * tok_pre.c: normalizers and pre-tokenizers, with Hugging Face tokenizers' semantics, applied to one
 * segment of text (the text between two added tokens). Pieces are (offset, length) ranges of w->text;
 * a step that changes text (a prefix space, Metaspace's replacement) appends the new text to w->text and
 * points its pieces there, so earlier offsets stay valid.
 *
 * Regex splits never produce empty pieces; empty matches are found as the onig crate's find_iter finds
 * them and take part in the Split behaviours as in HF (where the empty pieces are then dropped).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

void tok_work_free(struct tok_work *w)
{
	tok_buf_free(&w->text);
	tok_buf_free(&w->tmp);
	free(w->pieces);
	free(w->next);
	free(w->sym);
	free(w->heap);
	if (w->md)
		pcre2_match_data_free(w->md);
	memset(w, 0, sizeof(*w));
}

static int push_next(struct tok_work *w, uint32_t off, uint32_t len)
{
	if (!len)
		return 0;
	if (w->n_next == w->cap_next) {
		size_t cap = w->cap_next ? 2 * w->cap_next : 256;
		struct tok_piece *p = realloc(w->next, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		w->next = p;
		w->cap_next = cap;
	}
	w->next[w->n_next++] = (struct tok_piece){off, len};
	return 0;
}

static void swap_pieces(struct tok_work *w)
{
	struct tok_piece *p = w->pieces;
	size_t cap = w->cap;
	w->pieces = w->next;
	w->cap = w->cap_next;
	w->n = w->n_next;
	w->next = p;
	w->cap_next = cap;
	w->n_next = 0;
}

static int replace_literal(struct tok_buf *out, const char *s, size_t n, const char *a, size_t na, const char *b,
			   size_t nb)
{
	int rc = 0;
	size_t i = 0, start = 0;
	while (!rc && na && i + na <= n) {
		if (!memcmp(s + i, a, na)) {
			rc = tok_buf_add(out, s + start, i - start);
			rc = rc ? rc : tok_buf_add(out, b, nb);
			i += na;
			start = i;
		} else {
			i++;
		}
	}
	return rc ? rc : tok_buf_add(out, s + start, n - start);
}

/* The next match of re in s[*pos..n) as the onig crate's find_iter gives it (HF's Split and Replace):
 * empty matches count, except one right where the previous match ended (*last), which moves the search
 * one character on. Its range in [*ms, *me); *pos and *last move past it. */
static bool next_match(pcre2_code *re, pcre2_match_data *md, const char *s, size_t n, size_t *pos, size_t *last,
		       size_t *ms, size_t *me)
{
	while (*pos <= n) {
		if (pcre2_match(re, (PCRE2_SPTR)s, n, *pos, PCRE2_NO_UTF_CHECK, md, NULL) < 0)
			return false;
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		if (ov[1] > ov[0] || ov[0] != *last) {
			*ms = ov[0];
			*pos = *last = *me = ov[1];
			return true;
		}
		if (*pos >= n)
			return false;
		(*pos)++;
		while (*pos < n && ((uint8_t)s[*pos] & 0xC0) == 0x80)
			(*pos)++;
	}
	return false;
}

static int replace_regex(struct tok_work *w, pcre2_code *re, const char *s, size_t n, const char *b, size_t nb)
{
	struct tok_buf *out = &w->tmp;
	size_t pos = 0, last = SIZE_MAX, start = 0, ms, me;
	int rc = 0;
	while (!rc && next_match(re, w->md, s, n, &pos, &last, &ms, &me)) {
		rc = tok_buf_add(out, s + start, ms - start);
		rc = rc ? rc : tok_buf_add(out, b, nb);
		w->origin_kept = w->origin_kept && !(ms == 0 && me > 0 && nb == 0);
		start = me;
	}
	return rc ? rc : tok_buf_add(out, s + start, n - start);
}

bool tok_is_space(uint32_t cp)
{
	if (cp < 0x80)
		return cp == ' ' || (cp >= '\t' && cp <= '\r');
	return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
	       cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* Rust's char::to_lowercase: the simple mapping, except U+0130, the one unconditional multi-character one. */
static int lowercase(struct tok_buf *out, const char *s, size_t n)
{
	size_t i = 0;
	int rc = 0;
	while (!rc && i < n) {
		utf8proc_int32_t cp;
		utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
		if (k <= 0)
			return -EILSEQ;
		utf8proc_uint8_t enc[4];
		utf8proc_ssize_t m = cp == 0x130 ? 0 : utf8proc_encode_char(utf8proc_tolower(cp), enc);
		rc = cp == 0x130 ? tok_buf_add(out, "i\xcc\x87", 3) : tok_buf_add(out, enc, (size_t)m);
		i += (size_t)k;
	}
	return rc;
}

/* Length of the White_Space character at s[0..n) (0 if none); at_end: the one ending at s + n. */
static size_t space_len(const char *s, size_t n, bool at_end)
{
	size_t i = 0;
	if (at_end) {
		if (!n)
			return 0;
		i = n - 1;
		while (i > 0 && n - i < 4 && ((uint8_t)s[i] & 0xC0) == 0x80)
			i--;
	}
	utf8proc_int32_t cp;
	utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
	return k > 0 && tok_is_space((uint32_t)cp) ? (size_t)k : 0;
}

static int apply_norm(const struct tok_norm *nm, struct tok_work *w, char *err, size_t errlen)
{
	const char *s = w->text.p;
	size_t n = w->text.n;
	w->tmp.n = 0;
	int rc = 0;
	switch (nm->kind) {
	case TN_NFC:
	case TN_NFD:
	case TN_NFKC:
	case TN_NFKD: {
		int opt = UTF8PROC_STABLE | (nm->kind == TN_NFC || nm->kind == TN_NFKC ? UTF8PROC_COMPOSE : UTF8PROC_DECOMPOSE) |
			  (nm->kind == TN_NFKC || nm->kind == TN_NFKD ? UTF8PROC_COMPAT : 0);
		utf8proc_uint8_t *o = NULL;
		utf8proc_ssize_t k = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &o, opt) : 0;
		if (k < 0) {
			snprintf(err, errlen, "unicode normalization failed: %s", utf8proc_errmsg(k));
			return -EINVAL;
		}
		rc = tok_buf_add(&w->tmp, o, (size_t)k);
		free(o);
		break;
	}
	case TN_PREPEND:
		rc = n ? tok_buf_add(&w->tmp, nm->a, nm->na) : 0;
		rc = rc ? rc : tok_buf_add(&w->tmp, s, n);
		break;
	case TN_REPLACE:
		w->origin_kept = w->origin_kept && !(nm->na && !nm->nb && n >= nm->na && !memcmp(s, nm->a, nm->na));
		rc = nm->re ? replace_regex(w, nm->re, s, n, nm->b, nm->nb)
			    : replace_literal(&w->tmp, s, n, nm->a, nm->na, nm->b, nm->nb);
		break;
	case TN_LOWERCASE:
		rc = lowercase(&w->tmp, s, n);
		break;
	case TN_STRIP: {
		size_t a = 0, b = n, k;
		while (nm->left && a < b && (k = space_len(s + a, b - a, false)))
			a += k;
		while (nm->right && b > a && (k = space_len(s + a, b - a, true)))
			b -= k;
		w->origin_kept = w->origin_kept && a == 0;
		rc = tok_buf_add(&w->tmp, s + a, b - a);
		break;
	}
	}
	if (rc)
		return rc;
	struct tok_buf t = w->text;
	w->text = w->tmp;
	w->tmp = t;
	return 0;
}

int tok_normalize(const struct tokenizer *t, const char *s, size_t n, struct tok_work *w, char *err, size_t errlen)
{
	if (!w->md && !(w->md = pcre2_match_data_create(16, NULL))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	w->text.n = 0;
	w->origin_kept = true;
	int rc = tok_buf_add(&w->text, s, n);
	for (int i = 0; !rc && i < t->n_norm; i++)
		rc = apply_norm(&t->norm[i], w, err, errlen);
	return rc;
}

/* Splits piece p by re into (range, is_match) segments and keeps them as `behavior` says. */
static int split_piece(struct tok_work *w, struct tok_piece p, pcre2_code *re, enum tok_split behavior, bool invert)
{
	const char *s = w->text.p + p.off;
	size_t n = p.len, pos = 0, gap = 0;
	/* The segments are produced in order; `last` is the pending one (HF folds them the same way). */
	uint32_t cur_off = 0, cur_len = 0;
	bool have = false, prev_match = false;
	int rc = 0;
#define EMIT(o, l, is_match)                                                                               \
	do {                                                                                               \
		uint32_t o_ = (o), l_ = (l);                                                                   \
		bool m_ = (is_match) != invert;                                                                \
		if (!l_ && !(is_match))                                                                        \
			break; /* only matches may be empty; they still count for the merging below */          \
		switch (behavior) {                                                                            \
		case SPLIT_ISOLATED:                                                                           \
			rc = rc ? rc : push_next(w, p.off + o_, l_);                                           \
			break;                                                                                 \
		case SPLIT_REMOVED:                                                                            \
			if (!m_)                                                                               \
				rc = rc ? rc : push_next(w, p.off + o_, l_);                                   \
			break;                                                                                 \
		case SPLIT_MERGED_PREV:                                                                        \
			if (m_ && !prev_match && have) {                                                       \
				cur_len += l_;                                                                 \
			} else {                                                                               \
				if (have)                                                                      \
					rc = rc ? rc : push_next(w, p.off + cur_off, cur_len);                 \
				cur_off = o_, cur_len = l_, have = true;                                       \
			}                                                                                      \
			break;                                                                                 \
		case SPLIT_MERGED_NEXT:                                                                        \
			if (!m_ && prev_match && have) {                                                       \
				cur_len += l_;                                                                 \
			} else {                                                                               \
				if (have)                                                                      \
					rc = rc ? rc : push_next(w, p.off + cur_off, cur_len);                 \
				cur_off = o_, cur_len = l_, have = true;                                       \
			}                                                                                      \
			break;                                                                                 \
		case SPLIT_CONTIGUOUS:                                                                         \
			if (have && m_ == prev_match) {                                                        \
				cur_len += l_;                                                                 \
			} else {                                                                               \
				if (have)                                                                      \
					rc = rc ? rc : push_next(w, p.off + cur_off, cur_len);                 \
				cur_off = o_, cur_len = l_, have = true;                                       \
			}                                                                                      \
			break;                                                                                 \
		}                                                                                              \
		prev_match = m_;                                                                               \
	} while (0)
	size_t ms, me, last = SIZE_MAX;
	while (!rc && next_match(re, w->md, s, n, &pos, &last, &ms, &me)) {
		EMIT((uint32_t)gap, (uint32_t)(ms - gap), false);
		EMIT((uint32_t)ms, (uint32_t)(me - ms), true);
		gap = me;
	}
	EMIT((uint32_t)gap, (uint32_t)(n - gap), false);
#undef EMIT
	if (have)
		rc = rc ? rc : push_next(w, p.off + cur_off, cur_len);
	return rc;
}

/* Appends PREFIX + piece (with Metaspace's replacement of ' ' when repl is set) to the text; the new
 * range is returned in *out. */
static int rewrite_piece(struct tok_work *w, struct tok_piece p, const char *prefix, size_t np, const char *repl,
			 size_t nrepl, struct tok_piece *out)
{
	size_t start = w->text.n;
	int rc = tok_buf_add(&w->text, prefix, np);
	for (uint32_t i = 0; !rc && i < p.len; i++) {
		char c = w->text.p[p.off + i];
		rc = repl && c == ' ' ? tok_buf_add(&w->text, repl, nrepl) : tok_buf_add(&w->text, &c, 1);
	}
	if (w->text.n - start >= UINT32_MAX)
		return -E2BIG;
	if (p.off == w->origin)
		w->origin = (uint32_t)start;
	*out = (struct tok_piece){(uint32_t)start, (uint32_t)(w->text.n - start)};
	return rc;
}

/* GPT-2's byte mapping of the pieces pushed since `from` (HF's ByteLevel maps after its regex split, so
 * later pre-tokenizers see the mapped text). */
static int map_bytes(const struct tokenizer *t, struct tok_work *w, size_t from)
{
	for (size_t i = from; i < w->n_next; i++) {
		struct tok_piece p = w->next[i];
		size_t start = w->text.n;
		for (uint32_t k = 0; k < p.len; k++) {
			uint8_t b = (uint8_t)w->text.p[p.off + k];
			if (tok_buf_add(&w->text, t->byte_map[b], t->byte_map_len[b]))
				return -ENOMEM;
		}
		if (w->text.n - start >= UINT32_MAX)
			return -E2BIG;
		if (p.off == w->origin)
			w->origin = (uint32_t)start;
		w->next[i] = (struct tok_piece){(uint32_t)start, (uint32_t)(w->text.n - start)};
	}
	return 0;
}

static int pre_step(const struct tokenizer *t, const struct tok_pre *st, struct tok_work *w)
{
	int rc = 0;
	for (size_t i = 0; !rc && i < w->n; i++) {
		struct tok_piece p = w->pieces[i];
		const char *s = w->text.p + p.off;
		switch (st->kind) {
		case TP_SPLIT:
			rc = split_piece(w, p, st->re, st->behavior, st->invert);
			break;
		case TP_BYTELEVEL: {
			size_t from = w->n_next;
			if (st->add_prefix_space && p.len && s[0] != ' ')
				rc = rewrite_piece(w, p, " ", 1, NULL, 0, &p);
			if (!rc)
				rc = st->re ? split_piece(w, p, st->re, SPLIT_ISOLATED, false) : push_next(w, p.off, p.len);
			rc = rc ? rc : map_bytes(t, w, from);
			break;
		}
		case TP_METASPACE: {
			/* "first": only the piece that starts at the original text's offset 0 (HF's offsets_original) */
			bool prepend = st->prepend == PREPEND_ALWAYS || (st->prepend == PREPEND_FIRST && p.off == w->origin);
			bool has = p.len >= st->nrepl && !memcmp(s, st->repl, st->nrepl);
			bool spaced = p.len && s[0] == ' ';
			/* A leading space becomes the replacement itself, so it counts as already prefixed. */
			prepend = prepend && !has && !spaced;
			rc = rewrite_piece(w, p, st->repl, prepend ? st->nrepl : 0, st->repl, st->nrepl, &p);
			if (rc)
				break;
			if (!st->split) {
				rc = push_next(w, p.off, p.len);
				break;
			}
			/* Split before every replacement character (MergedWithNext). */
			const char *q = w->text.p + p.off;
			uint32_t start = 0;
			for (uint32_t k = 1; !rc && k + st->nrepl <= p.len; k++)
				if (!memcmp(q + k, st->repl, st->nrepl)) {
					rc = push_next(w, p.off + start, k - start);
					start = k;
				}
			rc = rc ? rc : push_next(w, p.off + start, p.len - start);
			break;
		}
		}
	}
	if (!rc)
		swap_pieces(w);
	return rc;
}

int tok_pretokenize(const struct tokenizer *t, uint32_t off, uint32_t len, uint32_t origin, struct tok_work *w,
		    char *err, size_t errlen)
{
	w->n = w->n_next = 0;
	w->origin = origin;
	if (w->text.n >= UINT32_MAX / 2) {
		snprintf(err, errlen, "text segment of %zu bytes is too long", w->text.n);
		return -E2BIG;
	}
	int rc = push_next(w, off, len);
	if (!rc)
		swap_pieces(w);
	for (int i = 0; !rc && i < t->n_pre; i++)
		rc = pre_step(t, &t->pre[i], w);
	if (rc)
		snprintf(err, errlen, "out of memory in the pre-tokenizer");
	return rc;
}
