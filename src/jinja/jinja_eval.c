/*
 * jinja_eval.c: expressions. Python semantics for arithmetic (int overflow fails rather than wrapping,
 * floor division and modulo with the divisor's sign, true division always float), comparisons (chained),
 * "in", and/or returning an operand; jinja2's sandboxed attribute and item lookup (getattr tries the
 * object's methods before a dict's keys, getitem the keys before the methods; misses give Undefined, and
 * using an Undefined for anything but printing, testing or iterating raises UndefinedError); Markup's
 * "+" that escapes the other operand; scopes (a chain of name tables; names missing everywhere are looked
 * up in the globals, then Undefined).
 */
#include <math.h>
#include <string.h>

#include "jinja_internal.h"

void jstep(struct jrender *r)
{
	if (++r->steps > r->max_steps)
		jx_fail(&r->c, 0, "template ran more than %llu steps (the limit)", (unsigned long long)r->max_steps);
}

struct jscope *jscope_new(struct jrender *r, struct jscope *parent)
{
	struct jscope *s = jx_alloc(&r->c, sizeof(*s));
	memset(s, 0, sizeof(*s));
	s->parent = parent;
	return s;
}

void jscope_set(struct jrender *r, struct jscope *s, const char *name, struct jv v)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->names[i] == name || !strcmp(s->names[i], name)) {
			s->vals[i] = v;
			return;
		}
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 8;
		const char **nn = jx_alloc(&r->c, cap * sizeof(*nn));
		struct jv *nv = jx_alloc(&r->c, cap * sizeof(*nv));
		if (s->n) {
			memcpy(nn, s->names, s->n * sizeof(*nn));
			memcpy(nv, s->vals, s->n * sizeof(*nv));
		}
		s->names = nn;
		s->vals = nv;
		s->cap = cap;
	}
	s->names[s->n] = name;
	s->vals[s->n++] = v;
}

struct jv jscope_get(struct jrender *r, struct jscope *s, const char *name)
{
	for (; s; s = s->parent)
		for (size_t i = 0; i < s->n; i++)
			if (s->names[i] == name || !strcmp(s->names[i], name))
				return s->vals[i];
	struct jv g;
	if (jglobal_find(r, name, &g))
		return g;
	struct jbuf b = {0};
	py_str_repr(r, &b, name, strlen(name));
	return jv_undef(r, "%s is undefined", b.p);
}

/* ---- lookups ---- */

static struct jv missing_attr(struct jrender *r, struct jv obj, struct jv name)
{
	struct jbuf b = {0};
	jv_repr_append(r, &b, name);
	if (name.t == JV_STR)
		return jv_undef(r, "'%s' has no attribute %s", jv_object_repr(obj), b.p);
	return jv_undef(r, "%s has no element %s", jv_object_repr(obj), b.p);
}

static struct jv loop_attr(struct jrender *r, struct jv obj, const char *name)
{
	const struct jloop *lp = obj.lp;
	int64_t n = (int64_t)lp->items->n, i = (int64_t)lp->i;
	if (!strcmp(name, "index"))
		return jv_int(i + 1);
	if (!strcmp(name, "index0"))
		return jv_int(i);
	if (!strcmp(name, "revindex"))
		return jv_int(n - i);
	if (!strcmp(name, "revindex0"))
		return jv_int(n - i - 1);
	if (!strcmp(name, "first"))
		return jv_bool(i == 0);
	if (!strcmp(name, "last"))
		return jv_bool(i == n - 1);
	if (!strcmp(name, "length"))
		return jv_int(n);
	if (!strcmp(name, "depth"))
		return jv_int(1);
	if (!strcmp(name, "depth0"))
		return jv_int(0);
	if (!strcmp(name, "previtem"))
		return i > 0 ? lp->items->v[i - 1] : jv_undef(r, "there is no previous item");
	if (!strcmp(name, "nextitem"))
		return i + 1 < n ? lp->items->v[i + 1] : jv_undef(r, "there is no next item");
	struct jv m;
	if (jmethod_find(r, obj, name, &m))
		return m;
	return missing_attr(r, obj, jv_cstr(&r->c, name));
}

struct jv jeval_getattr(struct jrender *r, struct jv obj, const char *name)
{
	jv_check_defined(r, obj);
	struct jv m;
	if (obj.t == JV_LOOP)
		return loop_attr(r, obj, name);
	if (jmethod_find(r, obj, name, &m))
		return m;
	if (obj.t == JV_DICT || obj.t == JV_NS) {
		struct jv *v = jdict_get_str(obj.t == JV_DICT ? obj.d : obj.ns->d, name);
		if (v)
			return *v;
	}
	return missing_attr(r, obj, jv_cstr(&r->c, name));
}

