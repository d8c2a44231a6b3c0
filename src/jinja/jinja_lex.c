/*
 * jinja_lex.c: the Jinja lexer, jinja2's Lexer.tokeniter for HF's environment (trim_blocks=True,
 * lstrip_blocks=True, default delimiters): data, {{ }}, {% %}, {# #} and {% raw %}, the whitespace controls
 * "-" and "+", and the tokens inside tags (names, numbers, strings with Python escapes, operators, with
 * bracket balancing so that "}}" inside a dict literal does not end a tag).
 *
 * The input is already newline-normalized ("\r\n" and "\r" are "\n") with one trailing newline removed, and
 * valid UTF-8. "Whitespace" is Python's str.isspace, as jinja2's regexes and str.rstrip use it.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

bool py_isspace(uint32_t cp)
{
	return (cp >= 0x09 && cp <= 0x0d) || (cp >= 0x1c && cp <= 0x20) || cp == 0x85 || cp == 0xa0 || cp == 0x1680 ||
	       (cp >= 0x2000 && cp <= 0x200a) || cp == 0x2028 || cp == 0x2029 || cp == 0x202f || cp == 0x205f ||
	       cp == 0x3000;
}

struct lexer {
	struct jctx *c;
	const char *s;
	size_t n, pos;
	int line;
	struct jtoks *out;
};

static void emit(struct lexer *L, struct jtok t)
{
	struct jtoks *o = L->out;
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 256;
		struct jtok *v = jx_alloc(L->c, cap * sizeof(*v));
		if (o->n)
			memcpy(v, o->v, o->n * sizeof(*v));
		o->v = v;
		o->cap = cap;
	}
	o->v[o->n++] = t;
}

static void emit_simple(struct lexer *L, int type, int line)
{
	emit(L, (struct jtok){.type = (uint8_t)type, .line = line});
}

static int count_nl(const char *p, size_t n)
{
	int k = 0;
	for (size_t i = 0; i < n; i++)
		k += p[i] == '\n';
	return k;
}

/* Length of the whitespace run at p (Python \s*). */
static size_t ws_len(const char *p, size_t n)
{
	size_t i = 0;
	while (i < n) {
		size_t adv;
		uint32_t cp = u8_decode(p + i, n - i, &adv);
		if (!py_isspace(cp))
			break;
		i += adv;
	}
	return i;
}

/* Length of p[0, n) without trailing whitespace (Python str.rstrip). */
static size_t rstrip_len(const char *p, size_t n)
{
	while (n > 0) {
		size_t k = n - 1;
		while (k > 0 && ((unsigned char)p[k] & 0xc0) == 0x80)
			k--;
		size_t adv;
		if (!py_isspace(u8_decode(p + k, n - k, &adv)))
			break;
		n = k;
	}
	return n;
}

/* Emits the data before a tag, applying the tag's "-" or lstrip_blocks (OptionalLStrip in jinja2). */
static void emit_data(struct lexer *L, const char *text, size_t len, char sign, bool is_var, bool line_starting)
{
	int line = L->line;
	L->line += count_nl(text, len);
	if (sign == '-') {
		len = rstrip_len(text, len);
	} else if (sign != '+' && !is_var) {
		size_t l_pos = len;
		while (l_pos > 0 && text[l_pos - 1] != '\n')
			l_pos--;
		if (l_pos > 0 || line_starting) {
			size_t i = l_pos;
			while (i < len && (text[i] == ' ' || text[i] == '\t'))
				i++;
			if (i == len)
				len = l_pos;
		}
	}
	if (len)
		emit(L, (struct jtok){.type = JT_DATA, .line = line, .s = text, .n = len});
}

static bool at(const struct lexer *L, size_t pos, const char *lit)
{
	size_t k = strlen(lit);
	return pos + k <= L->n && !memcmp(L->s + pos, lit, k);
}

/* (\d+_)*\d+ at pos: its end, or 0 when there is no digit. */
static size_t digits_end(const struct lexer *L, size_t pos)
{
	if (pos >= L->n || !isdigit((unsigned char)L->s[pos]))
		return 0;
	while (pos < L->n && isdigit((unsigned char)L->s[pos]))
		pos++;
	while (pos + 1 < L->n && L->s[pos] == '_' && isdigit((unsigned char)L->s[pos + 1])) {
		pos++;
		while (pos < L->n && isdigit((unsigned char)L->s[pos]))
			pos++;
	}
	return pos;
}

