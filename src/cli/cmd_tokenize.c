/*
 * cmd_tokenize.c: `ferry tokenize` and `ferry detokenize`.
 *   ferry tokenize -m MODEL [--no-add-special] [--parse-special] [--pieces] (TEXT | -f FILE)
 *   ferry tokenize -m MODEL --json FILE         FILE: a JSON list of strings; prints a JSON list of id lists
 *   ferry detokenize -m MODEL [--special] [IDS... | < ids]
 *   ferry detokenize -m MODEL --json FILE       FILE: a JSON list of id lists; prints a JSON list of strings
 * --time N (tokenize): encode N times and print the first and the best pass's throughput to stderr (the
 * benchmark's in-process figure; the word cache is warm after the first pass).
 * MODEL is a model.ferry or Hugging Face directory, a .gguf file, or a tokenizer.json.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "text/tokenizer.h"
#include "base/util.h"

static void print_piece(const struct tokenizer *t, int32_t id)
{
	struct tok_buf b = {0}, text = {0};
	tokenizer_decode(t, &id, 1, true, false, &b);
	tok_buf_add_lossy(&text, b.p ? b.p : "", b.n);
	json_t *s = json_stringn(text.p ? text.p : "", text.n);
	char *js = json_dumps(s, JSON_ENCODE_ANY); /* quoted, so that spaces show; the text itself, not escapes */
	printf("%d\t%s\n", id, js ? js : "?");
	free(js);
	json_decref(s);
	tok_buf_free(&b);
	tok_buf_free(&text);
}

/* --json: a list of strings in, a list of id lists out (one line per string). */
static int tokenize_json(struct tokenizer *t, const char *path, unsigned flags)
{
	json_error_t je;
	json_t *in = json_load_file(path, 0, &je);
	if (!json_is_array(in)) {
		fprintf(stderr, "ferry: %s:%d:%d: %s\n", path, je.line, je.column, in ? "expected a JSON list of strings" : je.text);
		json_decref(in);
		return 1;
	}
	char err[ERR_LEN];
	size_t i;
	json_t *v;
	int rc = 0;
	printf("[\n");
	json_array_foreach(in, i, v) {
		if (!json_is_string(v)) {
			fprintf(stderr, "ferry: %s: item %zu is not a string\n", path, i);
			rc = 1;
			break;
		}
		struct tok_ids ids = {0};
		if (tokenizer_encode(t, json_string_value(v), json_string_length(v), flags, &ids, err, sizeof(err))) {
			fprintf(stderr, "ferry: %s: item %zu: %s\n", path, i, err);
			rc = 1;
			break;
		}
		printf("[");
		for (size_t k = 0; k < ids.n; k++)
			printf("%s%d", k ? ", " : "", ids.ids[k]);
		printf("]%s\n", i + 1 < json_array_size(in) ? "," : "");
		tok_ids_free(&ids);
	}
	printf("]\n");
	json_decref(in);
	return rc;
}

/* --json: a list of id lists in, a list of strings out, one per list (as `tokenizers` decode gives them:
 * invalid UTF-8 replaced by U+FFFD, so no item is ever dropped). */
static int detokenize_json(struct tokenizer *t, const char *path, bool special)
{
	json_error_t je;
	json_t *in = json_load_file(path, 0, &je), *out = json_array();
	if (!json_is_array(in) || !out) {
		fprintf(stderr, "ferry: %s:%d:%d: %s\n", path, je.line, je.column, in ? "expected a JSON list of id lists" : je.text);
		json_decref(in);
		json_decref(out);
		return 1;
	}
	size_t i, k;
	json_t *v, *x;
	int rc = 0;
	json_array_foreach(in, i, v) {
		struct tok_ids ids = {0};
		if (!json_is_array(v)) {
			fprintf(stderr, "ferry: %s: item %zu is not a list of token ids\n", path, i);
			rc = 1;
		}
		json_array_foreach(v, k, x) {
			json_int_t id = json_integer_value(x);
			if (rc || !json_is_integer(x) || id < 0 || id >= tokenizer_n_vocab(t)) {
				if (!rc)
					fprintf(stderr, "ferry: %s: item %zu, position %zu: not a token id of this vocabulary\n", path, i, k);
				rc = 1;
				break;
			}
			if (tok_ids_push(&ids, (int32_t)id))
				rc = 1, fprintf(stderr, "ferry: out of memory\n");
		}
		struct tok_buf b = {0};
		if (!rc && (tokenizer_decode_text(t, ids.ids, ids.n, special, &b) ||
			    json_array_append_new(out, json_stringn(b.p ? b.p : "", b.n)))) {
			fprintf(stderr, "ferry: %s: item %zu: cannot decode\n", path, i);
			rc = 1;
		}
		tok_buf_free(&b);
		tok_ids_free(&ids);
		if (rc)
			break;
	}
	if (!rc)
		json_dumpf(out, stdout, JSON_ENCODE_ANY | JSON_ENSURE_ASCII), printf("\n");
	json_decref(in);
	json_decref(out);
	return rc;
}

static int time_encode(struct tokenizer *t, const struct tok_buf *text, unsigned flags, long repeat)
{
	double first = 0, best = 1e30;
	char err[ERR_LEN];
	size_t n = 0;
	for (long r = 0; r < repeat; r++) {
		struct tok_ids ids = {0};
		double t0 = now_sec();
		int rc = tokenizer_encode(t, text->p, text->n, flags, &ids, err, sizeof(err));
		double dt = now_sec() - t0;
		n = ids.n;
		tok_ids_free(&ids);
		if (rc) {
			fprintf(stderr, "ferry: %s\n", err);
			return 1;
		}
		first = r ? first : dt;
		best = dt < best ? dt : best;
	}
	fprintf(stderr, "encode: %zu bytes -> %zu tokens; first pass %.4f s (%.2f MB/s), best of %ld %.4f s (%.2f MB/s)\n",
		text->n, n, first, text->n / first / 1e6, repeat, best, text->n / best / 1e6);
	return 0;
}

