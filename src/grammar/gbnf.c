/*
 * gbnf.c: llama.cpp's GBNF grammar syntax -> struct gram (grammar_internal.h).
 *
 *   name ::= alternatives          one rule per line (a newline inside ( ) continues it); # comments
 *   "literal"  [a-z0-9_] [^"\\]  .  (group)  name   the atoms
 *   x*  x+  x?  x{m}  x{m,}  x{m,n}  x{,n}          repetitions
 *   escapes \n \r \t \\ \" \' \[ \] \- \/ \xHH \uHHHH \UHHHHHHHH
 *
 * Groups and repetitions become rules of their own (x* as R ::= x R | empty, right-recursive, which the
 * matcher runs in constant stack depth), so every symbol is one class or one reference. Checked: every
 * referenced rule defined, "root" present, no rule left-recursive (directly, through others, or after
 * rules that can match nothing), and a bound on the grammar's size.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "grammar/grammar_internal.h"

#define GRAM_SYMS_MAX (1 << 22)
#define GRAM_REP_MAX 10000 /* also bounds the matcher's recursion over a run of optional symbols */

struct pvec {
	struct gsym *s;
	int n, cap;
};

struct prule {
	char *name;
	struct pvec *alts;
	int n_alt, cap_alt;
	bool defined, used;
	int line, col; /* where it was first referenced (undefined rules) */
};

struct parser {
	const char *src, *p, *line0;
	int line;
	struct prule *r;
	int n_r, cap_r, n_gen;
	uint32_t (*rng)[2];
	int n_rng, cap_rng;
	long n_sym;
	char *err;
	size_t errlen;
	int rc;
};

static int perr(struct parser *P, const char *fmt, ...)
{
	if (P->rc)
		return P->rc;
	va_list ap;
	int n = snprintf(P->err, P->errlen, "grammar: line %d, column %d: ", P->line, (int)(P->p - P->line0) + 1);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < P->errlen)
		vsnprintf(P->err + n, P->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	for (char *c = P->err; *c; c++) /* one line, whatever bytes the grammar quoted */
		*c = (unsigned char)*c < 0x20 ? '?' : *c;
	return P->rc = -EINVAL;
}

static int nomem(struct parser *P)
{
	if (!P->rc)
		snprintf(P->err, P->errlen, "grammar: out of memory");
	return P->rc = P->rc ? P->rc : -ENOMEM;
}

static int vec_push(struct parser *P, struct pvec *v, struct gsym y)
{
	if (++P->n_sym > GRAM_SYMS_MAX)
		return perr(P, "the grammar is too large (over %d symbols once repetitions are expanded)", GRAM_SYMS_MAX);
	if (v->n == v->cap) {
		int nc = v->cap ? 2 * v->cap : 8;
		struct gsym *ns = realloc(v->s, sizeof(*ns) * (size_t)nc);
		if (!ns)
			return nomem(P);
		v->s = ns;
		v->cap = nc;
	}
	v->s[v->n++] = y;
	return 0;
}

/* The rule of that name (created when new); -1 when out of memory. */
static int rule_get(struct parser *P, const char *name, size_t len)
{
	for (int i = 0; i < P->n_r; i++)
		if (strlen(P->r[i].name) == len && !memcmp(P->r[i].name, name, len))
			return i;
	if (P->n_r == P->cap_r) {
		int nc = P->cap_r ? 2 * P->cap_r : 16;
		struct prule *nr = realloc(P->r, sizeof(*nr) * (size_t)nc);
		if (!nr)
			return nomem(P), -1;
		P->r = nr;
		P->cap_r = nc;
	}
	struct prule *r = &P->r[P->n_r];
	*r = (struct prule){.name = strndup(name, len), .line = P->line, .col = (int)(P->p - P->line0) + 1};
	if (!r->name)
		return nomem(P), -1;
	return P->n_r++;
}

