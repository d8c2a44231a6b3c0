/*
 * jinja_value.c: the interpreter's memory and its Python-like values: the arena, errors, output buffers,
 * constructors, dict lookup with Python's key equality (1 == 1.0 == True), truthiness, ==, ordering,
 * len(), iteration, str() and repr() exactly as CPython prints them, and values from JSON.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

/* ---- arena ---- */

struct ja_chunk {
	struct ja_chunk *next;
	size_t cap, used;
	max_align_t data[];
};

#define JA_CHUNK (64 * 1024)

void *ja_alloc_or_null(struct jarena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!n)
		n = 16;
	struct ja_chunk *h = a->head;
	if (h && h->cap - h->used >= n) {
		void *p = (char *)h->data + h->used;
		h->used += n;
		return p;
	}
	size_t cap = n > JA_CHUNK ? n : JA_CHUNK;
	if (n > a->limit || a->total + cap > a->limit)
		return NULL;
	struct ja_chunk *c = malloc(sizeof(*c) + cap);
	if (!c)
		return NULL;
	a->total += cap;
	c->cap = cap;
	c->used = n;
	/* A big block gets its own chunk behind the current one, which keeps its free space. */
	if (h && n > JA_CHUNK) {
		c->next = h->next;
		h->next = c;
	} else {
		c->next = h;
		a->head = c;
	}
	return c->data;
}

void ja_free(struct jarena *a)
{
	for (struct ja_chunk *c = a->head, *nx; c; c = nx) {
		nx = c->next;
		free(c);
	}
	a->head = NULL;
	a->total = 0;
}

void *jx_alloc(struct jctx *c, size_t n)
{
	void *p = ja_alloc_or_null(c->arena, n);
	if (!p)
		jx_fail(c, 0, "out of memory (the template's limit is %zu MiB)", c->arena->limit >> 20);
	return p;
}

char *jx_strndup(struct jctx *c, const char *s, size_t n)
{
	char *p = jx_alloc(c, n + 1);
	memcpy(p, s, n);
	p[n] = 0;
	return p;
}

void jx_fail(struct jctx *c, int line, const char *fmt, ...)
{
	if (line <= 0)
		line = c->line;
	int k = line > 0 ? snprintf(c->err, c->errlen, "%s:%d: ", c->name, line)
			 : snprintf(c->err, c->errlen, "%s: ", c->name);
	if (k < 0)
		k = 0;
	if ((size_t)k < c->errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(c->err + k, c->errlen - (size_t)k, fmt, ap);
		va_end(ap);
	}
	for (char *p = c->err; *p; p++) /* one line */
		if (*p == '\n' || *p == '\r')
			*p = ' ';
	longjmp(c->jb, 1);
}

/* ---- buffers ---- */

void jbuf_put(struct jctx *c, struct jbuf *b, const char *p, size_t n, size_t max)
{
	if (n > max || b->n > max - n)
		jx_fail(c, 0, "output larger than the limit of %zu bytes", max);
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *q = jx_alloc(c, cap);
		if (b->n)
			memcpy(q, b->p, b->n);
		b->p = q;
		b->cap = cap;
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
}

void jbuf_putn(struct jrender *r, struct jbuf *b, const char *p, size_t n)
{
	jbuf_put(&r->c, b, p, n, r->max_output);
}

void jbuf_puts(struct jrender *r, struct jbuf *b, const char *s)
{
	jbuf_putn(r, b, s, strlen(s));
}

void jbuf_printf(struct jrender *r, struct jbuf *b, const char *fmt, ...)
{
	char tmp[256];
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	jbuf_putn(r, b, tmp, k < 0 ? 0 : (size_t)k < sizeof(tmp) ? (size_t)k : sizeof(tmp) - 1);
}

/* ---- constructors ---- */

struct jv jv_undef(struct jrender *r, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	struct jundef *u = jx_alloc(&r->c, sizeof(*u));
	u->msg = jx_strndup(&r->c, tmp, strlen(tmp));
	return (struct jv){.t = JV_UNDEF, .u = u};
}

struct jv jv_none(void)
{
	return (struct jv){.t = JV_NONE};
}

struct jv jv_bool(bool b)
{
	return (struct jv){.t = JV_BOOL, .b = b};
}