static size_t exponent_end(const struct lexer *L, size_t pos)
{
	if (pos >= L->n || (L->s[pos] != 'e' && L->s[pos] != 'E'))
		return 0;
	pos++;
	if (pos < L->n && (L->s[pos] == '+' || L->s[pos] == '-'))
		pos++;
	return digits_end(L, pos);
}

/* jinja2's float_re: digits with a fraction, an exponent or both, not right after a '.'. */
static size_t float_end(const struct lexer *L)
{
	size_t p = L->pos;
	if (p > 0 && L->s[p - 1] == '.')
		return 0;
	size_t a = digits_end(L, p);
	if (!a)
		return 0;
	if (a < L->n && L->s[a] == '.') {
		size_t f = digits_end(L, a + 1);
		if (f) {
			size_t e = exponent_end(L, f);
			return e ? e : f;
		}
	}
	return exponent_end(L, a);
}

static bool is_digit_base(char ch, int base)
{
	if (base == 2)
		return ch == '0' || ch == '1';
	if (base == 8)
		return ch >= '0' && ch <= '7';
	return isxdigit((unsigned char)ch);
}

/* jinja2's integer_re: 0b / 0o / 0x prefixed, decimal without leading zeros, or zeros. */
static size_t int_end(const struct lexer *L, int *base)
{
	size_t p = L->pos;
	const char *s = L->s;
	if (p >= L->n || !isdigit((unsigned char)s[p]))
		return 0;
	if (s[p] == '0' && p + 1 < L->n && strchr("bBoOxX", s[p + 1])) {
		char k = (char)tolower((unsigned char)s[p + 1]);
		*base = k == 'b' ? 2 : k == 'o' ? 8 : 16;
		size_t q = p + 2, end = 0;
		for (;;) {
			size_t r = q;
			if (r < L->n && s[r] == '_')
				r++;
			if (r < L->n && is_digit_base(s[r], *base)) {
				q = r + 1;
				end = q;
			} else {
				break;
			}
		}
		if (end)
			return end;
	}
	*base = 10;
	if (s[p] == '0') {
		size_t q = p + 1;
		for (;;) {
			size_t r = q;
			if (r < L->n && s[r] == '_')
				r++;
			if (r < L->n && s[r] == '0')
				q = r + 1;
			else
				return q;
		}
	}
	size_t q = p + 1;
	for (;;) {
		size_t r = q;
		if (r < L->n && s[r] == '_')
			r++;
		if (r < L->n && isdigit((unsigned char)s[r]))
			q = r + 1;
		else
			return q;
	}
}

static void lex_number(struct lexer *L, size_t end, bool is_float, int base)
{
	char buf[128];
	size_t k = 0;
	size_t start = L->pos;
	if (!is_float && base != 10)
		start += 2;
	for (size_t i = start; i < end; i++)
		if (L->s[i] != '_') {
			if (k + 1 >= sizeof(buf))
				jx_fail(L->c, L->line, "number literal too long");
			buf[k++] = L->s[i];
		}
	buf[k] = 0;
	struct jtok t = {.line = L->line};
	errno = 0;
	if (is_float) {
		t.type = JT_FLOAT;
		t.f = strtod(buf, NULL);
	} else {
		t.type = JT_INT;
		unsigned long long v = strtoull(buf, NULL, base);
		if (errno || v > INT64_MAX)
			jx_fail(L->c, L->line, "integer literal %s does not fit in 64 bits", buf);
		t.i = (int64_t)v;
	}
	emit(L, t);
	L->pos = end;
}

static int hexval(char ch)
{
	return isdigit((unsigned char)ch) ? ch - '0' : tolower((unsigned char)ch) - 'a' + 10;
}

/* Python's "unicode-escape" decoding of a string literal's body, as jinja2 does it (after turning non-ASCII
 * characters into backslash escapes, so a backslash before one yields that escape's text). */
