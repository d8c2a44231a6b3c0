/* constrain.c: grammar-constrained sampling hooks (constrain.h). */
#include "serve/constrain.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/scheduler.h"

int constrain_vocab(struct constrain *c, const struct tokenizer *tk, int V)
{
	if (c->gv)
		return 0;
	c->V = V;
	c->tok_text = calloc((size_t)V, sizeof(char *));
	c->tok_len = calloc((size_t)V, sizeof(size_t));
	c->allow = malloc((size_t)V);
	if (!c->tok_text || !c->tok_len || !c->allow) {
		constrain_free(c);
		return -ENOMEM;
	}
	int rc = 0;
	struct tok_buf b = {0};
	for (int t = 0; t < V && !rc; t++) { /* the bytes the stream appends for t (control tokens: none) */
		b.n = 0;
		if (t < tokenizer_n_vocab(tk) && !tokenizer_decode(tk, &t, 1, false, false, &b) && b.n) {
			c->tok_text[t] = malloc(b.n);
			if (!c->tok_text[t])
				rc = -ENOMEM;
			else
				memcpy(c->tok_text[t], b.p, b.n);
			c->tok_len[t] = c->tok_text[t] ? b.n : 0;
		}
	}
	tok_buf_free(&b);
	rc = rc ? rc : gram_vocab_new((const char *const *)c->tok_text, c->tok_len, V, &c->gv);
	if (rc)
		constrain_free(c);
	return rc;
}

void constrain_free(struct constrain *c)
{
	gram_vocab_free(c->gv);
	for (int t = 0; c->tok_text && t < c->V; t++)
		free(c->tok_text[t]);
	free(c->tok_text);
	free(c->tok_len);
	free(c->allow);
	*c = (struct constrain){0};
}

bool constrain_feed(const struct constrain *c, struct gram_state *gs, int tok)
{
	return !gram_state_feed(gs, c->tok_text[tok], c->tok_len[tok]) || gram_state_done(gs);
}

bool constrain_allow(const struct constrain *c, struct gram_state *gs, int tok, bool eos)
{
	if (eos)
		return gram_state_can_end(gs);
	return c->tok_len[tok] && gram_state_accepts(gs, c->tok_text[tok], c->tok_len[tok]);
}

void constrain_mask(struct constrain *c, struct gram_state *gs, const struct sched *s, float *row)
{
	int n = gram_vocab_mask(c->gv, gs, c->allow);
	bool end = n <= 0 || gram_state_can_end(gs);
	for (int i = 0; i < c->V; i++)
		if (!c->allow[i] && !(end && sched_is_eos(s, i)))
			row[i] = -INFINITY;
}
