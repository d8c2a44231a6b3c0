/*
 * schema.c: JSON schema -> GBNF (grammar.h says which keywords). Every schema node becomes a rule of its
 * own, written after the rules it uses; a $ref target gets its rule name before its body is made, so
 * recursive definitions end. Every value rule ends with optional whitespace (ws), so rules concatenate.
 * Properties come in the order of "properties", required ones always, optional ones as they like: the
 * rule "after k" (a property already written) is a run of optional ", name: value" parts, "from k"
 * (none written yet) chooses the first property written. Only the schema's own properties are produced
 * (additional ones would be valid but are never needed); an object without properties takes any keys
 * with values of additionalProperties.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"

/* The JSON grammar the rules build on (RFC 8259 values; whitespace bounded so a model cannot loop on it). */
static const char JSON_BASE[] =
	"ws ::= [ \\t\\n]{0,20}\n"
	"json-char ::= [^\"\\\\\\x00-\\x1f] | \"\\\\\" ([\"\\\\/bfnrt] | \"u\" [0-9a-fA-F]{4})\n"
	"json-string ::= \"\\\"\" json-char* \"\\\"\" ws\n"
	"json-int ::= \"-\"? (\"0\" | [1-9] [0-9]{0,15})\n"
	"json-integer ::= json-int ws\n"
	"json-number ::= json-int (\".\" [0-9]{1,16})? ([eE] [-+]? [0-9]{1,3})? ws\n"
	"json-boolean ::= (\"true\" | \"false\") ws\n"
	"json-null ::= \"null\" ws\n"
	"json-value ::= json-object | json-array | json-string | json-number | json-boolean | json-null\n"
	"json-object ::= \"{\" ws (json-string \":\" ws json-value (\",\" ws json-string \":\" ws json-value)*)? \"}\" ws\n"
	"json-array ::= \"[\" ws (json-value (\",\" ws json-value)*)? \"]\" ws\n";

/* Keywords that only annotate (ignored) and those ferry enforces; anything else that validates is refused. */
static const char *const KNOWN[] = {"type", "properties", "required", "additionalProperties", "items", "minItems",
				    "maxItems", "minLength", "maxLength", "enum", "const", "anyOf", "oneOf", "$ref",
				    "$defs", "definitions", "title", "description", "default", "examples", "$schema",
				    "$id", "$comment", "format", "readOnly", "writeOnly", "deprecated", "strict",
				    "nullable", "contentMediaType", "contentEncoding", NULL};

struct sx {
	FILE *f;
	const json_t *root;
	json_t *refs; /* ref string -> rule name */
	int n;
	int depth;
	char *err;
	size_t errlen;
	int rc;
};

static int fail(struct sx *x, const char *path, const char *fmt, ...)
{
	if (x->rc)
		return x->rc;
	va_list ap;
	int n = snprintf(x->err, x->errlen, "schema at #%s: ", path);
	va_start(ap, fmt);
	if (n >= 0 && (size_t)n < x->errlen)
		vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	for (char *c = x->err; *c; c++) /* one line, whatever keys the schema has */
		*c = (unsigned char)*c < 0x20 ? '?' : *c;
	return x->rc = -EINVAL;
}

/* A GBNF literal of bytes p[0..n). */
static void lit(FILE *f, const char *p, size_t n)
{
	fputc('"', f);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20 || c == 0x7f)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* A JSON value exactly (const, enum): scalars as literals, objects and arrays item by item with
 * whitespace allowed between them. */
static int lit_json(struct sx *x, const json_t *v, const char *path)
{
	const char *key;
	const json_t *e;
	size_t i;
	if (json_is_object(v) || json_is_array(v)) {
		bool obj = json_is_object(v);
		fprintf(x->f, obj ? "(\"{\" ws" : "(\"[\" ws");
		i = 0;
		if (obj) {
			json_object_foreach((json_t *)v, key, e) {
				json_t *k = json_string(key);
				fprintf(x->f, i++ ? " \",\" ws " : " ");
				lit_json(x, k, path);
				json_decref(k);
				fprintf(x->f, " ws \":\" ws ");
				lit_json(x, e, path);
				fprintf(x->f, " ws");
			}
		} else {
			json_array_foreach(v, i, e) {
				fprintf(x->f, i ? " \",\" ws " : " ");
				lit_json(x, e, path);
				fprintf(x->f, " ws");
			}
		}
		fprintf(x->f, obj ? " \"}\")" : " \"]\")");
		return x->rc;
	}
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!s)
		return fail(x, path, "a value that cannot be written as JSON");
	lit(x->f, s, strlen(s));
	free(s);
	return 0;
}

