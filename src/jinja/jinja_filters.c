/*
 * jinja_filters.c: jinja2's builtin filters and tests as HF's environment has them (tojson replaced by
 * HF's json.dumps wrapper, autoescape off): same argument names and defaults, same treatment of Undefined
 * (soft_str makes it "", length 0, iterating it is empty), generators where jinja2 returns generators
 * (map, select, reject, unique, items, reverse: no len, always true, consumed once), Python's sorting
 * rules (stable, "<" only, case-insensitive by default). Filters jinja2 has and ferry lacks are reported
 * as unsupported at parse time; a Markup (|safe) input to a filter that would have to keep or drop the
 * Markup in ways not modelled here fails instead of guessing.
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

enum {
	FL_ABS, FL_ATTR, FL_CAPITALIZE, FL_CENTER, FL_DEFAULT, FL_DICTSORT, FL_ESCAPE, FL_FIRST, FL_FLOAT,
	FL_INDENT, FL_INT, FL_ITEMS, FL_JOIN, FL_LAST, FL_LENGTH, FL_LIST, FL_LOWER, FL_MAP, FL_MAX, FL_MIN,
	FL_REJECT, FL_REJECTATTR, FL_REPLACE, FL_REVERSE, FL_ROUND, FL_SAFE, FL_SELECT, FL_SELECTATTR, FL_SORT,
	FL_STRING, FL_SUM, FL_TITLE, FL_TOJSON, FL_TRIM, FL_UNIQUE, FL_UPPER, FL_WORDCOUNT, FL_FORMAT,
};

struct filter {
	const char *name;
	int id;
	int nparams; /* -1: takes *args, **kwargs */
	const char *params[5];
	bool markup_ok; /* a Markup input is handled as jinja2 does */
};

static const struct filter filters[] = {
	{"abs", FL_ABS, 0, {0}, false},
	{"attr", FL_ATTR, 1, {"name"}, false},
	{"capitalize", FL_CAPITALIZE, 0, {0}, false},
	{"center", FL_CENTER, 1, {"width"}, false},
	{"count", FL_LENGTH, 0, {0}, true},
	{"d", FL_DEFAULT, 2, {"default_value", "boolean"}, true},
	{"default", FL_DEFAULT, 2, {"default_value", "boolean"}, true},
	{"dictsort", FL_DICTSORT, 3, {"case_sensitive", "by", "reverse"}, false},
	{"e", FL_ESCAPE, 0, {0}, true},
	{"escape", FL_ESCAPE, 0, {0}, true},
	{"first", FL_FIRST, 0, {0}, false},
	{"float", FL_FLOAT, 1, {"default"}, true},
	{"format", FL_FORMAT, -1, {0}, false},
	{"indent", FL_INDENT, 3, {"width", "first", "blank"}, false},
	{"int", FL_INT, 2, {"default", "base"}, true},
	{"items", FL_ITEMS, 0, {0}, false},
	{"join", FL_JOIN, 2, {"d", "attribute"}, true},
	{"last", FL_LAST, 0, {0}, false},
	{"length", FL_LENGTH, 0, {0}, true},
	{"list", FL_LIST, 0, {0}, false},
	{"lower", FL_LOWER, 0, {0}, true},
	{"map", FL_MAP, -1, {0}, false},
	{"max", FL_MAX, 2, {"case_sensitive", "attribute"}, false},
	{"min", FL_MIN, 2, {"case_sensitive", "attribute"}, false},
	{"reject", FL_REJECT, -1, {0}, false},
	{"rejectattr", FL_REJECTATTR, -1, {0}, false},
	{"replace", FL_REPLACE, 3, {"old", "new", "count"}, true},
	{"reverse", FL_REVERSE, 0, {0}, false},
	{"round", FL_ROUND, 2, {"precision", "method"}, false},
	{"safe", FL_SAFE, 0, {0}, true},
	{"select", FL_SELECT, -1, {0}, false},
	{"selectattr", FL_SELECTATTR, -1, {0}, false},
	{"sort", FL_SORT, 3, {"reverse", "case_sensitive", "attribute"}, false},
	{"string", FL_STRING, 0, {0}, true},
	{"sum", FL_SUM, 2, {"attribute", "start"}, false},
	{"title", FL_TITLE, 0, {0}, false},
	{"tojson", FL_TOJSON, 4, {"ensure_ascii", "indent", "separators", "sort_keys"}, true},
	{"trim", FL_TRIM, 1, {"chars"}, true},
	{"unique", FL_UNIQUE, 2, {"case_sensitive", "attribute"}, false},
	{"upper", FL_UPPER, 0, {0}, true},
	{"wordcount", FL_WORDCOUNT, 0, {0}, false},
};
#define NFILTERS (sizeof(filters) / sizeof(filters[0]))

static const char *const filters_unsupported[] = {
	"batch", "filesizeformat", "forceescape", "groupby", "pprint", "random", "slice", "striptags",
	"truncate", "urlencode", "urlize", "wordwrap", "xmlattr", NULL,
};

enum {
	T_ODD, T_EVEN, T_DIVISIBLEBY, T_DEFINED, T_UNDEFINED, T_FILTER, T_TEST, T_NONE, T_BOOLEAN, T_FALSE, T_TRUE,
	T_INTEGER, T_FLOAT, T_NUMBER, T_STRING, T_MAPPING, T_ITERABLE, T_SEQUENCE, T_CALLABLE, T_SAMEAS,
	T_ESCAPED, T_IN, T_LOWER, T_UPPER, T_EQ, T_NE, T_GT, T_GE, T_LT, T_LE,
};

