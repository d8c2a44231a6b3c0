/*
 * chat.c: the variables HF's apply_chat_template passes to a chat template: messages,
 * add_generation_prompt, bos_token, eos_token, and tools / documents as None when not given.
 */
#include <errno.h>
#include <stdio.h>

#include "chat.h"

int chat_render(const struct jinja_tmpl *t, const json_t *messages, bool add_generation_prompt, const char *bos,
		const char *eos, char **out, size_t *out_len, char *err, size_t errlen)
{
	*out = NULL;
	if (!json_is_array(messages)) {
		snprintf(err, errlen, "chat: messages must be a JSON array");
		return -EINVAL;
	}
	json_t *vars = json_pack("{s:O, s:b, s:s, s:s, s:n, s:n}", "messages", (json_t *)messages,
				 "add_generation_prompt", add_generation_prompt, "bos_token", bos ? bos : "",
				 "eos_token", eos ? eos : "", "tools", "documents");
	if (!vars) {
		snprintf(err, errlen, "chat: out of memory (or bos/eos not valid UTF-8)");
		return -ENOMEM;
	}
	int rc = jinja_render(t, vars, out, out_len, err, errlen);
	json_decref(vars);
	return rc;
}