struct jv jv_int(int64_t i)
{
	return (struct jv){.t = JV_INT, .i = i};
}

struct jv jv_float(double f)
{
	return (struct jv){.t = JV_FLOAT, .f = f};
}

struct jv jv_strn(struct jctx *c, const char *p, size_t n)
{
	struct jstr *s = jx_alloc(c, sizeof(*s) + n + 1);
	s->n = n;
	s->ncp = u8_count(p, n);
	if (n)
		memcpy(s->p, p, n);
	s->p[n] = 0;
	return (struct jv){.t = JV_STR, .s = s};
}

struct jv jv_cstr(struct jctx *c, const char *p)
{
	return jv_strn(c, p, strlen(p));
}

struct jv jv_str_buf(struct jctx *c, const struct jbuf *b)
{
	return jv_strn(c, b->p ? b->p : "", b->n);
}

struct jv jv_list_new(struct jctx *c, enum jl_kind kind, size_t cap)
{
	struct jlist *l = jx_alloc(c, sizeof(*l));
	memset(l, 0, sizeof(*l));
	if (cap) {
		l->v = jx_alloc(c, cap * sizeof(*l->v));
		l->cap = cap;
	}
	return (struct jv){.t = JV_LIST, .kind = (uint8_t)kind, .l = l};
}

void jv_list_push(struct jctx *c, struct jv list, struct jv item)
{
	struct jlist *l = list.l;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4;
		struct jv *v = jx_alloc(c, cap * sizeof(*v));
		if (l->n)
			memcpy(v, l->v, l->n * sizeof(*v));
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = item;
}

struct jv jv_tuple2(struct jctx *c, struct jv a, struct jv b)
{
	struct jv t = jv_list_new(c, JL_TUPLE, 2);
	jv_list_push(c, t, a);
	jv_list_push(c, t, b);
	return t;
}

struct jv jv_dict_new(struct jctx *c, size_t cap)
{
	struct jdict *d = jx_alloc(c, sizeof(*d));
	memset(d, 0, sizeof(*d));
	if (cap) {
		d->k = jx_alloc(c, cap * sizeof(*d->k));
		d->v = jx_alloc(c, cap * sizeof(*d->v));
		d->cap = cap;
	}
	return (struct jv){.t = JV_DICT, .d = d};
}

static bool hashable(struct jv k)
{
	if (k.t == JV_DICT || (k.t == JV_LIST && k.kind != JL_TUPLE && k.kind != JL_ITER && k.kind != JL_RANGE))
		return false;
	if (k.t == JV_LIST && k.kind == JL_TUPLE)
		for (size_t i = 0; i < k.l->n; i++)
			if (!hashable(k.l->v[i]))
				return false;
	return true;
}

struct jv *jdict_get(struct jrender *r, const struct jdict *d, struct jv k)
{
	if (!hashable(k))
		jx_fail(&r->c, 0, "unhashable type: '%s'", jv_type_name(k));
	if (k.t == JV_STR) {
		for (size_t i = 0; i < d->n; i++)
			if (d->k[i].t == JV_STR && d->k[i].s->n == k.s->n && !memcmp(d->k[i].s->p, k.s->p, k.s->n))
				return &d->v[i];
		return NULL;
	}
	for (size_t i = 0; i < d->n; i++)
		if (jv_eq(d->k[i], k))
			return &d->v[i];
	return NULL;
}

struct jv *jdict_get_str(const struct jdict *d, const char *name)
{
	size_t n = strlen(name);
	for (size_t i = 0; i < d->n; i++)
		if (d->k[i].t == JV_STR && d->k[i].s->n == n && !memcmp(d->k[i].s->p, name, n))
			return &d->v[i];
	return NULL;
}

void jdict_set(struct jctx *c, struct jdict *d, struct jv k, struct jv v)
{
	for (size_t i = 0; i < d->n; i++)
		if (jv_eq(d->k[i], k)) {
			d->v[i] = v;
			return;
		}
	if (d->n == d->cap) {
		size_t cap = d->cap ? d->cap * 2 : 4;
		struct jv *nk = jx_alloc(c, cap * sizeof(*nk)), *nv = jx_alloc(c, cap * sizeof(*nv));
		if (d->n) {
			memcpy(nk, d->k, d->n * sizeof(*nk));
			memcpy(nv, d->v, d->n * sizeof(*nv));
		}
		d->k = nk;
		d->v = nv;
		d->cap = cap;
	}
	d->k[d->n] = k;
	d->v[d->n++] = v;
}