static bool as_index(struct jv k, int64_t *i)
{
	if (k.t == JV_INT || k.t == JV_BOOL) {
		*i = k.t == JV_BOOL ? k.b : k.i;
		return true;
	}
	return false;
}

struct jv jeval_getitem(struct jrender *r, struct jv obj, struct jv key)
{
	jv_check_defined(r, obj);
	int64_t i;
	if (obj.t == JV_DICT) {
		if (key.t != JV_DICT && !(key.t == JV_LIST && key.kind != JL_TUPLE)) {
			struct jv *v = jdict_get(r, obj.d, key);
			if (v)
				return *v;
		}
	} else if ((obj.t == JV_LIST && (obj.kind == JL_LIST || obj.kind == JL_TUPLE || obj.kind == JL_RANGE)) ||
		   obj.t == JV_STR) {
		if (as_index(key, &i)) {
			int64_t n = obj.t == JV_STR ? (int64_t)obj.s->ncp : (int64_t)obj.l->n;
			if (i < 0)
				i += n;
			if (i >= 0 && i < n)
				return obj.t == JV_STR ? py_substr(r, obj, (size_t)i, (size_t)i + 1) : obj.l->v[i];
		}
	}
	if (key.t == JV_STR) {
		if (obj.t == JV_NS || obj.t == JV_LOOP)
			return jeval_getattr(r, obj, key.s->p);
		struct jv m;
		if (jmethod_find(r, obj, key.s->p, &m))
			return m;
	}
	return missing_attr(r, obj, key);
}

/* One bound of slice.indices(): negative counts from the end, then clamped to [lower, upper]. */
static int64_t slice_clamp(int64_t i, int64_t n, int64_t lower, int64_t upper)
{
	if (i < 0)
		i = i < -n ? lower : i + n;
	return i < lower ? lower : i > upper ? upper : i;
}

/* Python's slice.indices(): clamps start/stop for a sequence of length n; returns the item count. */
static int64_t slice_indices(int64_t n, bool has_start, int64_t start, bool has_stop, int64_t stop, int64_t step,
			     int64_t *out_start)
{
	int64_t lower = step < 0 ? -1 : 0, upper = step < 0 ? n - 1 : n;
	start = has_start ? slice_clamp(start, n, lower, upper) : step < 0 ? upper : lower;
	stop = has_stop ? slice_clamp(stop, n, lower, upper) : step < 0 ? lower : upper;
	*out_start = start;
	if (step > 0)
		return start < stop ? (stop - start - 1) / step + 1 : 0;
	return stop < start ? (start - stop - 1) / (-step) + 1 : 0;
}

static struct jv eval_slice(struct jrender *r, struct jscope *s, const struct jx *e)
{
	struct jv obj = jeval(r, s, e->a[0]);
	struct jv arg[3];
	bool has[3];
	int64_t v[3] = {0, 0, 1};
	bool ok = true;
	for (int k = 0; k < 3; k++) {
		arg[k] = e->a[k + 1] ? jeval(r, s, e->a[k + 1]) : jv_none();
		has[k] = arg[k].t != JV_NONE;
		if (has[k] && !as_index(arg[k], &v[k]))
			ok = false;
	}
	r->c.line = e->line;
	jv_check_defined(r, obj);
	if (has[2] && ok && v[2] == 0)
		jx_fail(&r->c, 0, "slice step cannot be zero");
	bool seq = obj.t == JV_STR ||
		   (obj.t == JV_LIST && (obj.kind == JL_LIST || obj.kind == JL_TUPLE || obj.kind == JL_RANGE));
	if (!ok || !seq)
		return jv_undef(r, "%s has no element slice", jv_object_repr(obj));
	int64_t step = v[2];
	int64_t n = obj.t == JV_STR ? (int64_t)obj.s->ncp : (int64_t)obj.l->n, start;
	int64_t count = slice_indices(n, has[0], v[0], has[1], v[1], step, &start);
	if (obj.t == JV_STR) {
		if (step == 1)
			return py_substr(r, obj, (size_t)start, (size_t)(start + count));
		uint32_t *cps = jx_alloc(&r->c, (size_t)(n ? n : 1) * sizeof(*cps));
		size_t k = 0, adv;
		for (size_t i = 0; i < obj.s->n; i += adv)
			cps[k++] = u8_decode(obj.s->p + i, obj.s->n - i, &adv);
		struct jbuf b = {0};
		for (int64_t i = 0; i < count; i++) {
			char enc[4];
			jbuf_putn(r, &b, enc, u8_encode(cps[start + i * step], enc));
		}
		struct jv out = jv_str_buf(&r->c, &b);
		out.markup = obj.markup;
		return out;
	}
	struct jv out = jv_list_new(&r->c, (enum jl_kind)obj.kind, (size_t)count);
	for (int64_t i = 0; i < count; i++)
		jv_list_push(&r->c, out, obj.l->v[start + i * step]);
	return out;
}

