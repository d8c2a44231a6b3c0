/* test_jinja.c: the Jinja API (jinja.h, chat.h): renders, parse and runtime errors naming the template and
 * line, raise_exception's message verbatim, the fixed strftime_now clock, and the bounds (output size,
 * evaluation steps, recursion and nesting depth, huge ranges and repetitions) failing with a message
 * instead of crashing or running on. The differential tests against jinja2 are test_templates.py and
 * test_jinja_snippets.py. */
#include <string.h>

#include "text/chat.h"
#include "check.h"
#include "jinja/jinja.h"

/* Renders src with vars (JSON text); returns 0 or the error; *out is "" on error. */
static int render(const char *src, const char *vars_json, char **out, char *err, size_t errlen)
{
	struct jinja_tmpl *t;
	*out = NULL;
	int rc = jinja_parse(&t, src, strlen(src), "t.jinja", err, errlen);
	if (rc)
		return rc;
	json_t *vars = vars_json ? json_loads(vars_json, 0, NULL) : NULL;
	size_t n;
	rc = jinja_render(t, vars, out, &n, err, errlen);
	if (!rc && strlen(*out) != n)
		rc = -1, snprintf(err, errlen, "length mismatch");
	json_decref(vars);
	jinja_free(t);
	return rc;
}

static void expect_text(const char *src, const char *vars, const char *want)
{
	char err[512] = "", *out;
	int rc = render(src, vars, &out, err, sizeof(err));
	CHECK_MSG(rc == 0 && !strcmp(out, want), "%s -> rc %d, %s / %s (want %s)", src, rc, out ? out : "", err, want);
	free(out);
}

static void expect_error(const char *src, const char *vars, const char *want)
{
	char err[512] = "", *out;
	int rc = render(src, vars, &out, err, sizeof(err));
	CHECK_MSG(rc < 0 && strstr(err, want) && !strchr(err, '\n'), "%s -> rc %d, err '%s' (want '%s')", src, rc, err, want);
	CHECK(out == NULL);
	free(out);
}