static const struct {
	const char *name;
	int id;
	int nargs; /* required arguments after the value */
} tests[] = {
	{"odd", T_ODD, 0}, {"even", T_EVEN, 0}, {"divisibleby", T_DIVISIBLEBY, 1}, {"defined", T_DEFINED, 0},
	{"undefined", T_UNDEFINED, 0}, {"filter", T_FILTER, 0}, {"test", T_TEST, 0}, {"none", T_NONE, 0},
	{"boolean", T_BOOLEAN, 0}, {"false", T_FALSE, 0}, {"true", T_TRUE, 0}, {"integer", T_INTEGER, 0},
	{"float", T_FLOAT, 0}, {"number", T_NUMBER, 0}, {"string", T_STRING, 0}, {"mapping", T_MAPPING, 0},
	{"iterable", T_ITERABLE, 0}, {"sequence", T_SEQUENCE, 0}, {"callable", T_CALLABLE, 0},
	{"sameas", T_SAMEAS, 1}, {"escaped", T_ESCAPED, 0}, {"in", T_IN, 1}, {"lower", T_LOWER, 0},
	{"upper", T_UPPER, 0}, {"==", T_EQ, 1}, {"eq", T_EQ, 1}, {"equalto", T_EQ, 1}, {"!=", T_NE, 1},
	{"ne", T_NE, 1}, {">", T_GT, 1}, {"gt", T_GT, 1}, {"greaterthan", T_GT, 1}, {">=", T_GE, 1},
	{"ge", T_GE, 1}, {"<", T_LT, 1}, {"lt", T_LT, 1}, {"lessthan", T_LT, 1}, {"<=", T_LE, 1},
	{"le", T_LE, 1},
};
#define NTESTS (sizeof(tests) / sizeof(tests[0]))

int jfilter_find(const char *name, bool *known_unsupported)
{
	for (size_t i = 0; i < NFILTERS; i++)
		if (!strcmp(filters[i].name, name))
			return (int)i;
	*known_unsupported = false;
	for (int i = 0; filters_unsupported[i]; i++)
		if (!strcmp(filters_unsupported[i], name))
			*known_unsupported = true;
	return -1;
}

int jtest_find(const char *name, bool *known_unsupported)
{
	*known_unsupported = false;
	for (size_t i = 0; i < NTESTS; i++)
		if (!strcmp(tests[i].name, name))
			return (int)i;
	return -1;
}

/* ---- helpers ---- */

static bool given(struct jv v)
{
	return v.t != JV_MISSING;
}

static bool arg_bool(struct jv v, bool dflt)
{
	return given(v) ? jv_truthy(v) : dflt;
}

/* jinja2's soft_str: str(value) unless it already is a string (Markup stays Markup). */
static struct jv soft_str(struct jrender *r, struct jv v)
{
	return v.t == JV_STR ? v : jv_to_str(r, v);
}

/* The items of v as a fresh array (consuming generators). */
static struct jv to_list(struct jrender *r, struct jv v)
{
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	struct jv l = jv_list_new(&r->c, JL_LIST, n);
	for (size_t i = 0; i < n; i++)
		jv_list_push(&r->c, l, items[i]);
	return l;
}

/* jinja2's make_attrgetter: "a.b.0" -> getitem per part (digits become ints); lower-cases strings when asked. */
struct getter {
	int nparts;
	struct jv parts[8];
	bool ignore_case;
	struct jv dflt; /* JV_MISSING: none */
};

static void getter_init(struct jrender *r, struct getter *g, struct jv attribute, bool ignore_case)
{
	g->nparts = 0;
	g->ignore_case = ignore_case;
	g->dflt = (struct jv){.t = JV_MISSING};
	if (!given(attribute) || attribute.t == JV_NONE)
		return;
	if (attribute.t != JV_STR) {
		g->parts[g->nparts++] = attribute;
		return;
	}
	const char *p = attribute.s->p, *end = p + attribute.s->n;
	for (;;) {
		const char *dot = memchr(p, '.', (size_t)(end - p));
		const char *e = dot ? dot : end;
		if (g->nparts == 8)
			jx_fail(&r->c, 0, "unsupported: attribute path with more than 8 parts");
		bool digits = e > p;
		int64_t v = 0;
		for (const char *q = p; q < e; q++) {
			if (!isdigit((unsigned char)*q) || v > INT64_MAX / 10 - 9)
				digits = false;
			else
				v = v * 10 + (*q - '0');
		}
		g->parts[g->nparts++] = digits ? jv_int(v) : jv_strn(&r->c, p, (size_t)(e - p));
		if (!dot)
			break;
		p = dot + 1;
	}
}

static struct jv getter_get(struct jrender *r, const struct getter *g, struct jv item)
{
	for (int i = 0; i < g->nparts; i++)
		item = jeval_getitem(r, item, g->parts[i]);
	if (given(g->dflt) && g->dflt.t != JV_NONE && item.t == JV_UNDEF)
		item = g->dflt;
	if (g->ignore_case && item.t == JV_STR)
		item = py_lower(r, item);
	return item;
}

/* ---- tests ---- */

