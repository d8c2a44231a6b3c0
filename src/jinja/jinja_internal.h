/*
 * jinja_internal.h: what the Jinja interpreter's files share: the arena, the error context, Python-like
 * values (struct jv), tokens, the syntax tree and the render state. Not part of the public API (jinja.h).
 *
 * Invariants: every value, string and scope made while parsing lives in the template's arena, and every one
 * made while rendering lives in the render's arena, freed at once when the render ends; values are never
 * freed one by one and may share structure. Errors unwind with longjmp to jinja_parse / jinja_render
 * (jx_fail), so nothing between them returns error codes; only arena memory is allocated on those paths.
 * Strings are valid UTF-8 (the template is checked, jansson checks JSON) and NUL-terminated; lists, tuples
 * and dicts never change after they are built (the sandbox forbids it); namespaces do (set ns.attr).
 */
#ifndef FERRY_JINJA_INTERNAL_H
#define FERRY_JINJA_INTERNAL_H

#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "jinja/jinja.h"

/* ---- arena and errors ---- */

struct ja_chunk;
struct jarena {
	struct ja_chunk *head;
	size_t total, limit; /* bytes taken from malloc; a request past limit fails */
};

/* The error context the parser and the renderer share: where to unwind to and where the message goes. */
struct jctx {
	jmp_buf jb;
	char *err;
	size_t errlen;
	const char *name; /* the template's name, the prefix of every message */
	struct jarena *arena;
	int line; /* the line being parsed or run: messages given no line use it */
};

