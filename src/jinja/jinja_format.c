/*
 * jinja_format.c: Python's printf-style formatting, str % args (CPython's PyUnicode_Format), which the %
 * operator on strings and the format filter use: %(key)s from a mapping, the flags "-+ #0", width and
 * precision (also "*"), the conversions s r a d i u x X o e E f F g G c and %%, and Python's errors for
 * too few / too many arguments and wrong types. Widths count code points, as Python's do.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

struct fmt_args {
	const struct jv *v; /* the tuple's items, or the single argument */
	int64_t n, next;    /* n < 0: one argument that is not a tuple (CPython's arglen -1, argidx -2) */
	struct jv mapping;  /* JV_MISSING unless args is a mapping (dict or list, not tuple or str) */
};

static struct jv next_arg(struct jrender *r, struct fmt_args *a)
{
	if (a->next < a->n) {
		a->next++;
		return a->n < 0 ? a->v[0] : a->v[a->next - 1];
	}
	jx_fail(&r->c, 0, "not enough arguments for format string");
}

static void pad_to(struct jrender *r, struct jbuf *out, const char *p, size_t n, size_t ncp, int64_t width, bool left)
{
	int64_t fill = width > (int64_t)ncp ? width - (int64_t)ncp : 0;
	if ((uint64_t)fill > r->max_output)
		jx_fail(&r->c, 0, "format width larger than the output limit");
	for (int64_t i = 0; !left && i < fill; i++)
		jbuf_puts(r, out, " ");
	jbuf_putn(r, out, p, n);
	for (int64_t i = 0; left && i < fill; i++)
		jbuf_puts(r, out, " ");
}

/* ascii(): repr with non-ASCII code points escaped. */
static void ascii_repr(struct jrender *r, struct jbuf *out, struct jv v)
{
	struct jbuf t = {0};
	jv_repr_append(r, &t, v);
	for (size_t i = 0; i < t.n;) {
		size_t adv;
		uint32_t cp = u8_decode(t.p + i, t.n - i, &adv);
		if (cp < 0x80)
			jbuf_putn(r, out, t.p + i, 1);
		else
			jbuf_printf(r, out, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp);
		i += adv;
	}
}

static void format_int(struct jrender *r, struct jbuf *out, int64_t v, char conv, const char *flags, int64_t width,
		       int64_t prec)
{
	char digits[80], body[200];
	uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
	if (conv == 'x' || conv == 'X')
		snprintf(digits, sizeof(digits), conv == 'x' ? "%" PRIx64 : "%" PRIX64, mag);
	else if (conv == 'o')
		snprintf(digits, sizeof(digits), "%" PRIo64, mag);
	else
		snprintf(digits, sizeof(digits), "%" PRIu64, mag);
	if (prec > 64)
		jx_fail(&r->c, 0, "unsupported: integer precision above 64");
	const char *sign = v < 0 ? "-" : strchr(flags, '+') ? "+" : strchr(flags, ' ') ? " " : "";
	const char *prefix = !strchr(flags, '#') ? "" : conv == 'x' ? "0x" : conv == 'X' ? "0X" : conv == 'o' ? "0o" : "";
	int zeros = prec > (int64_t)strlen(digits) ? (int)(prec - (int64_t)strlen(digits)) : 0;
	bool left = strchr(flags, '-') != NULL;
	int64_t len = (int64_t)(strlen(sign) + strlen(prefix) + (size_t)zeros + strlen(digits));
	if (!left && strchr(flags, '0') && width > len) {
		if (width - len > 4096)
			jx_fail(&r->c, 0, "format width larger than 4096");
		zeros += (int)(width - len);
	}
	snprintf(body, sizeof(body), "%s%s%.*s%s", sign, prefix, zeros, "0000000000000000000000000000000000000000000000000000000000000000", digits);
	if (zeros > 64) { /* wide zero padding: build it piecewise */
		struct jbuf t = {0};
		jbuf_puts(r, &t, sign);
		jbuf_puts(r, &t, prefix);
		for (int i = 0; i < zeros; i++)
			jbuf_puts(r, &t, "0");
		jbuf_puts(r, &t, digits);
		pad_to(r, out, t.p, t.n, t.n, width, left);
		return;
	}
	pad_to(r, out, body, strlen(body), strlen(body), width, left);
}