int main(void)
{
	/* renders */
	expect_text("Hello {{ name }}!", "{\"name\": \"ferry\"}", "Hello ferry!");
	expect_text("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}",
		    "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}",
		    "user:hi;assistant:yo;");
	expect_text("{{ x }}", NULL, "");
	expect_text("a\n", NULL, "a");
	expect_text("", NULL, "");
	/* transformers' {% generation %} (AssistantTracker): the body in its own scope */
	expect_text("{% set a = 1 %}{% generation %}[{{ a }}{% set a = 2 %}{{ a }}]{% endgeneration %}{{ a }}", NULL, "[12]1");

	/* chat_render: HF's variables */
	{
		struct jinja_tmpl *t;
		char err[256], *out;
		size_t n;
		const char *src = "{{ bos_token }}{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
				  "{% if add_generation_prompt %}<assistant>{% endif %}{{ tools is none }}{{ eos_token }}";
		CHECK(jinja_parse(&t, src, strlen(src), "chat", err, sizeof(err)) == 0);
		json_t *msgs = json_loads("[{\"role\": \"user\", \"content\": \"hi\"}]", 0, NULL);
		CHECK(chat_render(t, msgs, true, "<s>", NULL, &out, &n, err, sizeof(err)) == 0);
		CHECK_MSG(out && !strcmp(out, "<s><user>hi<assistant>True"), "%s", out ? out : err);
		free(out);
		json_t *obj = json_object();
		CHECK(chat_render(t, obj, false, NULL, NULL, &out, &n, err, sizeof(err)) < 0);
		json_decref(obj);
		json_decref(msgs);
		jinja_free(t);
	}

	/* parse errors name the template, the line and the construct */
	expect_error("line1\nline2\n{{ x|nosuchfilter }}", NULL, "t.jinja:3: unknown filter 'nosuchfilter'");
	expect_error("\n{% include 'x' %}", NULL, "t.jinja:2: unsupported tag 'include'");
	expect_error("{% if x %}\nunclosed", NULL, "t.jinja:2: unexpected end of template");
	expect_error("{{ x is nosuchtest }}", NULL, "t.jinja:1: unknown test 'nosuchtest'");
	expect_error("\n\n{{ 1 + }}", NULL, "t.jinja:3:");
	expect_error("{% endfor %}", NULL, "t.jinja:1: unexpected 'endfor'");
	expect_error("{% break %}", NULL, "t.jinja:1: 'break' outside a for loop");
	expect_error("{{ 'unterminated }}", NULL, "t.jinja:1: unexpected char");
	expect_error("{# never closed", NULL, "missing end of comment tag");
	expect_error("bad \xff byte", NULL, "not valid UTF-8 at byte 4");

	/* runtime errors: line of the failing expression, raise_exception's text as it is */
	expect_error("a\n{% if true %}\n{{ raise_exception('Roles must alternate: ' ~ 2) }}{% endif %}", NULL,
		     "t.jinja:3: Roles must alternate: 2");
	expect_error("{{ x.y }}", NULL, "t.jinja:1: 'x' is undefined");
	expect_error("\n{{ d.a.b }}", "{\"d\": {}}", "t.jinja:2: 'dict object' has no attribute 'a'");
	expect_error("{{ 1 / 0 }}", NULL, "division by zero");
	expect_error("{{ 'a' + 1 }}", NULL, "can only concatenate str (not \"int\") to str");
	expect_error("{{ 9223372036854775807 + 1 }}", NULL, "integer overflow");
	expect_error("{{ [].append(1) }}", NULL, "access to attribute 'append' of 'list' object is unsafe.");

	/* strftime_now: a fixed clock */
	{
		struct jinja_tmpl *t;
		char err[256], *out;
		const char *src = "{{ strftime_now('%Y-%m-%d') }}";
		CHECK(jinja_parse(&t, src, strlen(src), "d", err, sizeof(err)) == 0);
		jinja_set_now(t, 86400 * 365);
		CHECK(jinja_render(t, NULL, &out, NULL, err, sizeof(err)) == 0);
		CHECK_MSG(out && (!strcmp(out, "1971-01-01") || !strcmp(out, "1970-12-31") || !strcmp(out, "1971-01-02")),
			  "%s", out ? out : err);
		free(out);
		jinja_free(t);
	}

	/* bounds: errors, not crashes or hangs */
	expect_error("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", NULL, "deeper than");
	expect_error("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}", NULL, "output larger than the limit");
	expect_error("{{ 'x' * 100000000000 }}", NULL, "larger than the output limit");
	expect_error("{{ range(1000000) }}", NULL, "Range too big");
	{
		char src[4096] = "{{ ";
		for (int i = 0; i < 1000; i++)
			strcat(src, "(");
		strcat(src, "1");
		for (int i = 0; i < 1000; i++)
			strcat(src, ")");
		strcat(src, " }}");
		expect_error(src, NULL, "nested too deeply");
	}
	{
		struct jinja_tmpl *t;
		char err[256], *out;
		const char *src = "{% for i in range(100000) %}{% for j in range(100) %}{% endfor %}{% endfor %}";
		CHECK(jinja_parse(&t, src, strlen(src), "loop", err, sizeof(err)) == 0);
		jinja_set_limits(t, 1 << 20, 1000000);
		CHECK(jinja_render(t, NULL, &out, NULL, err, sizeof(err)) < 0);
		CHECK_MSG(strstr(err, "loop:1: template ran more than 1000000 steps"), "%s", err);
		const char *small = "{{ 'x' * 17 }}";
		jinja_free(t);
		CHECK(jinja_parse(&t, small, strlen(small), "small", err, sizeof(err)) == 0);
		jinja_set_limits(t, 16, 1000000);
		CHECK(jinja_render(t, NULL, &out, NULL, err, sizeof(err)) < 0);
		CHECK_MSG(strstr(err, "16"), "%s", err);
		jinja_free(t);
	}
	/* a namespace holding itself: no infinite printing */
	expect_error("{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}", NULL, "deeper than");
	/* a tiny error buffer is still a NUL-terminated prefix */
	{
		char err[8], *out;
		CHECK(render("{{ x.y }}", NULL, &out, err, sizeof(err)) < 0 && strlen(err) < sizeof(err));
	}
	CHECK_DONE();
}
