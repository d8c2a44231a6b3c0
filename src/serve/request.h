/*
 * request.h: the generation request fields that `ferry batch` lines and `ferry serve` bodies share (OpenAI's
 * names and ranges): the prompt ("prompt" text or token ids, or chat "messages" through the model's template),
 * max_tokens, temperature, top_p, top_k, min_p, presence/frequency penalties, seed, stop strings,
 * ignore_eos and speculative (ferry's: false keeps the request out of speculative steps); and the stop-string
 * scan over generated text.
 * Errors name the field (param) with a one-line message, as OpenAI's error objects do.
 */
#ifndef FERRY_REQUEST_H
#define FERRY_REQUEST_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "jinja/jinja.h"
#include "engine/sampler.h"
#include "text/tokenizer.h"

#define REQ_STOPS_MAX 4
#define REQ_PARAM_LEN 64

struct req_params {
	struct sampler_cfg sc;
	int max_tokens; /* -1: not given */
	bool ignore_eos; /* "ignore_eos" (vLLM's): generate max_tokens whatever comes */
	bool no_spec;    /* "speculative": false: plain decode steps for this request (--spec applies otherwise) */
	char *stops[REQ_STOPS_MAX];
	int n_stops;
};

/* What a request gets for a field it leaves out (OpenAI's server: temperature 1 and a fresh seed; batch:
 * greedy and seed 0). */
struct req_defaults {
	float temp;
	uint64_t seed;
};

/* The sampling fields and stop strings of o. 0, or -EINVAL with param (the field) and msg set. */
int req_params_parse(const json_t *o, const struct req_defaults *d, struct req_params *p, char *param, char *msg,
		     size_t msglen);
void req_params_free(struct req_params *p);

enum req_prompt_kind {
	REQ_PROMPT_ANY,   /* "prompt" or "messages", exactly one (batch lines) */
	REQ_PROMPT_TEXT,  /* "prompt": a string, a list of one string, or a list of token ids (completions) */
	REQ_PROMPT_CHAT,  /* "messages" (chat completions) */
};

/* The prompt's token ids. A chat is rendered by *tmpl, loaded from model_path on first use, with tools
 * (NULL: none) as the template's "tools". Message content may be a string or a list of {"type": "text",
 * "text"} parts; an assistant turn with tool_calls may have none (their arguments, JSON text, go to the
 * template as objects); "tool" turns are passed as they are. */
int req_prompt_ids(const json_t *o, enum req_prompt_kind kind, struct tokenizer *tk, const char *model_path,
		   struct jinja_tmpl **tmpl, const json_t *tools, struct tok_ids *ids, char *param, char *msg,
		   size_t msglen);

/* After text grew from `before` bytes: true when it now holds one of the stop strings, cutting text->n back
 * to where the first one starts (a match must end in the new bytes). */
bool req_stop_cut(struct tok_buf *text, size_t before, char *const *stops, int n_stops);
/* The bytes of text that can be sent while more may come: all but a tail that could begin a stop string. */
size_t req_stop_safe(const struct tok_buf *text, char *const *stops, int n_stops);

#endif