static bool run_test(struct jrender *r, int tid, struct jv v, int npos, const struct jv *pos, int nkw)
{
	int id = tests[tid].id;
	if (nkw)
		jx_fail(&r->c, 0, "test '%s' takes no keyword arguments here", tests[tid].name);
	if (npos < tests[tid].nargs)
		jx_fail(&r->c, 0, "test '%s' needs %d argument(s)", tests[tid].name, tests[tid].nargs);
	if (npos > (tests[tid].nargs ? tests[tid].nargs : 0))
		jx_fail(&r->c, 0, "test '%s' takes %d argument(s) (%d given)", tests[tid].name, tests[tid].nargs, npos);
	struct jv a = npos ? pos[0] : jv_none();
	switch (id) {
	case T_ODD:
	case T_EVEN: {
		struct jv m = jeval_binop(r, OP_MOD, v, jv_int(2));
		return jv_eq(m, jv_int(id == T_ODD ? 1 : 0));
	}
	case T_DIVISIBLEBY: return jv_eq(jeval_binop(r, OP_MOD, v, a), jv_int(0));
	case T_DEFINED: return v.t != JV_UNDEF;
	case T_UNDEFINED: return v.t == JV_UNDEF;
	case T_FILTER:
	case T_TEST: {
		bool u;
		if (v.t != JV_STR)
			return false;
		return id == T_FILTER ? jfilter_find(v.s->p, &u) >= 0 : jtest_find(v.s->p, &u) >= 0;
	}
	case T_NONE: return v.t == JV_NONE;
	case T_BOOLEAN: return v.t == JV_BOOL;
	case T_FALSE: return v.t == JV_BOOL && !v.b;
	case T_TRUE: return v.t == JV_BOOL && v.b;
	case T_INTEGER: return v.t == JV_INT;
	case T_FLOAT: return v.t == JV_FLOAT;
	case T_NUMBER: return v.t == JV_INT || v.t == JV_FLOAT || v.t == JV_BOOL;
	case T_STRING: return v.t == JV_STR;
	case T_MAPPING: return v.t == JV_DICT;
	case T_ITERABLE: return v.t == JV_STR || v.t == JV_LIST || v.t == JV_DICT || v.t == JV_UNDEF || v.t == JV_LOOP;
	case T_SEQUENCE:
		return v.t == JV_STR || v.t == JV_DICT || v.t == JV_UNDEF ||
		       (v.t == JV_LIST && (v.kind == JL_LIST || v.kind == JL_TUPLE || v.kind == JL_RANGE));
	case T_CALLABLE: return v.t == JV_MACRO || v.t == JV_FUNC || v.t == JV_UNDEF;
	case T_SAMEAS: /* Python identity: containers are objects here too; small scalars are not modelled */
		if (a.t == JV_NONE || a.t == JV_BOOL)
			return v.t == a.t && (a.t == JV_NONE || v.b == a.b);
		if (a.t == JV_LIST || a.t == JV_DICT || a.t == JV_NS || a.t == JV_MACRO)
			return v.t == a.t && (a.t == JV_LIST ? v.l == a.l : a.t == JV_DICT ? v.d == a.d
						  : a.t == JV_NS ? v.ns == a.ns : v.m == a.m);
		jx_fail(&r->c, 0, "unsupported: 'sameas' with a %s (Python's identity of it is not modelled)", jv_type_name(a));
	case T_ESCAPED: return v.t == JV_STR && v.markup;
	case T_IN: return jeval_contains(r, a, v);
	case T_LOWER:
	case T_UPPER: return py_is_cased_upper(jv_to_str(r, v).s, id == T_UPPER);
	case T_EQ: return jv_eq(v, a);
	case T_NE: return !jv_eq(v, a);
	case T_GT: return jv_compare(r, OP_GT, v, a);
	case T_GE: return jv_compare(r, OP_GTEQ, v, a);
	case T_LT: return jv_compare(r, OP_LT, v, a);
	default: return jv_compare(r, OP_LTEQ, v, a);
	}
}

bool jtest_apply(struct jrender *r, int tid, struct jv v, int npos, const struct jv *pos, int nkw)
{
	return run_test(r, tid, v, npos, pos, nkw);
}

/* ---- filters with *args: map, select, reject, selectattr, rejectattr ---- */

static int runtime_filter(struct jrender *r, struct jv name)
{
	bool u;
	int fid = name.t == JV_STR ? jfilter_find(name.s->p, &u) : -1;
	if (fid < 0) {
		struct jv s = jv_to_str(r, name);
		jx_fail(&r->c, 0, "No filter named '%s'.", s.s->p);
	}
	return fid;
}

static int runtime_test(struct jrender *r, struct jv name)
{
	bool u;
	int tid = name.t == JV_STR ? jtest_find(name.s->p, &u) : -1;
	if (tid < 0) {
		struct jv s = jv_to_str(r, name);
		jx_fail(&r->c, 0, "No test named '%s'.", s.s->p);
	}
	return tid;
}

static struct jv f_map(struct jrender *r, struct jv v, int npos, const struct jv *pos, int nkw, const char **kwn,
		       const struct jv *kwv)
{
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	struct jv out = jv_list_new(&r->c, JL_ITER, n);
	if (!npos && nkw && !strcmp(kwn[0], "attribute")) {
		struct getter g;
		getter_init(r, &g, kwv[0], false);
		for (int k = 1; k < nkw; k++) {
			if (strcmp(kwn[k], "default"))
				jx_fail(&r->c, 0, "Unexpected keyword argument '%s'", kwn[k]);
			g.dflt = kwv[k];
		}
		for (size_t i = 0; i < n; i++)
			jv_list_push(&r->c, out, getter_get(r, &g, items[i]));
		return out;
	}
	if (!npos)
		jx_fail(&r->c, 0, "map requires a filter argument");
	int fid = runtime_filter(r, pos[0]);
	for (size_t i = 0; i < n; i++)
		jv_list_push(&r->c, out, jfilter_apply(r, fid, items[i], npos - 1, pos + 1, nkw, kwn, kwv));
	return out;
}