static void lex_string(struct lexer *L, size_t end)
{
	const char *s = L->s + L->pos + 1;
	size_t n = end - L->pos - 2;
	char *out = jx_alloc(L->c, n * 4 + 1);
	size_t k = 0;
	int line = L->line;
	for (size_t i = 0; i < n;) {
		if (s[i] != '\\') {
			out[k++] = s[i++];
			continue;
		}
		i++;
		unsigned char ch = (unsigned char)s[i];
		if (ch >= 0x80) {
			size_t adv;
			uint32_t cp = u8_decode(s + i, n - i, &adv);
			k += (size_t)sprintf(out + k, cp < 0x100 ? "\\x%02x" : cp < 0x10000 ? "\\u%04x" : "\\U%08x", cp);
			i += adv;
			continue;
		}
		i++;
		uint32_t cp;
		switch (ch) {
		case '\\': case '\'': case '"': out[k++] = (char)ch; continue;
		case 'a': out[k++] = '\a'; continue;
		case 'b': out[k++] = '\b'; continue;
		case 'f': out[k++] = '\f'; continue;
		case 'n': out[k++] = '\n'; continue;
		case 'r': out[k++] = '\r'; continue;
		case 't': out[k++] = '\t'; continue;
		case 'v': out[k++] = '\v'; continue;
		case '\n': continue;
		default: break;
		}
		if (ch >= '0' && ch <= '7') {
			cp = ch - '0';
			for (int d = 0; d < 2 && i < n && s[i] >= '0' && s[i] <= '7'; d++)
				cp = cp * 8 + (uint32_t)(s[i++] - '0');
		} else if (ch == 'x' || ch == 'u' || ch == 'U') {
			int want = ch == 'x' ? 2 : ch == 'u' ? 4 : 8;
			cp = 0;
			for (int d = 0; d < want; d++, i++) {
				if (i >= n || !isxdigit((unsigned char)s[i]))
					jx_fail(L->c, line, "truncated \\%c escape in a string literal", ch);
				cp = cp * 16 + (uint32_t)hexval(s[i]);
			}
			if (cp > 0x10ffff)
				jx_fail(L->c, line, "\\U escape out of range in a string literal");
		} else if (ch == 'N') {
			jx_fail(L->c, line, "unsupported \\N{...} escape in a string literal");
		} else {
			out[k++] = '\\';
			out[k++] = (char)ch;
			continue;
		}
		if (cp >= 0xd800 && cp <= 0xdfff)
			jx_fail(L->c, line, "unsupported surrogate escape in a string literal");
		k += u8_encode(cp, out + k);
	}
	out[k] = 0;
	emit(L, (struct jtok){.type = JT_STRING, .line = line, .s = out, .n = k});
	L->line += count_nl(L->s + L->pos, end - L->pos);
	L->pos = end;
}

static const struct {
	const char *s;
	int op;
} ops[] = {
	{"//", OP_FLOORDIV}, {"**", OP_POW}, {"==", OP_EQ}, {"!=", OP_NE}, {">=", OP_GTEQ}, {"<=", OP_LTEQ},
	{"+", OP_ADD}, {"-", OP_SUB}, {"/", OP_DIV}, {"*", OP_MUL}, {"%", OP_MOD}, {"~", OP_TILDE},
	{"[", OP_LBRACKET}, {"]", OP_RBRACKET}, {"(", OP_LPAREN}, {")", OP_RPAREN}, {"{", OP_LBRACE},
	{"}", OP_RBRACE}, {">", OP_GT}, {"<", OP_LT}, {"=", OP_ASSIGN}, {".", OP_DOT}, {":", OP_COLON},
	{"|", OP_PIPE}, {",", OP_COMMA}, {";", OP_SEMICOLON},
};

