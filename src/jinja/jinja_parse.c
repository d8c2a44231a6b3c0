/*
 * jinja_parse.c: tokens -> syntax tree, following jinja2's Parser (operator precedence, where filters and
 * tests bind, tuples, slices, statement forms). Statements: if/elif/else, for (tuple targets, "if" filter,
 * else), set (expression, namespace attribute, block with filters), macro, filter blocks, with, print,
 * break/continue (the loopcontrols extension HF loads). Everything else jinja2 knows (include, extends,
 * block, call, import...) and every filter or test this interpreter lacks fails here, naming the
 * construct and its line, so a template never renders with a piece silently missing. {% generation %}
 * (transformers' AssistantTracker extension, which marks assistant text) renders its body.
 */
#include <string.h>

#include "jinja_internal.h"

#define MAX_NEST 200

struct parser {
	struct jctx *c;
	struct jtok *tok;
	size_t ntok, i;
	int depth;
	int loops;               /* for-loops around the current statement inside the current macro */
	struct jmacro_def *macro; /* the macro whose body is being parsed */
	struct js *fors[MAX_NEST]; /* every for-loop around the current statement */
	int nfors;
};

static struct jtok *cur(struct parser *P)
{
	return &P->tok[P->i];
}

static struct jtok *peek(struct parser *P)
{
	return &P->tok[P->i + 1 < P->ntok ? P->i + 1 : P->i];
}

static struct jtok *next(struct parser *P)
{
	struct jtok *t = cur(P);
	if (P->i + 1 < P->ntok)
		P->i++;
	return t;
}

static bool is_op(struct parser *P, int op)
{
	return cur(P)->type == JT_OP && cur(P)->op == op;
}

static bool is_name(struct parser *P, const char *name)
{
	return cur(P)->type == JT_NAME && !strcmp(cur(P)->s, name);
}

static const char *describe(struct parser *P, const struct jtok *t)
{
	static const char *const opnames[] = {
		"+", "-", "/", "//", "*", "%", "**", "~", "[", "]", "(", ")", "{", "}", "==", "!=", ">", ">=", "<",
		"<=", "=", ".", ":", "|", ",", ";", "in", "not in",
	};
	switch (t->type) {
	case JT_EOF: return "end of template";
	case JT_DATA: return "template data";
	case JT_VAR_BEGIN: return "begin of print statement";
	case JT_VAR_END: return "end of print statement";
	case JT_BLOCK_BEGIN: return "begin of statement block";
	case JT_BLOCK_END: return "end of statement block";
	case JT_NAME: return jx_strndup(P->c, t->s, t->n);
	case JT_STRING: return "string";
	case JT_INT: return "integer";
	case JT_FLOAT: return "float";
	default: return opnames[t->op];
	}
}

static _Noreturn void fail_unexpected(struct parser *P, const char *expected)
{
	struct jtok *t = cur(P);
	if (t->type == JT_EOF)
		jx_fail(P->c, t->line, "unexpected end of template, expected %s", expected);
	jx_fail(P->c, t->line, "expected %s, got '%s'", expected, describe(P, t));
}

static void expect_op(struct parser *P, int op, const char *what)
{
	if (!is_op(P, op))
		fail_unexpected(P, what);
	next(P);
}

static void expect_type(struct parser *P, int type, const char *what)
{
	if (cur(P)->type != type)
		fail_unexpected(P, what);
	next(P);
}

static const char *expect_name(struct parser *P)
{
	if (cur(P)->type != JT_NAME)
		fail_unexpected(P, "a name");
	return next(P)->s;
}

/* A name that is assigned to (macro, parameter, with): not one of the constants. */
static const char *expect_target_name(struct parser *P)
{
	static const char *const consts[] = {"true", "false", "none", "True", "False", "None", NULL};
	int line = cur(P)->line;
	const char *name = expect_name(P);
	for (int k = 0; consts[k]; k++)
		if (!strcmp(name, consts[k]))
			jx_fail(P->c, line, "can't assign to '%s'", name);
	return name;
}

static struct jx *newx(struct parser *P, int kind, int line)
{
	struct jx *e = jx_alloc(P->c, sizeof(*e));
	memset(e, 0, sizeof(*e));
	e->kind = (uint8_t)kind;
	e->line = line;
	return e;
}

/* A growable array of expression pointers (and keywords) in the arena. */
struct xvec {
	struct jx **v;
	const char **kw;
	int n, cap;
};