static struct jv f_select(struct jrender *r, int id, struct jv v, int npos, const struct jv *pos, int nkw)
{
	bool attr = id == FL_SELECTATTR || id == FL_REJECTATTR;
	bool reject = id == FL_REJECT || id == FL_REJECTATTR;
	struct getter g;
	int off = 0;
	if (attr) {
		if (!npos)
			jx_fail(&r->c, 0, "Missing parameter for attribute name");
		getter_init(r, &g, pos[0], false);
		off = 1;
	}
	int tid = npos > off ? runtime_test(r, pos[off]) : -1;
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	struct jv out = jv_list_new(&r->c, JL_ITER, 0);
	for (size_t i = 0; i < n; i++) {
		struct jv x = attr ? getter_get(r, &g, items[i]) : items[i];
		bool ok = tid >= 0 ? jtest_apply(r, tid, x, npos - off - 1, pos + off + 1, nkw) : jv_truthy(x);
		if (ok != reject)
			jv_list_push(&r->c, out, items[i]);
	}
	return out;
}

/* ---- sorting ---- */

struct sort_ctx {
	struct getter g;
	bool reverse;
};

static bool key_lt(struct jrender *r, struct jv a, struct jv b, void *p)
{
	struct sort_ctx *c = p;
	struct jv ka = getter_get(r, &c->g, a), kb = getter_get(r, &c->g, b);
	return c->reverse ? jv_compare(r, OP_LT, kb, ka) : jv_compare(r, OP_LT, ka, kb);
}

static struct jv f_sort(struct jrender *r, struct jv v, const struct jv *a)
{
	struct sort_ctx c = {.reverse = arg_bool(a[0], false)};
	getter_init(r, &c.g, a[2], !arg_bool(a[1], false));
	if (a[2].t == JV_STR && memchr(a[2].s->p, ',', a[2].s->n))
		jx_fail(&r->c, 0, "unsupported: sort by several attributes");
	struct jv l = to_list(r, v);
	jv_sort(r, l.l->v, l.l->n, key_lt, &c);
	return l;
}

static bool pair_lt(struct jrender *r, struct jv a, struct jv b, void *p)
{
	struct sort_ctx *c = p;
	int pos = c->g.nparts; /* 0 key, 1 value */
	struct jv ka = a.l->v[pos], kb = b.l->v[pos];
	if (c->g.ignore_case) {
		if (ka.t == JV_STR)
			ka = py_lower(r, ka);
		if (kb.t == JV_STR)
			kb = py_lower(r, kb);
	}
	return c->reverse ? jv_compare(r, OP_LT, kb, ka) : jv_compare(r, OP_LT, ka, kb);
}

static struct jv f_dictsort(struct jrender *r, struct jv v, const struct jv *a)
{
	struct sort_ctx c = {.reverse = arg_bool(a[2], false)};
	c.g.ignore_case = !arg_bool(a[0], false);
	c.g.nparts = 0;
	if (given(a[1]) && !jv_is_str(a[1], "key")) {
		if (!jv_is_str(a[1], "value"))
			jx_fail(&r->c, 0, "You can only sort by either \"key\" or \"value\"");
		c.g.nparts = 1;
	}
	jv_check_defined(r, v);
	if (v.t != JV_DICT)
		jx_fail(&r->c, 0, "'%s' object has no attribute 'items'", jv_type_name(v));
	struct jv l = jv_list_new(&r->c, JL_LIST, v.d->n);
	for (size_t i = 0; i < v.d->n; i++)
		jv_list_push(&r->c, l, jv_tuple2(&r->c, v.d->k[i], v.d->v[i]));
	jv_sort(r, l.l->v, l.l->n, pair_lt, &c);
	return l;
}

static struct jv f_unique(struct jrender *r, struct jv v, const struct jv *a)
{
	struct getter g;
	getter_init(r, &g, a[1], !arg_bool(a[0], false));
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	struct jv out = jv_list_new(&r->c, JL_ITER, 0), seen = jv_list_new(&r->c, JL_LIST, 0);
	for (size_t i = 0; i < n; i++) {
		struct jv k = getter_get(r, &g, items[i]);
		if (k.t == JV_DICT || (k.t == JV_LIST && k.kind != JL_TUPLE))
			jx_fail(&r->c, 0, "unhashable type: '%s'", jv_type_name(k));
		bool dup = false;
		for (size_t j = 0; j < seen.l->n && !dup; j++)
			dup = jv_eq(seen.l->v[j], k);
		if (!dup) {
			jv_list_push(&r->c, seen, k);
			jv_list_push(&r->c, out, items[i]);
		}
	}
	return out;
}