/* ---- operators ---- */

static bool is_num(struct jv v)
{
	return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT;
}

static double as_f(struct jv v)
{
	return v.t == JV_FLOAT ? v.f : v.t == JV_BOOL ? (double)v.b : (double)v.i;
}

static int64_t as_i(struct jv v)
{
	return v.t == JV_BOOL ? v.b : v.i;
}

static const char *op_name(int op)
{
	switch (op) {
	case OP_ADD: return "+";
	case OP_SUB: return "-";
	case OP_MUL: return "*";
	case OP_DIV: return "/";
	case OP_FLOORDIV: return "//";
	case OP_MOD: return "%";
	default: return "** or pow()";
	}
}

static _Noreturn void unsupported_operands(struct jrender *r, int op, struct jv a, struct jv b)
{
	jx_fail(&r->c, 0, "unsupported operand type(s) for %s: '%s' and '%s'", op_name(op), jv_type_name(a),
		jv_type_name(b));
}

static struct jv overflow(struct jrender *r)
{
	jx_fail(&r->c, 0, "integer overflow (ferry's ints are 64-bit)");
}

static struct jv repeat(struct jrender *r, struct jv seq, int64_t times)
{
	if (times < 0)
		times = 0;
	if (seq.t == JV_STR) {
		if (seq.s->n && (uint64_t)times > r->max_output / seq.s->n)
			jx_fail(&r->c, 0, "string repetition larger than the output limit of %zu bytes", r->max_output);
		struct jbuf b = {0};
		for (int64_t i = 0; i < times; i++)
			jbuf_putn(r, &b, seq.s->p, seq.s->n);
		struct jv out = jv_str_buf(&r->c, &b);
		out.markup = seq.markup;
		return out;
	}
	if (seq.l->n && (uint64_t)times > r->max_output / seq.l->n)
		jx_fail(&r->c, 0, "list repetition larger than the output limit");
	struct jv out = jv_list_new(&r->c, (enum jl_kind)seq.kind, seq.l->n * (size_t)times);
	for (int64_t i = 0; i < times; i++)
		for (size_t k = 0; k < seq.l->n; k++)
			jv_list_push(&r->c, out, seq.l->v[k]);
	return out;
}

static struct jv str_concat(struct jrender *r, struct jv a, struct jv b)
{
	struct jbuf o = {0};
	bool markup = a.markup || b.markup;
	if (markup && !a.markup)
		py_html_escape(r, &o, a.s->p, a.s->n);
	else
		jbuf_putn(r, &o, a.s->p, a.s->n);
	if (markup && !b.markup)
		py_html_escape(r, &o, b.s->p, b.s->n);
	else
		jbuf_putn(r, &o, b.s->p, b.s->n);
	struct jv out = jv_str_buf(&r->c, &o);
	out.markup = markup;
	return out;
}

static bool seq_kind(struct jv v)
{
	return v.t == JV_LIST && (v.kind == JL_LIST || v.kind == JL_TUPLE);
}

static struct jv add(struct jrender *r, struct jv a, struct jv b)
{
	if (is_num(a) && is_num(b)) {
		if (a.t == JV_FLOAT || b.t == JV_FLOAT)
			return jv_float(as_f(a) + as_f(b));
		int64_t x;
		if (__builtin_add_overflow(as_i(a), as_i(b), &x))
			return overflow(r);
		return jv_int(x);
	}
	if (a.t == JV_STR && b.t == JV_STR)
		return str_concat(r, a, b);
	if (seq_kind(a) && seq_kind(b) && a.kind == b.kind) {
		struct jv out = jv_list_new(&r->c, (enum jl_kind)a.kind, a.l->n + b.l->n);
		for (size_t i = 0; i < a.l->n; i++)
			jv_list_push(&r->c, out, a.l->v[i]);
		for (size_t i = 0; i < b.l->n; i++)
			jv_list_push(&r->c, out, b.l->v[i]);
		return out;
	}
	if ((a.t == JV_STR && !a.markup) || seq_kind(a))
		jx_fail(&r->c, 0, "can only concatenate %s (not \"%s\") to %s", jv_type_name(a), jv_type_name(b),
			jv_type_name(a));
	unsupported_operands(r, OP_ADD, a, b);
}

