/*
 * jinja_str.c: Python's str operations on UTF-8 strings, indexed by code point as Python indexes them:
 * repr (quote choice, escapes, what isprintable keeps), HTML escaping (markupsafe), case mapping (utf8proc
 * for the one-to-one mappings; the characters whose Python mapping changes length fail instead of
 * differing), strip/split/rsplit/splitlines/replace/find/count, str.title and jinja2's title filter.
 */
#include <string.h>
#include <utf8proc.h>

#include "jinja_internal.h"

uint32_t u8_decode(const char *p, size_t n, size_t *adv)
{
	const unsigned char *s = (const unsigned char *)p;
	if (s[0] < 0x80 || n < 2) {
		*adv = 1;
		return s[0];
	}
	if ((s[0] & 0xe0) == 0xc0) {
		*adv = 2;
		return (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f);
	}
	if ((s[0] & 0xf0) == 0xe0 && n >= 3) {
		*adv = 3;
		return (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f);
	}
	if (n >= 4) {
		*adv = 4;
		return (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 | (uint32_t)(s[2] & 0x3f) << 6 |
		       (s[3] & 0x3f);
	}
	*adv = 1;
	return s[0];
}

size_t u8_encode(uint32_t cp, char *out)
{
	return (size_t)utf8proc_encode_char((utf8proc_int32_t)cp, (utf8proc_uint8_t *)out);
}

size_t u8_count(const char *p, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += ((unsigned char)p[i] & 0xc0) != 0x80;
	return k;
}

size_t u8_offset(const struct jstr *s, size_t i)
{
	if (s->ncp == s->n)
		return i;
	size_t off = 0;
	while (i > 0 && off < s->n) {
		off++;
		while (off < s->n && ((unsigned char)s->p[off] & 0xc0) == 0x80)
			off++;
		i--;
	}
	return off;
}

/* Python's str.isprintable for one code point. */
static bool is_printable(uint32_t cp)
{
	if (cp == ' ')
		return true;
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_CC:
	case UTF8PROC_CATEGORY_CF:
	case UTF8PROC_CATEGORY_CS:
	case UTF8PROC_CATEGORY_CO:
	case UTF8PROC_CATEGORY_CN:
	case UTF8PROC_CATEGORY_ZL:
	case UTF8PROC_CATEGORY_ZP:
	case UTF8PROC_CATEGORY_ZS: return false;
	default: return true;
	}
}

void py_str_repr(struct jrender *r, struct jbuf *b, const char *p, size_t n)
{
	char quote = '\'';
	if (memchr(p, '\'', n) && !memchr(p, '"', n))
		quote = '"';
	jbuf_putn(r, b, &quote, 1);
	size_t run = 0; /* bytes copied as they are, flushed in one go */
	for (size_t i = 0; i < n;) {
		size_t adv;
		uint32_t cp = u8_decode(p + i, n - i, &adv);
		const char *esc = NULL;
		char tmp[16];
		if (cp == (uint32_t)quote || cp == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)cp;
			tmp[2] = 0;
			esc = tmp;
		} else if (cp == '\t') {
			esc = "\\t";
		} else if (cp == '\n') {
			esc = "\\n";
		} else if (cp == '\r') {
			esc = "\\r";
		} else if (cp < 0x20 || cp == 0x7f) {
			snprintf(tmp, sizeof(tmp), "\\x%02x", cp);
			esc = tmp;
		} else if (cp >= 0x80 && !is_printable(cp)) {
			snprintf(tmp, sizeof(tmp), cp <= 0xff ? "\\x%02x" : cp <= 0xffff ? "\\u%04x" : "\\U%08x", cp);
			esc = tmp;
		}
		if (esc) {
			jbuf_putn(r, b, p + i - run, run);
			run = 0;
			jbuf_puts(r, b, esc);
		} else {
			run += adv;
		}
		i += adv;
	}
	jbuf_putn(r, b, p + n - run, run);
	jbuf_putn(r, b, &quote, 1);
}

