/*
 * jinja_json.c: the tojson filter as HF defines it, Python's json.dumps(x, ensure_ascii, indent,
 * separators, sort_keys): its separators (", " / ": ", or "," with an indent), float repr with NaN and
 * Infinity, dict keys coerced from int/float/bool/None, sorted keys compared like Python, the escapes of
 * encode_basestring(_ascii), and TypeError for anything else (Undefined, generators, namespaces).
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jinja_internal.h"

struct dumper {
	struct jrender *r;
	struct jbuf *b;
	bool ascii;
	const char *indent;
	const char *item_sep, *key_sep;
	bool sort_keys;
};

static void dump_string(struct dumper *d, const char *p, size_t n)
{
	struct jrender *r = d->r;
	jbuf_puts(r, d->b, "\"");
	size_t run = 0;
	for (size_t i = 0; i < n;) {
		size_t adv;
		uint32_t cp = u8_decode(p + i, n - i, &adv);
		char tmp[16];
		const char *esc = NULL;
		switch (cp) {
		case '"': esc = "\\\""; break;
		case '\\': esc = "\\\\"; break;
		case '\n': esc = "\\n"; break;
		case '\r': esc = "\\r"; break;
		case '\t': esc = "\\t"; break;
		case '\b': esc = "\\b"; break;
		case '\f': esc = "\\f"; break;
		default:
			if (cp < 0x20 || (d->ascii && cp >= 0x7f)) {
				if (cp >= 0x10000) {
					uint32_t v = cp - 0x10000;
					snprintf(tmp, sizeof(tmp), "\\u%04x\\u%04x", 0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
				} else {
					snprintf(tmp, sizeof(tmp), "\\u%04x", cp);
				}
				esc = tmp;
			}
		}
		if (esc) {
			jbuf_putn(r, d->b, p + i - run, run);
			run = 0;
			jbuf_puts(r, d->b, esc);
		} else {
			run += adv;
		}
		i += adv;
	}
	jbuf_putn(r, d->b, p + n - run, run);
	jbuf_puts(r, d->b, "\"");
}

static void dump_float(struct dumper *d, double f)
{
	char tmp[48];
	if (isnan(f))
		snprintf(tmp, sizeof(tmp), "NaN");
	else if (isinf(f))
		snprintf(tmp, sizeof(tmp), f < 0 ? "-Infinity" : "Infinity");
	else
		py_float_repr(f, tmp, sizeof(tmp));
	jbuf_puts(d->r, d->b, tmp);
}

static void newline_indent(struct dumper *d, int level)
{
	jbuf_puts(d->r, d->b, "\n");
	for (int i = 0; i < level; i++)
		jbuf_puts(d->r, d->b, d->indent);
}

static void dump(struct dumper *d, struct jv v, int level);

static void item_separator(struct dumper *d, int level)
{
	jbuf_puts(d->r, d->b, d->item_sep);
	if (d->indent)
		newline_indent(d, level);
}

static void dump_key(struct dumper *d, struct jv k)
{
	char tmp[48];
	switch (k.t) {
	case JV_STR: dump_string(d, k.s->p, k.s->n); return;
	case JV_BOOL: dump_string(d, k.b ? "true" : "false", k.b ? 4 : 5); return;
	case JV_NONE: dump_string(d, "null", 4); return;
	case JV_INT: snprintf(tmp, sizeof(tmp), "%" PRId64, k.i); break;
	case JV_FLOAT:
		if (isnan(k.f))
			snprintf(tmp, sizeof(tmp), "NaN");
		else if (isinf(k.f))
			snprintf(tmp, sizeof(tmp), k.f < 0 ? "-Infinity" : "Infinity");
		else
			py_float_repr(k.f, tmp, sizeof(tmp));
		break;
	default:
		jx_fail(&d->r->c, 0, "keys must be str, int, float, bool or None, not %s", jv_type_name(k));
	}
	dump_string(d, tmp, strlen(tmp));
}

static bool key_lt(struct jrender *r, struct jv a, struct jv b, void *ctx)
{
	(void)ctx;
	return jv_compare(r, OP_LT, a, b);
}

static void dump_dict(struct dumper *d, const struct jdict *m, int level)
{
	struct jrender *r = d->r;
	if (!m->n) {
		jbuf_puts(r, d->b, "{}");
		return;
	}
	size_t *order = jx_alloc(&r->c, m->n * sizeof(*order));
	for (size_t i = 0; i < m->n; i++)
		order[i] = i;
	if (d->sort_keys) {
		/* Sort (key, index) tuples: keys are unique, so the index only carries the position. */
		struct jv *pairs = jx_alloc(&r->c, m->n * sizeof(*pairs));
		for (size_t i = 0; i < m->n; i++)
			pairs[i] = jv_tuple2(&r->c, m->k[i], jv_int((int64_t)i));
		jv_sort(r, pairs, m->n, key_lt, NULL);
		for (size_t i = 0; i < m->n; i++)
			order[i] = (size_t)pairs[i].l->v[1].i;
	}
	jbuf_puts(r, d->b, "{");
	if (d->indent)
		newline_indent(d, level + 1);
	for (size_t k = 0; k < m->n; k++) {
		size_t i = order[k];
		if (k)
			item_separator(d, level + 1);
		dump_key(d, m->k[i]);
		jbuf_puts(r, d->b, d->key_sep);
		dump(d, m->v[i], level + 1);
	}
	if (d->indent)
		newline_indent(d, level);
	jbuf_puts(r, d->b, "}");
}

static void dump(struct dumper *d, struct jv v, int level)
{
	struct jrender *r = d->r;
	if (++r->depth > JR_MAX_DEPTH)
		jx_fail(&r->c, 0, "tojson: nesting deeper than %d levels", JR_MAX_DEPTH);
	switch (v.t) {
	case JV_NONE: jbuf_puts(r, d->b, "null"); break;
	case JV_BOOL: jbuf_puts(r, d->b, v.b ? "true" : "false"); break;
	case JV_INT: jbuf_printf(r, d->b, "%" PRId64, v.i); break;
	case JV_FLOAT: dump_float(d, v.f); break;
	case JV_STR: dump_string(d, v.s->p, v.s->n); break;
	case JV_DICT: dump_dict(d, v.d, level); break;
	case JV_LIST:
		if (v.kind == JL_LIST || v.kind == JL_TUPLE) {
			if (!v.l->n) {
				jbuf_puts(r, d->b, "[]");
				break;
			}
			jbuf_puts(r, d->b, "[");
			if (d->indent)
				newline_indent(d, level + 1);
			for (size_t i = 0; i < v.l->n; i++) {
				if (i)
					item_separator(d, level + 1);
				dump(d, v.l->v[i], level + 1);
			}
			if (d->indent)
				newline_indent(d, level);
			jbuf_puts(r, d->b, "]");
			break;
		}
		/* fall through */
	default: jx_fail(&r->c, 0, "Object of type %s is not JSON serializable", jv_type_name(v));
	}
	r->depth--;
}

void jjson_dump(struct jrender *r, struct jbuf *b, struct jv v, bool ensure_ascii, const char *indent,
		const char *item_sep, const char *key_sep, bool sort_keys)
{
	struct dumper d = {.r = r, .b = b, .ascii = ensure_ascii, .indent = indent, .sort_keys = sort_keys};
	d.item_sep = item_sep ? item_sep : indent ? "," : ", ";
	d.key_sep = key_sep ? key_sep : ": ";
	dump(&d, v, 0);
}