static struct jv mul(struct jrender *r, struct jv a, struct jv b)
{
	if (is_num(a) && is_num(b)) {
		if (a.t == JV_FLOAT || b.t == JV_FLOAT)
			return jv_float(as_f(a) * as_f(b));
		int64_t x;
		if (__builtin_mul_overflow(as_i(a), as_i(b), &x))
			return overflow(r);
		return jv_int(x);
	}
	bool a_seq = a.t == JV_STR || seq_kind(a), b_seq = b.t == JV_STR || seq_kind(b);
	if (a_seq && (b.t == JV_INT || b.t == JV_BOOL))
		return repeat(r, a, as_i(b));
	if (b_seq && (a.t == JV_INT || a.t == JV_BOOL))
		return repeat(r, b, as_i(a));
	if (a_seq && b.t == JV_FLOAT)
		jx_fail(&r->c, 0, "can't multiply sequence by non-int of type 'float'");
	unsupported_operands(r, OP_MUL, a, b);
}

/* Python's float floor division and modulo (floatobject.c float_divmod). */
static void float_divmod(double vx, double wx, double *floordiv, double *modv)
{
	double mod = fmod(vx, wx);
	double div = (vx - mod) / wx;
	if (mod) {
		if ((wx < 0) != (mod < 0)) {
			mod += wx;
			div -= 1.0;
		}
	} else {
		mod = copysign(0.0, wx);
	}
	double fd;
	if (div) {
		fd = floor(div);
		if (div - fd > 0.5)
			fd += 1.0;
	} else {
		fd = copysign(0.0, vx / wx);
	}
	*floordiv = fd;
	*modv = mod;
}

static struct jv power(struct jrender *r, struct jv a, struct jv b)
{
	if (a.t != JV_FLOAT && b.t != JV_FLOAT && as_i(b) >= 0) {
		int64_t base = as_i(a), e = as_i(b), acc = 1;
		while (e > 0) {
			if ((e & 1) && __builtin_mul_overflow(acc, base, &acc))
				return overflow(r);
			e >>= 1;
			if (e > 0 && __builtin_mul_overflow(base, base, &base))
				return overflow(r);
		}
		return jv_int(acc);
	}
	double x = as_f(a), y = as_f(b);
	if (x == 0 && y < 0)
		jx_fail(&r->c, 0, "0.0 cannot be raised to a negative power");
	if (x < 0 && y != floor(y))
		jx_fail(&r->c, 0, "unsupported: a negative number to a fractional power (Python makes a complex number)");
	return jv_float(pow(x, y));
}

struct jv jeval_binop(struct jrender *r, int op, struct jv a, struct jv b)
{
	jv_check_defined(r, a);
	if (op == OP_MOD && a.t == JV_STR)
		return py_percent_format(r, a, b);
	jv_check_defined(r, b);
	if (op == OP_ADD)
		return add(r, a, b);
	if (op == OP_MUL)
		return mul(r, a, b);
	if (!is_num(a) || !is_num(b))
		unsupported_operands(r, op, a, b);
	bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
	int64_t x = as_i(a), y = as_i(b), z;
	switch (op) {
	case OP_SUB:
		if (fl)
			return jv_float(as_f(a) - as_f(b));
		if (__builtin_sub_overflow(x, y, &z))
			return overflow(r);
		return jv_int(z);
	case OP_DIV:
		if (as_f(b) == 0)
			jx_fail(&r->c, 0, fl ? "float division by zero" : "division by zero");
		return jv_float(fl ? as_f(a) / as_f(b) : (double)x / (double)y);
	case OP_FLOORDIV:
	case OP_MOD:
		if (fl) {
			if (as_f(b) == 0)
				jx_fail(&r->c, 0, op == OP_MOD ? "float modulo" : "float floor division by zero");
			double fd, md;
			float_divmod(as_f(a), as_f(b), &fd, &md);
			return jv_float(op == OP_MOD ? md : fd);
		}
		if (y == 0)
			jx_fail(&r->c, 0, op == OP_MOD ? "integer modulo by zero" : "integer division or modulo by zero");
		if (x == INT64_MIN && y == -1)
			return op == OP_MOD ? jv_int(0) : overflow(r);
		z = x / y;
		int64_t m = x % y;
		if (m && ((m < 0) != (y < 0))) {
			z -= 1;
			m += y;
		}
		return jv_int(op == OP_MOD ? m : z);
	default: return power(r, a, b);
	}
}

