/*
 * jinja_exec.c: statements and macro calls, with jinja2's scoping: a for loop's body gets a fresh scope
 * per iteration (a set inside does not leak out, hence namespace()), if does not create one (a set inside
 * a top-level if does leak), macros run in a scope whose parent is where they were defined (names resolved
 * when called), block sets, filter blocks, with and for-else get their own. break/continue unwind to the
 * nearest loop.
 */
#include <string.h>

#include "jinja_internal.h"

enum { FLOW_NEXT, FLOW_BREAK, FLOW_CONTINUE };

static int exec_body(struct jrender *r, struct jscope *s, const struct js_body *b);

/* Binds a for/set target: one name, or a tuple unpacked like Python's. */
static void assign(struct jrender *r, struct jscope *s, const struct jtarget *t, struct jv v)
{
	if (!t->tuple) {
		jscope_set(r, s, t->names[0], v);
		return;
	}
	jv_check_defined(r, v);
	struct jv *items;
	size_t n;
	if (v.t == JV_LIST && v.kind == JL_ITER) {
		jx_fail(&r->c, 0, "unsupported: unpacking a generator");
	}
	jv_iter(r, v, &items, &n);
	if (n > (size_t)t->n)
		jx_fail(&r->c, 0, "too many values to unpack (expected %d)", t->n);
	if (n < (size_t)t->n)
		jx_fail(&r->c, 0, "not enough values to unpack (expected %d, got %zu)", t->n, n);
	for (int i = 0; i < t->n; i++)
		jscope_set(r, s, t->names[i], items[i]);
}

static struct jv capture(struct jrender *r, struct jscope *s, const struct js_body *b)
{
	struct jbuf *saved = r->out, buf = {0};
	r->out = &buf;
	exec_body(r, s, b);
	r->out = saved;
	return jv_str_buf(&r->c, &buf);
}

static int exec_for(struct jrender *r, struct jscope *s, const struct js *st)
{
	struct jv it = jeval(r, s, st->e);
	r->c.line = st->line;
	struct jv *items;
	size_t n;
	jv_iter(r, it, &items, &n);
	struct jlist *list = jx_alloc(&r->c, sizeof(*list));
	memset(list, 0, sizeof(*list));
	if (st->cond) {
		list->v = jx_alloc(&r->c, (n ? n : 1) * sizeof(*list->v));
		struct jscope *fs = jscope_new(r, s);
		for (size_t i = 0; i < n; i++) {
			fs->n = 0;
			assign(r, fs, &st->tgt, items[i]);
			if (jv_truthy(jeval(r, fs, st->cond)))
				list->v[list->n++] = items[i];
		}
	} else {
		list->v = items;
		list->n = n;
	}
	if (!list->n) {
		if (st->orelse.n)
			exec_body(r, jscope_new(r, s), &st->orelse);
		return FLOW_NEXT;
	}
	struct jloop *lp = jx_alloc(&r->c, sizeof(*lp));
	memset(lp, 0, sizeof(*lp));
	lp->items = list;
	struct jv loopv = {.t = JV_LOOP, .lp = lp};
	/* A fresh scope per iteration; emptying one is the same unless a macro keeps it as its closure. */
	struct jscope *body = jscope_new(r, s);
	for (size_t i = 0; i < list->n; i++) {
		jstep(r);
		lp->i = i;
		if (st->defines_macro)
			body = jscope_new(r, s);
		body->n = 0;
		r->c.line = st->line;
		assign(r, body, &st->tgt, list->v[i]);
		jscope_set(r, body, "loop", loopv);
		if (exec_body(r, body, &st->body) == FLOW_BREAK)
			break;
	}
	return FLOW_NEXT;
}

