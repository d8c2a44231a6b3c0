/* test_fuzz_jinja.c: parsing and rendering arbitrary bytes as a chat template, with a fixed conversation
 * (tools and tool calls included), never crashes, hangs or leaks: every outcome is text or a one-line error
 * naming the template. Seeds: the shared real templates (../shared/data/templates) and snippets. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jinja/jinja.h"

static json_t *vars;

static const char vars_json[] =
	"{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"},"
	" {\"role\": \"user\", \"content\": \"Hi \\u00e9 \\\"q\\\"\\n\"},"
	" {\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call12345\", \"type\": \"function\","
	"   \"function\": {\"name\": \"get_weather\", \"arguments\": {\"location\": \"Paris\"}}}]},"
	" {\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"{\\\"t\\\": 22}\"},"
	" {\"role\": \"assistant\", \"content\": \"<think>x</think>Sunny.\"}],"
	" \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather\","
	"   \"parameters\": {\"type\": \"object\", \"properties\": {\"location\": {\"type\": \"string\"},"
	"   \"days\": {\"type\": \"array\", \"items\": {\"type\": \"integer\"}}}, \"required\": [\"location\"]}}}],"
	" \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null}";

static int fuzz_one(const uint8_t *data, size_t size)
{
	if (!vars && !(vars = json_loads(vars_json, 0, NULL)))
		abort();
	char err[256];
	struct jinja_tmpl *t;
	if (jinja_parse(&t, (const char *)data, size, "fuzz.jinja", err, sizeof(err)) == 0) {
		/* Small bounds keep each input fast: 1 MiB of output, 200k steps. */
		jinja_set_limits(t, 1 << 20, 200000);
		jinja_set_now(t, 1700000000);
		char *out;
		size_t n;
		if (jinja_render(t, vars, &out, &n, err, sizeof(err)) == 0) {
			if (strlen(out) > n)
				abort();
			free(out);
		} else if (strncmp(err, "fuzz.jinja", 10) || strchr(err, '\n')) {
			abort();
		}
		jinja_free(t);
	} else if (strncmp(err, "fuzz.jinja", 10) || strchr(err, '\n')) {
		abort();
	}
	return 0;
}

/* The whole file, or NULL (the seeds skip templates that are not there). */
static char *slurp(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	char *buf = NULL;
	size_t cap = 0;
	*n = 0;
	for (;;) {
		if (*n == cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 1 << 16);
			if (!nb)
				break;
			buf = nb;
		}
		size_t k = fread(buf + *n, 1, cap - *n, f);
		if (!k)
			break;
		*n += k;
	}
	fclose(f);
	return buf;
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	static const char *snippets[] = {
		"{% for m in messages %}{{ loop.index }}{{ m.role|upper }}{% if m.tool_calls %}{{ m.tool_calls|tojson(indent=2) }}{% endif %}{% else %}-{% endfor %}",
		"{% set ns = namespace(a=[]) %}{% for k, v in {'b': 1, 'a': [1, 2.5, none]}|dictsort %}{% set ns.a = ns.a + [k ~ v] %}{% endfor %}{{ ns.a|join(', ') }}",
		"{% macro m(a, b=2) %}{{ a }}{{ b }}{{ varargs }}{% endmacro %}{{ m(1, 3, 4) }}{{ 'x'|safe + '<' }}{{ s[::-1] if s is defined else (7 // -2, 2 ** 10, 1e16) }}",
		"  {%- if tools %}{{ tools|map(attribute='function')|map(attribute='name')|list }}{% endif -%}\n{# c #}{% raw %}{{ x }}{% endraw %}",
		"{{ messages[1].content.split(' ')|reverse|list }}{{ messages|selectattr('role', 'eq', 'user')|list|length }}{{ raise_exception('x') if false }}",
	};
	for (size_t i = 0; i < sizeof(snippets) / sizeof(snippets[0]); i++)
		add((const uint8_t *)snippets[i], strlen(snippets[i]));
	static const char *dir = "../shared/data/templates";
	static const char *picks[] = {"CohereForAI-c4ai-command-r7b-12-2024-tool_use.jinja", "meetkai-functionary-medium-v3.2.jinja",
				      "mistralai-Mistral-Nemo-Instruct-2407.jinja", "meta-llama-Llama-3.1-8B-Instruct.jinja",
				      "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja", "Qwen-Qwen2.5-7B-Instruct.jinja",
				      "llama-cpp-deepseek-r1.jinja", "fireworks-ai-llama-3-firefunction-v2.jinja"};
	for (size_t i = 0; i < sizeof(picks) / sizeof(picks[0]); i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", dir, picks[i]);
		size_t n;
		char *src = slurp(path, &n);
		if (src)
			add((const uint8_t *)src, n);
		free(src);
	}
}

#include "fuzz_driver.h"