void py_html_escape(struct jrender *r, struct jbuf *b, const char *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (p[i]) {
		case '&': jbuf_puts(r, b, "&amp;"); break;
		case '<': jbuf_puts(r, b, "&lt;"); break;
		case '>': jbuf_puts(r, b, "&gt;"); break;
		case '"': jbuf_puts(r, b, "&#34;"); break;
		case '\'': jbuf_puts(r, b, "&#39;"); break;
		default: jbuf_putn(r, b, p + i, 1);
		}
	}
}

/* ---- case ---- */

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE };

/* Code points whose Python upper()/title() is longer than one character (SpecialCasing.txt). */
static const uint32_t special_upper[][2] = {
	{0xdf, 0xdf}, {0x149, 0x149}, {0x1f0, 0x1f0}, {0x390, 0x390}, {0x3b0, 0x3b0}, {0x587, 0x587},
	{0x1e96, 0x1e9a}, {0x1f50, 0x1f50}, {0x1f52, 0x1f52}, {0x1f54, 0x1f54}, {0x1f56, 0x1f56},
	{0x1f80, 0x1faf}, {0x1fb2, 0x1fb4}, {0x1fb6, 0x1fb7}, {0x1fbc, 0x1fbc}, {0x1fc2, 0x1fc4},
	{0x1fc6, 0x1fc7}, {0x1fcc, 0x1fcc}, {0x1fd2, 0x1fd3}, {0x1fd6, 0x1fd7}, {0x1fe2, 0x1fe4},
	{0x1fe6, 0x1fe7}, {0x1ff2, 0x1ff4}, {0x1ff6, 0x1ff7}, {0x1ffc, 0x1ffc}, {0xfb00, 0xfb06},
	{0xfb13, 0xfb17},
};

static uint32_t map_case(struct jrender *r, uint32_t cp, int how)
{
	if (cp < 0x80) {
		if (how == CASE_LOWER)
			return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
		return cp >= 'a' && cp <= 'z' ? cp - 32 : cp;
	}
	bool special = false;
	if (how == CASE_LOWER) {
		special = cp == 0x130 || cp == 0x3a3; /* dotted I, and sigma's final form depends on context */
	} else {
		for (size_t k = 0; k < sizeof(special_upper) / sizeof(special_upper[0]); k++)
			special |= cp >= special_upper[k][0] && cp <= special_upper[k][1];
	}
	if (special)
		jx_fail(&r->c, 0, "unsupported: Python's case mapping of U+%04X (not one character)", cp);
	utf8proc_int32_t c = (utf8proc_int32_t)cp;
	return (uint32_t)(how == CASE_LOWER ? utf8proc_tolower(c) : how == CASE_UPPER ? utf8proc_toupper(c) : utf8proc_totitle(c));
}

static bool is_cased(uint32_t cp)
{
	if (cp < 0x80)
		return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
	utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
	if (k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT)
		return true;
	utf8proc_int32_t c = (utf8proc_int32_t)cp;
	return utf8proc_toupper(c) != c || utf8proc_tolower(c) != c;
}

/* Maps every code point of s; how_first for the first one. mode 0: all; 1: str.capitalize; 2: str.title. */
static struct jv case_map(struct jrender *r, struct jv s, int how, int mode)
{
	struct jbuf b = {0};
	bool prev_cased = false, first = true;
	for (size_t i = 0; i < s.s->n;) {
		size_t adv;
		uint32_t cp = u8_decode(s.s->p + i, s.s->n - i, &adv);
		int h = how;
		if (mode == 1)
			h = first ? CASE_TITLE : CASE_LOWER;
		else if (mode == 2)
			h = prev_cased ? CASE_LOWER : CASE_TITLE;
		uint32_t m = map_case(r, cp, h);
		if (mode == 2)
			prev_cased = is_cased(cp);
		char enc[4];
		jbuf_putn(r, &b, enc, u8_encode(m, enc));
		first = false;
		i += adv;
	}
	struct jv out = jv_str_buf(&r->c, &b);
	out.markup = s.markup;
	return out;
}