/* A rule made for a group or a repetition (a name no GBNF text can write). */
static int rule_gen(struct parser *P)
{
	char name[32];
	int n = snprintf(name, sizeof(name), "<%d>", P->n_gen++);
	int id = rule_get(P, name, (size_t)n);
	if (id >= 0)
		P->r[id].defined = true;
	return id;
}

/* A new empty alternative of rule id; its index, or -1. */
static int alt_new(struct parser *P, int id)
{
	struct prule *r = &P->r[id];
	if (r->n_alt == r->cap_alt) {
		int nc = r->cap_alt ? 2 * r->cap_alt : 4;
		struct pvec *na = realloc(r->alts, sizeof(*na) * (size_t)nc);
		if (!na)
			return nomem(P), -1;
		r->alts = na;
		r->cap_alt = nc;
	}
	r->alts[r->n_alt] = (struct pvec){0};
	return r->n_alt++;
}

static int rng_add(struct parser *P, uint32_t lo, uint32_t hi)
{
	if (P->n_rng == P->cap_rng) {
		int nc = P->cap_rng ? 2 * P->cap_rng : 64;
		uint32_t(*nr)[2] = realloc(P->rng, sizeof(*nr) * (size_t)nc);
		if (!nr)
			return nomem(P);
		P->rng = nr;
		P->cap_rng = nc;
	}
	P->rng[P->n_rng][0] = lo;
	P->rng[P->n_rng][1] = hi;
	P->n_rng++;
	return 0;
}

/* Spaces and comments; newlines too when nl (inside parentheses, after ::=, between rules). */
static void skip(struct parser *P, bool nl)
{
	for (;;) {
		if (*P->p == ' ' || *P->p == '\t' || *P->p == '\r') {
			P->p++;
		} else if (*P->p == '#') {
			while (*P->p && *P->p != '\n')
				P->p++;
		} else if (nl && *P->p == '\n') {
			P->p++;
			P->line++;
			P->line0 = P->p;
		} else {
			return;
		}
	}
}

static bool name_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* One character of a literal or class (an escape, or a UTF-8 sequence) into *cp. */
static int read_char(struct parser *P, uint32_t *cp)
{
	const unsigned char *s = (const unsigned char *)P->p;
	if (!*s || *s == '\n')
		return perr(P, "unexpected end of line inside a literal or class");
	if (*s == '\\') {
		int nd = 0;
		switch (s[1]) {
		case 'n': *cp = '\n'; break;
		case 'r': *cp = '\r'; break;
		case 't': *cp = '\t'; break;
		case '\\': case '"': case '\'': case '[': case ']': case '-': case '/': case '^': *cp = s[1]; break;
		case 'x': nd = 2; break;
		case 'u': nd = 4; break;
		case 'U': nd = 8; break;
		default: return perr(P, "unknown escape '\\%c'", s[1] ? s[1] : ' ');
		}
		P->p += 2;
		if (nd) {
			*cp = 0;
			for (int i = 0; i < nd; i++) {
				int h = hexval(P->p[0]);
				if (h < 0)
					return perr(P, "escape \\%c needs %d hex digits", s[1], nd);
				*cp = *cp << 4 | (uint32_t)h;
				P->p++;
			}
			if (*cp > 0x10FFFF)
				return perr(P, "escape beyond U+10FFFF");
		}
		return 0;
	}
	int n = *s < 0x80 ? 1 : (*s & 0xE0) == 0xC0 ? 2 : (*s & 0xF0) == 0xE0 ? 3 : (*s & 0xF8) == 0xF0 ? 4 : 0;
	uint32_t c = n == 1 ? *s : n == 2 ? *s & 0x1Fu : n == 3 ? *s & 0x0Fu : *s & 0x07u;
	for (int i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80) {
			n = 0;
			break;
		}
		c = c << 6 | (s[i] & 0x3Fu);
	}
	if (!n)
		return perr(P, "invalid UTF-8 in the grammar");
	*cp = c;
	P->p += n;
	return 0;
}