static void xvec_push(struct parser *P, struct xvec *x, struct jx *e, const char *kw)
{
	if (x->n == x->cap) {
		int cap = x->cap ? x->cap * 2 : 4;
		struct jx **v = jx_alloc(P->c, (size_t)cap * sizeof(*v));
		const char **k = jx_alloc(P->c, (size_t)cap * sizeof(*k));
		if (x->n) {
			memcpy(v, x->v, (size_t)x->n * sizeof(*v));
			memcpy(k, x->kw, (size_t)x->n * sizeof(*k));
		}
		x->v = v;
		x->kw = k;
		x->cap = cap;
	}
	x->v[x->n] = e;
	x->kw[x->n++] = kw;
}

static void enter(struct parser *P)
{
	if (++P->depth > MAX_NEST)
		jx_fail(P->c, cur(P)->line, "template nested too deeply (more than %d levels)", MAX_NEST);
}

static struct jx *parse_expression(struct parser *P, bool with_condexpr);
static struct jx *parse_tuple(struct parser *P, bool simplified, bool with_condexpr, const char *extra_end,
			      bool explicit_parens);
static struct jx *parse_unary(struct parser *P, bool with_filter);
static struct jx *parse_primary(struct parser *P);
static struct jx *parse_postfix(struct parser *P, struct jx *node);

static void parse_call_args(struct parser *P, struct jx *node)
{
	struct xvec a = {0};
	bool seen_kw = false;
	expect_op(P, OP_LPAREN, "'('");
	while (!is_op(P, OP_RPAREN)) {
		if (a.n)
			expect_op(P, OP_COMMA, "','");
		if (is_op(P, OP_RPAREN))
			break;
		if (is_op(P, OP_MUL) || is_op(P, OP_POW))
			jx_fail(P->c, cur(P)->line, "unsupported: *args / **kwargs in a call");
		if (cur(P)->type == JT_NAME && peek(P)->type == JT_OP && peek(P)->op == OP_ASSIGN) {
			const char *k = next(P)->s;
			next(P);
			xvec_push(P, &a, parse_expression(P, true), k);
			seen_kw = true;
		} else {
			if (seen_kw)
				jx_fail(P->c, cur(P)->line, "invalid syntax for function call expression: positional argument after a keyword argument");
			xvec_push(P, &a, parse_expression(P, true), NULL);
		}
	}
	next(P);
	node->n = a.n;
	node->v = a.v;
	node->kw = a.kw;
}

static const char *dotted_name(struct parser *P)
{
	const char *name = expect_name(P);
	while (is_op(P, OP_DOT)) {
		next(P);
		const char *more = expect_name(P);
		size_t n1 = strlen(name), n2 = strlen(more);
		char *s = jx_alloc(P->c, n1 + n2 + 2);
		memcpy(s, name, n1);
		s[n1] = '.';
		memcpy(s + n1 + 1, more, n2 + 1);
		name = s;
	}
	return name;
}

static struct jx *parse_filter(struct parser *P, struct jx *node, bool start_inline)
{
	while (is_op(P, OP_PIPE) || start_inline) {
		if (!start_inline)
			next(P);
		int line = cur(P)->line;
		const char *name = dotted_name(P);
		bool unsupported = false;
		int fid = jfilter_find(name, &unsupported);
		if (fid < 0)
			jx_fail(P->c, line, unsupported ? "unsupported filter '%s'" : "unknown filter '%s'", name);
		struct jx *f = newx(P, JX_FILTER, line);
		f->name = name;
		f->fid = fid;
		f->a[0] = node;
		if (is_op(P, OP_LPAREN))
			parse_call_args(P, f);
		node = f;
		start_inline = false;
	}
	return node;
}