static struct jv f_minmax(struct jrender *r, struct jv v, const struct jv *a, bool max)
{
	struct getter g;
	getter_init(r, &g, a[1], !arg_bool(a[0], false));
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	if (!n)
		return jv_undef(r, "No aggregated item, sequence was empty.");
	struct jv best = items[0], bk = getter_get(r, &g, items[0]);
	for (size_t i = 1; i < n; i++) {
		struct jv k = getter_get(r, &g, items[i]);
		if (max ? jv_compare(r, OP_GT, k, bk) : jv_compare(r, OP_LT, k, bk)) {
			best = items[i];
			bk = k;
		}
	}
	return best;
}

/* ---- numbers ---- */

/* Python's float(str) grammar: [sign] (digits [. [digits]] | . digits) [e [sign] digits] | inf | nan, with
 * single underscores between digits and surrounding whitespace. */
static bool parse_py_float(struct jrender *r, const struct jstr *s, double *out)
{
	struct jv t = py_strip(r, (struct jv){.t = JV_STR, .s = (struct jstr *)s}, NULL, 3);
	const char *p = t.s->p, *e = p + t.s->n;
	char buf[512];
	size_t k = 0;
	if (t.s->n >= sizeof(buf))
		return false;
	if (p < e && (*p == '+' || *p == '-'))
		buf[k++] = *p++;
	const char *words[] = {"infinity", "inf", "nan"};
	for (int w = 0; w < 3; w++)
		if ((size_t)(e - p) == strlen(words[w]) && !strncasecmp(p, words[w], (size_t)(e - p))) {
			memcpy(buf + k, p, (size_t)(e - p));
			buf[k + (size_t)(e - p)] = 0;
			*out = strtod(buf, NULL);
			return true;
		}
	int state = 0; /* 0 int digits, 1 fraction, 2 exponent */
	bool digit_before = false, any_int = false, any_frac = false, any_exp = false;
	for (; p < e; p++) {
		char c = *p;
		if (isdigit((unsigned char)c)) {
			buf[k++] = c;
			digit_before = true;
			any_int |= state == 0;
			any_frac |= state == 1;
			any_exp |= state == 2;
		} else if (c == '_') {
			if (!digit_before || p + 1 >= e || !isdigit((unsigned char)p[1]))
				return false;
		} else if (c == '.' && state == 0) {
			buf[k++] = c;
			state = 1;
			digit_before = false;
		} else if ((c == 'e' || c == 'E') && state < 2 && (any_int || any_frac)) {
			buf[k++] = c;
			state = 2;
			digit_before = false;
			if (p + 1 < e && (p[1] == '+' || p[1] == '-'))
				buf[k++] = *++p;
		} else {
			return false;
		}
	}
	if (!(any_int || any_frac) || (state == 2 && !any_exp))
		return false;
	buf[k] = 0;
	*out = strtod(buf, NULL);
	return true;
}