struct jv py_upper(struct jrender *r, struct jv s)
{
	return case_map(r, s, CASE_UPPER, 0);
}

struct jv py_lower(struct jrender *r, struct jv s)
{
	return case_map(r, s, CASE_LOWER, 0);
}

struct jv py_capitalize(struct jrender *r, struct jv s)
{
	return case_map(r, s, CASE_LOWER, 1);
}

struct jv py_title(struct jrender *r, struct jv s)
{
	return case_map(r, s, CASE_LOWER, 2);
}

/* jinja2's do_title: split at runs of [-\s({\[<], then item[0].upper() + item[1:].lower() per piece. */
struct jv jinja_title(struct jrender *r, struct jv s)
{
	struct jbuf b = {0};
	bool word_start = true;
	for (size_t i = 0; i < s.s->n;) {
		size_t adv;
		uint32_t cp = u8_decode(s.s->p + i, s.s->n - i, &adv);
		bool sep = py_isspace(cp) || (cp < 0x80 && strchr("-({[<", (int)cp));
		uint32_t m = sep ? cp : map_case(r, cp, word_start ? CASE_UPPER : CASE_LOWER);
		word_start = sep;
		char enc[4];
		jbuf_putn(r, &b, enc, u8_encode(m, enc));
		i += adv;
	}
	return jv_str_buf(&r->c, &b);
}

bool py_is_cased_upper(const struct jstr *s, bool upper)
{
	bool cased = false;
	for (size_t i = 0; i < s->n;) {
		size_t adv;
		uint32_t cp = u8_decode(s->p + i, s->n - i, &adv);
		utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)cp);
		if (k == UTF8PROC_CATEGORY_LT || k == (upper ? UTF8PROC_CATEGORY_LL : UTF8PROC_CATEGORY_LU))
			return false;
		cased |= k == (upper ? UTF8PROC_CATEGORY_LU : UTF8PROC_CATEGORY_LL);
		i += adv;
	}
	return cased;
}

bool py_isalpha(uint32_t cp)
{
	if (cp < 0x80)
		return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z');
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO: return true;
	default: return false;
	}
}

bool py_isword(uint32_t cp)
{
	if (cp < 0x80)
		return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || cp == '_';
	switch (utf8proc_category((utf8proc_int32_t)cp)) {
	case UTF8PROC_CATEGORY_LU:
	case UTF8PROC_CATEGORY_LL:
	case UTF8PROC_CATEGORY_LT:
	case UTF8PROC_CATEGORY_LM:
	case UTF8PROC_CATEGORY_LO:
	case UTF8PROC_CATEGORY_ND:
	case UTF8PROC_CATEGORY_NL:
	case UTF8PROC_CATEGORY_NO: return true;
	default: return false;
	}
}

/* ---- strip, split, replace, find ---- */

static bool in_chars(uint32_t cp, const struct jstr *chars)
{
	if (!chars)
		return py_isspace(cp);
	for (size_t i = 0; i < chars->n;) {
		size_t adv;
		if (u8_decode(chars->p + i, chars->n - i, &adv) == cp)
			return true;
		i += adv;
	}
	return false;
}

/* Start of the code point that ends at byte e (e > 0). */
static size_t prev_cp(const char *p, size_t e)
{
	size_t k = e - 1;
	while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
		k--;
	return k;
}

struct jv py_substr(struct jrender *r, struct jv s, size_t a, size_t b)
{
	size_t oa = u8_offset(s.s, a), ob = u8_offset(s.s, b);
	struct jv out = jv_strn(&r->c, s.s->p + oa, ob - oa);
	out.markup = s.markup;
	return out;
}