/* ---- Python semantics ---- */

bool jv_truthy(struct jv v)
{
	switch (v.t) {
	case JV_UNDEF:
	case JV_NONE:
	case JV_MISSING: return false;
	case JV_BOOL: return v.b;
	case JV_INT: return v.i != 0;
	case JV_FLOAT: return v.f != 0;
	case JV_STR: return v.s->n > 0;
	case JV_LIST: return v.kind == JL_ITER || v.l->n > 0;
	case JV_DICT: return v.d->n > 0;
	default: return true;
	}
}

bool jv_is_str(struct jv v, const char *s)
{
	return v.t == JV_STR && v.s->n == strlen(s) && !memcmp(v.s->p, s, v.s->n);
}

static bool is_num(struct jv v)
{
	return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT;
}

static int64_t as_int(struct jv v)
{
	return v.t == JV_BOOL ? v.b : v.i;
}

/* Exact comparison of an int and a double, as Python does it: -1, 0, 1, or 2 when unordered (NaN). */
static int cmp_int_float(int64_t i, double f)
{
	if (isnan(f))
		return 2;
	if (f >= 9223372036854775808.0)
		return -1;
	if (f < -9223372036854775808.0)
		return 1;
	double fl = floor(f);
	int64_t fi = (int64_t)fl;
	if (i < fi)
		return -1;
	if (i > fi)
		return 1;
	return f > fl ? -1 : 0;
}

/* -1, 0, 1, or 2 when unordered. */
static int num_cmp(struct jv a, struct jv b)
{
	if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
		int64_t x = as_int(a), y = as_int(b);
		return x < y ? -1 : x > y;
	}
	if (a.t == JV_FLOAT && b.t == JV_FLOAT) {
		if (isnan(a.f) || isnan(b.f))
			return 2;
		return a.f < b.f ? -1 : a.f > b.f;
	}
	if (a.t == JV_FLOAT) {
		int c = cmp_int_float(as_int(b), a.f);
		return c == 2 ? 2 : -c;
	}
	return cmp_int_float(as_int(a), b.f);
}

static int str_cmp(const struct jstr *a, const struct jstr *b)
{
	size_t n = a->n < b->n ? a->n : b->n;
	int c = memcmp(a->p, b->p, n);
	if (c)
		return c < 0 ? -1 : 1;
	return a->n < b->n ? -1 : a->n > b->n;
}

bool jv_eq(struct jv a, struct jv b)
{
	if (is_num(a) && is_num(b))
		return num_cmp(a, b) == 0;
	if (a.t != b.t)
		return false;
	switch (a.t) {
	case JV_UNDEF:
	case JV_NONE: return true;
	case JV_STR: return a.s->n == b.s->n && !memcmp(a.s->p, b.s->p, a.s->n);
	case JV_LIST:
		if (a.kind != b.kind)
			return false;
		if (a.l == b.l)
			return true;
		if (a.kind != JL_LIST && a.kind != JL_TUPLE && a.kind != JL_RANGE && a.kind != JL_KEYS &&
		    a.kind != JL_ITEMS)
			return false;
		if (a.l->n != b.l->n)
			return false;
		for (size_t i = 0; i < a.l->n; i++)
			if (!jv_eq(a.l->v[i], b.l->v[i]))
				return false;
		return true;
	case JV_DICT:
		if (a.d->n != b.d->n)
			return false;
		for (size_t i = 0; i < a.d->n; i++) {
			struct jv *v = NULL;
			for (size_t j = 0; j < b.d->n && !v; j++)
				if (jv_eq(a.d->k[i], b.d->k[j]))
					v = &b.d->v[j];
			if (!v || !jv_eq(a.d->v[i], *v))
				return false;
		}
		return true;
	case JV_NS: return a.ns == b.ns;
	case JV_MACRO: return a.m == b.m;
	case JV_FUNC: return a.fn == b.fn;
	case JV_LOOP: return a.lp == b.lp;
	default: return false;
	}
}

static const char *op_text(int op)
{
	return op == OP_LT ? "<" : op == OP_LTEQ ? "<=" : op == OP_GT ? ">" : ">=";
}

