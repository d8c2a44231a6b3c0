/* request.c: see request.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"
#include "serve/request.h"

/* param = field, msg = "'field' must be WHAT". */
static int bad(char *param, const char *field, char *msg, size_t msglen, const char *what)
{
	snprintf(param, REQ_PARAM_LEN, "%s", field);
	snprintf(msg, msglen, "'%s' must be %s", field, what);
	return -EINVAL;
}

/* A number (integer: a JSON integer) in [lo, hi] or null/absent (*v = def). */
static int num(const json_t *o, const char *k, bool integer, double lo, double hi, double def, double *v, char *param,
	       char *msg, size_t msglen)
{
	const json_t *x = json_object_get(o, k);
	*v = def;
	if (!x || json_is_null(x))
		return 0;
	double d = json_number_value(x);
	if ((integer ? json_is_integer(x) : json_is_number(x)) && d >= lo && d <= hi) {
		*v = d;
		return 0;
	}
	char what[96];
	snprintf(what, sizeof(what), integer ? "an integer in [%.17g, %.17g]" : "a number in [%g, %g]", lo, hi);
	return bad(param, k, msg, msglen, what);
}

static int stops_parse(const json_t *st, struct req_params *p, char *param, char *msg, size_t msglen)
{
	size_t i;
	const json_t *e;
	if (!st || json_is_null(st))
		return 0;
	if (json_is_string(st) && json_string_length(st)) {
		p->stops[p->n_stops++] = strdup(json_string_value(st));
		return p->stops[0] ? 0 : -ENOMEM;
	}
	if (json_is_array(st) && json_array_size(st) <= REQ_STOPS_MAX) {
		json_array_foreach(st, i, e) {
			if (!json_is_string(e) || !json_string_length(e))
				break;
			if (!(p->stops[p->n_stops++] = strdup(json_string_value(e))))
				return -ENOMEM;
		}
		if (i == json_array_size(st))
			return 0;
	}
	char what[64];
	snprintf(what, sizeof(what), "a non-empty string or a list of up to %d of them", REQ_STOPS_MAX);
	return bad(param, "stop", msg, msglen, what);
}

int req_params_parse(const json_t *o, const struct req_defaults *d, struct req_params *p, char *param, char *msg,
		     size_t msglen)
{
	double mt, mct, temp, top_p, top_k, min_p, pres, freq, seed;
	memset(p, 0, sizeof(*p));
	int rc = num(o, "max_tokens", true, 0, 1 << 24, -1, &mt, param, msg, msglen);
	rc = rc ? rc : num(o, "max_completion_tokens", true, 0, 1 << 24, mt, &mct, param, msg, msglen);
	rc = rc ? rc : num(o, "temperature", false, 0, 2, d->temp, &temp, param, msg, msglen);
	rc = rc ? rc : num(o, "top_p", false, 0, 1, 1, &top_p, param, msg, msglen);
	rc = rc ? rc : num(o, "top_k", true, -1, 1 << 30, 0, &top_k, param, msg, msglen);
	rc = rc ? rc : num(o, "min_p", false, 0, 1, 0, &min_p, param, msg, msglen);
	rc = rc ? rc : num(o, "presence_penalty", false, -2, 2, 0, &pres, param, msg, msglen);
	rc = rc ? rc : num(o, "frequency_penalty", false, -2, 2, 0, &freq, param, msg, msglen);
	rc = rc ? rc : num(o, "seed", true, -9007199254740992.0, 9007199254740992.0, (double)d->seed, &seed, param, msg,
			   msglen);
	rc = rc ? rc : stops_parse(json_object_get(o, "stop"), p, param, msg, msglen);
	const json_t *ie = json_object_get(o, "ignore_eos");
	if (!rc && ie && !json_is_null(ie) && !json_is_boolean(ie))
		rc = bad(param, "ignore_eos", msg, msglen, "a boolean");
	p->ignore_eos = json_is_true(ie);
	const json_t *sp = json_object_get(o, "speculative");
	if (!rc && sp && !json_is_null(sp) && !json_is_boolean(sp))
		rc = bad(param, "speculative", msg, msglen, "a boolean");
	p->no_spec = json_is_false(sp);
	if (rc) {
		req_params_free(p);
		return rc;
	}
	p->max_tokens = (int)mct;
	p->sc = (struct sampler_cfg){.temp = (float)temp, .top_k = top_k > 0 ? (int)top_k : 0,
				     .top_p = top_p > 0 ? (float)top_p : 1e-9f, .min_p = (float)min_p, .rep_penalty = 1,
				     .presence = (float)pres, .frequency = (float)freq,
				     .seed = (uint64_t)(int64_t)seed};
	return 0;
}