void *ja_alloc_or_null(struct jarena *a, size_t n);
void ja_free(struct jarena *a);
/* Allocates from c's arena or fails with "out of memory (limit N MiB)". */
void *jx_alloc(struct jctx *c, size_t n);
char *jx_strndup(struct jctx *c, const char *s, size_t n);
/* Formats "NAME:LINE: message" into c->err and unwinds; line <= 0 means c->line. */
_Noreturn void jx_fail(struct jctx *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* ---- values ---- */

enum jv_type {
	JV_UNDEF,
	JV_NONE,
	JV_BOOL,
	JV_INT,
	JV_FLOAT,
	JV_STR,
	JV_LIST, /* also tuples, generators, dict views and ranges: see enum jl_kind */
	JV_DICT,
	JV_NS,
	JV_MACRO,
	JV_FUNC, /* a global function or a bound method */
	JV_LOOP,
	JV_MISSING, /* an argument not given (internal to argument binding) */
};

enum jl_kind {
	JL_LIST,
	JL_TUPLE,
	JL_ITER,    /* a generator (map, select, items...): iterating consumes it, no len, always true */
	JL_KEYS,    /* dict.keys() */
	JL_VALUES,  /* dict.values() */
	JL_ITEMS,   /* dict.items() */
	JL_RANGE,   /* range(...) */
};

struct jstr {
	size_t n;   /* bytes */
	size_t ncp; /* code points */
	char p[];   /* n bytes + NUL */
};

struct jv {
	uint8_t t;      /* enum jv_type */
	uint8_t markup; /* JV_STR: a jinja2 Markup (from |safe): + escapes the other operand */
	uint8_t kind;   /* JV_LIST: enum jl_kind */
	union {
		bool b;
		int64_t i;
		double f;
		struct jstr *s;
		struct jlist *l;
		struct jdict *d;
		struct jns *ns;
		struct jmacro *m;
		struct jfunc *fn;
		struct jloop *lp;
		struct jundef *u;
	};
};

struct jlist {
	size_t n, cap;
	size_t pos; /* JL_ITER: items before pos are consumed */
	struct jv *v;
};

struct jdict {
	size_t n, cap;
	struct jv *k, *v; /* insertion order */
};

struct jns {
	struct jdict *d;
};

struct jundef {
	const char *msg; /* what UndefinedError says when it is used */
};

struct jfunc {
	int id;         /* index into the builtin table (jinja_methods.c) */
	struct jv self; /* the bound object of a method */
};

struct jloop {
	struct jlist *items;
	size_t i;
	struct jv last_changed; /* loop.changed() */
	bool changed_init;
};

struct jscope;
struct jmacro {
	const struct jmacro_def *def;
	struct jscope *closure;
};

/* ---- tokens ---- */

enum jt_type {
	JT_EOF,
	JT_DATA,
	JT_VAR_BEGIN,
	JT_VAR_END,
	JT_BLOCK_BEGIN,
	JT_BLOCK_END,
	JT_NAME,
	JT_STRING,
	JT_INT,
	JT_FLOAT,
	JT_OP,
};

enum jop {
	OP_ADD, OP_SUB, OP_DIV, OP_FLOORDIV, OP_MUL, OP_MOD, OP_POW, OP_TILDE,
	OP_LBRACKET, OP_RBRACKET, OP_LPAREN, OP_RPAREN, OP_LBRACE, OP_RBRACE,
	OP_EQ, OP_NE, OP_GT, OP_GTEQ, OP_LT, OP_LTEQ,
	OP_ASSIGN, OP_DOT, OP_COLON, OP_PIPE, OP_COMMA, OP_SEMICOLON,
	OP_IN, OP_NOTIN, /* comparison operators made by the parser */
};

struct jtok {
	uint8_t type; /* enum jt_type */
	uint8_t op;   /* JT_OP */
	int line;
	const char *s; /* NAME, DATA, STRING (decoded) */
	size_t n;
	int64_t i;
	double f;
};

struct jtoks {
	struct jtok *v;
	size_t n, cap;
};

/* Splits src (already newline-normalized) into tokens with HF's whitespace rules (trim_blocks,
 * lstrip_blocks); fails through c. */
void jlex_run(struct jctx *c, const char *src, size_t len, struct jtoks *out);
/* Python str.isspace for one code point. */
bool py_isspace(uint32_t cp);

/* ---- syntax tree ---- */

enum jx_kind {
	JX_CONST, JX_NAME, JX_LIST, JX_TUPLE, JX_DICT, JX_ATTR, JX_ITEM, JX_SLICE, JX_CALL, JX_FILTER, JX_TEST,
	JX_NOT, JX_NEG, JX_POS, JX_BIN, JX_CMP, JX_AND, JX_OR, JX_COND, JX_CONCAT,
};

struct jx {
	uint8_t kind;
	uint8_t op;  /* JX_BIN: enum jop */
	int line;
	int fid;          /* JX_FILTER / JX_TEST: index into the filter / test table */
	struct jv c;      /* JX_CONST */
	const char *name; /* NAME, ATTR, FILTER, TEST */
	struct jx *a[4];  /* operands: ATTR a0; ITEM a0[a1]; SLICE a0[a1:a2:a3]; COND a0 if a1 else a2;
			     CALL/FILTER/TEST a0 = callee or subject (NULL: a filter block's body) */
	int n;            /* LIST, TUPLE, DICT (key, value, key, ...), CMP/CONCAT operands, call arguments */
	struct jx **v;
	const char **kw;  /* call arguments: the keyword of v[i], NULL when positional */
	uint8_t *ops;     /* JX_CMP: n - 1 operators */
};

enum js_kind {
	JS_TEXT, JS_PRINT, JS_IF, JS_FOR, JS_SET, JS_SETNS, JS_SETBLOCK, JS_MACRO, JS_FILTERBLOCK, JS_WITH,
	JS_BREAK, JS_CONTINUE,
};

struct js_body {
	int n;
	struct js **v;
};

struct jtarget {
	int n;
	const char **names;
	bool tuple;
};

struct jmacro_def {
	const char *name;
	int nparams;
	const char **params;
	struct jx **defaults; /* NULL where a parameter has none */
	struct js_body body;
	bool uses_varargs, uses_kwargs;
};

struct js {
	uint8_t kind;
	int line;
	const char *text; /* TEXT */
	size_t len;
	struct jx *e;          /* PRINT, IF test, FOR iterable, SET / SETNS value */
	struct jx *cond;       /* FOR ... if cond */
	bool defines_macro;    /* FOR: a macro is defined in the body, so each iteration needs its own scope */
	struct jtarget tgt;    /* FOR, SET, SETBLOCK */
	const char *ns, *attr; /* SETNS */
	struct js_body body, orelse;
	struct jx *filter;     /* SETBLOCK, FILTERBLOCK: filter chain applied to the body's text */
	struct jmacro_def *macro;
	int nwith;             /* WITH: names and values */
	const char **with_names;
	struct jx **with_vals;
};

struct jinja_tmpl {
	struct jarena arena;
	struct js_body body;
	char *name;
	size_t max_output;
	uint64_t max_steps;
	int64_t now; /* strftime_now's time; INT64_MIN: the clock */
};

/* Parses the tokens into t->body; fails through c. */
void jparse_run(struct jctx *c, struct jinja_tmpl *t, struct jtoks *toks);

/* ---- render state ---- */

struct jbuf {
	char *p;
	size_t n, cap;
};

struct jscope {
	struct jscope *parent;
	size_t n, cap;
	const char **names;
	struct jv *vals;
};

struct jrender {
	struct jctx c; /* first: a struct jrender * is a struct jctx * */
	const struct jinja_tmpl *t;
	struct jarena arena;
	struct jbuf *out; /* where output goes now (macro calls and block sets capture) */
	size_t max_output;
	uint64_t steps, max_steps;
	int depth;
	struct jscope *globals;
};

#define JR_MAX_DEPTH 300

/* jinja_value.c */
struct jv jv_undef(struct jrender *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
struct jv jv_none(void);
struct jv jv_bool(bool b);
struct jv jv_int(int64_t i);
struct jv jv_float(double f);
struct jv jv_strn(struct jctx *c, const char *p, size_t n);
struct jv jv_cstr(struct jctx *c, const char *p);
struct jv jv_str_buf(struct jctx *c, const struct jbuf *b);
struct jv jv_list_new(struct jctx *c, enum jl_kind kind, size_t cap);
void jv_list_push(struct jctx *c, struct jv list, struct jv item);
struct jv jv_tuple2(struct jctx *c, struct jv a, struct jv b);
struct jv jv_dict_new(struct jctx *c, size_t cap);
void jdict_set(struct jctx *c, struct jdict *d, struct jv k, struct jv v);
/* Python dict lookup: returns NULL when absent; an unhashable key fails through r. */
struct jv *jdict_get(struct jrender *r, const struct jdict *d, struct jv k);
struct jv *jdict_get_str(const struct jdict *d, const char *name);
bool jv_truthy(struct jv v);
bool jv_is_str(struct jv v, const char *s);
bool jv_eq(struct jv a, struct jv b);
/* Python's <, <=, >, >= (op from enum jop); unorderable types fail through r. */
bool jv_compare(struct jrender *r, int op, struct jv a, struct jv b);
/* Python's "int" / "str" / "NoneType"... for messages. */
const char *jv_type_name(struct jv v);
/* jinja2's object_type_repr: "dict object", "None", ... */
const char *jv_object_repr(struct jv v);
/* str(v) and repr(v) appended to b; values with no faithful text (generators, macros) fail through r. */
void jv_str_append(struct jrender *r, struct jbuf *b, struct jv v);
void jv_repr_append(struct jrender *r, struct jbuf *b, struct jv v);
struct jv jv_to_str(struct jrender *r, struct jv v);
/* Fails with UndefinedError's message when v is undefined. */
void jv_check_defined(struct jrender *r, struct jv v);
/* Python float.__repr__. */
void py_float_repr(double f, char *buf, size_t len);
/* A stable merge sort with Python's rule: only "<" is asked (lt may fail through r). */
void jv_sort(struct jrender *r, struct jv *v, size_t n, bool (*lt)(struct jrender *, struct jv, struct jv, void *),
	     void *ctx);
/* Items of an iterable for iteration (consumes generators); fails with Python's TypeError otherwise. */
void jv_iter(struct jrender *r, struct jv v, struct jv **items, size_t *n);
/* len(v), or fails. */
int64_t jv_len(struct jrender *r, struct jv v);
struct jv jv_from_json(struct jctx *c, const json_t *j);

/* jinja_buf helpers (jinja_value.c) */
void jbuf_put(struct jctx *c, struct jbuf *b, const char *p, size_t n, size_t max);
void jbuf_puts(struct jrender *r, struct jbuf *b, const char *s);
void jbuf_putn(struct jrender *r, struct jbuf *b, const char *p, size_t n);
void jbuf_printf(struct jrender *r, struct jbuf *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* jinja_str.c: Python str operations on UTF-8 */
uint32_t u8_decode(const char *p, size_t n, size_t *adv);
size_t u8_encode(uint32_t cp, char *out);
size_t u8_count(const char *p, size_t n);
/* Byte offset of code point index i (0 <= i <= ncp). */
size_t u8_offset(const struct jstr *s, size_t i);
void py_str_repr(struct jrender *r, struct jbuf *b, const char *p, size_t n);
void py_html_escape(struct jrender *r, struct jbuf *b, const char *p, size_t n);
struct jv py_upper(struct jrender *r, struct jv s);
struct jv py_lower(struct jrender *r, struct jv s);
struct jv py_title(struct jrender *r, struct jv s);      /* str.title */
struct jv py_capitalize(struct jrender *r, struct jv s); /* str.capitalize */
struct jv jinja_title(struct jrender *r, struct jv s);   /* the title filter */
/* str.strip family: which 1 left, 2 right, 3 both; chars NULL = whitespace. */
struct jv py_strip(struct jrender *r, struct jv s, const struct jstr *chars, int which);
/* str.split / rsplit: sep NULL = runs of whitespace; maxsplit < 0 = no limit. */
struct jv py_split(struct jrender *r, struct jv s, const struct jstr *sep, int64_t maxsplit, bool right);
struct jv py_splitlines(struct jrender *r, struct jv s, bool keepends);
struct jv py_replace(struct jrender *r, struct jv s, const struct jstr *old, const struct jstr *new_, int64_t count);
/* str.find on code points; start/end already clamped code point indices. -1 when absent. */
int64_t py_find(const struct jstr *s, const struct jstr *sub, int64_t start, int64_t end, bool right);
int64_t py_count(const struct jstr *s, const struct jstr *sub);
bool py_is_cased_upper(const struct jstr *s, bool upper);
/* Code point range [a, b) of s as a new string. */
struct jv py_substr(struct jrender *r, struct jv s, size_t a, size_t b);
bool py_isword(uint32_t cp);  /* regex \w */
bool py_isalpha(uint32_t cp); /* str.isalpha: a letter category */

/* jinja_format.c: Python's fmt % args (args a tuple, a mapping or one value). */
struct jv py_percent_format(struct jrender *r, struct jv fmt, struct jv args);

/* jinja_json.c */
/* Python json.dumps(v, ensure_ascii, indent, separators, sort_keys); indent NULL = None. */
void jjson_dump(struct jrender *r, struct jbuf *b, struct jv v, bool ensure_ascii, const char *indent,
		const char *item_sep, const char *key_sep, bool sort_keys);

/* jinja_eval.c */
struct jv jeval(struct jrender *r, struct jscope *s, const struct jx *e);
struct jv jeval_getattr(struct jrender *r, struct jv obj, const char *name);
struct jv jeval_getitem(struct jrender *r, struct jv obj, struct jv key);
struct jv jeval_binop(struct jrender *r, int op, struct jv a, struct jv b);
/* A filter chain whose innermost subject is missing (filter blocks, block set): applies it to subject. */
struct jv jeval_filter_on(struct jrender *r, struct jscope *s, const struct jx *e, struct jv subject);
bool jeval_contains(struct jrender *r, struct jv container, struct jv item);
struct jscope *jscope_new(struct jrender *r, struct jscope *parent);
void jscope_set(struct jrender *r, struct jscope *s, const char *name, struct jv v);
struct jv jscope_get(struct jrender *r, struct jscope *s, const char *name);
void jstep(struct jrender *r);

/* jinja_exec.c */
void jexec_body(struct jrender *r, struct jscope *s, const struct js_body *b);
/* Calls a macro with bound arguments; returns its output as a string. */
struct jv jexec_macro(struct jrender *r, struct jv m, int npos, const struct jv *pos, int nkw, const char **kwn,
		      const struct jv *kwv);

/* jinja_filters.c: filters and tests by name; jfilter_find / jtest_find return -1 when unknown and set
 * *supported false when jinja2 has it but ferry does not. */
int jfilter_find(const char *name, bool *known_unsupported);
int jtest_find(const char *name, bool *known_unsupported);
struct jv jfilter_apply(struct jrender *r, int fid, struct jv v, int npos, const struct jv *pos, int nkw,
			const char **kwn, const struct jv *kwv);
/* Tests take positional arguments only; nkw > 0 fails. */
bool jtest_apply(struct jrender *r, int tid, struct jv v, int npos, const struct jv *pos, int nkw);

/* jinja_methods.c: globals (range, namespace, ...) and methods of str, dict and list. */
bool jglobal_find(struct jrender *r, const char *name, struct jv *out);
/* The attribute name of v if it is a method: a bound JV_FUNC (or an unsafe undefined); false otherwise. */
bool jmethod_find(struct jrender *r, struct jv v, const char *name, struct jv *out);
struct jv jfunc_call(struct jrender *r, struct jv f, int npos, const struct jv *pos, int nkw, const char **kwn,
		     const struct jv *kwv);

/* Argument binding shared by filters, tests, methods and globals: fills out[nparams] (JV_MISSING where
 * not given) from positional and keyword arguments; too many or unknown ones fail naming what. */
void jargs_bind(struct jrender *r, const char *what, int nparams, const char *const *params, int npos,
		const struct jv *pos, int nkw, const char **kwn, const struct jv *kwv, struct jv *out);

#endif