/* -1, 0, 1 for orderable pairs; fails otherwise. */
static int order(struct jrender *r, int op, struct jv a, struct jv b)
{
	jv_check_defined(r, a);
	jv_check_defined(r, b);
	if (is_num(a) && is_num(b)) {
		int c = num_cmp(a, b);
		return c == 2 ? 3 : c;
	}
	if (a.t == JV_STR && b.t == JV_STR)
		return str_cmp(a.s, b.s);
	if (a.t == JV_LIST && b.t == JV_LIST && a.kind == b.kind && (a.kind == JL_LIST || a.kind == JL_TUPLE)) {
		size_t n = a.l->n < b.l->n ? a.l->n : b.l->n;
		for (size_t i = 0; i < n; i++)
			if (!jv_eq(a.l->v[i], b.l->v[i]))
				return order(r, op, a.l->v[i], b.l->v[i]);
		return a.l->n < b.l->n ? -1 : a.l->n > b.l->n;
	}
	jx_fail(&r->c, 0, "'%s' not supported between instances of '%s' and '%s'", op_text(op),
		jv_type_name(a), jv_type_name(b));
}

bool jv_compare(struct jrender *r, int op, struct jv a, struct jv b)
{
	int c = order(r, op, a, b);
	if (c == 3) /* NaN */
		return false;
	switch (op) {
	case OP_LT: return c < 0;
	case OP_LTEQ: return c <= 0;
	case OP_GT: return c > 0;
	default: return c >= 0;
	}
}

const char *jv_type_name(struct jv v)
{
	switch (v.t) {
	case JV_UNDEF: return "Undefined";
	case JV_NONE: return "NoneType";
	case JV_BOOL: return "bool";
	case JV_INT: return "int";
	case JV_FLOAT: return "float";
	case JV_STR: return v.markup ? "Markup" : "str";
	case JV_LIST:
		switch (v.kind) {
		case JL_TUPLE: return "tuple";
		case JL_ITER: return "generator";
		case JL_KEYS: return "dict_keys";
		case JL_VALUES: return "dict_values";
		case JL_ITEMS: return "dict_items";
		case JL_RANGE: return "range";
		default: return "list";
		}
	case JV_DICT: return "dict";
	case JV_NS: return "Namespace";
	case JV_MACRO: return "Macro";
	case JV_LOOP: return "LoopContext";
	default: return "builtin_function_or_method";
	}
}

const char *jv_object_repr(struct jv v)
{
	static char buf[64];
	if (v.t == JV_NONE)
		return "None";
	if (v.t == JV_NS)
		return "jinja2.utils.Namespace object";
	if (v.t == JV_MACRO)
		return "jinja2.runtime.Macro object";
	if (v.t == JV_LOOP)
		return "jinja2.runtime.LoopContext object";
	if (v.t == JV_STR && v.markup)
		return "markupsafe.Markup object";
	snprintf(buf, sizeof(buf), "%s object", jv_type_name(v));
	return buf;
}

void jv_check_defined(struct jrender *r, struct jv v)
{
	if (v.t == JV_UNDEF)
		jx_fail(&r->c, 0, "%s", v.u->msg);
}

