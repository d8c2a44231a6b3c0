/*
 * test_grammar.c: the GBNF parser and matcher (src/grammar/): accepted and refused texts of hand-written
 * grammars, parse errors named, UTF-8 fed byte by byte and split anywhere, and the vocabulary mask against
 * brute force (gram_state_accepts of every token) on random vocabularies from random states. The grammar's
 * agreement with Python's re and the schema translator against jsonschema are in test_grammar.py.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/xorshift.h"
#include "check.h"
#include "grammar/grammar.h"

/* Does g take the whole of text (fed in pieces of `step` bytes)? */
static bool full(const struct gram *g, const char *text, size_t step)
{
	struct gram_state *s;
	if (gram_state_new(g, &s))
		return false;
	size_t n = strlen(text);
	bool ok = true;
	for (size_t i = 0; i < n && ok; i += step)
		ok = gram_state_feed(s, text + i, i + step <= n ? step : n - i);
	ok = ok && gram_state_can_end(s);
	gram_state_free(s);
	return ok;
}

static struct gram *parse(const char *text)
{
	struct gram *g = NULL;
	char err[256];
	int rc = gram_parse(text, &g, err, sizeof(err));
	CHECK_MSG(rc == 0, "%s: %s", text, err);
	return g;
}

static void expect(const char *grammar, const char *const *yes, const char *const *no)
{
	struct gram *g = parse(grammar);
	if (!g)
		return;
	for (; *yes; yes++)
		for (size_t step = 1; step <= 3; step++)
			CHECK_MSG(full(g, *yes, step), "grammar %s should take '%s' (pieces of %zu)", grammar, *yes, step);
	for (; *no; no++)
		CHECK_MSG(!full(g, *no, 1), "grammar %s should refuse '%s'", grammar, *no);
	gram_free(g);
}

static void parse_error(const char *grammar, const char *want)
{
	struct gram *g = NULL;
	char err[256] = "";
	int rc = gram_parse(grammar, &g, err, sizeof(err));
	CHECK_MSG(rc < 0 && strstr(err, want), "grammar %s: rc %d, message '%s', want '%s'", grammar, rc, err, want);
	gram_free(g);
}

static uint64_t rng = 88172645463325252ull;
static uint32_t rnd(void)
{
	return (uint32_t)(xorshift64(&rng) >> 11);
}

/* The mask of a random vocabulary (bytes from pieces of UTF-8 text, so characters split across tokens)
 * equals gram_state_accepts token by token, along a random path through the grammar. */
static void mask_vs_brute(const char *grammar, const char *alphabet)
{
	struct gram *g = parse(grammar);
	if (!g)
		return;
	int V = 400;
	char **text = calloc((size_t)V, sizeof(char *));
	size_t *len = calloc((size_t)V, sizeof(size_t));
	size_t na = strlen(alphabet);
	for (int t = 0; t < V; t++) {
		len[t] = t % 50 == 0 ? 0 : 1 + rnd() % 4;
		text[t] = malloc(len[t] + 1);
		for (size_t i = 0; i < len[t]; i++)
			text[t][i] = t < (int)na ? alphabet[t] : alphabet[rnd() % na];
		if (t < (int)na)
			len[t] = 1;
	}
	struct gram_vocab *vb;
	struct gram_state *s;
	CHECK(gram_vocab_new((const char *const *)text, len, V, &vb) == 0);
	CHECK(gram_state_new(g, &s) == 0);
	uint8_t *allow = malloc((size_t)V);
	for (int step = 0; step < 60; step++) {
		int n = gram_vocab_mask(vb, s, allow), brute = 0, pick = -1, seen = 0;
		for (int t = 0; t < V; t++) {
			bool a = len[t] && gram_state_accepts(s, text[t], len[t]);
			brute += a;
			CHECK_MSG(a == (allow[t] != 0), "grammar %s step %d token %d '%.*s': mask %d, brute %d", grammar, step,
				  t, (int)len[t], text[t], allow[t], a);
			if (a && rnd() % ++seen == 0)
				pick = t;
		}
		CHECK(n == brute);
		if (pick < 0)
			break;
		CHECK(gram_state_feed(s, text[pick], len[pick]));
	}
	free(allow);
	gram_state_free(s);
	gram_vocab_free(vb);
	for (int t = 0; t < V; t++)
		free(text[t]);
	free(text);
	free(len);
	gram_free(g);
}

