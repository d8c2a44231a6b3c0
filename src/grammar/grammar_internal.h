/*
 * grammar_internal.h: a parsed grammar as the matcher reads it (gbnf.c builds it, match.c walks it).
 * Every rule is a list of alternatives; every alternative a run of symbols in sym[] closed by GS_END. A
 * symbol is a reference to a rule or a character class (ranges of code points, possibly negated; "." is
 * the negated empty class). Groups and repetitions became rules of their own, so a position in sym[] is
 * all a stack entry needs.
 */
#ifndef FERRY_GRAMMAR_INTERNAL_H
#define FERRY_GRAMMAR_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

enum gsym_kind { GS_END, GS_REF, GS_CLS };

struct gsym {
	uint8_t kind;
	bool neg;  /* GS_CLS: matches the code points outside the ranges */
	int a, b;  /* GS_REF: a = rule; GS_CLS: ranges rng[a .. a + b) */
};

struct gram {
	struct gsym *sym;
	int n_sym;
	uint32_t (*rng)[2]; /* [lo, hi] inclusive */
	int n_rng;
	int *alt;           /* the first symbol of every alternative, rule by rule */
	int *rule_alt0, *rule_nalt;
	int n_rule, root;
};

static inline bool gsym_match(const struct gram *g, const struct gsym *y, uint32_t lo, uint32_t hi)
{
	bool in = false;
	for (int i = 0; i < y->b && !in; i++)
		in = g->rng[y->a + i][0] <= hi && lo <= g->rng[y->a + i][1];
	if (!y->neg)
		return in;
	if (lo == hi)
		return !in;
	/* some code point of [lo, hi] outside every range */
	uint32_t c = lo;
	for (bool moved = true; moved && c <= hi;) {
		moved = false;
		for (int i = 0; i < y->b; i++)
			if (g->rng[y->a + i][0] <= c && c <= g->rng[y->a + i][1]) {
				c = g->rng[y->a + i][1] + 1;
				moved = true;
			}
	}
	return c <= hi && c >= lo;
}

#endif
