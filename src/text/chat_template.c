/*
 * chat_template.c: finds and parses a model's chat template, wherever the model keeps it:
 *   a model.ferry directory   the file its manifest names (chat_template.file, chat_template.jinja)
 *   a Hugging Face directory  chat_template.jinja, else tokenizer_config.json's chat_template (a string, or a
 *                             list of {name, template} whose "default" entry is the chat one, as transformers
 *                             picks it), else tokenizer.gguf's
 *   a .gguf file              the tokenizer.chat_template metadata string (split files too)
 *   any other file            the template itself (FILE.jinja)
 * Errors name the file (and for GGUF the key) so a template error reads "FILE:LINE: ...".
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "text/chat.h"
#include "layout/gguf.h"
#include "base/util.h"

static int parse_file(const char *path, struct jinja_tmpl **t, char *err, size_t errlen)
{
	char *src = NULL;
	size_t n = 0;
	int rc = read_file_all(path, &src, &n);
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = jinja_parse(t, src, n, path, err, errlen);
	free(src);
	return rc;
}

static int parse_gguf(const char *path, struct jinja_tmpl **t, char *err, size_t errlen)
{
	struct gguf g;
	int rc = gguf_open(&g, path, err, errlen);
	if (rc)
		return rc;
	struct gguf_str s;
	rc = gguf_get_str(&g, "tokenizer.chat_template", &s);
	if (rc) {
		snprintf(err, errlen, "%s: %s", path,
			 rc == -ENOENT ? "no chat template (tokenizer.chat_template)" : "tokenizer.chat_template is not a string");
	} else {
		char name[4096 + 64];
		snprintf(name, sizeof(name), "%s:tokenizer.chat_template", path);
		rc = jinja_parse(t, (const char *)s.p, s.n, name, err, errlen);
	}
	gguf_close(&g);
	return rc;
}

const char *chat_template_of_config(const json_t *cfg)
{
	const json_t *ct = json_object_get(cfg, "chat_template"), *v;
	const char *src = json_string_value(ct);
	size_t i;
	json_array_foreach(ct, i, v)
	{
		if (!strcmp(json_string_value(json_object_get(v, "name")) ?: "", "default"))
			src = json_string_value(json_object_get(v, "template"));
	}
	return src;
}

/* tokenizer_config.json's chat_template: 0 and *t set, -ENOENT when it has none. */
static int parse_config(const char *path, struct jinja_tmpl **t, char *err, size_t errlen)
{
	json_error_t je;
	json_t *cfg = json_load_file(path, 0, &je);
	if (!cfg) {
		snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
		return -EINVAL;
	}
	const json_t *ct = json_object_get(cfg, "chat_template");
	const char *src = chat_template_of_config(cfg);
	int rc = -ENOENT;
	if (src) {
		char name[4096 + 64];
		snprintf(name, sizeof(name), "%s:chat_template", path);
		rc = jinja_parse(t, src, strlen(src), name, err, errlen);
	} else if (ct && !json_is_null(ct)) {
		snprintf(err, errlen, "%s: chat_template: expected a string or a list with a \"default\" entry", path);
		rc = -EINVAL;
	}
	json_decref(cfg);
	return rc;
}

static int parse_dir(const char *dir, struct jinja_tmpl **t, char *err, size_t errlen)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	if (path_is_file(path)) {
		json_error_t je;
		json_t *m = json_load_file(path, 0, &je);
		const char *file = json_string_value(json_object_get(json_object_get(m, "chat_template"), "file"));
		int rc = 0;
		if (!m) {
			snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
			rc = -EINVAL;
		} else if (!file || strchr(file, '/')) {
			snprintf(err, errlen, "%s: the model has no chat template (manifest.json: chat_template)", dir);
			rc = -ENOENT;
		} else {
			snprintf(path, sizeof(path), "%s/%s", dir, file);
			rc = parse_file(path, t, err, errlen);
		}
		json_decref(m);
		return rc;
	}
	snprintf(path, sizeof(path), "%s/chat_template.jinja", dir);
	if (path_is_file(path))
		return parse_file(path, t, err, errlen);
	snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
	if (path_is_file(path)) {
		int rc = parse_config(path, t, err, errlen);
		if (rc != -ENOENT)
			return rc;
	}
	snprintf(path, sizeof(path), "%s/tokenizer.gguf", dir);
	if (path_is_file(path))
		return parse_gguf(path, t, err, errlen);
	snprintf(err, errlen, "%s: no chat template (chat_template.jinja, tokenizer_config.json or tokenizer.gguf)", dir);
	return -ENOENT;
}

int chat_template_load(const char *model, struct jinja_tmpl **t, char *err, size_t errlen)
{
	struct stat st;
	*t = NULL;
	if (stat(model, &st)) {
		int rc = -errno;
		snprintf(err, errlen, "%s: %s", model, strerror(errno));
		return rc;
	}
	if (S_ISDIR(st.st_mode))
		return parse_dir(model, t, err, errlen);
	size_t n = strlen(model);
	if (n >= 5 && !strcmp(model + n - 5, ".gguf"))
		return parse_gguf(model, t, err, errlen);
	return parse_file(model, t, err, errlen);
}