int main(void)
{
	expect("root ::= \"ab\" | \"c\"", (const char *[]){"ab", "c", NULL}, (const char *[]){"", "a", "abc", "b", NULL});
	expect("root ::= [a-c]+ [0-9]*", (const char *[]){"a", "abc9", "cc012", NULL}, (const char *[]){"", "9", "ad", NULL});
	expect("root ::= [^a-c] x?\nx ::= \"x\" | \"yy\"", (const char *[]){"d", "dx", "zyy", "é", NULL},
	       (const char *[]){"a", "dy", "dxx", NULL});
	expect("root ::= (\"a\" | \"b\"){2,3} \"!\"", (const char *[]){"ab!", "bbb!", NULL},
	       (const char *[]){"a!", "abab!", NULL});
	expect("root ::= \"x\"{2} \"y\"{,2} \"z\"{1,}", (const char *[]){"xxz", "xxyyzzz", NULL},
	       (const char *[]){"xz", "xxyyyz", "xxy", NULL});
	expect("root ::= . \"\\n\" [\\x41-\\x43] \"\\u00e9\"", (const char *[]){"€\nBé", "a\nAé", NULL},
	       (const char *[]){"€\nDé", "\nAé", NULL});
	/* nested groups over lines, comments, nullable rules, right recursion of any depth */
	expect("# a list\nroot ::= \"[\" (\n  item (\",\" item)*  # items\n)? \"]\"\nitem ::= [0-9]+ | root\n",
	       (const char *[]){"[]", "[1,[2,[]],3]", "[[[[[[[[[[1]]]]]]]]]]", NULL},
	       (const char *[]){"[", "[1,]", "[,1]", "]", NULL});
	expect("root ::= a b a\na ::= \"\" | \"x\"\nb ::= \"y\"?", (const char *[]){"", "x", "xyx", "yx", "xx", NULL},
	       (const char *[]){"xxx", "yy", NULL});
	/* nullable repetitions inside repetitions: loops of references in last place, not left recursion */
	expect("root ::= (\"a\"?)* (\"b\"{0,2})+ \"c\"", (const char *[]){"c", "aac", "bbbc", "abbbbc", NULL},
	       (const char *[]){"", "ca", "abac", NULL});
	expect("root ::= \"🙂\"+", (const char *[]){"🙂", "🙂🙂", NULL}, (const char *[]){"🙃", NULL});

	parse_error("root ::= foo", "undefined rule 'foo'");
	parse_error("a ::= \"x\"", "no 'root' rule");
	parse_error("root ::= root \"x\" | \"y\"", "left-recursive");
	parse_error("root ::= a \"x\"\na ::= \"b\"? root", "left-recursive");
	parse_error("root ::= \"x\n", "end of line");
	parse_error("root ::= \"\\q\"", "unknown escape");
	parse_error("root ::= \"x\"{3,1}", "out of range");
	parse_error("root ::= (\"x\"", "expected ')'");
	parse_error("root ::= \"x\"\nroot ::= \"y\"", "defined twice");
	parse_error("root = \"x\"", "expected '::='");
	parse_error("root ::= [b-a]", "reversed");

	/* can_end / done */
	struct gram *g = parse("root ::= \"a\" \"b\"?");
	struct gram_state *s;
	CHECK(gram_state_new(g, &s) == 0);
	CHECK(!gram_state_can_end(s) && !gram_state_done(s));
	CHECK(gram_state_feed(s, "a", 1) && gram_state_can_end(s) && !gram_state_done(s));
	CHECK(!gram_state_feed(s, "c", 1) && gram_state_can_end(s)); /* refused: unchanged */
	CHECK(gram_state_feed(s, "b", 1) && gram_state_done(s));
	gram_state_free(s);
	gram_free(g);
	/* nullable repetitions inside repetitions nest one expansion per optional item: refused (-E2BIG), no stack
	 * overflow (the grammar fuzzer's find, 2026-12-08); 20 x 20 of them still match */
	g = parse("root ::= (\"a\"? (\"a\"? | \"no\"){190} | \"no\"){190}");
	CHECK(gram_state_new(g, &s) == -E2BIG);
	gram_free(g);
	g = parse("root ::= (\"a\"? (\"a\"? | \"no\"){20} | \"no\"){20}");
	CHECK(gram_state_new(g, &s) == 0);
	CHECK(gram_state_feed(s, "aano", 4) && gram_state_can_end(s));
	gram_state_free(s);
	gram_free(g);
	/* a partial character is not an end */
	g = parse("root ::= \"é\"?");
	CHECK(gram_state_new(g, &s) == 0);
	CHECK(gram_state_can_end(s));
	CHECK(gram_state_feed(s, "\xc3", 1) && !gram_state_can_end(s));
	CHECK(!gram_state_accepts(s, "\xa8", 1) && gram_state_accepts(s, "\xa9", 1));
	CHECK(!gram_state_feed(s, "a", 1));
	gram_state_free(s);
	gram_free(g);

	/* overlong forms and surrogates are not characters: a byte-level vocabulary has such tokens */
	g = parse("root ::= \"e\" .?");
	CHECK(gram_state_new(g, &s) == 0);
	CHECK(!gram_state_accepts(s, "\xf0", 1) && !gram_state_accepts(s, "\xe0\x81", 2) &&
	      !gram_state_accepts(s, "\xc1\xa5", 2) && !gram_state_accepts(s, "\xf0\x80\x81\xa5", 4));
	CHECK(gram_state_feed(s, "e", 1));
	CHECK(!gram_state_accepts(s, "\xed\xa0\x80", 3) && !gram_state_accepts(s, "\xf4\x90\x80\x80", 4));
	CHECK(gram_state_accepts(s, "\xed\x9f\xbf", 3) && gram_state_accepts(s, "\xf4\x8f\xbf\xbf", 4));
	gram_state_free(s);
	gram_free(g);

	mask_vs_brute("root ::= \"{\" ([a-c] | \"é\" | \"\\\"\")* \"}\"", "{}abcé\"x");
	mask_vs_brute("root ::= (\"ab\" | \"a\" [é€]+ | \"🙂\")+ \".\"?", "abé€🙂.\xf0\x80\xc1\xed");
	struct gram *js = NULL;
	char err[256];
	CHECK(gram_from_schema(NULL, &js, err, sizeof(err)) == 0);
	gram_free(js);
	CHECK_DONE();
}
