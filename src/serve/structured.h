/*
 * structured.h: structured output of the completion routes. response_format ({"type": "json_object"} or
 * {"type": "json_schema", "json_schema": {"schema": ...}}) and "grammar" (GBNF text) become a grammar the
 * sampler is held to (src/grammar/); "tools" and "tool_choice" (chat) say which tools the template shows,
 * and with "required" or a named function a grammar of the model's tool-call format; tool calls are parsed
 * out of the generated text in three formats: Hermes/Qwen <tool_call>{json}</tool_call>, Mistral
 * [TOOL_CALLS][{...}], Llama 3.1 {"name", "parameters"} (after <|python_tag|>, alone, or in a ```json
 * block, where small models such as Qwen2.5-Coder-1.5B put their calls).
 */
#ifndef FERRY_STRUCTURED_H
#define FERRY_STRUCTURED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"
#include "text/tokenizer.h"

enum tool_fmt { TOOL_FMT_HERMES, TOOL_FMT_MISTRAL, TOOL_FMT_LLAMA };

struct req_tools {
	json_t *tools;      /* the request's "tools" when the model may call them (NULL: none, or tool_choice none) */
	bool required;      /* "required" or a named function: the output is tool calls, held to a grammar */
	const char *name;   /* the named function (inside tools) */
};

/* The tool-call format of the model: the one whose marker is a token of its vocabulary (Llama's otherwise). */
enum tool_fmt tool_fmt_of(const struct tokenizer *tk);

/* "tools" and "tool_choice" of a request (chat: true). 0, or -EINVAL with param and msg (one line). */
int req_tools_parse(const json_t *o, bool chat, struct req_tools *t, char *param, char *msg, size_t msglen);
void req_tools_free(struct req_tools *t);

/* The grammar a request asks for: "response_format", "grammar", or the tool calls tool_choice requires
 * (*g NULL: none). 0, or -EINVAL with param naming the field and msg one line. */
int req_grammar(const json_t *o, const struct req_tools *t, enum tool_fmt fmt, struct gram **g, char *param,
		char *msg, size_t msglen);

/* The tool calls in text[0..n) (the formats above; a Llama call only for a function of tools): OpenAI's
 * tool_calls array (ids "call_" + hex from seed), NULL when there are none. *content: the bytes of text
 * before the first call (the message's content). */
json_t *tool_calls_parse(const char *text, size_t n, const json_t *tools, uint64_t seed, size_t *content);

/* The bytes of text[0..n) a stream may send while a tool call may still come: up to where one begins, less a
 * tail that could begin a marker (and nothing while the reply could be a bare JSON call). */
size_t tool_calls_safe(const char *text, size_t n);

#endif