bool jeval_contains(struct jrender *r, struct jv c, struct jv item)
{
	switch (c.t) {
	case JV_UNDEF: return false;
	case JV_STR:
		if (item.t != JV_STR)
			jx_fail(&r->c, 0, "'in <string>' requires string as left operand, not %s", jv_type_name(item));
		return item.s->n == 0 || memmem(c.s->p, c.s->n, item.s->p, item.s->n) != NULL;
	case JV_DICT:
		if (item.t == JV_DICT || (item.t == JV_LIST && item.kind != JL_TUPLE))
			jx_fail(&r->c, 0, "unhashable type: '%s'", jv_type_name(item));
		return jdict_get(r, c.d, item) != NULL;
	case JV_LIST:
		for (size_t i = c.l->pos; i < c.l->n; i++)
			if (jv_eq(c.l->v[i], item)) {
				if (c.kind == JL_ITER)
					c.l->pos = i + 1;
				return true;
			}
		if (c.kind == JL_ITER)
			c.l->pos = c.l->n;
		return false;
	default: jx_fail(&r->c, 0, "argument of type '%s' is not iterable", jv_type_name(c));
	}
}

static bool compare(struct jrender *r, int op, struct jv a, struct jv b)
{
	switch (op) {
	case OP_EQ: return jv_eq(a, b);
	case OP_NE: return !jv_eq(a, b);
	case OP_IN: return jeval_contains(r, b, a);
	case OP_NOTIN: return !jeval_contains(r, b, a);
	default: return jv_compare(r, op, a, b);
	}
}

/* ---- calls ---- */

struct args {
	int npos, nkw;
	struct jv *pos, *kwv;
	const char **kwn;
};

static void eval_args(struct jrender *r, struct jscope *s, const struct jx *e, struct args *a)
{
	a->pos = jx_alloc(&r->c, (size_t)(e->n ? e->n : 1) * sizeof(*a->pos));
	a->kwv = jx_alloc(&r->c, (size_t)(e->n ? e->n : 1) * sizeof(*a->kwv));
	a->kwn = jx_alloc(&r->c, (size_t)(e->n ? e->n : 1) * sizeof(*a->kwn));
	a->npos = a->nkw = 0;
	for (int i = 0; i < e->n; i++) {
		struct jv v = jeval(r, s, e->v[i]);
		if (e->kw[i]) {
			a->kwn[a->nkw] = e->kw[i];
			a->kwv[a->nkw++] = v;
		} else {
			a->pos[a->npos++] = v;
		}
	}
	r->c.line = e->line;
}

static struct jv eval_call(struct jrender *r, struct jscope *s, const struct jx *e)
{
	struct jv f = jeval(r, s, e->a[0]);
	struct args a;
	eval_args(r, s, e, &a);
	switch (f.t) {
	case JV_MACRO: return jexec_macro(r, f, a.npos, a.pos, a.nkw, a.kwn, a.kwv);
	case JV_FUNC: return jfunc_call(r, f, a.npos, a.pos, a.nkw, a.kwn, a.kwv);
	case JV_UNDEF: jv_check_defined(r, f); break;
	default: break;
	}
	jx_fail(&r->c, 0, "'%s' object is not callable", jv_type_name(f));
}

static struct jv eval_filter(struct jrender *r, struct jscope *s, const struct jx *e, const struct jv *subject)
{
	struct jv v;
	if (!e->a[0])
		v = *subject;
	else if (e->a[0]->kind == JX_FILTER && subject)
		v = eval_filter(r, s, e->a[0], subject);
	else
		v = jeval(r, s, e->a[0]);
	struct args a;
	eval_args(r, s, e, &a);
	return jfilter_apply(r, e->fid, v, a.npos, a.pos, a.nkw, a.kwn, a.kwv);
}

struct jv jeval_filter_on(struct jrender *r, struct jscope *s, const struct jx *e, struct jv subject)
{
	return eval_filter(r, s, e, &subject);
}

static struct jv build_seq(struct jrender *r, struct jscope *s, const struct jx *e, enum jl_kind kind)
{
	struct jv l = jv_list_new(&r->c, kind, (size_t)e->n);
	for (int i = 0; i < e->n; i++)
		jv_list_push(&r->c, l, jeval(r, s, e->v[i]));
	return l;
}

