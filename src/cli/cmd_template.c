/*
 * cmd_template.c: `ferry template`: renders a Jinja chat template the way HF's apply_chat_template does.
 *   ferry template (FILE.jinja | MODEL) MESSAGES.json [--add-generation-prompt] [--bos S] [--eos S]
 *                  [--var NAME=JSON]... [--date YYYY-MM-DD]
 * MESSAGES.json is a JSON array of messages, or an object whose keys become variables ({"messages": [...],
 * "tools": [...]}). tools and documents are None unless given; bos_token / eos_token "" unless given.
 * --date fixes strftime_now's clock at local midnight of that day. Prints exactly the rendered text.
 */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "text/chat.h"
#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "jinja/jinja.h"
#include "base/util.h"

static int usage(bool ok)
{
	fprintf(ok ? stdout : stderr,
		"usage: ferry template (FILE.jinja | MODEL) MESSAGES.json [--add-generation-prompt] [--bos S] [--eos S]\n"
		"                      [--var NAME=JSON]... [--date YYYY-MM-DD]\n"
		"  renders a chat template as Hugging Face transformers does and prints the text; MODEL: a\n"
		"  model.ferry or Hugging Face directory or a .gguf file, whose own template is used\n");
	return ok ? 0 : 2;
}

/* --var NAME=JSON: value parsed as JSON (any type). */
static int add_var(json_t *vars, const char *arg)
{
	const char *eq = strchr(arg, '=');
	if (!eq || eq == arg) {
		fprintf(stderr, "ferry: --var '%s': expected NAME=JSON\n", arg);
		return 2;
	}
	json_error_t je;
	json_t *v = json_loads(eq + 1, JSON_DECODE_ANY, &je);
	if (!v) {
		fprintf(stderr, "ferry: --var '%.*s': %s\n", (int)(eq - arg), arg, je.text);
		return 2;
	}
	char name[256];
	snprintf(name, sizeof(name), "%.*s", (int)(eq - arg), arg);
	json_object_set_new(vars, name, v);
	return 0;
}

static int parse_date(const char *s, int64_t *out)
{
	struct tm tm = {0};
	int y, m, d;
	char extra;
	if (sscanf(s, "%d-%d-%d%c", &y, &m, &d, &extra) != 3 || m < 1 || m > 12 || d < 1 || d > 31 || y < 1)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = m - 1;
	tm.tm_mday = d;
	tm.tm_isdst = -1;
	time_t t = mktime(&tm);
	if (t == (time_t)-1)
		return -1;
	*out = (int64_t)t;
	return 0;
}

int ferry_template(int argc, char **argv)
{
	static const struct option lo[] = {{"add-generation-prompt", no_argument, 0, 'g'}, {"bos", required_argument, 0, 'b'},
					   {"eos", required_argument, 0, 'e'}, {"var", required_argument, 0, 'v'},
					   {"date", required_argument, 0, 'd'}, {"help", no_argument, 0, 'h'},
					   {0}};
	const char *bos = NULL, *eos = NULL;
	bool gen = false;
	int64_t now = 0;
	bool fixed_now = false;
	json_t *extra = json_object();
	int c, rc = 2;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 'g': gen = true; break;
		case 'b': bos = optarg; break;
		case 'e': eos = optarg; break;
		case 'v':
			if (add_var(extra, optarg))
				goto out;
			break;
		case 'd':
			if (parse_date(optarg, &now)) {
				fprintf(stderr, "ferry: --date '%s': expected YYYY-MM-DD\n", optarg);
				goto out;
			}
			fixed_now = true;
			break;
		case 'h': rc = usage(true); goto out;
		default: rc = opt_hint("template", argv, "h", lo); goto out;
		}
	}
	if (optind != argc - 2) {
		rc = usage(false);
		goto out;
	}
	rc = 1;
	const char *tpath = argv[optind], *mpath = argv[optind + 1];
	char err[ERR_LEN];
	struct jinja_tmpl *t;
	if (chat_template_load(tpath, &t, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		goto out;
	}
	json_error_t je;
	json_t *in = json_load_file(mpath, JSON_DECODE_ANY, &je);
	if (!in || (!json_is_array(in) && !json_is_object(in))) {
		fprintf(stderr, "ferry: %s:%d: %s\n", mpath, je.line, in ? "expected a JSON array of messages or an object" : je.text);
		json_decref(in);
		jinja_free(t);
		goto out;
	}
	json_t *vars = json_is_object(in) ? json_copy(in) : json_pack("{s:O}", "messages", in);
	json_decref(in);
	json_object_update(vars, extra);
	if (chat_vars_fill(vars, gen, bos, eos)) {
		fprintf(stderr, "ferry: --bos/--eos: not valid UTF-8\n");
		json_decref(vars);
		jinja_free(t);
		goto out;
	}
	if (fixed_now)
		jinja_set_now(t, now);
	char *text;
	size_t n;
	if (jinja_render(t, vars, &text, &n, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
	} else {
		rc = fwrite(text, 1, n, stdout) == n && fflush(stdout) == 0 ? 0 : 1;
		free(text);
	}
	jinja_free(t);
	json_decref(vars);
out:
	json_decref(extra);
	return rc;
}