static struct gsym cls_one(struct parser *P, uint32_t c)
{
	struct gsym y = {.kind = GS_CLS, .a = P->n_rng, .b = 1};
	rng_add(P, c, c);
	return y;
}

static int parse_alts(struct parser *P, int id, bool nested);

/* One atom (its symbols appended to *v); 1 when there was none here. */
static int parse_atom(struct parser *P, struct pvec *v, bool nested)
{
	char c = *P->p;
	if (c == '"') {
		P->p++;
		while (!P->rc && *P->p != '"') {
			uint32_t cp;
			if (!read_char(P, &cp))
				vec_push(P, v, cls_one(P, cp));
		}
		if (!P->rc)
			P->p++;
		return P->rc;
	}
	if (c == '[') {
		P->p++;
		struct gsym y = {.kind = GS_CLS, .a = P->n_rng};
		if (*P->p == '^') {
			y.neg = true;
			P->p++;
		}
		while (!P->rc && *P->p != ']') {
			uint32_t lo, hi;
			if (read_char(P, &lo))
				break;
			hi = lo;
			if (P->p[0] == '-' && P->p[1] != ']') {
				P->p++;
				if (read_char(P, &hi))
					break;
				if (hi < lo)
					return perr(P, "range U+%04X-U+%04X is reversed", lo, hi);
			}
			rng_add(P, lo, hi);
			y.b++;
		}
		if (P->rc)
			return P->rc;
		P->p++;
		return vec_push(P, v, y);
	}
	if (c == '.') {
		P->p++;
		return vec_push(P, v, (struct gsym){.kind = GS_CLS, .neg = true, .a = P->n_rng});
	}
	if (c == '(') {
		P->p++;
		int id = rule_gen(P);
		if (id < 0)
			return P->rc;
		skip(P, true);
		if (parse_alts(P, id, true))
			return P->rc;
		skip(P, true);
		if (*P->p != ')')
			return perr(P, "expected ')'");
		P->p++;
		return vec_push(P, v, (struct gsym){.kind = GS_REF, .a = id});
	}
	if (name_char(c)) {
		const char *s = P->p;
		while (name_char(*P->p))
			P->p++;
		int id = rule_get(P, s, (size_t)(P->p - s));
		if (id < 0)
			return P->rc;
		P->r[id].used = true;
		return vec_push(P, v, (struct gsym){.kind = GS_REF, .a = id});
	}
	(void)nested;
	return 1;
}

/* An integer of a {m,n} bound; -1 when none is written. */
static long read_int(struct parser *P)
{
	if (*P->p < '0' || *P->p > '9')
		return -1;
	long n = 0;
	while (*P->p >= '0' && *P->p <= '9' && n <= GRAM_REP_MAX)
		n = n * 10 + (*P->p++ - '0');
	return n;
}

/* Appends x{lo,hi} (hi -1: unbounded) of the one symbol x to the alternative (id, alt). */
static int repeat(struct parser *P, int id, int alt, struct gsym x, long lo, long hi)
{
	for (long i = 0; i < lo && !P->rc; i++)
		vec_push(P, &P->r[id].alts[alt], x);
	if (hi < 0) { /* R ::= x R | (empty) */
		int R = rule_gen(P), a0 = R < 0 ? -1 : alt_new(P, R), a1 = a0 < 0 ? -1 : alt_new(P, R);
		if (a1 < 0)
			return P->rc;
		vec_push(P, &P->r[R].alts[a0], x);
		vec_push(P, &P->r[R].alts[a0], (struct gsym){.kind = GS_REF, .a = R});
		return vec_push(P, &P->r[id].alts[alt], (struct gsym){.kind = GS_REF, .a = R});
	}
	int prev = -1; /* O_k ::= x O_{k-1} | (empty), O_1 ::= x | (empty) */
	for (long k = lo; k < hi && !P->rc; k++) {
		int O = rule_gen(P), a0 = O < 0 ? -1 : alt_new(P, O), a1 = a0 < 0 ? -1 : alt_new(P, O);
		if (a1 < 0)
			return P->rc;
		vec_push(P, &P->r[O].alts[a0], x);
		if (prev >= 0)
			vec_push(P, &P->r[O].alts[a0], (struct gsym){.kind = GS_REF, .a = prev});
		prev = O;
	}
	return prev >= 0 ? vec_push(P, &P->r[id].alts[alt], (struct gsym){.kind = GS_REF, .a = prev}) : P->rc;
}