static void rule_name(struct sx *x, char *name)
{
	snprintf(name, 32, "s%d", x->n++);
}

static int gen(struct sx *x, const json_t *s, const char *path, char *name);

/* The rule of a $ref ("#", "#/$defs/NAME", "#/definitions/NAME"; JSON-pointer ~0 ~1 escapes). */
static int gen_ref(struct sx *x, const char *ref, const char *path, char *name)
{
	const json_t *r = json_object_get(x->refs, ref);
	if (r) {
		snprintf(name, 32, "%s", json_string_value(r));
		return 0;
	}
	const json_t *t = x->root;
	const char *p = ref;
	if (p[0] != '#')
		return fail(x, path, "$ref '%s' is not local (only #/$defs/... and #/definitions/... are)", ref);
	for (p++; *p == '/';) {
		const char *e = strchr(p + 1, '/');
		size_t n = e ? (size_t)(e - p - 1) : strlen(p + 1);
		char key[256];
		size_t k = 0;
		for (size_t i = 0; i < n && k + 1 < sizeof(key); i++) {
			char c = p[1 + i];
			if (c == '~' && i + 1 < n && (p[2 + i] == '0' || p[2 + i] == '1'))
				c = p[2 + i++] == '0' ? '~' : '/';
			key[k++] = c;
		}
		key[k] = 0;
		t = json_is_object(t) ? json_object_get(t, key) : NULL;
		p += 1 + n;
	}
	if (*p || !t)
		return fail(x, path, "$ref '%s' names nothing in the schema", ref);
	rule_name(x, name);
	json_object_set_new(x->refs, ref, json_string(name));
	char body[32];
	if (gen(x, t, ref + 1, body))
		return x->rc;
	fprintf(x->f, "%s ::= %s\n", name, body);
	return 0;
}

/* Rules for each schema of list (anyOf / oneOf), then name ::= one of them. */
static int gen_alts(struct sx *x, const json_t *list, const char *kw, const char *path, char *name)
{
	size_t n = json_array_size(list), i;
	const json_t *e;
	if (!json_is_array(list) || !n)
		return fail(x, path, "'%s' must be a non-empty list of schemas", kw);
	char (*names)[32] = calloc(n, 32);
	if (!names)
		return x->rc = -ENOMEM;
	json_array_foreach(list, i, e) {
		char sub[512];
		snprintf(sub, sizeof(sub), "%s/%s/%zu", path, kw, i);
		if (gen(x, e, sub, names[i]))
			break;
	}
	if (!x->rc) {
		rule_name(x, name);
		fprintf(x->f, "%s ::= ", name);
		for (i = 0; i < n; i++)
			fprintf(x->f, "%s%s", i ? " | " : "", names[i]);
		fputc('\n', x->f);
	}
	free(names);
	return x->rc;
}

static long count(struct sx *x, const json_t *s, const char *kw, const char *path, long def)
{
	const json_t *v = json_object_get(s, kw);
	if (!v)
		return def;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 10000)
		return fail(x, path, "'%s' must be an integer in [0, 10000]", kw), def;
	return (long)json_integer_value(v);
}

/* {m,n} of GBNF (n < 0: unbounded). */
static void reps(FILE *f, long lo, long hi)
{
	if (hi < 0)
		fprintf(f, "{%ld,}", lo);
	else
		fprintf(f, "{%ld,%ld}", lo, hi);
}