static void format_float(struct jrender *r, struct jbuf *out, double v, char conv, const char *flags, int64_t width,
			 int64_t prec)
{
	if (prec > 500 || width > 4096)
		jx_fail(&r->c, 0, "unsupported: float format width or precision this large");
	char spec[32], buf[5000];
	snprintf(spec, sizeof(spec), "%%%s%s%s%s%s*.*%c", strchr(flags, '-') ? "-" : "", strchr(flags, '+') ? "+" : "",
		 strchr(flags, ' ') ? " " : "", strchr(flags, '#') ? "#" : "", strchr(flags, '0') ? "0" : "", conv);
	snprintf(buf, sizeof(buf), spec, (int)width, (int)(prec < 0 ? 6 : prec), v);
	jbuf_puts(r, out, buf);
}

static bool is_num(struct jv v)
{
	return v.t == JV_INT || v.t == JV_BOOL || v.t == JV_FLOAT;
}

static void convert(struct jrender *r, struct jbuf *out, struct jv v, char conv, const char *flags, int64_t width,
		    int64_t prec)
{
	bool left = strchr(flags, '-') != NULL;
	switch (conv) {
	case 's':
	case 'r':
	case 'a': {
		struct jbuf t = {0};
		if (conv == 's')
			jv_str_append(r, &t, v);
		else if (conv == 'r')
			jv_repr_append(r, &t, v);
		else
			ascii_repr(r, &t, v);
		size_t n = t.n, ncp = u8_count(t.p ? t.p : "", t.n);
		if (prec >= 0 && (size_t)prec < ncp) {
			struct jstr *s = jx_alloc(&r->c, sizeof(*s) + t.n + 1);
			s->n = t.n;
			s->ncp = ncp;
			memcpy(s->p, t.p, t.n);
			n = u8_offset(s, (size_t)prec);
			ncp = (size_t)prec;
		}
		pad_to(r, out, t.p ? t.p : "", n, ncp, width, left);
		return;
	}
	case 'c': {
		char enc[4];
		if (v.t == JV_INT || v.t == JV_BOOL) {
			int64_t c = v.t == JV_BOOL ? v.b : v.i;
			if (c < 0 || c > 0x10ffff)
				jx_fail(&r->c, 0, "%%c arg not in range(0x110000)");
			if (c >= 0xd800 && c <= 0xdfff)
				jx_fail(&r->c, 0, "unsupported: %%c of a surrogate");
			size_t k = u8_encode((uint32_t)c, enc);
			pad_to(r, out, enc, k, 1, width, left);
			return;
		}
		if (v.t == JV_STR && v.s->ncp == 1) {
			pad_to(r, out, v.s->p, v.s->n, 1, width, left);
			return;
		}
		jx_fail(&r->c, 0, "%%c requires an int or a unicode character, not %s", jv_type_name(v));
	}
	case 'd':
	case 'i':
	case 'u':
		jv_check_defined(r, v);
		if (!is_num(v))
			jx_fail(&r->c, 0, "%%%c format: a real number is required, not %s", conv, jv_type_name(v));
		if (v.t == JV_FLOAT) {
			if (isnan(v.f) || isinf(v.f))
				jx_fail(&r->c, 0, "cannot convert float %s to integer", isnan(v.f) ? "NaN" : "infinity");
			if (v.f >= 9223372036854775808.0 || v.f < -9223372036854775808.0)
				jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
			format_int(r, out, (int64_t)v.f, 'd', flags, width, prec);
		} else {
			format_int(r, out, v.t == JV_BOOL ? v.b : v.i, 'd', flags, width, prec);
		}
		return;
	case 'x':
	case 'X':
	case 'o':
		jv_check_defined(r, v);
		if (v.t != JV_INT && v.t != JV_BOOL)
			jx_fail(&r->c, 0, "%%%c format: an integer is required, not %s", conv, jv_type_name(v));
		format_int(r, out, v.t == JV_BOOL ? v.b : v.i, conv, flags, width, prec);
		return;
	default: /* e E f F g G */
		jv_check_defined(r, v);
		if (!is_num(v))
			jx_fail(&r->c, 0, "must be real number, not %s", jv_type_name(v));
		format_float(r, out, v.t == JV_FLOAT ? v.f : v.t == JV_BOOL ? (double)v.b : (double)v.i, conv, flags, width,
			     prec);
	}
}

static int64_t star_arg(struct jrender *r, struct fmt_args *a)
{
	struct jv w = next_arg(r, a);
	if (w.t != JV_INT && w.t != JV_BOOL)
		jx_fail(&r->c, 0, "* wants int");
	return w.t == JV_BOOL ? w.b : w.i;
}