static struct jv eval_inner(struct jrender *r, struct jscope *s, const struct jx *e)
{
	struct jv a, b;
	switch (e->kind) {
	case JX_CONST: return e->c;
	case JX_NAME: return jscope_get(r, s, e->name);
	case JX_LIST: return build_seq(r, s, e, JL_LIST);
	case JX_TUPLE: return build_seq(r, s, e, JL_TUPLE);
	case JX_DICT: {
		struct jv d = jv_dict_new(&r->c, (size_t)e->n / 2);
		for (int i = 0; i < e->n; i += 2) {
			struct jv k = jeval(r, s, e->v[i]), v = jeval(r, s, e->v[i + 1]);
			r->c.line = e->line;
			if (k.t == JV_DICT || (k.t == JV_LIST && k.kind != JL_TUPLE))
				jx_fail(&r->c, 0, "unhashable type: '%s'", jv_type_name(k));
			jdict_set(&r->c, d.d, k, v);
		}
		return d;
	}
	case JX_ATTR:
		a = jeval(r, s, e->a[0]);
		r->c.line = e->line;
		return jeval_getattr(r, a, e->name);
	case JX_ITEM:
		a = jeval(r, s, e->a[0]);
		b = jeval(r, s, e->a[1]);
		r->c.line = e->line;
		return jeval_getitem(r, a, b);
	case JX_SLICE: return eval_slice(r, s, e);
	case JX_CALL: return eval_call(r, s, e);
	case JX_FILTER: return eval_filter(r, s, e, NULL);
	case JX_TEST: {
		a = jeval(r, s, e->a[0]);
		struct args ar;
		eval_args(r, s, e, &ar);
		return jv_bool(jtest_apply(r, e->fid, a, ar.npos, ar.pos, ar.nkw));
	}
	case JX_NOT: return jv_bool(!jv_truthy(jeval(r, s, e->a[0])));
	case JX_NEG:
	case JX_POS:
		a = jeval(r, s, e->a[0]);
		r->c.line = e->line;
		jv_check_defined(r, a);
		if (!is_num(a))
			jx_fail(&r->c, 0, "bad operand type for unary %c: '%s'", e->kind == JX_NEG ? '-' : '+',
				jv_type_name(a));
		if (e->kind == JX_POS)
			return a.t == JV_BOOL ? jv_int(a.b) : a;
		if (a.t == JV_FLOAT)
			return jv_float(-a.f);
		if (as_i(a) == INT64_MIN)
			return overflow(r);
		return jv_int(-as_i(a));
	case JX_BIN:
		a = jeval(r, s, e->a[0]);
		b = jeval(r, s, e->a[1]);
		r->c.line = e->line;
		return jeval_binop(r, e->op, a, b);
	case JX_CMP:
		a = jeval(r, s, e->v[0]);
		for (int i = 1; i < e->n; i++) {
			b = jeval(r, s, e->v[i]);
			r->c.line = e->line;
			if (!compare(r, e->ops[i - 1], a, b))
				return jv_bool(false);
			a = b;
		}
		return jv_bool(true);
	case JX_AND:
		a = jeval(r, s, e->a[0]);
		return jv_truthy(a) ? jeval(r, s, e->a[1]) : a;
	case JX_OR:
		a = jeval(r, s, e->a[0]);
		return jv_truthy(a) ? a : jeval(r, s, e->a[1]);
	case JX_COND:
		if (jv_truthy(jeval(r, s, e->a[1])))
			return jeval(r, s, e->a[0]);
		if (e->a[2])
			return jeval(r, s, e->a[2]);
		return jv_undef(r, "the inline if-expression on line %d evaluated to false and no else section was defined.",
				e->line);
	case JX_CONCAT: {
		struct jbuf o = {0};
		for (int i = 0; i < e->n; i++)
			jv_str_append(r, &o, jeval(r, s, e->v[i]));
		return jv_str_buf(&r->c, &o);
	}
	default: jx_fail(&r->c, e->line, "internal error: unknown expression kind %d", e->kind);
	}
}

struct jv jeval(struct jrender *r, struct jscope *s, const struct jx *e)
{
	jstep(r);
	if (++r->depth > JR_MAX_DEPTH)
		jx_fail(&r->c, e->line, "nesting deeper than %d levels (recursion?)", JR_MAX_DEPTH);
	r->c.line = e->line;
	struct jv v = eval_inner(r, s, e);
	r->depth--;
	return v;
}
