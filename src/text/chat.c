/*
 * chat.c: the variables HF's apply_chat_template passes to a chat template: messages,
 * add_generation_prompt, bos_token, eos_token, and tools / documents as None when not given.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "text/tokenizer.h"

int chat_vars_fill(json_t *vars, bool add_generation_prompt, const char *bos, const char *eos)
{
	int rc = 0;
	if (add_generation_prompt || !json_object_get(vars, "add_generation_prompt"))
		rc |= json_object_set_new(vars, "add_generation_prompt", json_boolean(add_generation_prompt));
	if (bos || !json_object_get(vars, "bos_token"))
		rc |= json_object_set_new(vars, "bos_token", json_string(bos ? bos : ""));
	if (eos || !json_object_get(vars, "eos_token"))
		rc |= json_object_set_new(vars, "eos_token", json_string(eos ? eos : ""));
	if (!json_object_get(vars, "tools"))
		rc |= json_object_set_new(vars, "tools", json_null());
	if (!json_object_get(vars, "documents"))
		rc |= json_object_set_new(vars, "documents", json_null());
	return rc ? -EINVAL : 0;
}

/* chat_render with tools (NULL: None). */
static int render(const struct jinja_tmpl *t, const json_t *messages, const json_t *tools, bool add_generation_prompt,
		  const char *bos, const char *eos, char **out, size_t *out_len, char *err, size_t errlen)
{
	*out = NULL;
	if (!json_is_array(messages)) {
		snprintf(err, errlen, "chat: messages must be a JSON array");
		return -EINVAL;
	}
	json_t *vars = json_pack("{s:O}", "messages", (json_t *)messages);
	if (vars && tools && json_object_set(vars, "tools", (json_t *)tools)) {
		json_decref(vars);
		vars = NULL;
	}
	if (!vars || chat_vars_fill(vars, add_generation_prompt, bos, eos)) {
		snprintf(err, errlen, "chat: out of memory (or bos/eos not valid UTF-8)");
		json_decref(vars);
		return -ENOMEM;
	}
	int rc = jinja_render(t, vars, out, out_len, err, errlen);
	json_decref(vars);
	return rc;
}

int chat_render(const struct jinja_tmpl *t, const json_t *messages, bool add_generation_prompt, const char *bos,
		const char *eos, char **out, size_t *out_len, char *err, size_t errlen)
{
	return render(t, messages, NULL, add_generation_prompt, bos, eos, out, out_len, err, errlen);
}

int chat_render_tok(const struct jinja_tmpl *t, const json_t *messages, const struct tokenizer *tok, char **out,
		    size_t *out_len, char *err, size_t errlen)
{
	return chat_render_tools(t, messages, NULL, tok, out, out_len, err, errlen);
}

int chat_render_tools(const struct jinja_tmpl *t, const json_t *messages, const json_t *tools,
		      const struct tokenizer *tok, char **out, size_t *out_len, char *err, size_t errlen)
{
	size_t bl = 0, el = 0;
	const char *bos = tokenizer_bos(tok) >= 0 ? tokenizer_text(tok, tokenizer_bos(tok), &bl) : NULL;
	const char *eos = tokenizer_eos(tok) >= 0 ? tokenizer_text(tok, tokenizer_eos(tok), &el) : NULL;
	char *b = bos ? strndup(bos, bl) : NULL, *e = eos ? strndup(eos, el) : NULL;
	int rc = render(t, messages, tools, true, b, e, out, out_len, err, errlen);
	free(b);
	free(e);
	return rc;
}