static struct jv bytes_sub(struct jrender *r, struct jv s, size_t a, size_t b)
{
	struct jv out = jv_strn(&r->c, s.s->p + a, b - a);
	out.markup = s.markup;
	return out;
}

struct jv py_strip(struct jrender *r, struct jv s, const struct jstr *chars, int which)
{
	size_t a = 0, b = s.s->n, adv;
	if (which & 1)
		while (a < b && in_chars(u8_decode(s.s->p + a, b - a, &adv), chars))
			a += adv;
	if (which & 2)
		while (b > a) {
			size_t k = prev_cp(s.s->p, b);
			if (!in_chars(u8_decode(s.s->p + k, b - k, &adv), chars))
				break;
			b = k;
		}
	return bytes_sub(r, s, a, b);
}

static bool ws_at(const struct jstr *s, size_t i, size_t *adv)
{
	return py_isspace(u8_decode(s->p + i, s->n - i, adv));
}

static void list_prepend(struct jrender *r, struct jv l, struct jv item)
{
	jv_list_push(&r->c, l, item);
	memmove(l.l->v + 1, l.l->v, (l.l->n - 1) * sizeof(*l.l->v));
	l.l->v[0] = item;
}

static struct jv split_ws(struct jrender *r, struct jv s, int64_t maxsplit, bool right)
{
	struct jv out = jv_list_new(&r->c, JL_LIST, 0);
	const struct jstr *t = s.s;
	size_t adv;
	if (!right) {
		size_t i = 0;
		for (;;) {
			while (i < t->n && ws_at(t, i, &adv))
				i += adv;
			if (i >= t->n)
				break;
			if (maxsplit >= 0 && (int64_t)out.l->n == maxsplit) {
				size_t e = t->n;
				jv_list_push(&r->c, out, bytes_sub(r, s, i, e));
				break;
			}
			size_t j = i;
			while (j < t->n && !ws_at(t, j, &adv))
				j += adv;
			jv_list_push(&r->c, out, bytes_sub(r, s, i, j));
			i = j;
		}
		return out;
	}
	size_t e = t->n;
	for (;;) {
		while (e > 0) {
			size_t k = prev_cp(t->p, e);
			if (!ws_at(t, k, &adv))
				break;
			e = k;
		}
		if (e == 0)
			break;
		if (maxsplit >= 0 && (int64_t)out.l->n == maxsplit) {
			list_prepend(r, out, bytes_sub(r, s, 0, e));
			break;
		}
		size_t b = e;
		while (b > 0) {
			size_t k = prev_cp(t->p, b);
			if (ws_at(t, k, &adv))
				break;
			b = k;
		}
		list_prepend(r, out, bytes_sub(r, s, b, e));
		e = b;
	}
	return out;
}

static const char *find_bytes(const char *h, size_t hn, const char *n, size_t nn)
{
	return nn == 0 ? h : memmem(h, hn, n, nn);
}

static const char *rfind_bytes(const char *h, size_t hn, const char *n, size_t nn)
{
	if (nn > hn)
		return NULL;
	for (size_t i = hn - nn + 1; i-- > 0;)
		if (!memcmp(h + i, n, nn))
			return h + i;
	return NULL;
}