static struct jx *parse_test(struct parser *P, struct jx *node)
{
	int line = next(P)->line; /* "is" */
	bool negated = false;
	if (is_name(P, "not")) {
		next(P);
		negated = true;
	}
	int nline = cur(P)->line;
	const char *name = dotted_name(P);
	bool unsupported = false;
	int tid = jtest_find(name, &unsupported);
	if (tid < 0)
		jx_fail(P->c, nline, unsupported ? "unsupported test '%s'" : "unknown test '%s'", name);
	struct jx *t = newx(P, JX_TEST, line);
	t->name = name;
	t->fid = tid;
	t->a[0] = node;
	struct jtok *c = cur(P);
	if (is_op(P, OP_LPAREN)) {
		parse_call_args(P, t);
	} else if ((c->type == JT_NAME || c->type == JT_STRING || c->type == JT_INT || c->type == JT_FLOAT ||
		    (c->type == JT_OP && (c->op == OP_LPAREN || c->op == OP_LBRACKET || c->op == OP_LBRACE))) &&
		   !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and")) {
		if (is_name(P, "is"))
			jx_fail(P->c, c->line, "you cannot chain multiple tests with is");
		struct jx *arg = parse_postfix(P, parse_primary(P));
		t->n = 1;
		t->v = jx_alloc(P->c, sizeof(*t->v));
		t->kw = jx_alloc(P->c, sizeof(*t->kw));
		t->v[0] = arg;
		t->kw[0] = NULL;
	}
	if (negated) {
		struct jx *n = newx(P, JX_NOT, line);
		n->a[0] = t;
		return n;
	}
	return t;
}

static struct jx *parse_subscribed(struct parser *P)
{
	int line = cur(P)->line;
	struct jx *args[3] = {0};
	if (is_op(P, OP_COLON)) {
		next(P);
	} else {
		struct jx *e = parse_expression(P, true);
		if (!is_op(P, OP_COLON))
			return e;
		next(P);
		args[0] = e;
	}
	if (!is_op(P, OP_COLON) && !is_op(P, OP_RBRACKET) && !is_op(P, OP_COMMA))
		args[1] = parse_expression(P, true);
	if (is_op(P, OP_COLON)) {
		next(P);
		if (!is_op(P, OP_RBRACKET) && !is_op(P, OP_COMMA))
			args[2] = parse_expression(P, true);
	}
	struct jx *s = newx(P, JX_SLICE, line);
	s->a[1] = args[0];
	s->a[2] = args[1];
	s->a[3] = args[2];
	return s;
}

static struct jx *parse_subscript(struct parser *P, struct jx *node)
{
	struct jtok *t = next(P);
	if (t->op == OP_DOT) {
		struct jtok *a = next(P);
		if (a->type == JT_NAME) {
			struct jx *e = newx(P, JX_ATTR, t->line);
			e->a[0] = node;
			e->name = a->s;
			return e;
		}
		if (a->type != JT_INT)
			jx_fail(P->c, a->line, "expected name or number");
		struct jx *k = newx(P, JX_CONST, a->line);
		k->c = jv_int(a->i);
		struct jx *e = newx(P, JX_ITEM, t->line);
		e->a[0] = node;
		e->a[1] = k;
		return e;
	}
	struct xvec args = {0};
	while (!is_op(P, OP_RBRACKET)) {
		if (args.n)
			expect_op(P, OP_COMMA, "','");
		xvec_push(P, &args, parse_subscribed(P), NULL);
	}
	next(P);
	struct jx *s = args.n == 1 ? args.v[0] : NULL;
	if (!s) { /* x[] and x[a, b] index with a tuple */
		s = newx(P, JX_TUPLE, t->line);
		s->n = args.n;
		s->v = args.v;
		for (int k = 0; k < args.n; k++)
			if (args.v[k]->kind == JX_SLICE)
				jx_fail(P->c, t->line, "unsupported: a slice inside a tuple subscript");
	}
	if (s->kind == JX_SLICE) {
		s->a[0] = node;
		return s;
	}
	struct jx *e = newx(P, JX_ITEM, t->line);
	e->a[0] = node;
	e->a[1] = s;
	return e;
}

static struct jx *parse_postfix(struct parser *P, struct jx *node)
{
	for (;;) {
		if (is_op(P, OP_DOT) || is_op(P, OP_LBRACKET)) {
			node = parse_subscript(P, node);
		} else if (is_op(P, OP_LPAREN)) {
			struct jx *c = newx(P, JX_CALL, cur(P)->line);
			c->a[0] = node;
			parse_call_args(P, c);
			node = c;
		} else {
			return node;
		}
	}
}

static struct jx *parse_filter_expr(struct parser *P, struct jx *node)
{
	for (;;) {
		if (is_op(P, OP_PIPE)) {
			node = parse_filter(P, node, false);
		} else if (is_name(P, "is")) {
			node = parse_test(P, node);
		} else if (is_op(P, OP_LPAREN)) {
			struct jx *c = newx(P, JX_CALL, cur(P)->line);
			c->a[0] = node;
			parse_call_args(P, c);
			node = c;
		} else {
			return node;
		}
	}
}