/* Tokens of one {{ }} or {% %} up to and including its end; returns whether the end ate a newline last. */
static bool lex_tag(struct lexer *L, bool is_var)
{
	char stack[256];
	int depth = 0;
	int begin_line = L->line;
	for (;;) {
		if (L->pos >= L->n)
			jx_fail(L->c, begin_line, "unexpected end of template: '%s' is not closed", is_var ? "{{" : "{%");
		if (depth == 0) {
			const char *close = is_var ? "}}" : "%}";
			size_t at_end = 0;
			bool plus = false;
			if (L->s[L->pos] == '-' && at(L, L->pos + 1, close))
				at_end = 3;
			else if (!is_var && at(L, L->pos, "+%}"))
				at_end = 3, plus = true;
			else if (at(L, L->pos, close))
				at_end = 2;
			if (at_end) {
				emit_simple(L, is_var ? JT_VAR_END : JT_BLOCK_END, L->line);
				size_t start = L->pos;
				L->pos += at_end;
				if (at_end == 3 && !plus)
					L->pos += ws_len(L->s + L->pos, L->n - L->pos);
				else if (at_end == 2 && !is_var && L->pos < L->n && L->s[L->pos] == '\n')
					L->pos++;
				L->line += count_nl(L->s + start, L->pos - start);
				return L->s[L->pos - 1] == '\n';
			}
		}
		size_t w = ws_len(L->s + L->pos, L->n - L->pos);
		if (w) {
			L->line += count_nl(L->s + L->pos, w);
			L->pos += w;
			continue;
		}
		int base = 10;
		size_t e;
		if ((e = float_end(L))) {
			lex_number(L, e, true, 10);
			continue;
		}
		if ((e = int_end(L, &base))) {
			lex_number(L, e, false, base);
			continue;
		}
		char ch = L->s[L->pos];
		if (isalpha((unsigned char)ch) || ch == '_') {
			size_t q = L->pos;
			while (q < L->n && (isalnum((unsigned char)L->s[q]) || L->s[q] == '_'))
				q++;
			emit(L, (struct jtok){.type = JT_NAME, .line = L->line, .s = jx_strndup(L->c, L->s + L->pos, q - L->pos),
					      .n = q - L->pos});
			L->pos = q;
			continue;
		}
		if (ch == '\'' || ch == '"') {
			size_t q = L->pos + 1;
			while (q < L->n && L->s[q] != ch)
				q += L->s[q] == '\\' && q + 1 < L->n ? 2 : 1;
			if (q < L->n) {
				lex_string(L, q + 1);
				continue;
			}
		}
		size_t k;
		for (k = 0; k < sizeof(ops) / sizeof(ops[0]); k++)
			if (at(L, L->pos, ops[k].s))
				break;
		if (k == sizeof(ops) / sizeof(ops[0])) {
			size_t adv;
			uint32_t cp = u8_decode(L->s + L->pos, L->n - L->pos, &adv);
			if (cp >= 0x20 && cp < 0x7f)
				jx_fail(L->c, L->line, "unexpected char '%c'", (char)cp);
			jx_fail(L->c, L->line, "unexpected char U+%04X", cp);
		}
		int op = ops[k].op;
		if (op == OP_LBRACE || op == OP_LPAREN || op == OP_LBRACKET) {
			if (depth == (int)sizeof(stack))
				jx_fail(L->c, L->line, "brackets nested too deeply");
			stack[depth++] = op == OP_LBRACE ? '}' : op == OP_LPAREN ? ')' : ']';
		} else if (op == OP_RBRACE || op == OP_RPAREN || op == OP_RBRACKET) {
			char want = ops[k].s[0];
			if (!depth)
				jx_fail(L->c, L->line, "unexpected '%c'", want);
			if (stack[--depth] != want)
				jx_fail(L->c, L->line, "unexpected '%c', expected '%c'", want, stack[depth]);
		}
		emit(L, (struct jtok){.type = JT_OP, .op = (uint8_t)op, .line = L->line});
		L->pos += strlen(ops[k].s);
	}
}

/* {% raw %} at pos (optionally "-" or "+" after "{%"): the length of the opening tag, or 0. */
static size_t raw_begin_len(const struct lexer *L, size_t pos, char *sign)
{
	size_t p = pos + 2;
	*sign = 0;
	if (p < L->n && (L->s[p] == '-' || L->s[p] == '+'))
		*sign = L->s[p++];
	p += ws_len(L->s + p, L->n - p);
	if (!at(L, p, "raw"))
		return 0;
	p += 3;
	p += ws_len(L->s + p, L->n - p);
	if (at(L, p, "-%}")) {
		p += 3;
		return p + ws_len(L->s + p, L->n - p) - pos;
	}
	if (at(L, p, "%}"))
		return p + 2 - pos;
	return 0;
}

