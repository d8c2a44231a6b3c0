/* structured.c: see structured.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "serve/request.h"
#include "serve/structured.h"

static const char *const MARKERS[] = {"<tool_call>", "[TOOL_CALLS]", "<|python_tag|>"};
#define N_MARKERS 3

static int bad(char *param, const char *field, char *msg, size_t msglen, const char *text)
{
	snprintf(param, REQ_PARAM_LEN, "%s", field);
	snprintf(msg, msglen, "%s", text);
	return -EINVAL;
}

enum tool_fmt tool_fmt_of(const struct tokenizer *tk)
{
	if (tokenizer_find(tk, "<tool_call>") >= 0)
		return TOOL_FMT_HERMES;
	if (tokenizer_find(tk, "[TOOL_CALLS]") >= 0)
		return TOOL_FMT_MISTRAL;
	return TOOL_FMT_LLAMA;
}

static const char *fn_name(const json_t *tool)
{
	return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

int req_tools_parse(const json_t *o, bool chat, struct req_tools *t, char *param, char *msg, size_t msglen)
{
	const json_t *tools = json_object_get(o, "tools"), *tc = json_object_get(o, "tool_choice");
	size_t i;
	const json_t *e;
	memset(t, 0, sizeof(*t));
	bool has = tools && !json_is_null(tools) && !(json_is_array(tools) && !json_array_size(tools));
	if (has && !chat)
		return bad(param, "tools", msg, msglen, "'tools' is for /v1/chat/completions");
	if (has && !json_is_array(tools))
		return bad(param, "tools", msg, msglen, "'tools' must be a list of {\"type\": \"function\", \"function\": {...}}");
	json_array_foreach(has ? tools : NULL, i, e) {
		const json_t *f = json_object_get(e, "function"), *p = json_object_get(f, "parameters");
		if (!json_is_string(json_object_get(e, "type")) || strcmp(json_string_value(json_object_get(e, "type")), "function") ||
		    !json_is_string(json_object_get(f, "name")) || !json_string_length(json_object_get(f, "name")) ||
		    (p && !json_is_object(p))) {
			snprintf(param, REQ_PARAM_LEN, "tools[%zu]", i);
			snprintf(msg, msglen, "'tools[%zu]' must be {\"type\": \"function\", \"function\": {\"name\": a string, "
				 "\"parameters\": a JSON schema}}", i);
			return -EINVAL;
		}
	}
	const char *choice = json_is_string(tc) ? json_string_value(tc) : NULL;
	if (tc && !json_is_null(tc)) {
		if (json_is_object(tc)) {
			const char *nm = fn_name(tc);
			json_array_foreach(has ? tools : NULL, i, e)
				if (nm && !strcmp(fn_name(e), nm))
					t->name = fn_name(e);
			if (!t->name)
				return bad(param, "tool_choice", msg, msglen,
					   "'tool_choice' names a function that is not one of 'tools'");
			t->required = true;
		} else if (!choice || (strcmp(choice, "auto") && strcmp(choice, "none") && strcmp(choice, "required"))) {
			return bad(param, "tool_choice", msg, msglen,
				   "'tool_choice' must be \"auto\", \"none\", \"required\" or {\"type\": \"function\", "
				   "\"function\": {\"name\"}}");
		} else if (!strcmp(choice, "required")) {
			if (!has)
				return bad(param, "tool_choice", msg, msglen, "'tool_choice' \"required\" needs 'tools'");
			t->required = true;
		}
	}
	if (has && !(choice && !strcmp(choice, "none")))
		t->tools = json_incref((json_t *)tools);
	return 0;
}

void req_tools_free(struct req_tools *t)
{
	json_decref(t->tools);
	memset(t, 0, sizeof(*t));
}

/* The GBNF of the tool calls tool_choice requires, in the model's format. */
static int tools_gbnf(const struct req_tools *t, enum tool_fmt fmt, FILE *f, char *msg, size_t msglen)
{
	json_t *any = json_array();
	size_t i;
	const json_t *e;
	json_array_foreach(t->tools, i, e) {
		const char *nm = fn_name(e);
		if (t->name && strcmp(nm, t->name))
			continue;
		json_t *p = json_object_get(json_object_get(e, "function"), "parameters");
		const char *key = fmt == TOOL_FMT_LLAMA ? "parameters" : "arguments";
		json_array_append_new(any, json_pack("{s:s, s:{s:{s:s}, s:O}, s:[s, s], s:b}", "type", "object", "properties",
						     "name", "const", nm, key, p ? p : json_pack("{s:s}", "type", "object"),
						     "required", "name", key, "additionalProperties", 0));
	}
	json_t *schema = json_pack("{s:o}", "anyOf", any);
	int rc = schema ? gram_schema_gbnf(schema, "call", false, f, msg, msglen) : -ENOMEM;
	json_decref(schema);
	if (rc)
		return rc;
	if (fmt == TOOL_FMT_HERMES)
		fprintf(f, "root ::= (\"<tool_call>\" ws call \"</tool_call>\" ws)+\n");
	else if (fmt == TOOL_FMT_MISTRAL)
		fprintf(f, "root ::= \"[TOOL_CALLS]\" ws \"[\" ws call (\",\" ws call)* \"]\" ws\n");
	else
		fprintf(f, "root ::= ws call\n");
	return 0;
}