static struct jx *parse_list_or_dict(struct parser *P, bool dict)
{
	int line = next(P)->line;
	struct jx *e = newx(P, dict ? JX_DICT : JX_LIST, line);
	struct xvec items = {0};
	int close = dict ? OP_RBRACE : OP_RBRACKET;
	while (!is_op(P, close)) {
		if (items.n)
			expect_op(P, OP_COMMA, "','");
		if (is_op(P, close))
			break;
		xvec_push(P, &items, parse_expression(P, true), NULL);
		if (dict) {
			expect_op(P, OP_COLON, "':'");
			xvec_push(P, &items, parse_expression(P, true), NULL);
		}
	}
	next(P);
	e->n = items.n;
	e->v = items.v;
	return e;
}

static struct jx *parse_primary(struct parser *P)
{
	enter(P);
	struct jtok *t = cur(P);
	struct jx *e;
	if (t->type == JT_NAME) {
		next(P);
		e = newx(P, JX_CONST, t->line);
		if (!strcmp(t->s, "true") || !strcmp(t->s, "True")) {
			e->c = jv_bool(true);
		} else if (!strcmp(t->s, "false") || !strcmp(t->s, "False")) {
			e->c = jv_bool(false);
		} else if (!strcmp(t->s, "none") || !strcmp(t->s, "None")) {
			e->c = jv_none();
		} else {
			e->kind = JX_NAME;
			e->name = t->s;
			if (P->macro && !strcmp(t->s, "varargs"))
				P->macro->uses_varargs = true;
			if (P->macro && !strcmp(t->s, "kwargs"))
				P->macro->uses_kwargs = true;
		}
	} else if (t->type == JT_STRING) {
		size_t n = 0;
		size_t k = P->i;
		while (P->tok[k].type == JT_STRING)
			n += P->tok[k++].n;
		char *s = jx_alloc(P->c, n + 1);
		n = 0;
		while (cur(P)->type == JT_STRING) {
			memcpy(s + n, cur(P)->s, cur(P)->n);
			n += cur(P)->n;
			next(P);
		}
		e = newx(P, JX_CONST, t->line);
		e->c = jv_strn(P->c, s, n);
	} else if (t->type == JT_INT || t->type == JT_FLOAT) {
		next(P);
		e = newx(P, JX_CONST, t->line);
		e->c = t->type == JT_INT ? jv_int(t->i) : jv_float(t->f);
	} else if (is_op(P, OP_LPAREN)) {
		next(P);
		e = parse_tuple(P, false, true, NULL, true);
		expect_op(P, OP_RPAREN, "')'");
	} else if (is_op(P, OP_LBRACKET)) {
		e = parse_list_or_dict(P, false);
	} else if (is_op(P, OP_LBRACE)) {
		e = parse_list_or_dict(P, true);
	} else {
		if (t->type == JT_EOF)
			jx_fail(P->c, t->line, "unexpected end of template");
		jx_fail(P->c, t->line, "unexpected '%s'", describe(P, t));
	}
	P->depth--;
	return e;
}

static struct jx *parse_unary(struct parser *P, bool with_filter)
{
	enter(P);
	struct jx *node;
	if (is_op(P, OP_SUB) || is_op(P, OP_ADD)) {
		struct jtok *t = next(P);
		node = newx(P, t->op == OP_SUB ? JX_NEG : JX_POS, t->line);
		node->a[0] = parse_unary(P, false);
	} else {
		node = parse_primary(P);
	}
	node = parse_postfix(P, node);
	if (with_filter)
		node = parse_filter_expr(P, node);
	P->depth--;
	return node;
}

static struct jx *binary(struct parser *P, int op, int line, struct jx *l, struct jx *r)
{
	struct jx *e = newx(P, JX_BIN, line);
	e->op = (uint8_t)op;
	e->a[0] = l;
	e->a[1] = r;
	return e;
}

static struct jx *parse_pow(struct parser *P)
{
	struct jx *l = parse_unary(P, true);
	while (is_op(P, OP_POW)) {
		int line = next(P)->line;
		l = binary(P, OP_POW, line, l, parse_unary(P, true));
	}
	return l;
}

static struct jx *parse_math2(struct parser *P)
{
	struct jx *l = parse_pow(P);
	while (is_op(P, OP_MUL) || is_op(P, OP_DIV) || is_op(P, OP_FLOORDIV) || is_op(P, OP_MOD)) {
		struct jtok *t = next(P);
		l = binary(P, t->op, t->line, l, parse_pow(P));
	}
	return l;
}

