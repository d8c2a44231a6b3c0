/*
 * jinja.c: the public entry points (jinja.h): parse = check UTF-8, normalize newlines and drop one trailing
 * newline as jinja2 does (keep_trailing_newline=False), lex, parse; render = a fresh arena, the variables
 * as the outermost scope, run, copy the output out. Errors raised anywhere below unwind here (longjmp) and
 * leave one line in err.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

#include "jinja_internal.h"

#define PARSE_ARENA_LIMIT ((size_t)256 << 20)

static void set_err(char *err, size_t errlen, const char *msg)
{
	if (errlen)
		snprintf(err, errlen, "%s", msg);
}

/* Index of the first byte that is not valid UTF-8 (n when all are), surrogates and overlongs included. */
static size_t utf8_invalid_at(const unsigned char *s, size_t n)
{
	size_t i = 0;
	while (i < n) {
		unsigned char c = s[i];
		size_t k;
		uint32_t cp, min;
		if (c < 0x80) {
			i++;
			continue;
		} else if ((c & 0xe0) == 0xc0) {
			k = 1, cp = c & 0x1f, min = 0x80;
		} else if ((c & 0xf0) == 0xe0) {
			k = 2, cp = c & 0x0f, min = 0x800;
		} else if ((c & 0xf8) == 0xf0) {
			k = 3, cp = c & 0x07, min = 0x10000;
		} else {
			return i;
		}
		if (i + k >= n)
			return i;
		for (size_t j = 1; j <= k; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + j] & 0x3f);
		}
		if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += k + 1;
	}
	return n;
}

int jinja_parse(struct jinja_tmpl **out, const char *src, size_t len, const char *name, char *err, size_t errlen)
{
	*out = NULL;
	if (!name)
		name = "template";
	size_t bad = utf8_invalid_at((const unsigned char *)src, len);
	if (bad < len) {
		if (errlen)
			snprintf(err, errlen, "%s: not valid UTF-8 at byte %zu", name, bad);
		return -EINVAL;
	}
	struct jinja_tmpl *t = calloc(1, sizeof(*t));
	if (!t || !(t->name = strdup(name))) {
		free(t);
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	t->arena.limit = PARSE_ARENA_LIMIT;
	t->max_output = (size_t)64 << 20;
	t->max_steps = 200000000;
	t->now = INT64_MIN;
	struct jctx c = {.err = err, .errlen = errlen, .name = t->name, .arena = &t->arena, .line = 1};
	char scratch[1];
	if (!errlen) { /* jx_fail always has somewhere to write */
		c.err = scratch;
		c.errlen = sizeof(scratch);
	}
	if (setjmp(c.jb)) {
		jinja_free(t);
		return -EINVAL;
	}
	/* "\r\n" and "\r" become "\n"; one trailing newline goes. */
	char *s = jx_alloc(&c, len + 1);
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\r') {
			s[n++] = '\n';
			if (i + 1 < len && src[i + 1] == '\n')
				i++;
		} else {
			s[n++] = src[i];
		}
	}
	if (n && s[n - 1] == '\n')
		n--;
	s[n] = 0;
	struct jtoks toks = {0};
	jlex_run(&c, s, n, &toks);
	jparse_run(&c, t, &toks);
	*out = t;
	return 0;
}

int jinja_render(const struct jinja_tmpl *t, const json_t *vars, char **out, size_t *out_len, char *err, size_t errlen)
{
	*out = NULL;
	if (out_len)
		*out_len = 0;
	if (vars && !json_is_object(vars)) {
		if (errlen)
			snprintf(err, errlen, "%s: the variables must be a JSON object", t->name);
		return -EINVAL;
	}
	/* On the heap: its fields change between setjmp and longjmp, and only the pointer must stay put. */
	struct jrender *r = calloc(1, sizeof(*r));
	if (!r) {
		set_err(err, errlen, "out of memory");
		return -ENOMEM;
	}
	char scratch[1];
	r->c.err = errlen ? err : scratch;
	r->c.errlen = errlen ? errlen : sizeof(scratch);
	r->c.name = t->name;
	r->c.arena = &r->arena;
	r->c.line = 1;
	r->t = t;
	r->arena.limit = t->max_output > SIZE_MAX / 8 ? SIZE_MAX : t->max_output * 8;
	if (r->arena.limit < ((size_t)64 << 20))
		r->arena.limit = (size_t)64 << 20;
	r->max_output = t->max_output;
	r->max_steps = t->max_steps;
	if (setjmp(r->c.jb)) {
		ja_free(&r->arena);
		free(r);
		return -EINVAL;
	}
	struct jscope *top = jscope_new(r, NULL);
	if (vars) {
		const char *k;
		json_t *v;
		json_object_foreach((json_t *)vars, k, v)
			jscope_set(r, top, jx_strndup(&r->c, k, strlen(k)), jv_from_json(&r->c, v));
	}
	struct jbuf *buf = jx_alloc(&r->c, sizeof(*buf));
	memset(buf, 0, sizeof(*buf));
	r->out = buf;
	jexec_body(r, jscope_new(r, top), &t->body);
	char *p = malloc(buf->n + 1);
	int rc = 0;
	if (p) {
		if (buf->n)
			memcpy(p, buf->p, buf->n);
		p[buf->n] = 0;
		*out = p;
		if (out_len)
			*out_len = buf->n;
	} else {
		set_err(err, errlen, "out of memory");
		rc = -ENOMEM;
	}
	ja_free(&r->arena);
	free(r);
	return rc;
}

void jinja_free(struct jinja_tmpl *t)
{
	if (!t)
		return;
	ja_free(&t->arena);
	free(t->name);
	free(t);
}

void jinja_set_now(struct jinja_tmpl *t, int64_t unix_seconds)
{
	t->now = unix_seconds;
}

void jinja_set_limits(struct jinja_tmpl *t, size_t max_output, uint64_t max_steps)
{
	t->max_output = max_output;
	t->max_steps = max_steps;
}