static int exec_stmt(struct jrender *r, struct jscope *s, const struct js *st)
{
	jstep(r);
	r->c.line = st->line;
	struct jv v;
	switch (st->kind) {
	case JS_TEXT: jbuf_putn(r, r->out, st->text, st->len); return FLOW_NEXT;
	case JS_PRINT:
		v = jeval(r, s, st->e);
		r->c.line = st->line;
		jv_str_append(r, r->out, v);
		return FLOW_NEXT;
	case JS_IF:
		if (jv_truthy(jeval(r, s, st->e)))
			return exec_body(r, s, &st->body);
		return exec_body(r, s, &st->orelse);
	case JS_FOR: return exec_for(r, s, st);
	case JS_SET:
		v = jeval(r, s, st->e);
		r->c.line = st->line;
		assign(r, s, &st->tgt, v);
		return FLOW_NEXT;
	case JS_SETNS: {
		struct jv ns = jscope_get(r, s, st->ns);
		v = jeval(r, s, st->e);
		r->c.line = st->line;
		if (ns.t != JV_NS)
			jx_fail(&r->c, 0, "cannot assign attribute on non-namespace object");
		jdict_set(&r->c, ns.ns->d, jv_cstr(&r->c, st->attr), v);
		return FLOW_NEXT;
	}
	case JS_SETBLOCK:
		v = capture(r, jscope_new(r, s), &st->body);
		if (st->filter)
			v = jeval_filter_on(r, s, st->filter, v);
		assign(r, s, &st->tgt, v);
		return FLOW_NEXT;
	case JS_MACRO: {
		struct jmacro *m = jx_alloc(&r->c, sizeof(*m));
		m->def = st->macro;
		m->closure = s;
		jscope_set(r, s, st->macro->name, (struct jv){.t = JV_MACRO, .m = m});
		return FLOW_NEXT;
	}
	case JS_FILTERBLOCK:
		v = capture(r, jscope_new(r, s), &st->body);
		if (st->filter)
			v = jeval_filter_on(r, s, st->filter, v);
		jv_str_append(r, r->out, v);
		return FLOW_NEXT;
	case JS_WITH: {
		struct jscope *w = jscope_new(r, s);
		struct jv *vals = jx_alloc(&r->c, (size_t)(st->nwith ? st->nwith : 1) * sizeof(*vals));
		for (int i = 0; i < st->nwith; i++)
			vals[i] = jeval(r, s, st->with_vals[i]);
		for (int i = 0; i < st->nwith; i++)
			jscope_set(r, w, st->with_names[i], vals[i]);
		return exec_body(r, w, &st->body);
	}
	case JS_BREAK: return FLOW_BREAK;
	case JS_CONTINUE: return FLOW_CONTINUE;
	default: jx_fail(&r->c, st->line, "internal error: unknown statement kind %d", st->kind);
	}
}

static int exec_body(struct jrender *r, struct jscope *s, const struct js_body *b)
{
	for (int i = 0; i < b->n; i++) {
		int f = exec_stmt(r, s, b->v[i]);
		if (f != FLOW_NEXT)
			return f;
	}
	return FLOW_NEXT;
}

void jexec_body(struct jrender *r, struct jscope *s, const struct js_body *b)
{
	exec_body(r, s, b);
}

struct jv jexec_macro(struct jrender *r, struct jv mv, int npos, const struct jv *pos, int nkw, const char **kwn,
		      const struct jv *kwv)
{
	const struct jmacro_def *d = mv.m->def;
	if (++r->depth > JR_MAX_DEPTH)
		jx_fail(&r->c, 0, "macro calls nested deeper than %d levels", JR_MAX_DEPTH);
	/* jinja2's Macro.__call__: positional arguments first, the rest of the parameters from the keywords;
	 * keywords left over go to kwargs or fail, then extra positional ones go to varargs or fail. */
	struct jscope *s = jscope_new(r, mv.m->closure);
	struct jv *args = jx_alloc(&r->c, (size_t)(d->nparams ? d->nparams : 1) * sizeof(*args));
	bool *used = jx_alloc(&r->c, (size_t)(nkw ? nkw : 1) * sizeof(*used));
	memset(used, 0, (size_t)(nkw ? nkw : 1) * sizeof(*used));
	for (int i = 0; i < d->nparams; i++) {
		args[i] = i < npos ? pos[i] : (struct jv){.t = JV_MISSING};
		for (int k = 0; i >= npos && k < nkw; k++)
			if (!used[k] && !strcmp(d->params[i], kwn[k])) {
				args[i] = kwv[k];
				used[k] = true;
				break;
			}
	}
	struct jv kwargs = jv_dict_new(&r->c, 0);
	for (int k = 0; k < nkw; k++) {
		if (used[k])
			continue;
		if (!d->uses_kwargs)
			jx_fail(&r->c, 0, "macro '%s' takes no keyword argument '%s'", d->name, kwn[k]);
		jdict_set(&r->c, kwargs.d, jv_cstr(&r->c, kwn[k]), kwv[k]);
	}
	if (npos > d->nparams && !d->uses_varargs)
		jx_fail(&r->c, 0, "macro '%s' takes not more than %d argument(s)", d->name, d->nparams);
	int call_line = r->c.line;
	for (int i = 0; i < d->nparams; i++) {
		if (args[i].t == JV_MISSING)
			args[i] = d->defaults && d->defaults[i]
					  ? jeval(r, s, d->defaults[i])
					  : jv_undef(r, "parameter '%s' was not provided", d->params[i]);
		jscope_set(r, s, d->params[i], args[i]);
	}
	if (d->uses_varargs) {
		struct jv va = jv_list_new(&r->c, JL_TUPLE, 0);
		for (int i = d->nparams; i < npos; i++)
			jv_list_push(&r->c, va, pos[i]);
		jscope_set(r, s, "varargs", va);
	}
	if (d->uses_kwargs)
		jscope_set(r, s, "kwargs", kwargs);
	struct jv out = capture(r, s, &d->body);
	r->c.line = call_line;
	r->depth--;
	return out;
}