static struct jx *parse_concat(struct parser *P)
{
	int line = cur(P)->line;
	struct jx *first = parse_math2(P);
	if (!is_op(P, OP_TILDE))
		return first;
	struct xvec v = {0};
	xvec_push(P, &v, first, NULL);
	while (is_op(P, OP_TILDE)) {
		next(P);
		xvec_push(P, &v, parse_math2(P), NULL);
	}
	struct jx *e = newx(P, JX_CONCAT, line);
	e->n = v.n;
	e->v = v.v;
	return e;
}

static struct jx *parse_math1(struct parser *P)
{
	struct jx *l = parse_concat(P);
	while (is_op(P, OP_ADD) || is_op(P, OP_SUB)) {
		struct jtok *t = next(P);
		l = binary(P, t->op, t->line, l, parse_concat(P));
	}
	return l;
}

static struct jx *parse_compare(struct parser *P)
{
	int line = cur(P)->line;
	struct jx *first = parse_math1(P);
	struct xvec v = {0};
	uint8_t ops[64];
	for (;;) {
		int op;
		struct jtok *t = cur(P);
		if (t->type == JT_OP && (t->op == OP_EQ || t->op == OP_NE || t->op == OP_LT || t->op == OP_LTEQ ||
					 t->op == OP_GT || t->op == OP_GTEQ)) {
			op = t->op;
			next(P);
		} else if (is_name(P, "in")) {
			op = OP_IN;
			next(P);
		} else if (is_name(P, "not") && peek(P)->type == JT_NAME && !strcmp(peek(P)->s, "in")) {
			op = OP_NOTIN;
			next(P);
			next(P);
		} else {
			break;
		}
		if (v.n == (int)sizeof(ops))
			jx_fail(P->c, t->line, "comparison chain too long");
		if (!v.n)
			xvec_push(P, &v, first, NULL);
		ops[v.n - 1] = (uint8_t)op;
		xvec_push(P, &v, parse_math1(P), NULL);
	}
	if (!v.n)
		return first;
	struct jx *e = newx(P, JX_CMP, line);
	e->n = v.n;
	e->v = v.v;
	e->ops = jx_alloc(P->c, (size_t)v.n);
	memcpy(e->ops, ops, (size_t)v.n - 1);
	return e;
}

static struct jx *parse_not(struct parser *P)
{
	if (is_name(P, "not")) {
		enter(P);
		struct jx *e = newx(P, JX_NOT, next(P)->line);
		e->a[0] = parse_not(P);
		P->depth--;
		return e;
	}
	return parse_compare(P);
}

static struct jx *parse_and(struct parser *P)
{
	struct jx *l = parse_not(P);
	while (is_name(P, "and")) {
		struct jx *e = newx(P, JX_AND, next(P)->line);
		e->a[0] = l;
		e->a[1] = parse_not(P);
		l = e;
	}
	return l;
}

static struct jx *parse_or(struct parser *P)
{
	struct jx *l = parse_and(P);
	while (is_name(P, "or")) {
		struct jx *e = newx(P, JX_OR, next(P)->line);
		e->a[0] = l;
		e->a[1] = parse_and(P);
		l = e;
	}
	return l;
}

static struct jx *parse_condexpr(struct parser *P)
{
	enter(P);
	struct jx *e1 = parse_or(P);
	while (is_name(P, "if")) {
		struct jx *c = newx(P, JX_COND, next(P)->line);
		c->a[1] = parse_or(P);
		c->a[0] = e1;
		if (is_name(P, "else")) {
			next(P);
			c->a[2] = parse_condexpr(P);
		}
		e1 = c;
	}
	P->depth--;
	return e1;
}

static struct jx *parse_expression(struct parser *P, bool with_condexpr)
{
	return with_condexpr ? parse_condexpr(P) : parse_or(P);
}

static bool is_tuple_end(struct parser *P, const char *extra_end)
{
	struct jtok *t = cur(P);
	if (t->type == JT_VAR_END || t->type == JT_BLOCK_END || is_op(P, OP_RPAREN))
		return true;
	return extra_end && is_name(P, extra_end);
}