struct jv py_percent_format(struct jrender *r, struct jv fmt, struct jv args)
{
	if (fmt.markup)
		jx_fail(&r->c, 0, "unsupported: %% formatting of a safe (Markup) string");
	struct fmt_args a = {.mapping = {.t = JV_MISSING}};
	if (args.t == JV_LIST && args.kind == JL_TUPLE) {
		a.v = args.l->v;
		a.n = (int64_t)args.l->n;
		a.next = 0;
	} else {
		a.v = &args;
		a.n = -1;
		a.next = -2;
		/* PyMapping_Check: anything with __getitem__ but a tuple or str (lists and Undefined too). */
		if (args.t == JV_DICT || args.t == JV_UNDEF || (args.t == JV_LIST && args.kind != JL_ITER))
			a.mapping = args;
	}
	const char *p = fmt.s->p, *end = p + fmt.s->n;
	struct jbuf out = {0};
	while (p < end) {
		const char *pct = memchr(p, '%', (size_t)(end - p));
		if (!pct) {
			jbuf_putn(r, &out, p, (size_t)(end - p));
			break;
		}
		jbuf_putn(r, &out, p, (size_t)(pct - p));
		const char *q = pct + 1;
		struct jv v = {.t = JV_MISSING};
		if (q < end && *q == '(') {
			if (a.mapping.t == JV_MISSING)
				jx_fail(&r->c, 0, "format requires a mapping");
			const char *k = ++q;
			int depth = 1;
			while (q < end && depth) {
				depth += *q == '(' ? 1 : *q == ')' ? -1 : 0;
				q++;
			}
			if (depth)
				jx_fail(&r->c, 0, "incomplete format key");
			struct jv key = jv_strn(&r->c, k, (size_t)(q - 1 - k));
			jv_check_defined(r, a.mapping); /* Undefined.__getitem__ raises */
			if (a.mapping.t != JV_DICT)
				jx_fail(&r->c, 0, "list indices must be integers or slices, not str");
			struct jv *found = jdict_get(r, a.mapping.d, key);
			if (!found) {
				struct jbuf kr = {0};
				py_str_repr(r, &kr, key.s->p, key.s->n);
				jx_fail(&r->c, 0, "%s", kr.p);
			}
			v = *found;
			a.n = -1; /* CPython: the looked-up value replaces the arguments and is used up here */
			a.next = -1;
		}
		char flags[8] = "";
		while (q < end && strchr("-+ #0", *q) && *q) {
			if (!strchr(flags, *q) && strlen(flags) < sizeof(flags) - 1)
				strncat(flags, q, 1);
			q++;
		}
		int64_t width = 0, prec = -1;
		if (q < end && *q == '*') {
			width = star_arg(r, &a);
			if (width < 0) {
				width = -width;
				if (!strchr(flags, '-'))
					strcat(flags, "-");
			}
			q++;
		} else {
			while (q < end && *q >= '0' && *q <= '9')
				if ((width = width * 10 + (*q++ - '0')) > 1000000)
					jx_fail(&r->c, 0, "width too big");
		}
		if (q < end && *q == '.') {
			q++;
			prec = 0;
			if (q < end && *q == '*') {
				prec = star_arg(r, &a);
				if (prec < 0)
					prec = 0;
				q++;
			} else {
				while (q < end && *q >= '0' && *q <= '9')
					if ((prec = prec * 10 + (*q++ - '0')) > 1000000)
						jx_fail(&r->c, 0, "precision too big");
			}
		}
		while (q < end && (*q == 'h' || *q == 'l' || *q == 'L'))
			q++;
		if (q >= end)
			jx_fail(&r->c, 0, "incomplete format");
		char conv = *q++;
		if (conv == '%') {
			jbuf_puts(r, &out, "%");
			p = q;
			continue;
		}
		if (!strchr("sradiuxXoeEfFgGc", conv)) {
			size_t adv;
			uint32_t cp = u8_decode(q - 1, (size_t)(end - q + 1), &adv);
			jx_fail(&r->c, 0, "unsupported format character '%.*s' (0x%x) at index %zu", (int)adv, q - 1, cp,
				u8_count(fmt.s->p, (size_t)(q - 1 - fmt.s->p)));
		}
		if (v.t == JV_MISSING)
			v = next_arg(r, &a);
		convert(r, &out, v, conv, flags, width, prec);
		p = q;
	}
	if (a.next < a.n && a.mapping.t == JV_MISSING)
		jx_fail(&r->c, 0, "not all arguments converted during string formatting");
	return jv_str_buf(&r->c, &out);
}