static int gen_object(struct sx *x, const json_t *s, const char *path, char *name)
{
	const json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
	const json_t *add = json_object_get(s, "additionalProperties");
	if (props && !json_is_object(props))
		return fail(x, path, "'properties' must be an object");
	if (req && !json_is_array(req))
		return fail(x, path, "'required' must be a list of property names");
	size_t i;
	const json_t *e;
	json_array_foreach(req, i, e)
		if (!json_is_string(e) || !json_object_get(props, json_string_value(e)))
			return fail(x, path, "'required'[%zu] is not one of 'properties'", i);
	size_t n = json_object_size(props);
	if (!n) {
		char val[32] = "json-value";
		if (json_is_object(add) && gen(x, add, path, val))
			return x->rc;
		rule_name(x, name);
		if (json_is_false(add))
			fprintf(x->f, "%s ::= \"{\" ws \"}\" ws\n", name);
		else
			fprintf(x->f, "%s ::= \"{\" ws (json-string \":\" ws %s (\",\" ws json-string \":\" ws %s)*)? \"}\" ws\n",
				name, val, val);
		return 0;
	}
	char (*kv)[32] = calloc(n, 32);
	bool *need = calloc(n, sizeof(bool));
	if (!kv || !need) {
		free(kv);
		free(need);
		return x->rc = -ENOMEM;
	}
	const char *key;
	const json_t *ps;
	size_t k = 0;
	json_object_foreach((json_t *)props, key, ps) {
		char sub[512], val[32];
		snprintf(sub, sizeof(sub), "%s/properties/%s", path, key);
		if (gen(x, ps, sub, val))
			break;
		json_array_foreach(req, i, e)
			need[k] = need[k] || !strcmp(json_string_value(e), key);
		rule_name(x, kv[k]);
		fprintf(x->f, "%s ::= ", kv[k]);
		json_t *ks = json_string(key);
		lit_json(x, ks, sub);
		json_decref(ks);
		fprintf(x->f, " ws \":\" ws %s\n", val);
		k++;
	}
	if (!x->rc) {
		char base[32];
		rule_name(x, base);
		/* after-k: the properties k.. once one is written; from-k: none written yet */
		for (k = n; k-- > 0;) {
			fprintf(x->f, "%s-a%zu ::= %s\",\" ws %s%s", base, k, need[k] ? "" : "(", kv[k], need[k] ? "" : ")?");
			if (k + 1 < n)
				fprintf(x->f, " %s-a%zu", base, k + 1);
			fprintf(x->f, "\n%s-f%zu ::= %s", base, k, kv[k]);
			if (k + 1 < n)
				fprintf(x->f, " %s-a%zu", base, k + 1);
			if (!need[k])
				fprintf(x->f, k + 1 < n ? " | %s-f%zu" : " | ", base, k + 1);
			fputc('\n', x->f);
		}
		rule_name(x, name);
		fprintf(x->f, "%s ::= \"{\" ws %s-f0 \"}\" ws\n", name, base);
	}
	free(kv);
	free(need);
	return x->rc;
}

static int gen_array(struct sx *x, const json_t *s, const char *path, char *name)
{
	const json_t *items = json_object_get(s, "items");
	char it[32] = "json-value", sub[512];
	snprintf(sub, sizeof(sub), "%s/items", path);
	if (items && !json_is_object(items) && !json_is_boolean(items))
		return fail(x, path, "'items' must be a schema (tuples, a list of schemas, are not supported)");
	if (items && gen(x, items, sub, it))
		return x->rc;
	long lo = count(x, s, "minItems", path, 0), hi = count(x, s, "maxItems", path, -1);
	if (x->rc)
		return x->rc;
	if (hi >= 0 && hi < lo)
		return fail(x, path, "maxItems %ld < minItems %ld", hi, lo);
	rule_name(x, name);
	fprintf(x->f, "%s ::= \"[\" ws ", name);
	if (hi == 0) {
		fprintf(x->f, "\"]\" ws\n");
		return 0;
	}
	fprintf(x->f, lo ? "%s (\",\" ws %s)" : "(%s (\",\" ws %s)", it, it);
	reps(x->f, lo ? lo - 1 : 0, hi < 0 ? -1 : hi - 1);
	fprintf(x->f, lo ? " \"]\" ws\n" : ")? \"]\" ws\n");
	return 0;
}

static int gen_string(struct sx *x, const json_t *s, const char *path, char *name)
{
	long lo = count(x, s, "minLength", path, 0), hi = count(x, s, "maxLength", path, -1);
	if (x->rc)
		return x->rc;
	if (hi >= 0 && hi < lo)
		return fail(x, path, "maxLength %ld < minLength %ld", hi, lo);
	if (!lo && hi < 0) {
		snprintf(name, 32, "json-string");
		return 0;
	}
	rule_name(x, name);
	fprintf(x->f, "%s ::= \"\\\"\" json-char", name);
	reps(x->f, lo, hi);
	fprintf(x->f, " \"\\\"\" ws\n");
	return 0;
}

/* The rule of one type name. */
static int gen_type(struct sx *x, const json_t *s, const char *type, const char *path, char *name)
{
	if (!strcmp(type, "object"))
		return gen_object(x, s, path, name);
	if (!strcmp(type, "array"))
		return gen_array(x, s, path, name);
	if (!strcmp(type, "string"))
		return gen_string(x, s, path, name);
	static const char *const prim[] = {"number", "integer", "boolean", "null"};
	for (size_t i = 0; i < 4; i++)
		if (!strcmp(type, prim[i])) {
			snprintf(name, 32, "json-%s", type);
			return 0;
		}
	return fail(x, path, "unknown type '%s'", type);
}