static struct jx *parse_tuple(struct parser *P, bool simplified, bool with_condexpr, const char *extra_end,
			      bool explicit_parens)
{
	int line = cur(P)->line;
	struct xvec v = {0};
	bool is_tuple = false;
	for (;;) {
		if (v.n)
			expect_op(P, OP_COMMA, "','");
		if (is_tuple_end(P, extra_end))
			break;
		struct jx *e = simplified ? parse_primary(P) : parse_expression(P, with_condexpr);
		xvec_push(P, &v, e, NULL);
		if (is_op(P, OP_COMMA))
			is_tuple = true;
		else
			break;
	}
	if (!is_tuple) {
		if (v.n)
			return v.v[0];
		if (!explicit_parens)
			fail_unexpected(P, "an expression");
	}
	struct jx *e = newx(P, JX_TUPLE, line);
	e->n = v.n;
	e->v = v.v;
	return e;
}

/* ---- statements ---- */

static void parse_body(struct parser *P, struct js_body *b, const char *const *ends);

static struct js *news(struct parser *P, int kind, int line)
{
	struct js *s = jx_alloc(P->c, sizeof(*s));
	memset(s, 0, sizeof(*s));
	s->kind = (uint8_t)kind;
	s->line = line;
	return s;
}

/* parse_statements: optional ':', the end of the opening tag, the body up to one of ends (left current). */
static void parse_statements(struct parser *P, struct js_body *b, const char *const *ends, bool drop_needle)
{
	if (is_op(P, OP_COLON))
		next(P);
	expect_type(P, JT_BLOCK_END, "end of statement block");
	parse_body(P, b, ends);
	if (drop_needle)
		next(P);
}

/* A name-only or tuple-of-names assignment target. */
static void parse_target(struct parser *P, struct jtarget *tg, const char *extra_end)
{
	struct xvec v = {0};
	int line = cur(P)->line;
	struct jx *e = parse_tuple(P, true, false, extra_end, false);
	if (e->kind == JX_TUPLE) {
		tg->tuple = true;
		for (int k = 0; k < e->n; k++)
			xvec_push(P, &v, e->v[k], NULL);
	} else {
		xvec_push(P, &v, e, NULL);
	}
	tg->n = v.n;
	tg->names = jx_alloc(P->c, (size_t)(v.n ? v.n : 1) * sizeof(*tg->names));
	for (int k = 0; k < v.n; k++) {
		if (v.v[k]->kind == JX_TUPLE)
			jx_fail(P->c, line, "unsupported: nested tuple as an assignment target");
		if (v.v[k]->kind != JX_NAME)
			jx_fail(P->c, line, "can't assign to this expression");
		tg->names[k] = v.v[k]->name;
	}
}

static struct js *parse_for(struct parser *P, int line)
{
	static const char *const ends_body[] = {"endfor", "else", NULL};
	static const char *const ends_else[] = {"endfor", NULL};
	struct js *s = news(P, JS_FOR, line);
	/* No "in" end rule: jinja2's never matches (a tuple given to test_any), so "for a, in x" fails there. */
	parse_target(P, &s->tgt, NULL);
	if (!is_name(P, "in"))
		fail_unexpected(P, "'in'");
	next(P);
	s->e = parse_tuple(P, false, false, "recursive", false);
	if (is_name(P, "if")) {
		next(P);
		s->cond = parse_expression(P, true);
	}
	if (is_name(P, "recursive"))
		jx_fail(P->c, cur(P)->line, "unsupported: recursive for loops");
	P->loops++;
	P->fors[P->nfors++] = s;
	parse_statements(P, &s->body, ends_body, false);
	P->nfors--;
	P->loops--;
	if (!strcmp(next(P)->s, "else"))
		parse_statements(P, &s->orelse, ends_else, true);
	return s;
}

static struct js *parse_if(struct parser *P, int line)
{
	static const char *const ends[] = {"elif", "else", "endif", NULL};
	static const char *const ends_else[] = {"endif", NULL};
	struct js *top = news(P, JS_IF, line), *node = top;
	for (;;) {
		node->e = parse_tuple(P, false, false, NULL, false);
		parse_statements(P, &node->body, ends, false);
		struct jtok *t = next(P);
		if (!strcmp(t->s, "elif")) {
			struct js *n = news(P, JS_IF, t->line);
			node->orelse.n = 1;
			node->orelse.v = jx_alloc(P->c, sizeof(*node->orelse.v));
			node->orelse.v[0] = n;
			node = n;
			continue;
		}
		if (!strcmp(t->s, "else"))
			parse_statements(P, &node->orelse, ends_else, true);
		return top;
	}
}