static int usage(bool ok, bool detok)
{
	fprintf(ok ? stdout : stderr,
		detok ? "usage: ferry detokenize -m MODEL [--special] [IDS... | < ids] | --json FILE\n"
			"  prints the text of token ids (from the arguments or stdin, separated by spaces or commas) and a\n"
			"  newline\n"
		      : "usage: ferry tokenize -m MODEL [--no-add-special] [--parse-special] [--pieces] (TEXT | -f FILE) | --json FILE\n"
			"  prints token ids; --pieces prints one token per line: its id and its text as a JSON string\n");
	return ok ? 0 : 2;
}

static int run(int argc, char **argv, bool detok)
{
	static const struct option lo[] = {{"model", required_argument, 0, 'm'}, {"file", required_argument, 0, 'f'},
					   {"json", required_argument, 0, 'j'},  {"no-add-special", no_argument, 0, 'n'},
					   {"parse-special", no_argument, 0, 'p'}, {"special", no_argument, 0, 's'},
					   {"pieces", no_argument, 0, 'P'},       {"time", required_argument, 0, 't'},
					   {"help", no_argument, 0, 'h'},
					   {0}};
	const char *model = NULL, *file = NULL, *json = NULL;
	unsigned flags = TOK_ADD_SPECIAL;
	bool special = false, pieces = false;
	long repeat = 0;
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "m:f:h", lo, NULL)) != -1) {
		switch (c) {
		case 'm': model = optarg; break;
		case 'f': file = optarg; break;
		case 'j': json = optarg; break;
		case 'n': flags &= ~(unsigned)TOK_ADD_SPECIAL; break;
		case 'p': flags |= TOK_PARSE_SPECIAL; break;
		case 's': special = true; break;
		case 'P': pieces = true; break;
		case 't':
			if (parse_int(optarg, 1, 1000000, &repeat)) {
				fprintf(stderr, "ferry: --time: '%s' is not a count\n", optarg);
				return 2;
			}
			break;
		case 'h': return usage(true, detok);
		default: return opt_hint(detok ? "detokenize" : "tokenize", argv, "m:f:h", lo);
		}
	}
	if (!model || (!detok && !json && !file && optind != argc - 1) || (!detok && file && optind != argc))
		return usage(false, detok);
	char err[ERR_LEN];
	struct tokenizer *t;
	if (tokenizer_open(&t, model, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	int rc = 0;
	if (json) {
		rc = detok ? detokenize_json(t, json, special) : tokenize_json(t, json, flags);
	} else if (detok) {
		struct tok_buf in = {0}, out = {0};
		for (int i = optind; i < argc; i++)
			tok_buf_add(&in, argv[i], strlen(argv[i])), tok_buf_add(&in, " ", 1);
		if (optind == argc && read_file_all("-", &in.p, &in.n))
			rc = 1, fprintf(stderr, "ferry: cannot read stdin\n");
		struct tok_ids ids = {0};
		char *save = NULL;
		for (char *tok = in.p ? strtok_r(in.p, " \t\r\n,[]", &save) : NULL; !rc && tok;
		     tok = strtok_r(NULL, " \t\r\n,[]", &save)) {
			long id;
			if (parse_int(tok, 0, tokenizer_n_vocab(t) - 1, &id)) {
				fprintf(stderr, "ferry: '%s' is not a token id of this vocabulary (0..%d)\n", tok, tokenizer_n_vocab(t) - 1);
				rc = 1;
			} else {
				tok_ids_push(&ids, (int32_t)id);
			}
		}
		if (!rc && tokenizer_decode_text(t, ids.ids, ids.n, special, &out) == 0) {
			fwrite(out.p ? out.p : "", 1, out.n, stdout);
			printf("\n");
		}
		tok_buf_free(&in);
		tok_buf_free(&out);
		tok_ids_free(&ids);
	} else {
		struct tok_buf text = {0};
		int r = file ? read_file_all(file, &text.p, &text.n) : tok_buf_add(&text, argv[optind], strlen(argv[optind]));
		struct tok_ids ids = {0};
		if (r) {
			fprintf(stderr, "ferry: %s: %s\n", file, strerror(-r));
			rc = 1;
		} else if (repeat) {
			rc = time_encode(t, &text, flags, repeat);
		} else if (tokenizer_encode(t, text.p, text.n, flags, &ids, err, sizeof(err))) {
			fprintf(stderr, "ferry: %s: %s\n", file ? file : "text", err);
			rc = 1;
		}
		for (size_t i = 0; !rc && !repeat && i < ids.n; i++) {
			if (pieces)
				print_piece(t, ids.ids[i]);
			else
				printf("%s%d", i ? " " : "", ids.ids[i]);
		}
		if (!rc && !pieces && !repeat)
			printf("\n");
		tok_buf_free(&text);
		tok_ids_free(&ids);
	}
	tokenizer_free(t);
	return rc;
}

int ferry_tokenize(int argc, char **argv)
{
	return run(argc, argv, false);
}

int ferry_detokenize(int argc, char **argv)
{
	return run(argc, argv, true);
}
