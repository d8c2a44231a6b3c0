/*
 * constrain.h: grammar-constrained sampling through the scheduler's allow/mask hooks, shared by ferry serve
 * and ferry batch. The vocabulary's token bytes (what the output stream appends for each id; none for control
 * tokens) and their trie are built once, on the first constrained request; each constrained request holds
 * its own matcher state (grammar.h).
 */
#ifndef FERRY_CONSTRAIN_H
#define FERRY_CONSTRAIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grammar/grammar.h"
#include "text/tokenizer.h"

struct sched;

struct constrain {
	int V;                 /* the model's vocabulary (may exceed the tokenizer's: those ids have no bytes) */
	char **tok_text;       /* [V] */
	size_t *tok_len;       /* [V] */
	uint8_t *allow;        /* [V] scratch of mask (the scheduler's thread) */
	struct gram_vocab *gv; /* NULL until built */
};

/* Builds the token bytes and the trie once (later calls return 0 at once). 0 or -ENOMEM. */
int constrain_vocab(struct constrain *c, const struct tokenizer *tk, int V);
void constrain_free(struct constrain *c);

/* After the sampler chose tok (not an end of sequence): advances gs; true when the reply must stop (the
 * grammar refused the token, which allow prevents, or the text is complete and nothing can follow). */
bool constrain_feed(const struct constrain *c, struct gram_state *gs, int tok);
/* May tok come next? An end of sequence only where the grammar may end. */
bool constrain_allow(const struct constrain *c, struct gram_state *gs, int tok, bool eos);
/* row[V] with every token gs refuses at -INFINITY; the ends of sequence (sched_is_eos) kept where the
 * grammar may end, or when it takes nothing else (a grammar that cannot go on ends the reply). */
void constrain_mask(struct constrain *c, struct gram_state *gs, const struct sched *s, float *row);

#endif