static struct js *parse_set(struct parser *P, int line)
{
	static const char *const ends[] = {"endset", NULL};
	struct js *s = news(P, JS_SET, line);
	if (cur(P)->type == JT_NAME && peek(P)->type == JT_OP && peek(P)->op == OP_DOT) {
		s->kind = JS_SETNS;
		s->ns = next(P)->s;
		next(P);
		s->attr = expect_name(P);
	} else {
		parse_target(P, &s->tgt, NULL);
	}
	if (is_op(P, OP_ASSIGN)) {
		next(P);
		s->e = parse_tuple(P, false, true, NULL, false);
		return s;
	}
	if (s->kind == JS_SETNS)
		jx_fail(P->c, line, "unsupported: block set of a namespace attribute");
	if (s->tgt.tuple)
		jx_fail(P->c, line, "can't assign a block to a tuple");
	s->kind = JS_SETBLOCK;
	s->filter = parse_filter(P, NULL, false);
	parse_statements(P, &s->body, ends, true);
	return s;
}

static struct js *parse_macro(struct parser *P, int line)
{
	static const char *const ends[] = {"endmacro", NULL};
	struct js *s = news(P, JS_MACRO, line);
	struct jmacro_def *m = jx_alloc(P->c, sizeof(*m));
	memset(m, 0, sizeof(*m));
	m->name = expect_target_name(P);
	expect_op(P, OP_LPAREN, "'('");
	struct xvec names = {0}, defs = {0};
	while (!is_op(P, OP_RPAREN)) {
		if (names.n)
			expect_op(P, OP_COMMA, "','");
		struct jx *n = newx(P, JX_NAME, cur(P)->line);
		n->name = expect_target_name(P);
		for (int k = 0; k < names.n; k++)
			if (!strcmp(names.v[k]->name, n->name))
				jx_fail(P->c, n->line, "duplicate argument '%s' in macro '%s'", n->name, m->name);
		xvec_push(P, &names, n, NULL);
		struct jx *d = NULL;
		if (is_op(P, OP_ASSIGN)) {
			next(P);
			d = parse_expression(P, true);
		} else if (defs.n && defs.v[defs.n - 1]) {
			jx_fail(P->c, n->line, "non-default argument follows default argument");
		}
		xvec_push(P, &defs, d, NULL);
	}
	next(P);
	m->nparams = names.n;
	m->params = jx_alloc(P->c, (size_t)(names.n ? names.n : 1) * sizeof(*m->params));
	for (int k = 0; k < names.n; k++)
		m->params[k] = names.v[k]->name;
	m->defaults = defs.v;
	for (int k = 0; k < P->nfors; k++)
		P->fors[k]->defines_macro = true;
	struct jmacro_def *outer = P->macro;
	int loops = P->loops;
	P->macro = m;
	P->loops = 0;
	parse_statements(P, &m->body, ends, true);
	P->macro = outer;
	P->loops = loops;
	if (outer) {
		outer->uses_varargs |= m->uses_varargs;
		outer->uses_kwargs |= m->uses_kwargs;
	}
	s->macro = m;
	return s;
}

static struct js *parse_with(struct parser *P, int line)
{
	static const char *const ends[] = {"endwith", NULL};
	struct js *s = news(P, JS_WITH, line);
	struct xvec names = {0}, vals = {0};
	while (cur(P)->type != JT_BLOCK_END) {
		if (names.n)
			expect_op(P, OP_COMMA, "','");
		struct jx *n = newx(P, JX_NAME, cur(P)->line);
		n->name = expect_target_name(P);
		xvec_push(P, &names, n, NULL);
		expect_op(P, OP_ASSIGN, "'='");
		xvec_push(P, &vals, parse_expression(P, true), NULL);
	}
	s->nwith = names.n;
	s->with_names = jx_alloc(P->c, (size_t)(names.n ? names.n : 1) * sizeof(*s->with_names));
	for (int k = 0; k < names.n; k++)
		s->with_names[k] = names.v[k]->name;
	s->with_vals = vals.v;
	parse_statements(P, &s->body, ends, true);
	return s;
}