/* A sequence of atoms with their repetitions into alternative (id, alt). */
static int parse_seq(struct parser *P, int id, int alt, bool nested)
{
	for (;;) {
		skip(P, nested);
		struct pvec v = {0};
		int rc = parse_atom(P, &v, nested);
		if (rc) {
			free(v.s);
			return rc < 0 ? rc : 0;
		}
		char c = *P->p;
		if (c != '*' && c != '+' && c != '?' && c != '{') {
			for (int i = 0; i < v.n && !P->rc; i++)
				vec_push(P, &P->r[id].alts[alt], v.s[i]);
			free(v.s);
			if (P->rc)
				return P->rc;
			continue;
		}
		struct gsym x = v.n == 1 ? v.s[0] : (struct gsym){0};
		if (v.n != 1) { /* a literal of several characters repeats as a whole */
			int g = rule_gen(P), a = g < 0 ? -1 : alt_new(P, g);
			for (int i = 0; a >= 0 && i < v.n && !P->rc; i++)
				vec_push(P, &P->r[g].alts[a], v.s[i]);
			x = (struct gsym){.kind = GS_REF, .a = g};
		}
		free(v.s);
		if (P->rc)
			return P->rc;
		P->p++;
		long lo = 0, hi = -1;
		if (c == '+')
			lo = 1;
		else if (c == '?')
			hi = 1;
		else if (c == '{') {
			skip(P, false);
			lo = read_int(P);
			skip(P, false);
			if (*P->p == ',') {
				P->p++;
				skip(P, false);
				hi = read_int(P);
				lo = lo < 0 ? 0 : lo;
			} else {
				hi = lo;
			}
			skip(P, false);
			if (*P->p != '}' || lo < 0)
				return perr(P, "expected {m}, {m,}, {m,n} or {,n}");
			P->p++;
			if (lo > GRAM_REP_MAX || hi > GRAM_REP_MAX || (hi >= 0 && hi < lo))
				return perr(P, "repetition {%ld,%ld} out of range (0 <= m <= n <= %d)", lo, hi, GRAM_REP_MAX);
		}
		if (repeat(P, id, alt, x, lo, hi))
			return P->rc;
	}
}

static int parse_alts(struct parser *P, int id, bool nested)
{
	for (;;) {
		int alt = alt_new(P, id);
		if (alt < 0 || parse_seq(P, id, alt, nested))
			return P->rc;
		skip(P, nested);
		if (*P->p != '|')
			return 0;
		P->p++; /* an alternative may be empty: "a ::= b |" ends at the line's end */
		skip(P, nested);
	}
}

/* Rules that can match the empty text. */
static void nullable(const struct parser *P, bool *nul)
{
	for (bool changed = true; changed;) {
		changed = false;
		for (int i = 0; i < P->n_r; i++)
			for (int a = 0; !nul[i] && a < P->r[i].n_alt; a++) {
				const struct pvec *v = &P->r[i].alts[a];
				int k = 0;
				while (k < v->n && v->s[k].kind == GS_REF && nul[v->s[k].a])
					k++;
				if (k == v->n)
					nul[i] = changed = true;
			}
	}
}