/* The body of a raw block up to and including {% endraw %}; returns whether the end ate a newline last. */
static bool lex_raw(struct lexer *L, bool line_starting)
{
	int line = L->line;
	for (size_t q = L->pos; q + 1 < L->n; q++) {
		if (L->s[q] != '{' || L->s[q + 1] != '%')
			continue;
		size_t p = q + 2;
		char sign = 0;
		if (p < L->n && (L->s[p] == '-' || L->s[p] == '+'))
			sign = L->s[p++];
		p += ws_len(L->s + p, L->n - p);
		if (!at(L, p, "endraw"))
			continue;
		p += 6;
		p += ws_len(L->s + p, L->n - p);
		if (at(L, p, "+%}")) {
			p += 3;
		} else if (at(L, p, "-%}")) {
			p += 3;
			p += ws_len(L->s + p, L->n - p);
		} else if (at(L, p, "%}")) {
			p += 2;
			if (p < L->n && L->s[p] == '\n')
				p++;
		} else {
			continue;
		}
		emit_data(L, L->s + L->pos, q - L->pos, sign, false, line_starting);
		L->line += count_nl(L->s + q, p - q);
		L->pos = p;
		return L->s[p - 1] == '\n';
	}
	jx_fail(L->c, line, "missing end of raw directive");
}

void jlex_run(struct jctx *c, const char *src, size_t len, struct jtoks *out)
{
	struct lexer L = {.c = c, .s = src, .n = len, .line = 1, .out = out};
	bool line_starting = true;
	while (L.pos < L.n) {
		size_t q = L.pos;
		while (q + 1 < L.n && !(L.s[q] == '{' && (L.s[q + 1] == '%' || L.s[q + 1] == '{' || L.s[q + 1] == '#')))
			q++;
		if (q + 1 >= L.n) {
			emit(&L, (struct jtok){.type = JT_DATA, .line = L.line, .s = L.s + L.pos, .n = L.n - L.pos});
			break;
		}
		char kind = L.s[q + 1], sign = 0;
		size_t rawlen = kind == '%' ? raw_begin_len(&L, q, &sign) : 0;
		if (!rawlen && q + 2 < L.n && (L.s[q + 2] == '-' || L.s[q + 2] == '+'))
			sign = L.s[q + 2];
		emit_data(&L, L.s + L.pos, q - L.pos, sign, kind == '{', line_starting);
		if (rawlen) {
			L.line += count_nl(L.s + q, rawlen);
			L.pos = q + rawlen;
			line_starting = lex_raw(&L, L.s[L.pos - 1] == '\n');
			continue;
		}
		L.pos = q + 2 + (sign ? 1 : 0);
		if (kind == '#') {
			if (L.pos >= L.n) /* jinja2 only fails when something follows an unclosed "{#" */
				break;
			size_t e = L.pos, end = 0;
			for (; e + 1 < L.n; e++) {
				if (L.s[e] == '+' && at(&L, e + 1, "#}")) {
					end = e + 3;
				} else if (L.s[e] == '-' && at(&L, e + 1, "#}")) {
					end = e + 3;
					end += ws_len(L.s + end, L.n - end);
				} else if (L.s[e] == '#' && L.s[e + 1] == '}') {
					end = e + 2;
					if (end < L.n && L.s[end] == '\n')
						end++;
				}
				if (end)
					break;
			}
			if (!end)
				jx_fail(c, L.line, "missing end of comment tag");
			L.line += count_nl(L.s + L.pos, end - L.pos);
			L.pos = end;
			line_starting = L.s[end - 1] == '\n';
			continue;
		}
		emit_simple(&L, kind == '{' ? JT_VAR_BEGIN : JT_BLOCK_BEGIN, L.line);
		line_starting = lex_tag(&L, kind == '{');
	}
	emit_simple(&L, JT_EOF, L.line);
}