/* Python's int(str, base) for bases 2..36 (base 0 not supported). */
static bool parse_py_int(struct jrender *r, const struct jstr *s, int64_t base, int64_t *out)
{
	struct jv t = py_strip(r, (struct jv){.t = JV_STR, .s = (struct jstr *)s}, NULL, 3);
	const char *p = t.s->p, *e = p + t.s->n;
	bool neg = false;
	if (p < e && (*p == '+' || *p == '-'))
		neg = *p++ == '-';
	if (base == 16 && e - p > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		p += 2;
	else if (base == 8 && e - p > 2 && p[0] == '0' && (p[1] == 'o' || p[1] == 'O'))
		p += 2;
	else if (base == 2 && e - p > 2 && p[0] == '0' && (p[1] == 'b' || p[1] == 'B'))
		p += 2;
	if (p >= e)
		return false;
	unsigned __int128 v = 0;
	bool digit_before = false;
	for (; p < e; p++) {
		int d;
		if (*p == '_') {
			if (!digit_before || p + 1 >= e)
				return false;
			digit_before = false;
			continue;
		}
		if (isdigit((unsigned char)*p))
			d = *p - '0';
		else if (isalpha((unsigned char)*p))
			d = tolower((unsigned char)*p) - 'a' + 10;
		else if ((unsigned char)*p >= 0x80)
			jx_fail(&r->c, 0, "unsupported: int of a string with non-ASCII characters");
		else
			return false;
		if (d >= base)
			return false;
		v = v * (unsigned)base + (unsigned)d;
		if (v > (unsigned __int128)INT64_MAX + 1)
			jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
		digit_before = true;
	}
	if (!neg && v > INT64_MAX)
		jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
	*out = neg ? (int64_t)(0 - (uint64_t)v) : (int64_t)v;
	return true;
}

static struct jv float_to_int(struct jrender *r, double f, struct jv dflt)
{
	if (isnan(f))
		return dflt;
	if (isinf(f))
		jx_fail(&r->c, 0, "cannot convert float infinity to integer");
	if (f >= 9223372036854775808.0 || f < -9223372036854775808.0)
		jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
	return jv_int((int64_t)f);
}

static struct jv f_int(struct jrender *r, struct jv v, const struct jv *a)
{
	struct jv dflt = given(a[0]) ? a[0] : jv_int(0);
	int64_t base = 10;
	if (given(a[1])) {
		if (a[1].t != JV_INT || a[1].i < 2 || a[1].i > 36)
			jx_fail(&r->c, 0, "unsupported: int base other than 2..36");
		base = a[1].i;
	}
	jv_check_defined(r, v);
	switch (v.t) {
	case JV_BOOL: return jv_int(v.b);
	case JV_INT: return v;
	case JV_FLOAT: return float_to_int(r, v.f, dflt);
	case JV_STR: {
		int64_t i;
		double f;
		if (parse_py_int(r, v.s, base, &i))
			return jv_int(i);
		if (parse_py_float(r, v.s, &f))
			return float_to_int(r, f, dflt);
		return dflt;
	}
	default: return dflt;
	}
}

static struct jv f_float(struct jrender *r, struct jv v, const struct jv *a)
{
	struct jv dflt = given(a[0]) ? a[0] : jv_float(0.0);
	jv_check_defined(r, v);
	double f;
	switch (v.t) {
	case JV_BOOL: return jv_float(v.b);
	case JV_INT: return jv_float((double)v.i);
	case JV_FLOAT: return v;
	case JV_STR: return parse_py_float(r, v.s, &f) ? jv_float(f) : dflt;
	default: return dflt;
	}
}

static struct jv f_round(struct jrender *r, struct jv v, const struct jv *a)
{
	int64_t prec = 0;
	if (given(a[0])) {
		if (a[0].t != JV_INT && a[0].t != JV_BOOL)
			jx_fail(&r->c, 0, "round: precision must be an integer");
		prec = a[0].t == JV_BOOL ? a[0].b : a[0].i;
	}
	const char *method = "common";
	if (given(a[1])) {
		if (jv_is_str(a[1], "ceil") || jv_is_str(a[1], "floor") || jv_is_str(a[1], "common"))
			method = a[1].s->p;
		else
			jx_fail(&r->c, 0, "method must be common, ceil or floor");
	}
	jv_check_defined(r, v);
	if (v.t != JV_INT && v.t != JV_FLOAT && v.t != JV_BOOL)
		jx_fail(&r->c, 0, "type %s doesn't define __round__ method", jv_type_name(v));
	if (prec < 0 || prec > 300)
		jx_fail(&r->c, 0, "unsupported: round with precision %lld", (long long)prec);
	if (!strcmp(method, "common")) {
		if (v.t != JV_FLOAT)
			return jv_int(v.t == JV_BOOL ? v.b : v.i);
		if (isnan(v.f) || isinf(v.f))
			return v;
		char buf[700];
		snprintf(buf, sizeof(buf), "%.*f", (int)prec, v.f);
		return jv_float(strtod(buf, NULL));
	}
	double x = v.t == JV_FLOAT ? v.f : v.t == JV_BOOL ? v.b : (double)v.i, scale = pow(10.0, (double)prec);
	double y = method[0] == 'c' ? ceil(x * scale) : floor(x * scale);
	return jv_float(y / scale);
}

/* ---- strings ---- */

static struct jv f_indent(struct jrender *r, struct jv v, const struct jv *a)
{
	jv_check_defined(r, v);
	if (v.t != JV_STR) /* do_indent starts with s += "\n" */
		jx_fail(&r->c, 0, "unsupported operand type(s) for +=: '%s' and 'str'", jv_type_name(v));
	struct jv s = v;
	struct jbuf ind = {0};
	if (given(a[0]) && a[0].t == JV_STR) {
		jbuf_putn(r, &ind, a[0].s->p, a[0].s->n);
	} else {
		int64_t w = 4;
		if (given(a[0])) {
			if (a[0].t != JV_INT && a[0].t != JV_BOOL)
				jx_fail(&r->c, 0, "indent: width must be an integer or a string");
			w = a[0].t == JV_BOOL ? a[0].b : a[0].i;
		}
		if (w > 4096)
			jx_fail(&r->c, 0, "unsupported: indent wider than 4096");
		for (int64_t i = 0; i < w; i++)
			jbuf_puts(r, &ind, " ");
	}
	bool first = arg_bool(a[1], false), blank = arg_bool(a[2], false);
	struct jbuf t = {0};
	jbuf_putn(r, &t, s.s->p, s.s->n);
	jbuf_puts(r, &t, "\n");
	struct jv lines = py_splitlines(r, jv_str_buf(&r->c, &t), false);
	struct jbuf o = {0};
	if (first)
		jbuf_putn(r, &o, ind.p, ind.n);
	for (size_t i = 0; i < lines.l->n; i++) {
		struct jstr *line = lines.l->v[i].s;
		if (i) {
			jbuf_puts(r, &o, "\n");
			if (blank || line->n)
				jbuf_putn(r, &o, ind.p, ind.n);
		}
		jbuf_putn(r, &o, line->p, line->n);
	}
	return jv_str_buf(&r->c, &o);
}

static struct jv f_join(struct jrender *r, struct jv v, const struct jv *a)
{
	struct jv d = given(a[0]) ? soft_str(r, a[0]) : jv_cstr(&r->c, "");
	struct getter g;
	getter_init(r, &g, a[1], false);
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	struct jbuf o = {0};
	for (size_t i = 0; i < n; i++) {
		if (i)
			jbuf_putn(r, &o, d.s->p, d.s->n);
		jv_str_append(r, &o, getter_get(r, &g, items[i]));
	}
	return jv_str_buf(&r->c, &o);
}

static struct jv f_tojson(struct jrender *r, struct jv v, const struct jv *a)
{
	bool ascii = arg_bool(a[0], false), sort = arg_bool(a[3], false);
	const char *indent = NULL, *item_sep = NULL, *key_sep = NULL;
	if (given(a[1]) && a[1].t != JV_NONE) {
		if (a[1].t == JV_STR) {
			indent = a[1].s->p;
		} else if (a[1].t == JV_INT || a[1].t == JV_BOOL) {
			int64_t w = a[1].t == JV_BOOL ? a[1].b : a[1].i;
			if (w > 4096)
				jx_fail(&r->c, 0, "unsupported: tojson indent wider than 4096");
			char *sp = jx_alloc(&r->c, (size_t)(w > 0 ? w : 0) + 1);
			memset(sp, ' ', (size_t)(w > 0 ? w : 0));
			sp[w > 0 ? w : 0] = 0;
			indent = sp;
		} else {
			jx_fail(&r->c, 0, "tojson: indent must be an integer, a string or none");
		}
	}
	if (given(a[2]) && a[2].t != JV_NONE) {
		struct jv s = a[2];
		if (s.t != JV_LIST || (s.kind != JL_LIST && s.kind != JL_TUPLE) || s.l->n != 2 ||
		    s.l->v[0].t != JV_STR || s.l->v[1].t != JV_STR)
			jx_fail(&r->c, 0, "tojson: separators must be a pair of strings");
		item_sep = s.l->v[0].s->p;
		key_sep = s.l->v[1].s->p;
	}
	struct jbuf o = {0};
	jjson_dump(r, &o, v, ascii, indent, item_sep, key_sep, sort);
	return jv_str_buf(&r->c, &o);
}

static struct jv f_reverse(struct jrender *r, struct jv v)
{
	if (v.t == JV_STR) {
		struct jv *items;
		size_t n;
		jv_iter(r, v, &items, &n);
		struct jbuf o = {0};
		for (size_t i = n; i-- > 0;)
			jbuf_putn(r, &o, items[i].s->p, items[i].s->n);
		struct jv out = jv_str_buf(&r->c, &o);
		out.markup = v.markup;
		return out;
	}
	bool was_iter = v.t == JV_LIST && v.kind == JL_ITER;
	struct jv l = to_list(r, v);
	for (size_t i = 0, j = l.l->n; i + 1 < j; i++, j--) {
		struct jv t = l.l->v[i];
		l.l->v[i] = l.l->v[j - 1];
		l.l->v[j - 1] = t;
	}
	if (!was_iter) /* reversed() of a sequence is an iterator; of an iterator, a list */
		l.kind = JL_ITER;
	return l;
}

static struct jv f_wordcount(struct jrender *r, struct jv v)
{
	struct jv s = soft_str(r, v);
	int64_t n = 0;
	bool in_word = false;
	for (size_t i = 0; i < s.s->n;) {
		size_t adv;
		bool w = py_isword(u8_decode(s.s->p + i, s.s->n - i, &adv));
		n += w && !in_word;
		in_word = w;
		i += adv;
	}
	return jv_int(n);
}

static struct jv f_first_last(struct jrender *r, struct jv v, bool last)
{
	if (last && v.t == JV_LIST && v.kind == JL_ITER)
		jx_fail(&r->c, 0, "'generator' object is not reversible");
	if (!last && v.t == JV_LIST && v.kind == JL_ITER) {
		if (v.l->pos < v.l->n)
			return v.l->v[v.l->pos++];
		return jv_undef(r, "No first item, sequence was empty.");
	}
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	if (!n)
		return jv_undef(r, last ? "No last item, sequence was empty." : "No first item, sequence was empty.");
	return items[last ? n - 1 : 0];
}

static struct jv f_sum(struct jrender *r, struct jv v, const struct jv *a)
{
	struct getter g;
	getter_init(r, &g, a[0], false);
	struct jv acc = given(a[1]) ? a[1] : jv_int(0);
	if (acc.t == JV_STR)
		jx_fail(&r->c, 0, "sum() can't sum strings [use ''.join(seq) instead]");
	struct jv *items;
	size_t n;
	jv_iter(r, v, &items, &n);
	for (size_t i = 0; i < n; i++)
		acc = jeval_binop(r, OP_ADD, acc, getter_get(r, &g, items[i]));
	return acc;
}

static struct jv apply(struct jrender *r, int id, struct jv v, const struct jv *a)
{
	struct jv s;
	switch (id) {
	case FL_ABS:
		jv_check_defined(r, v);
		if (v.t == JV_FLOAT)
			return jv_float(fabs(v.f));
		if (v.t == JV_BOOL)
			return jv_int(v.b);
		if (v.t != JV_INT)
			jx_fail(&r->c, 0, "bad operand type for abs(): '%s'", jv_type_name(v));
		if (v.i == INT64_MIN)
			jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
		return jv_int(v.i < 0 ? -v.i : v.i);
	case FL_ATTR: { /* Python getattr only: methods and namespace attributes, never dict keys */
		if (!given(a[0]) || a[0].t != JV_STR)
			jx_fail(&r->c, 0, "attr: the name must be a string");
		struct jv m;
		if (v.t == JV_NS || v.t == JV_LOOP)
			return jeval_getattr(r, v, a[0].s->p);
		if (v.t != JV_UNDEF && jmethod_find(r, v, a[0].s->p, &m))
			return m;
		struct jbuf b = {0};
		py_str_repr(r, &b, a[0].s->p, a[0].s->n);
		return jv_undef(r, "'%s' has no attribute %s", jv_object_repr(v), b.p);
	}
	case FL_CAPITALIZE: return py_capitalize(r, soft_str(r, v));
	case FL_CENTER: {
		s = soft_str(r, v);
		int64_t w = given(a[0]) ? (a[0].t == JV_INT ? a[0].i : -1) : 80;
		if (w < 0)
			jx_fail(&r->c, 0, "center: width must be an integer");
		struct jv args[1] = {jv_int(w)};
		struct jv m;
		jmethod_find(r, s, "center", &m);
		return jfunc_call(r, m, 1, args, 0, NULL, NULL);
	}
	case FL_DEFAULT:
		if (v.t == JV_UNDEF || (arg_bool(a[1], false) && !jv_truthy(v)))
			return given(a[0]) ? a[0] : jv_cstr(&r->c, "");
		return v;
	case FL_DICTSORT: return f_dictsort(r, v, a);
	case FL_ESCAPE: {
		if (v.t == JV_STR && v.markup)
			return v;
		s = soft_str(r, v);
		struct jbuf o = {0};
		py_html_escape(r, &o, s.s->p, s.s->n);
		struct jv out = jv_str_buf(&r->c, &o);
		out.markup = 1;
		return out;
	}
	case FL_FIRST: return f_first_last(r, v, false);
	case FL_FLOAT: return f_float(r, v, a);
	case FL_INDENT: return f_indent(r, v, a);
	case FL_INT: return f_int(r, v, a);
	case FL_ITEMS: {
		if (v.t == JV_UNDEF)
			return jv_list_new(&r->c, JL_ITER, 0);
		if (v.t != JV_DICT)
			jx_fail(&r->c, 0, "Can only get item pairs from a mapping.");
		struct jv l = jv_list_new(&r->c, JL_ITER, v.d->n);
		for (size_t i = 0; i < v.d->n; i++)
			jv_list_push(&r->c, l, jv_tuple2(&r->c, v.d->k[i], v.d->v[i]));
		return l;
	}
	case FL_JOIN: return f_join(r, v, a);
	case FL_LAST: return f_first_last(r, v, true);
	case FL_LENGTH: return jv_int(jv_len(r, v));
	case FL_LIST: return to_list(r, v);
	case FL_LOWER: return py_lower(r, soft_str(r, v));
	case FL_MAX: return f_minmax(r, v, a, true);
	case FL_MIN: return f_minmax(r, v, a, false);
	case FL_REPLACE: {
		s = jv_to_str(r, v);
		s.markup = 0;
		if (!given(a[0]) || !given(a[1]))
			jx_fail(&r->c, 0, "replace needs the old and the new string");
		int64_t count = -1;
		if (given(a[2]) && a[2].t != JV_NONE) {
			if (a[2].t != JV_INT)
				jx_fail(&r->c, 0, "replace: count must be an integer");
			count = a[2].i;
		}
		return py_replace(r, s, jv_to_str(r, a[0]).s, jv_to_str(r, a[1]).s, count);
	}
	case FL_REVERSE: return f_reverse(r, v);
	case FL_ROUND: return f_round(r, v, a);
	case FL_SAFE:
		s = soft_str(r, v);
		s.markup = 1;
		return s;
	case FL_SORT: return f_sort(r, v, a);
	case FL_STRING: return soft_str(r, v);
	case FL_SUM: return f_sum(r, v, a);
	case FL_TITLE: return jinja_title(r, soft_str(r, v));
	case FL_TOJSON: return f_tojson(r, v, a);
	case FL_TRIM: {
		s = soft_str(r, v);
		const struct jstr *chars = NULL;
		if (given(a[0]) && a[0].t != JV_NONE)
			chars = jv_to_str(r, a[0]).s;
		return py_strip(r, s, chars, 3);
	}
	case FL_UNIQUE: return f_unique(r, v, a);
	case FL_UPPER: return py_upper(r, soft_str(r, v));
	default: return f_wordcount(r, v);
	}
}

struct jv jfilter_apply(struct jrender *r, int fid, struct jv v, int npos, const struct jv *pos, int nkw,
			const char **kwn, const struct jv *kwv)
{
	const struct filter *f = &filters[fid];
	if (v.t == JV_STR && v.markup && !f->markup_ok)
		jx_fail(&r->c, 0, "unsupported: filter '%s' on a safe (Markup) string", f->name);
	if (f->id == FL_FORMAT) { /* soft_str(value) % (kwargs or args) */
		if (npos && nkw)
			jx_fail(&r->c, 0, "can't handle positional and keyword arguments at the same time");
		struct jv args;
		if (nkw) {
			args = jv_dict_new(&r->c, (size_t)nkw);
			for (int k = 0; k < nkw; k++)
				jdict_set(&r->c, args.d, jv_cstr(&r->c, kwn[k]), kwv[k]);
		} else {
			args = jv_list_new(&r->c, JL_TUPLE, (size_t)npos);
			for (int k = 0; k < npos; k++)
				jv_list_push(&r->c, args, pos[k]);
		}
		return py_percent_format(r, soft_str(r, v), args);
	}
	if (f->nparams < 0) {
		if (!jv_truthy(v)) /* jinja2: "if value:" before looking at the arguments */
			return jv_list_new(&r->c, JL_ITER, 0);
		if (f->id == FL_MAP)
			return f_map(r, v, npos, pos, nkw, kwn, kwv);
		return f_select(r, f->id, v, npos, pos, nkw);
	}
	struct jv a[5];
	char what[64];
	snprintf(what, sizeof(what), "filter '%s'", f->name);
	jargs_bind(r, what, f->nparams, f->params, npos, pos, nkw, kwn, kwv, a);
	return apply(r, f->id, v, a);
}