struct jv py_split(struct jrender *r, struct jv s, const struct jstr *sep, int64_t maxsplit, bool right)
{
	if (!sep)
		return split_ws(r, s, maxsplit, right);
	if (!sep->n)
		jx_fail(&r->c, 0, "empty separator");
	struct jv out = jv_list_new(&r->c, JL_LIST, 0);
	const struct jstr *t = s.s;
	if (!right) {
		size_t i = 0;
		const char *f;
		while ((maxsplit < 0 || (int64_t)out.l->n < maxsplit) &&
		       (f = find_bytes(t->p + i, t->n - i, sep->p, sep->n))) {
			size_t at = (size_t)(f - t->p);
			jv_list_push(&r->c, out, bytes_sub(r, s, i, at));
			i = at + sep->n;
		}
		jv_list_push(&r->c, out, bytes_sub(r, s, i, t->n));
		return out;
	}
	size_t e = t->n;
	const char *f;
	while ((maxsplit < 0 || (int64_t)out.l->n < maxsplit) && (f = rfind_bytes(t->p, e, sep->p, sep->n))) {
		size_t at = (size_t)(f - t->p);
		list_prepend(r, out, bytes_sub(r, s, at + sep->n, e));
		e = at;
	}
	list_prepend(r, out, bytes_sub(r, s, 0, e));
	return out;
}

struct jv py_splitlines(struct jrender *r, struct jv s, bool keepends)
{
	struct jv out = jv_list_new(&r->c, JL_LIST, 0);
	const struct jstr *t = s.s;
	size_t start = 0;
	for (size_t i = 0; i < t->n;) {
		size_t adv;
		uint32_t cp = u8_decode(t->p + i, t->n - i, &adv);
		bool brk = cp == '\n' || cp == '\r' || cp == 0x0b || cp == 0x0c || cp == 0x1c || cp == 0x1d ||
			   cp == 0x1e || cp == 0x85 || cp == 0x2028 || cp == 0x2029;
		if (!brk) {
			i += adv;
			continue;
		}
		size_t end = i + adv;
		if (cp == '\r' && end < t->n && t->p[end] == '\n')
			end++;
		jv_list_push(&r->c, out, bytes_sub(r, s, start, keepends ? end : i));
		start = i = end;
	}
	if (start < t->n)
		jv_list_push(&r->c, out, bytes_sub(r, s, start, t->n));
	return out;
}

struct jv py_replace(struct jrender *r, struct jv s, const struct jstr *old, const struct jstr *new_, int64_t count)
{
	struct jbuf b = {0};
	const struct jstr *t = s.s;
	int64_t done = 0;
	if (!old->n) {
		for (size_t i = 0; i <= t->n;) {
			if (count < 0 || done < count) {
				jbuf_putn(r, &b, new_->p, new_->n);
				done++;
			}
			if (i == t->n)
				break;
			size_t adv;
			u8_decode(t->p + i, t->n - i, &adv);
			jbuf_putn(r, &b, t->p + i, adv);
			i += adv;
		}
	} else {
		size_t i = 0;
		const char *f;
		while ((count < 0 || done < count) && (f = memmem(t->p + i, t->n - i, old->p, old->n))) {
			size_t at = (size_t)(f - t->p);
			jbuf_putn(r, &b, t->p + i, at - i);
			jbuf_putn(r, &b, new_->p, new_->n);
			i = at + old->n;
			done++;
		}
		jbuf_putn(r, &b, t->p + i, t->n - i);
	}
	return jv_str_buf(&r->c, &b);
}

int64_t py_find(const struct jstr *s, const struct jstr *sub, int64_t start, int64_t end, bool right)
{
	if (end < start || (int64_t)sub->ncp > end - start)
		return -1;
	size_t a = u8_offset(s, (size_t)start), b = u8_offset(s, (size_t)end);
	const char *f = right ? rfind_bytes(s->p + a, b - a, sub->p, sub->n) : find_bytes(s->p + a, b - a, sub->p, sub->n);
	if (!f)
		return -1;
	return start + (int64_t)u8_count(s->p + a, (size_t)(f - (s->p + a)));
}

int64_t py_count(const struct jstr *s, const struct jstr *sub)
{
	if (!sub->n)
		return (int64_t)s->ncp + 1;
	int64_t k = 0;
	const char *p = s->p, *e = s->p + s->n, *f;
	while ((f = memmem(p, (size_t)(e - p), sub->p, sub->n))) {
		k++;
		p = f + sub->n;
	}
	return k;
}