void req_params_free(struct req_params *p)
{
	for (int i = 0; i < p->n_stops; i++)
		free(p->stops[i]);
	p->n_stops = 0;
}

/* "prompt" of a completion: a string, a list of one string, or a list of token ids. */
static int text_prompt(const json_t *p, struct tokenizer *tk, struct tok_ids *ids, char *param, char *msg,
		       size_t msglen)
{
	if (json_is_array(p) && json_array_size(p) == 1 && json_is_string(json_array_get(p, 0)))
		p = json_array_get(p, 0);
	if (json_is_string(p))
		return tokenizer_encode(tk, json_string_value(p), json_string_length(p), TOK_ADD_SPECIAL, ids, msg, msglen);
	size_t i, len;
	const json_t *e;
	if (json_is_array(p) && json_array_size(p)) {
		json_array_foreach(p, i, e) {
			if (!json_is_integer(e) || json_integer_value(e) < 0 || json_integer_value(e) > INT32_MAX ||
			    !tokenizer_text(tk, (int32_t)json_integer_value(e), &len))
				break;
			if (tok_ids_push(ids, (int32_t)json_integer_value(e)))
				return -ENOMEM;
		}
		if (i == json_array_size(p))
			return 0;
	}
	snprintf(param, REQ_PARAM_LEN, "prompt");
	snprintf(msg, msglen, "'prompt' must be a string, a list of one string, or a list of the vocabulary's token ids");
	return -EINVAL;
}

/* The arguments of an assistant turn's tool_calls as objects where they are JSON text (OpenAI sends strings;
 * chat templates write them with tojson, as transformers' examples pass them). */
static int tool_args_objects(json_t *msg)
{
	size_t i;
	json_t *tc;
	json_array_foreach(json_object_get(msg, "tool_calls"), i, tc) {
		json_t *f = json_object_get(tc, "function"), *a = json_object_get(f, "arguments");
		if (!json_is_object(f) || !json_is_string(json_object_get(f, "name")))
			return -EINVAL;
		json_t *obj = json_is_string(a) ? json_loads(json_string_value(a), 0, NULL) : NULL;
		if (json_is_object(obj))
			json_object_set_new(f, "arguments", obj);
		else
			json_decref(obj);
	}
	return 0;
}