/* One statement after "{%"; the caller expects its "%}". Returns NULL for a statement with no node. */
static struct js *parse_statement(struct parser *P)
{
	static const char *const ends_filter[] = {"endfilter", NULL};
	static const char *const unsupported[] = {"block", "extends", "include", "import", "from", "call",
						  "autoescape", "do", NULL};
	struct jtok *t = cur(P);
	if (t->type != JT_NAME)
		fail_unexpected(P, "a tag name");
	int line = t->line;
	enter(P);
	next(P);
	struct js *s = NULL;
	if (!strcmp(t->s, "for")) {
		s = parse_for(P, line);
	} else if (!strcmp(t->s, "if")) {
		s = parse_if(P, line);
	} else if (!strcmp(t->s, "set")) {
		s = parse_set(P, line);
	} else if (!strcmp(t->s, "macro")) {
		s = parse_macro(P, line);
	} else if (!strcmp(t->s, "with")) {
		s = parse_with(P, line);
	} else if (!strcmp(t->s, "filter")) {
		s = news(P, JS_FILTERBLOCK, line);
		s->filter = parse_filter(P, NULL, true);
		parse_statements(P, &s->body, ends_filter, true);
	} else if (!strcmp(t->s, "generation")) {
		/* transformers' AssistantTracker: the body, in its own scope (a call block), as it is. */
		static const char *const ends_gen[] = {"endgeneration", NULL};
		s = news(P, JS_FILTERBLOCK, line);
		parse_statements(P, &s->body, ends_gen, true);
	} else if (!strcmp(t->s, "print")) {
		struct xvec v = {0};
		while (cur(P)->type != JT_BLOCK_END) {
			if (v.n)
				expect_op(P, OP_COMMA, "','");
			xvec_push(P, &v, parse_expression(P, true), NULL);
		}
		s = news(P, JS_PRINT, line);
		struct jx *e = newx(P, JX_CONCAT, line);
		e->n = v.n;
		e->v = v.v;
		s->e = e;
	} else if (!strcmp(t->s, "break") || !strcmp(t->s, "continue")) {
		if (!P->loops)
			jx_fail(P->c, line, "'%s' outside a for loop", t->s);
		s = news(P, t->s[0] == 'b' ? JS_BREAK : JS_CONTINUE, line);
	} else {
		for (int k = 0; unsupported[k]; k++)
			if (!strcmp(t->s, unsupported[k]))
				jx_fail(P->c, line, "unsupported tag '%s'", t->s);
		jx_fail(P->c, line, "unknown tag '%s'", t->s);
	}
	P->depth--;
	return s;
}

static void body_push(struct parser *P, struct js_body *b, int *cap, struct js *s)
{
	if (b->n == *cap) {
		*cap = *cap ? *cap * 2 : 8;
		struct js **v = jx_alloc(P->c, (size_t)*cap * sizeof(*v));
		if (b->n)
			memcpy(v, b->v, (size_t)b->n * sizeof(*v));
		b->v = v;
	}
	b->v[b->n++] = s;
}

static void parse_body(struct parser *P, struct js_body *b, const char *const *ends)
{
	int cap = 0;
	for (;;) {
		struct jtok *t = cur(P);
		if (t->type == JT_EOF) {
			if (ends)
				jx_fail(P->c, t->line, "unexpected end of template: missing '{%% %s %%}'", ends[0]);
			return;
		}
		if (t->type == JT_DATA) {
			struct js *s = news(P, JS_TEXT, t->line);
			s->text = t->s;
			s->len = t->n;
			body_push(P, b, &cap, s);
			next(P);
		} else if (t->type == JT_VAR_BEGIN) {
			next(P);
			struct js *s = news(P, JS_PRINT, t->line);
			s->e = parse_tuple(P, false, true, NULL, false);
			expect_type(P, JT_VAR_END, "end of print statement");
			body_push(P, b, &cap, s);
		} else if (t->type == JT_BLOCK_BEGIN) {
			next(P);
			if (ends && cur(P)->type == JT_NAME)
				for (int k = 0; ends[k]; k++)
					if (!strcmp(cur(P)->s, ends[k]))
						return;
			if (cur(P)->type == JT_NAME && (!strncmp(cur(P)->s, "end", 3) || !strcmp(cur(P)->s, "else") ||
							!strcmp(cur(P)->s, "elif")))
				jx_fail(P->c, cur(P)->line, "unexpected '%s'", cur(P)->s);
			struct js *s = parse_statement(P);
			expect_type(P, JT_BLOCK_END, "end of statement block");
			if (s)
				body_push(P, b, &cap, s);
		} else {
			jx_fail(P->c, t->line, "unexpected '%s'", describe(P, t));
		}
	}
}

void jparse_run(struct jctx *c, struct jinja_tmpl *t, struct jtoks *toks)
{
	struct parser P = {.c = c, .tok = toks->v, .ntok = toks->n};
	parse_body(&P, &t->body, NULL);
}
