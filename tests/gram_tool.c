/*
 * gram_tool.c: the grammar module (src/grammar/) for tests/test_grammar.py, which holds it against Python's
 * re and jsonschema.
 *   gram_tool gbnf SCHEMA.json                   the GBNF of a JSON schema (exit 1 with the message on error)
 *   gram_tool accept gbnf|schema FILE            for each line of stdin (a JSON string): 1 when the grammar
 *                                                takes the whole text, else 0 (fed one byte at a time)
 *   gram_tool gen gbnf|schema FILE SEED N LEN    N random sentences (JSON strings, one a line) drawn through
 *                                                the vocabulary mask over a made-up vocabulary (single bytes,
 *                                                UTF-8 characters whole and split, JSON-like pieces); after
 *                                                LEN tokens closing tokens are preferred; "null" when a
 *                                                sentence did not end within 4000 tokens
 *   gram_tool maskbench MODEL SCHEMA.json PREFIX N  a model's vocabulary trie (its build time), then N masks
 *                                                after PREFIX (text the schema's grammar takes): ms each
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/grammar.h"
#include "base/util.h"
#include "base/xorshift.h"
#include "text/tokenizer.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	fseek(f, 0, SEEK_END);
	long n = ftell(f);
	fseek(f, 0, SEEK_SET);
	char *p = malloc((size_t)n + 1);
	if (p && fread(p, 1, (size_t)n, f) != (size_t)n) {
		free(p);
		p = NULL;
	}
	if (p)
		p[n] = 0;
	fclose(f);
	return p;
}

static struct gram *load(const char *kind, const char *path)
{
	char err[512];
	struct gram *g = NULL;
	int rc;
	if (!strcmp(kind, "schema")) {
		json_error_t je;
		json_t *s = json_load_file(path, JSON_DECODE_ANY, &je);
		if (!s) {
			fprintf(stderr, "gram_tool: %s: %s\n", path, je.text);
			exit(2);
		}
		rc = gram_from_schema(s, &g, err, sizeof(err));
		json_decref(s);
	} else {
		char *t = slurp(path);
		rc = t ? gram_parse(t, &g, err, sizeof(err)) : -1;
		free(t);
	}
	if (rc) {
		fprintf(stderr, "%s\n", rc == -1 ? "gram_tool: cannot read the file" : err);
		exit(1);
	}
	return g;
}

static uint64_t rng;
static uint32_t rnd(void)
{
	return (uint32_t)(xorshift64(&rng) >> 16);
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "gbnf")) {
		json_error_t je;
		char err[512];
		json_t *s = json_load_file(argv[2], JSON_DECODE_ANY, &je);
		if (!s || gram_schema_gbnf(s, "value", true, stdout, err, sizeof(err))) {
			fprintf(stderr, "%s\n", s ? err : je.text);
			json_decref(s);
			return 1;
		}
		json_decref(s);
		return 0;
	}
	if (argc == 4 && !strcmp(argv[1], "accept")) {
		struct gram *g = load(argv[2], argv[3]);
		char line[65536];
		while (fgets(line, sizeof(line), stdin)) {
			json_t *j = json_loads(line, JSON_DECODE_ANY, NULL);
			if (!json_is_string(j)) {
				fprintf(stderr, "gram_tool: not a JSON string: %s", line);
				return 2;
			}
			struct gram_state *s;
			if (gram_state_new(g, &s))
				return 2;
			const char *p = json_string_value(j);
			bool ok = true;
			for (size_t i = 0; i < json_string_length(j) && ok; i++)
				ok = gram_state_feed(s, p + i, 1);
			printf("%d\n", ok && gram_state_can_end(s));
			gram_state_free(s);
			json_decref(j);
		}
		gram_free(g);
		return 0;
	}
	if (argc == 7 && !strcmp(argv[1], "gen")) {
		struct gram *g = load(argv[2], argv[3]);
		rng = strtoull(argv[4], NULL, 10) * 2654435761u + 1;
		int n = atoi(argv[5]), len = atoi(argv[6]);
		static const char *pieces[] = {"{\"", "\":", "\", \"", "\": \"", "true", "false", "null", "123", "-4", ".5",
					       "e+7", "é", "\xc3", "\xa9", "€", "\xe2\x82", "\xac", "🙂", "\xf0\x9f", "\x99\x82",
					       "\\n", "\\u00e9", "}, {", "[]", "{}", "\"}", "\"]", "abc", "name", "  ", "\n"};
		int np = (int)(sizeof(pieces) / sizeof(pieces[0])), V = 95 + np;
		char **text = calloc((size_t)V, sizeof(char *));
		size_t *tl = calloc((size_t)V, sizeof(size_t));
		for (int t = 0; t < 95; t++) {
			text[t] = malloc(1);
			text[t][0] = (char)(0x20 + t);
			tl[t] = 1;
		}
		for (int t = 0; t < np; t++) {
			text[95 + t] = strdup(pieces[t]);
			tl[95 + t] = strlen(pieces[t]);
		}
		struct gram_vocab *vb;
		if (gram_vocab_new((const char *const *)text, tl, V, &vb))
			return 2;
		uint8_t *allow = malloc((size_t)V);
		static const char closers[] = "\"}]0123456789eslurtan";
		for (int k = 0; k < n; k++) {
			struct gram_state *s;
			if (gram_state_new(g, &s))
				return 2;
			char *out = NULL;
			size_t on = 0;
			FILE *o = open_memstream(&out, &on);
			bool ended = false;
			for (int step = 0; step < 4000; step++) {
				int cnt = gram_vocab_mask(vb, s, allow);
				bool can_end = gram_state_can_end(s);
				if (can_end && (cnt <= 0 || rnd() % (step > len ? 2 : 12) == 0)) {
					ended = true;
					break;
				}
				if (cnt <= 0)
					break;
				int pick = -1;
				for (const char *c = closers; step > len && pick < 0 && *c; c++)
					if (allow[*c - 0x20] && rnd() % 4)
						pick = *c - 0x20;
				for (int seen = 0, t = 0; pick < 0 && t < V; t++)
					if (allow[t] && rnd() % ++seen == 0)
						pick = t;
				if (!gram_state_feed(s, text[pick], tl[pick])) {
					fprintf(stderr, "gram_tool: the mask allowed token %d that feed refuses\n", pick);
					return 1;
				}
				fwrite(text[pick], 1, tl[pick], o);
			}
			fclose(o);
			json_t *j = ended ? json_stringn(out, on) : json_null();
			char *d = json_dumps(j, JSON_ENCODE_ANY);
			printf("%s\n", d ? d : "null");
			free(d);
			json_decref(j);
			free(out);
			gram_state_free(s);
		}
		for (int t = 0; t < V; t++)
			free(text[t]);
		free(text);
		free(tl);
		free(allow);
		gram_vocab_free(vb);
		gram_free(g);
		return 0;
	}
	if (argc == 6 && !strcmp(argv[1], "maskbench")) {
		struct tokenizer *tk;
		char err[512];
		if (tokenizer_open(&tk, argv[2], err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			return 1;
		}
		struct gram *g = load("schema", argv[3]);
		double t0 = now_sec();
		int V = tokenizer_n_vocab(tk);
		char **text = calloc((size_t)V, sizeof(char *));
		size_t *tl = calloc((size_t)V, sizeof(size_t));
		struct tok_buf b = {0};
		for (int t = 0; t < V; t++) {
			b.n = 0;
			if (!tokenizer_decode(tk, &t, 1, false, false, &b) && b.n) {
				text[t] = malloc(b.n);
				memcpy(text[t], b.p, b.n);
				tl[t] = b.n;
			}
		}
		struct gram_vocab *vb;
		struct gram_state *s;
		if (gram_vocab_new((const char *const *)text, tl, V, &vb) || gram_state_new(g, &s))
			return 2;
		double t1 = now_sec();
		if (!gram_state_feed(s, argv[4], strlen(argv[4]))) {
			fprintf(stderr, "gram_tool: the grammar refuses the prefix\n");
			return 1;
		}
		uint8_t *allow = malloc((size_t)V);
		int n = atoi(argv[5]), cnt = 0;
		double t2 = now_sec();
		for (int i = 0; i < n; i++)
			cnt = gram_vocab_mask(vb, s, allow);
		double t3 = now_sec();
		printf("vocabulary %d tokens: trie in %.0f ms; after %s: %d allowed, mask %.2f ms\n", V, 1e3 * (t1 - t0),
		       argv[4], cnt, 1e3 * (t3 - t2) / n);
		for (int t = 0; t < V; t++)
			free(text[t]);
		free(text);
		free(tl);
		free(allow);
		tok_buf_free(&b);
		gram_state_free(s);
		gram_vocab_free(vb);
		gram_free(g);
		tokenizer_free(tk);
		return 0;
	}
	fprintf(stderr, "usage: gram_tool gbnf SCHEMA | accept gbnf|schema FILE | gen gbnf|schema FILE SEED N LEN\n");
	return 2;
}