void py_float_repr(double f, char *buf, size_t len)
{
	if (isnan(f)) {
		snprintf(buf, len, "nan");
		return;
	}
	if (isinf(f)) {
		snprintf(buf, len, f < 0 ? "-inf" : "inf");
		return;
	}
	char tmp[48];
	for (int p = 1; p <= 17; p++) {
		snprintf(tmp, sizeof(tmp), "%.*e", p - 1, f);
		if (strtod(tmp, NULL) == f)
			break;
	}
	/* tmp = [-]d[.ddd]e[+-]XX */
	char digits[24];
	int nd = 0;
	const char *q = tmp;
	bool neg = *q == '-';
	if (neg)
		q++;
	for (; *q && *q != 'e'; q++)
		if (*q != '.')
			digits[nd++] = *q;
	int exp10 = atoi(q + 1);
	while (nd > 1 && digits[nd - 1] == '0')
		nd--;
	digits[nd] = 0;
	int decpt = exp10 + 1;
	char *o = buf;
	size_t left = len;
#define OUT(...)                                                   \
	do {                                                       \
		int k_ = snprintf(o, left, __VA_ARGS__);           \
		if (k_ > 0 && (size_t)k_ < left) {                 \
			o += k_;                                   \
			left -= (size_t)k_;                        \
		}                                                  \
	} while (0)
	if (neg)
		OUT("-");
	if (decpt > -4 && decpt <= 16) {
		if (decpt <= 0) {
			OUT("0.");
			for (int i = 0; i < -decpt; i++)
				OUT("0");
			OUT("%s", digits);
		} else if (decpt >= nd) {
			OUT("%s", digits);
			for (int i = nd; i < decpt; i++)
				OUT("0");
			OUT(".0");
		} else {
			OUT("%.*s.%s", decpt, digits, digits + decpt);
		}
	} else {
		OUT("%c", digits[0]);
		if (nd > 1)
			OUT(".%s", digits + 1);
		OUT("e%c%02d", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
	}
#undef OUT
}

static void enter_depth(struct jrender *r)
{
	if (++r->depth > JR_MAX_DEPTH)
		jx_fail(&r->c, 0, "nesting deeper than %d levels", JR_MAX_DEPTH);
}

static void seq_repr(struct jrender *r, struct jbuf *b, const struct jlist *l, const char *open, const char *close)
{
	jbuf_puts(r, b, open);
	for (size_t i = 0; i < l->n; i++) {
		if (i)
			jbuf_puts(r, b, ", ");
		jv_repr_append(r, b, l->v[i]);
	}
	jbuf_puts(r, b, close);
}

static void dict_repr(struct jrender *r, struct jbuf *b, const struct jdict *d)
{
	jbuf_puts(r, b, "{");
	for (size_t i = 0; i < d->n; i++) {
		if (i)
			jbuf_puts(r, b, ", ");
		jv_repr_append(r, b, d->k[i]);
		jbuf_puts(r, b, ": ");
		jv_repr_append(r, b, d->v[i]);
	}
	jbuf_puts(r, b, "}");
}

static void container_text(struct jrender *r, struct jbuf *b, struct jv v)
{
	enter_depth(r);
	if (v.t == JV_DICT) {
		dict_repr(r, b, v.d);
	} else if (v.t == JV_NS) {
		jbuf_puts(r, b, "<Namespace ");
		dict_repr(r, b, v.ns->d);
		jbuf_puts(r, b, ">");
	} else {
		switch (v.kind) {
		case JL_LIST: seq_repr(r, b, v.l, "[", "]"); break;
		case JL_TUPLE: seq_repr(r, b, v.l, "(", v.l->n == 1 ? ",)" : ")"); break;
		case JL_KEYS: seq_repr(r, b, v.l, "dict_keys([", "])"); break;
		case JL_VALUES: seq_repr(r, b, v.l, "dict_values([", "])"); break;
		case JL_ITEMS: seq_repr(r, b, v.l, "dict_items([", "])"); break;
		default:
			jx_fail(&r->c, 0, "unsupported: printing a %s (jinja2 prints an object address)", jv_type_name(v));
		}
	}
	r->depth--;
}

void jv_str_append(struct jrender *r, struct jbuf *b, struct jv v)
{
	char tmp[48];
	switch (v.t) {
	case JV_UNDEF: return;
	case JV_NONE: jbuf_puts(r, b, "None"); return;
	case JV_BOOL: jbuf_puts(r, b, v.b ? "True" : "False"); return;
	case JV_INT: jbuf_printf(r, b, "%" PRId64, v.i); return;
	case JV_FLOAT: py_float_repr(v.f, tmp, sizeof(tmp)); jbuf_puts(r, b, tmp); return;
	case JV_STR: jbuf_putn(r, b, v.s->p, v.s->n); return;
	case JV_LIST:
	case JV_DICT:
	case JV_NS: container_text(r, b, v); return;
	case JV_MACRO: jbuf_printf(r, b, "<Macro '%s'>", v.m->def->name); return;
	default:
		jx_fail(&r->c, 0, "unsupported: printing a %s (jinja2 prints an object address)", jv_type_name(v));
	}
}

void jv_repr_append(struct jrender *r, struct jbuf *b, struct jv v)
{
	if (v.t == JV_STR) {
		if (v.markup)
			jbuf_puts(r, b, "Markup(");
		py_str_repr(r, b, v.s->p, v.s->n);
		if (v.markup)
			jbuf_puts(r, b, ")");
	} else if (v.t == JV_UNDEF) {
		jbuf_puts(r, b, "Undefined");
	} else {
		jv_str_append(r, b, v);
	}
}

struct jv jv_to_str(struct jrender *r, struct jv v)
{
	if (v.t == JV_STR)
		return v;
	struct jbuf b = {0};
	jv_str_append(r, &b, v);
	return jv_str_buf(&r->c, &b);
}

void jv_iter(struct jrender *r, struct jv v, struct jv **items, size_t *n)
{
	switch (v.t) {
	case JV_UNDEF:
		*items = NULL;
		*n = 0;
		return;
	case JV_LIST:
		*items = v.l->n ? v.l->v + v.l->pos : NULL;
		*n = v.l->n - v.l->pos;
		if (v.kind == JL_ITER)
			v.l->pos = v.l->n;
		return;
	case JV_DICT:
		*items = v.d->k;
		*n = v.d->n;
		return;
	case JV_STR: {
		struct jv *out = jx_alloc(&r->c, (v.s->ncp ? v.s->ncp : 1) * sizeof(*out));
		size_t k = 0;
		for (size_t i = 0; i < v.s->n;) {
			size_t adv;
			u8_decode(v.s->p + i, v.s->n - i, &adv);
			out[k++] = jv_strn(&r->c, v.s->p + i, adv); /* Markup's iterator yields plain str */
			i += adv;
		}
		*items = out;
		*n = k;
		return;
	}
	default:
		jx_fail(&r->c, 0, "'%s' object is not iterable", jv_type_name(v));
	}
}

int64_t jv_len(struct jrender *r, struct jv v)
{
	switch (v.t) {
	case JV_UNDEF: return 0;
	case JV_STR: return (int64_t)v.s->ncp;
	case JV_LIST:
		if (v.kind == JL_ITER)
			break;
		return (int64_t)v.l->n;
	case JV_DICT: return (int64_t)v.d->n;
	default: break;
	}
	jx_fail(&r->c, 0, "object of type '%s' has no len()", jv_type_name(v));
}

struct jv jv_from_json(struct jctx *c, const json_t *j)
{
	switch (json_typeof(j)) {
	case JSON_OBJECT: {
		struct jv d = jv_dict_new(c, json_object_size(j));
		const char *k;
		size_t klen;
		json_t *v;
		json_object_keylen_foreach((json_t *)j, k, klen, v) { /* keys are unique: append */
			d.d->k[d.d->n] = jv_strn(c, k, klen);
			d.d->v[d.d->n++] = jv_from_json(c, v);
		}
		return d;
	}
	case JSON_ARRAY: {
		struct jv l = jv_list_new(c, JL_LIST, json_array_size(j));
		for (size_t i = 0; i < json_array_size(j); i++)
			jv_list_push(c, l, jv_from_json(c, json_array_get(j, i)));
		return l;
	}
	case JSON_STRING: return jv_strn(c, json_string_value(j), json_string_length(j));
	case JSON_INTEGER: return jv_int((int64_t)json_integer_value(j));
	case JSON_REAL: return jv_float(json_real_value(j));
	case JSON_TRUE: return jv_bool(true);
	case JSON_FALSE: return jv_bool(false);
	default: return jv_none();
	}
}

void jv_sort(struct jrender *r, struct jv *v, size_t n, bool (*lt)(struct jrender *, struct jv, struct jv, void *),
	     void *ctx)
{
	if (n < 2)
		return;
	struct jv *tmp = jx_alloc(&r->c, n * sizeof(*tmp));
	for (size_t width = 1; width < n; width *= 2) {
		for (size_t lo = 0; lo < n; lo += 2 * width) {
			size_t mid = lo + width < n ? lo + width : n, hi = lo + 2 * width < n ? lo + 2 * width : n;
			size_t i = lo, j = mid, k = lo;
			while (i < mid && j < hi)
				tmp[k++] = lt(r, v[j], v[i], ctx) ? v[j++] : v[i++];
			while (i < mid)
				tmp[k++] = v[i++];
			while (j < hi)
				tmp[k++] = v[j++];
		}
		memcpy(v, tmp, n * sizeof(*v));
	}
}