int req_grammar(const json_t *o, const struct req_tools *t, enum tool_fmt fmt, struct gram **g, char *param,
		char *msg, size_t msglen)
{
	const json_t *rf = json_object_get(o, "response_format"), *gr = json_object_get(o, "grammar");
	const char *type = json_string_value(json_object_get(rf, "type"));
	int rc = 0;
	*g = NULL;
	bool has_rf = rf && !json_is_null(rf) && !(type && !strcmp(type, "text"));
	bool has_gr = gr && !json_is_null(gr);
	if (rf && !json_is_null(rf) &&
	    (!type || (strcmp(type, "text") && strcmp(type, "json_object") && strcmp(type, "json_schema"))))
		return bad(param, "response_format", msg, msglen,
			   "'response_format' must be {\"type\": \"text\" | \"json_object\" | \"json_schema\"}");
	if (has_gr && !json_is_string(gr))
		return bad(param, "grammar", msg, msglen, "'grammar' must be a string of GBNF rules");
	if (has_rf + has_gr + (t && t->required) > 1)
		return bad(param, has_gr ? "grammar" : "response_format", msg, msglen,
			   "only one of 'response_format', 'grammar' and a required 'tool_choice' may be given");
	char m[400];
	if (has_gr) {
		rc = gram_parse(json_string_value(gr), g, m, sizeof(m));
		if (rc == -EINVAL) {
			snprintf(param, REQ_PARAM_LEN, "grammar");
			snprintf(msg, msglen, "'grammar': %s", m);
		}
		return rc;
	}
	if (has_rf) {
		const json_t *js = json_object_get(rf, "json_schema"), *schema = json_object_get(js, "schema");
		if (!strcmp(type, "json_schema") && (!json_is_object(js) || (schema && !json_is_object(schema) &&
									     !json_is_boolean(schema))))
			return bad(param, "response_format", msg, msglen,
				   "'response_format' json_schema needs \"json_schema\": {\"name\", \"schema\": {...}}");
		rc = gram_from_schema(!strcmp(type, "json_schema") ? schema : NULL, g, m, sizeof(m));
		if (rc == -EINVAL) {
			snprintf(param, REQ_PARAM_LEN, "response_format");
			snprintf(msg, msglen, "'response_format': %s", m);
		}
		return rc;
	}
	if (!t || !t->required)
		return 0;
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	rc = tools_gbnf(t, fmt, f, m, sizeof(m));
	if (fclose(f) && !rc)
		rc = -ENOMEM;
	rc = rc ? rc : gram_parse(text, g, m, sizeof(m));
	free(text);
	if (rc == -EINVAL) {
		snprintf(param, REQ_PARAM_LEN, "tools");
		snprintf(msg, msglen, "'tools': a function's parameters: %s", m);
	}
	return rc;
}

/* ---- parsing the calls ---- */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Appends OpenAI's form of call c ({"name", args_key: object or string}) to out; false when c is not one. */
static bool call_add(json_t *out, const json_t *c, const char *args_key, uint64_t seed)
{
	const json_t *nm = json_object_get(c, "name"), *a = json_object_get(c, args_key);
	if (!a && !strcmp(args_key, "parameters"))
		a = json_object_get(c, "arguments");
	if (!json_is_object(c) || !json_is_string(nm) || !(json_is_object(a) || json_is_string(a)))
		return false;
	char *args = json_is_string(a) ? strdup(json_string_value(a)) : json_dumps(a, JSON_COMPACT);
	char id[40];
	snprintf(id, sizeof(id), "call_%016llx", (unsigned long long)mix(seed + json_array_size(out)));
	json_t *x = json_pack("{s:s, s:s, s:{s:O, s:s}}", "id", id, "type", "function", "function", "name", nm, "arguments",
			      args ? args : "{}");
	free(args);
	return x && !json_array_append_new(out, x);
}