static int gen(struct sx *x, const json_t *s, const char *path, char *name)
{
	if (x->rc)
		return x->rc;
	if (++x->depth > 64) {
		x->depth--;
		return fail(x, path, "nested too deep (over 64 levels)");
	}
	int rc = 0;
	const char *key;
	const json_t *v;
	if (json_is_true(s) || (json_is_object(s) && !json_object_size(s))) {
		snprintf(name, 32, "json-value");
		goto out;
	}
	if (!json_is_object(s)) {
		rc = fail(x, path, json_is_false(s) ? "the schema false admits no value" : "a schema must be an object");
		goto out;
	}
	json_object_foreach((json_t *)s, key, v) {
		size_t i = 0;
		while (KNOWN[i] && strcmp(KNOWN[i], key))
			i++;
		if (!KNOWN[i]) {
			rc = fail(x, path, "keyword '%s' is not supported by constrained decoding", key);
			goto out;
		}
	}
	const json_t *t = json_object_get(s, "type");
	if ((v = json_object_get(s, "$ref"))) {
		rc = json_is_string(v) ? gen_ref(x, json_string_value(v), path, name) : fail(x, path, "'$ref' must be a string");
	} else if ((v = json_object_get(s, "const"))) {
		rule_name(x, name);
		fprintf(x->f, "%s ::= ", name);
		rc = lit_json(x, v, path);
		fprintf(x->f, " ws\n");
	} else if ((v = json_object_get(s, "enum"))) {
		size_t i;
		const json_t *e;
		if (!json_is_array(v) || !json_array_size(v)) {
			rc = fail(x, path, "'enum' must be a non-empty list");
			goto out;
		}
		rule_name(x, name);
		fprintf(x->f, "%s ::= (", name);
		json_array_foreach(v, i, e) {
			if (i)
				fprintf(x->f, " | ");
			lit_json(x, e, path);
		}
		fprintf(x->f, ") ws\n");
		rc = x->rc;
	} else if ((v = json_object_get(s, "anyOf")) || (v = json_object_get(s, "oneOf"))) {
		rc = gen_alts(x, v, json_object_get(s, "anyOf") ? "anyOf" : "oneOf", path, name);
	} else if (json_is_string(t)) {
		rc = gen_type(x, s, json_string_value(t), path, name);
	} else if (json_is_array(t) && json_array_size(t)) {
		size_t i, n = json_array_size(t);
		const json_t *e;
		char (*names)[32] = calloc(n, 32);
		if (!names) {
			rc = x->rc = -ENOMEM;
			goto out;
		}
		json_array_foreach(t, i, e)
			if (!json_is_string(e) || gen_type(x, s, json_string_value(e), path, names[i])) {
				fail(x, path, "'type' must be a type name or a list of them");
				break;
			}
		if (!x->rc) {
			rule_name(x, name);
			fprintf(x->f, "%s ::= ", name);
			for (i = 0; i < n; i++)
				fprintf(x->f, "%s%s", i ? " | " : "", names[i]);
			fputc('\n', x->f);
		}
		free(names);
		rc = x->rc;
	} else if (t) {
		rc = fail(x, path, "'type' must be a type name or a list of them");
	} else if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
		   json_object_get(s, "required")) {
		rc = gen_object(x, s, path, name);
	} else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems")) {
		rc = gen_array(x, s, path, name);
	} else {
		snprintf(name, 32, "json-value");
	}
out:
	x->depth--;
	return rc ? rc : x->rc;
}

int gram_schema_gbnf(const json_t *schema, const char *name, bool root, FILE *f, char *err, size_t errlen)
{
	struct sx x = {.f = f, .root = schema, .refs = json_object(), .err = err, .errlen = errlen};
	char top[32];
	if (!x.refs)
		return -ENOMEM;
	int rc = gen(&x, schema, "", top);
	json_decref(x.refs);
	if (rc)
		return rc;
	fprintf(f, "%s ::= %s\n", name, top);
	if (root)
		fprintf(f, "root ::= ws %s\n", name);
	fputs(JSON_BASE, f);
	return ferror(f) ? -EIO : 0;
}

int gram_from_schema(const json_t *schema, struct gram **out, char *err, size_t errlen)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	json_t *any = schema ? NULL : json_pack("{s:s}", "type", "object");
	int rc = gram_schema_gbnf(schema ? schema : any, "value", true, f, err, errlen);
	json_decref(any);
	if (fclose(f) && !rc)
		rc = -ENOMEM;
	if (!rc) {
		rc = gram_parse(text, out, err, errlen);
		if (rc == -EINVAL) /* a grammar ferry wrote: the schema's fault only through $ref cycles */
			snprintf(err, errlen, "schema: $ref definitions that refer to themselves before any value starts");
	}
	free(text);
	return rc;
}