/* Tarjan's strongly connected components of "rule i can start with rule j" (after rules that can match
 * nothing); comp[i] the component of rule i. */
struct scc {
	const struct parser *P;
	const bool *nul;
	int *idx, *low, *comp, *stk;
	bool *on;
	int n_idx, n_stk, n_comp;
};

static void scc_visit(struct scc *c, int i)
{
	c->idx[i] = c->low[i] = c->n_idx++;
	c->stk[c->n_stk++] = i;
	c->on[i] = true;
	for (int a = 0; a < c->P->r[i].n_alt; a++) {
		const struct pvec *v = &c->P->r[i].alts[a];
		for (int k = 0; k < v->n && v->s[k].kind == GS_REF; k++) {
			int j = v->s[k].a;
			if (c->idx[j] < 0) {
				scc_visit(c, j);
				c->low[i] = c->low[j] < c->low[i] ? c->low[j] : c->low[i];
			} else if (c->on[j] && c->idx[j] < c->low[i]) {
				c->low[i] = c->idx[j];
			}
			if (!c->nul[j])
				break;
		}
	}
	if (c->low[i] == c->idx[i]) {
		int j;
		do {
			j = c->stk[--c->n_stk];
			c->on[j] = false;
			c->comp[j] = c->n_comp;
		} while (j != i);
		c->n_comp++;
	}
}

/* A rule whose expansion can come back to it with more on the stack (a left corner in the same component
 * reached from a reference that is not the last of its alternative), or -1. Loops of references in last
 * place ((x?)* and the like) only repeat what is already expanded, which the matcher skips. */
static int left_recursive(const struct parser *P, const bool *nul, const int *comp)
{
	for (int i = 0; i < P->n_r; i++)
		for (int a = 0; a < P->r[i].n_alt; a++) {
			const struct pvec *v = &P->r[i].alts[a];
			for (int k = 0; k < v->n && v->s[k].kind == GS_REF; k++) {
				if (comp[v->s[k].a] == comp[i] && k + 1 < v->n)
					return i;
				if (!nul[v->s[k].a])
					break;
			}
		}
	return -1;
}

/* The named rule a generated one was made for, for messages: the first user rule. */
static const char *user_name(const struct parser *P, int i)
{
	return P->r[i].name[0] == '<' ? "(a group or repetition)" : P->r[i].name;
}

static int check(struct parser *P)
{
	for (int i = 0; i < P->n_r; i++)
		if (!P->r[i].defined) {
			P->line = P->r[i].line;
			P->p = P->line0 = P->src;
			snprintf(P->err, P->errlen, "grammar: line %d: undefined rule '%s'", P->r[i].line, P->r[i].name);
			return P->rc = -EINVAL;
		}
	if (rule_get(P, "root", 4) < 0 || !P->r[rule_get(P, "root", 4)].defined) {
		snprintf(P->err, P->errlen, "grammar: no 'root' rule");
		return P->rc = -EINVAL;
	}
	size_t n = (size_t)P->n_r;
	struct scc c = {.P = P, .nul = calloc(n, sizeof(bool)), .idx = malloc(n * sizeof(int)), .low = malloc(n * sizeof(int)),
			.comp = malloc(n * sizeof(int)), .stk = malloc(n * sizeof(int)), .on = calloc(n, sizeof(bool))};
	if (!c.nul || !c.idx || !c.low || !c.comp || !c.stk || !c.on) {
		nomem(P);
	} else {
		nullable(P, (bool *)c.nul);
		memset(c.idx, 0xff, n * sizeof(int));
		for (int i = 0; i < P->n_r; i++)
			if (c.idx[i] < 0)
				scc_visit(&c, i);
		int bad = left_recursive(P, c.nul, c.comp);
		if (bad >= 0) {
			snprintf(P->err, P->errlen, "grammar: rule '%s' is left-recursive (it can start with itself)",
				 user_name(P, bad));
			P->rc = -EINVAL;
		}
	}
	free((bool *)c.nul);
	free(c.idx);
	free(c.low);
	free(c.comp);
	free(c.stk);
	free(c.on);
	return P->rc;
}

