/* chat.h: a chat conversation rendered into prompt text with the model's Jinja chat template. */
#ifndef FERRY_CHAT_H
#define FERRY_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "jinja.h"

/* Renders a chat: messages is a JSON array of {role, content}; returns the prompt text. bos/eos may be NULL (""). */
int chat_render(const struct jinja_tmpl *t, const json_t *messages, bool add_generation_prompt, const char *bos,
		const char *eos, char **out, size_t *out_len, char *err, size_t errlen);

#endif
