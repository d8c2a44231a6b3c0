/* chat.h: a chat conversation rendered into prompt text with the model's Jinja chat template. */
#ifndef FERRY_CHAT_H
#define FERRY_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "jinja/jinja.h"

/* The variables apply_chat_template adds, into vars: add_generation_prompt, bos_token, eos_token (given
 * ones replace those in vars; absent ones default to false / ""), tools and documents None unless in vars.
 * 0, or -EINVAL (out of memory or bos/eos not valid UTF-8). */
int chat_vars_fill(json_t *vars, bool add_generation_prompt, const char *bos, const char *eos);

/* Renders a chat: messages is a JSON array of {role, content}; returns the prompt text. bos/eos may be NULL (""). */
int chat_render(const struct jinja_tmpl *t, const json_t *messages, bool add_generation_prompt, const char *bos,
		const char *eos, char **out, size_t *out_len, char *err, size_t errlen);

/* chat_render with the generation prompt and BOS/EOS as the tokenizer's texts (as apply_chat_template
 * passes them). */
struct tokenizer;
int chat_render_tok(const struct jinja_tmpl *t, const json_t *messages, const struct tokenizer *tok, char **out,
		    size_t *out_len, char *err, size_t errlen);

/* chat_render_tok with the request's tools (a list of {"type": "function", "function": {...}}, passed as
 * transformers' apply_chat_template(tools=...) does; NULL: None). */
int chat_render_tools(const struct jinja_tmpl *t, const json_t *messages, const json_t *tools,
		      const struct tokenizer *tok, char **out, size_t *out_len, char *err, size_t errlen);

/* The chat template in a tokenizer_config.json object: its chat_template string, or of a list of
 * {name, template} the "default" entry (the one transformers uses for chat); NULL if none. */
const char *chat_template_of_config(const json_t *cfg);

/* The chat template of MODEL: a model.ferry or HF directory, a .gguf file, or a template file
 * (src/text/chat_template.c says where each keeps it). 0 or negative; err one line naming the file. */
int chat_template_load(const char *model, struct jinja_tmpl **t, char *err, size_t errlen);

#endif