/* The parser's rules laid out as struct gram. */
static int flatten(struct parser *P, struct gram **out)
{
	struct gram *g = calloc(1, sizeof(*g));
	int n_alt = 0;
	long n_sym = 0;
	for (int i = 0; i < P->n_r; i++) {
		n_alt += P->r[i].n_alt;
		for (int a = 0; a < P->r[i].n_alt; a++)
			n_sym += P->r[i].alts[a].n + 1;
	}
	if (g) {
		g->sym = malloc(sizeof(*g->sym) * (size_t)n_sym);
		g->alt = malloc(sizeof(int) * (size_t)(n_alt ? n_alt : 1));
		g->rule_alt0 = malloc(sizeof(int) * (size_t)P->n_r);
		g->rule_nalt = malloc(sizeof(int) * (size_t)P->n_r);
	}
	if (!g || !g->sym || !g->alt || !g->rule_alt0 || !g->rule_nalt) {
		gram_free(g);
		return nomem(P);
	}
	n_alt = 0;
	for (int i = 0; i < P->n_r; i++) {
		g->rule_alt0[i] = n_alt;
		g->rule_nalt[i] = P->r[i].n_alt;
		for (int a = 0; a < P->r[i].n_alt; a++) {
			g->alt[n_alt++] = g->n_sym;
			if (P->r[i].alts[a].n) /* an empty alternative has no array */
				memcpy(g->sym + g->n_sym, P->r[i].alts[a].s, sizeof(struct gsym) * (size_t)P->r[i].alts[a].n);
			g->n_sym += P->r[i].alts[a].n;
			g->sym[g->n_sym++] = (struct gsym){.kind = GS_END};
		}
	}
	g->n_rule = P->n_r;
	g->root = rule_get(P, "root", 4);
	g->rng = P->rng;
	g->n_rng = P->n_rng;
	P->rng = NULL;
	*out = g;
	return 0;
}

int gram_parse(const char *text, struct gram **out, char *err, size_t errlen)
{
	struct parser P = {.src = text, .p = text, .line0 = text, .line = 1, .err = err, .errlen = errlen};
	*out = NULL;
	for (;;) {
		skip(&P, true);
		if (!*P.p)
			break;
		const char *s = P.p;
		while (name_char(*P.p))
			P.p++;
		if (P.p == s) {
			perr(&P, "expected a rule name");
			break;
		}
		int id = rule_get(&P, s, (size_t)(P.p - s));
		if (id < 0)
			break;
		if (P.r[id].defined) {
			P.p = s;
			perr(&P, "rule '%s' defined twice", P.r[id].name);
			break;
		}
		P.r[id].defined = true;
		skip(&P, false);
		if (strncmp(P.p, "::=", 3)) {
			perr(&P, "expected '::=' after the rule name");
			break;
		}
		P.p += 3;
		skip(&P, true);
		if (parse_alts(&P, id, false))
			break;
		if (*P.p && *P.p != '\n') {
			perr(&P, "unexpected '%c'", *P.p);
			break;
		}
	}
	int rc = P.rc ? P.rc : check(&P);
	if (!rc)
		rc = flatten(&P, out);
	for (int i = 0; i < P.n_r; i++) {
		for (int a = 0; a < P.r[i].n_alt; a++)
			free(P.r[i].alts[a].s);
		free(P.r[i].alts);
		free(P.r[i].name);
	}
	free(P.r);
	free(P.rng);
	return rc;
}

void gram_free(struct gram *g)
{
	if (!g)
		return;
	free(g->sym);
	free(g->rng);
	free(g->alt);
	free(g->rule_alt0);
	free(g->rule_nalt);
	free(g);
}
