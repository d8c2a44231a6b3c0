/* test_fuzz_grammar.c: arbitrary bytes as a GBNF grammar, or (starting with '{') as a JSON schema, never crash,
 * hang or leak: every outcome is a grammar or a one-line error naming "grammar" or "schema"; a grammar that
 * parses is run on fixed texts byte by byte (feed and accepts agreeing) and masks a small vocabulary whose
 * tokens split UTF-8 characters. Seeds: llama.cpp-style grammars and schemas. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"

static const char *const texts[] = {"{\"a\": [1, true, null], \"b\": \"x\\u00e9\"}", "yes", "abc123", "é€🙂",
				    "[\"x\", 2.5e-3]", ""};
static const char *const vocab[] = {"{", "}", "\"", "a", "1", " ", "\xc3", "\xa9", "é", "true", "\": ", "\xf0\x9f",
				    "\x99\x82", "[", "]", ",", "null", "\\", "e", "-"};

static void run(const struct gram *g)
{
	static struct gram_vocab *vb;
	int V = (int)(sizeof(vocab) / sizeof(vocab[0]));
	size_t len[sizeof(vocab) / sizeof(vocab[0])];
	for (int i = 0; i < V; i++)
		len[i] = strlen(vocab[i]);
	if (!vb && gram_vocab_new(vocab, len, V, &vb))
		abort();
	uint8_t allow[sizeof(vocab) / sizeof(vocab[0])];
	for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
		struct gram_state *s;
		if (gram_state_new(g, &s))
			return;
		for (const char *p = texts[k]; *p; p++) {
			bool a = gram_state_accepts(s, p, 1);
			if (gram_state_feed(s, p, 1) != a)
				abort();
			if (!a)
				break;
		}
		int n = gram_vocab_mask(vb, s, allow);
		for (int i = 0; i < V; i++)
			if (allow[i] && !gram_state_accepts(s, vocab[i], len[i]))
				abort();
		(void)n;
		(void)gram_state_can_end(s);
		gram_state_free(s);
	}
}

static int fuzz_one(const uint8_t *data, size_t size)
{
	char err[256] = "";
	struct gram *g = NULL;
	int rc;
	if (size && data[0] == '{') {
		json_t *j = json_loadb((const char *)data, size, 0, NULL);
		if (!j)
			return 0;
		rc = gram_from_schema(j, &g, err, sizeof(err));
		json_decref(j);
		if (rc == -EINVAL && (strncmp(err, "schema", 6) || strchr(err, '\n')))
			abort();
	} else {
		char *t = malloc(size + 1);
		memcpy(t, data, size);
		t[size] = 0;
		rc = gram_parse(t, &g, err, sizeof(err));
		free(t);
		if (rc == -EINVAL && (strncmp(err, "grammar", 7) || strchr(err, '\n')))
			abort();
	}
	if (!rc) {
		run(g);
		gram_free(g);
	}
	return 0;
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	static const char *const s[] = {
		"root ::= object\nobject ::= \"{\" ws (pair (\",\" ws pair)*)? \"}\"\npair ::= str \":\" ws value\n"
		"value ::= object | str | [0-9]+ | \"true\"\nstr ::= \"\\\"\" [^\"\\\\]* \"\\\"\" ws\nws ::= [ \\t\\n]*\n",
		"root ::= (\"yes\" | \"no\"){1,3} [a-z\\u00e9]? . # comment\n",
		"root ::= x{2,4} (y | )\nx ::= [^a-c] \"é\"?\ny ::= \"🙂\"+\n",
		"{\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"array\", \"items\": {\"enum\": [1, \"x\", null]},"
		" \"maxItems\": 3}, \"b\": {\"type\": \"string\", \"maxLength\": 4}}, \"required\": [\"a\"]}",
		"{\"$defs\": {\"n\": {\"anyOf\": [{\"type\": \"integer\"}, {\"type\": \"array\", \"items\": {\"$ref\": \"#/$defs/n\"}}]}},"
		" \"$ref\": \"#/$defs/n\"}",
		"{\"const\": {\"k\": [true, 2.5]}}",
	};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		add((const uint8_t *)s[i], strlen(s[i]));
}

#include "fuzz_driver.h"