/* messages with list contents joined into strings (what chat templates of text models expect). */
static json_t *chat_messages(const json_t *m, char *param, char *msg, size_t msglen)
{
	size_t i, j;
	const json_t *e, *part;
	json_t *out = json_array();
	if (!json_is_array(m) || !json_array_size(m)) {
		snprintf(param, REQ_PARAM_LEN, "messages");
		snprintf(msg, msglen, "'messages' must be a non-empty list of {\"role\", \"content\"}");
		json_decref(out);
		return NULL;
	}
	json_array_foreach(m, i, e) {
		const json_t *r = json_object_get(e, "role"), *c = json_object_get(e, "content");
		json_t *copy = json_is_object(e) ? json_deep_copy(e) : NULL;
		/* an assistant turn of tool calls may have no content */
		bool calls = json_is_array(json_object_get(e, "tool_calls")) && (!c || json_is_null(c));
		bool ok = copy && json_is_string(r) && (json_is_string(c) || json_is_array(c) || calls);
		if (ok && calls)
			ok = !json_object_set_new(copy, "content", json_string("")) && !tool_args_objects(copy);
		if (ok && json_is_array(c)) {
			char *text = NULL;
			size_t n = 0;
			json_array_foreach(c, j, part) {
				const json_t *t = json_object_get(part, "text");
				if (!json_is_string(t) || !json_is_string(json_object_get(part, "type")) ||
				    strcmp(json_string_value(json_object_get(part, "type")), "text")) {
					ok = false;
					break;
				}
				char *nt = realloc(text, n + json_string_length(t) + 1);
				if (!nt) {
					ok = false;
					break;
				}
				text = nt;
				memcpy(text + n, json_string_value(t), json_string_length(t));
				n += json_string_length(t);
			}
			ok = ok && !json_object_set_new(copy, "content", json_stringn(text ? text : "", n));
			free(text);
		}
		if (!ok || json_array_append_new(out, copy)) {
			if (ok)
				copy = NULL;
			json_decref(copy);
			snprintf(param, REQ_PARAM_LEN, "messages[%zu]", i);
			snprintf(msg, msglen, "'messages[%zu]' needs a string 'role' and a 'content' string or list of text parts "
				 "(or 'tool_calls' of {\"function\": {\"name\", \"arguments\"}})", i);
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

int req_prompt_ids(const json_t *o, enum req_prompt_kind kind, struct tokenizer *tk, const char *model_path,
		   struct jinja_tmpl **tmpl, const json_t *tools, struct tok_ids *ids, char *param, char *msg,
		   size_t msglen)
{
	const json_t *p = json_object_get(o, "prompt"), *m = json_object_get(o, "messages");
	int rc;
	if (kind == REQ_PROMPT_ANY && !!p == !!m) {
		snprintf(param, REQ_PARAM_LEN, "prompt");
		snprintf(msg, msglen, "needs a string 'prompt' or a non-empty list 'messages' (one of them)");
		return -EINVAL;
	}
	if ((kind == REQ_PROMPT_TEXT && !p) || (kind == REQ_PROMPT_CHAT && !m)) {
		snprintf(param, REQ_PARAM_LEN, "%s", kind == REQ_PROMPT_TEXT ? "prompt" : "messages");
		snprintf(msg, msglen, "'%s' is required", param);
		return -EINVAL;
	}
	if (kind == REQ_PROMPT_TEXT || (kind == REQ_PROMPT_ANY && p)) {
		rc = text_prompt(p, tk, ids, param, msg, msglen);
	} else {
		json_t *mm = chat_messages(m, param, msg, msglen);
		if (!mm)
			return -EINVAL;
		char *text = NULL;
		size_t len = 0;
		rc = *tmpl ? 0 : chat_template_load(model_path, tmpl, msg, msglen);
		rc = rc ? rc : chat_render_tools(*tmpl, mm, tools, tk, &text, &len, msg, msglen);
		rc = rc ? rc : tokenizer_encode(tk, text, len, TOK_PARSE_SPECIAL, ids, msg, msglen);
		if (rc && rc != -ENOMEM)
			snprintf(param, REQ_PARAM_LEN, "messages");
		free(text);
		json_decref(mm);
	}
	if (!rc && ids->n == 0) {
		snprintf(param, REQ_PARAM_LEN, "%s", p ? "prompt" : "messages");
		snprintf(msg, msglen, "the prompt is empty");
		rc = -EINVAL;
	}
	return rc;
}

bool req_stop_cut(struct tok_buf *text, size_t before, char *const *stops, int n_stops)
{
	size_t cut = text->n;
	for (int i = 0; i < n_stops; i++) {
		size_t sl = strlen(stops[i]);
		size_t from = before >= sl ? before - sl + 1 : 0;
		for (size_t at = from; at + sl <= text->n && at < cut; at++)
			if (!memcmp(text->p + at, stops[i], sl)) {
				cut = at;
				break;
			}
	}
	if (cut == text->n)
		return false;
	text->n = cut;
	return true;
}

size_t req_stop_safe(const struct tok_buf *text, char *const *stops, int n_stops)
{
	size_t keep = text->n;
	for (int i = 0; i < n_stops; i++) {
		size_t sl = strlen(stops[i]);
		for (size_t k = sl - 1 < text->n ? sl - 1 : text->n; k > 0; k--)
			if (!memcmp(text->p + text->n - k, stops[i], k)) {
				keep = text->n - k < keep ? text->n - k : keep;
				break;
			}
	}
	return keep;
}