static const char *find(const char *p, size_t n, const char *s)
{
	size_t k = strlen(s);
	for (size_t i = 0; i + k <= n; i++)
		if (!memcmp(p + i, s, k))
			return p + i;
	return NULL;
}

static size_t skip_ws(const char *p, size_t i, size_t n)
{
	while (i < n && (p[i] == ' ' || p[i] == '\n' || p[i] == '\t' || p[i] == '\r'))
		i++;
	return i;
}

/* Past the opening of a fenced JSON block at text[i] ("```", "```json", then whitespace), where small
 * models put a call; i itself when there is none. */
static size_t fence_end(const char *text, size_t i, size_t n)
{
	if (n - i < 3 || memcmp(text + i, "```", 3))
		return i;
	size_t j = i + 3;
	if (n - j >= 4 && !memcmp(text + j, "json", 4))
		j += 4;
	else if (n - j < 4 && !memcmp(text + j, "json", n - j))
		return n; /* "```js": may still become one */
	return skip_ws(text, j, n);
}

json_t *tool_calls_parse(const char *text, size_t n, const json_t *tools, uint64_t seed, size_t *content)
{
	json_t *out = json_array();
	const char *at;
	*content = n;
	if (!out)
		return NULL;
	if ((at = find(text, n, "<tool_call>"))) {
		*content = (size_t)(at - text);
		while (at) {
			const char *b = at + strlen("<tool_call>"), *end = find(b, n - (size_t)(b - text), "</tool_call>");
			size_t len = end ? (size_t)(end - b) : n - (size_t)(b - text);
			json_t *c = json_loadb(b, len, JSON_DECODE_ANY, NULL);
			bool ok = c && call_add(out, c, "arguments", seed);
			json_decref(c);
			if (!ok)
				break;
			at = end ? find(end, n - (size_t)(end - text), "<tool_call>") : NULL;
		}
	} else if ((at = find(text, n, "[TOOL_CALLS]"))) {
		*content = (size_t)(at - text);
		const char *b = at + strlen("[TOOL_CALLS]");
		json_t *c = json_loadb(b, n - (size_t)(b - text), JSON_DISABLE_EOF_CHECK, NULL);
		size_t i;
		const json_t *e;
		json_array_foreach(c, i, e)
			if (!call_add(out, e, "arguments", seed))
				break;
		json_decref(c);
	} else {
		size_t i = skip_ws(text, 0, n);
		if ((at = find(text, n, "<|python_tag|>")) && at == text + i)
			i = skip_ws(text, i + strlen("<|python_tag|>"), n);
		i = fence_end(text, i, n);
		json_t *c = i < n && text[i] == '{' ? json_loadb(text + i, n - i, JSON_DISABLE_EOF_CHECK, NULL) : NULL;
		const char *nm = json_string_value(json_object_get(c, "name"));
		size_t k;
		const json_t *e;
		bool known = false;
		json_array_foreach(tools, k, e)
			known = known || (nm && !strcmp(fn_name(e), nm));
		if (known && call_add(out, c, "parameters", seed))
			*content = 0;
		json_decref(c);
	}
	if (!json_array_size(out)) {
		json_decref(out);
		*content = n;
		return NULL;
	}
	return out;
}

size_t tool_calls_safe(const char *text, size_t n)
{
	size_t i = skip_ws(text, 0, n);
	if (i == n || text[i] == '{')
		return 0; /* nothing yet, or a bare JSON call (Llama 3.1) */
	size_t j = fence_end(text, i, n);
	if (j == n || (j > i && text[j] == '{') || (n - i < 3 && !memcmp(text + i, "```", n - i)))
		return 0; /* a fenced JSON call may be coming */
	size_t keep = n;
	for (int m = 0; m < N_MARKERS; m++) {
		const char *at = find(text, n, MARKERS[m]);
		if (at && (size_t)(at - text) < keep)
			keep = (size_t)(at - text);
	}
	char *const marks[N_MARKERS] = {(char *)MARKERS[0], (char *)MARKERS[1], (char *)MARKERS[2]};
	struct tok_buf b = {.p = (char *)text, .n = keep};
	size_t safe = req_stop_safe(&b, marks, N_MARKERS);
	return safe < keep ? safe : keep;
}
