/*
 * test_tokenizer.c: the tokenizer API beyond exact ids (those are checked against the references by the
 * Python tests): UTF-8-safe streaming decode, special-token parsing on and off, BOS/EOS/EOG settings,
 * invalid input, and a hand-written tokenizer.json exercising Metaspace, Replace, added-token
 * lstrip/rstrip, byte fallback and refused components. Run from the repository root; the parts on the
 * real vocabularies need ../shared/data/vocab.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/xorshift.h"
#include "check.h"
#include "text/tokenizer.h"

#define VOCAB "../shared/data/vocab/ggml-vocab-"

static const char *const texts[] = {
	"Hello world",
	" leading space and trailing ",
	"emoji 🦙🚀👨‍👩‍👧 and CJK 你好世界, Ελληνικά, кириллица",
	"tabs\tand\nnewlines\r\n  runs   of    spaces",
	"ü",
	"",
	"123456789 3.14159 x²",
}; /* (a literal "▁" would not survive SentencePiece: it is how that model writes a space) */

static bool valid_utf8_complete(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		unsigned char c = (unsigned char)s[i];
		size_t k = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
		if (!k || i + k > n)
			return false;
		for (size_t j = 1; j < k; j++)
			if (((unsigned char)s[i + j] & 0xC0) != 0x80)
				return false;
		i += k;
	}
	return true;
}

/* Every streamed piece is whole UTF-8; pieces + flush == decode == the original text. */
static void check_stream(struct tokenizer *t, const char *name)
{
	char err[256];
	for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
		struct tok_ids ids = {0};
		CHECK_MSG(tokenizer_encode(t, texts[i], strlen(texts[i]), 0, &ids, err, sizeof(err)) == 0, "%s: %s", name, err);
		struct tok_buf all = {0}, streamed = {0};
		CHECK(tokenizer_decode(t, ids.ids, ids.n, false, true, &all) == 0);
		struct tok_stream s;
		tok_stream_init(&s, t, false, true);
		for (size_t k = 0; k < ids.n; k++) {
			size_t before = streamed.n;
			CHECK(tok_stream_push(&s, ids.ids[k], &streamed) == 0);
			CHECK_MSG(valid_utf8_complete(streamed.p + before, streamed.n - before), "%s: piece %zu of '%s' splits a character",
				  name, k, texts[i]);
		}
		CHECK(tok_stream_flush(&s, &streamed) == 0);
		CHECK_MSG(streamed.n == all.n && !memcmp(streamed.p, all.p, all.n), "%s: streamed != decoded for '%s'", name, texts[i]);
		CHECK_MSG(all.n == strlen(texts[i]) && !memcmp(all.p, texts[i], all.n), "%s: '%s' decodes to '%.*s'", name, texts[i],
			  (int)all.n, all.p ? all.p : "");
		tok_buf_free(&all);
		tok_buf_free(&streamed);
		tok_ids_free(&ids);
	}
}

/* A lossy stream (what ferry run prints) over random ids, half of them single bytes (the first 256 ids of a
 * byte-level vocabulary) so that invalid UTF-8 abounds: every piece is valid UTF-8 (lossy leaves it as it
 * is) and the pieces + flush equal the lossy form of the whole raw decode. */
static void check_stream_lossy(struct tokenizer *t, const char *name)
{
	uint64_t x = 0x9e3779b97f4a7c15ull;
	for (int round = 0; round < 200; round++) {
		int32_t ids[24];
		for (int k = 0; k < 24; k++) {
			xorshift64(&x);
			ids[k] = (int32_t)(x % 2 ? x % 256 : 256 + x % 20000);
		}
		struct tok_buf raw = {0}, want = {0}, streamed = {0}, again = {0};
		CHECK(tokenizer_decode(t, ids, 24, false, false, &raw) == 0);
		CHECK(tok_buf_add_lossy(&want, raw.p ? raw.p : "", raw.n) == 0);
		struct tok_stream s;
		tok_stream_init(&s, t, false, false);
		s.lossy = true;
		for (int k = 0; k < 24; k++) {
			size_t before = streamed.n;
			CHECK(tok_stream_push(&s, ids[k], &streamed) == 0);
			again.n = 0;
			CHECK(tok_buf_add_lossy(&again, streamed.p ? streamed.p + before : "", streamed.n - before) == 0);
			CHECK_MSG(again.n == streamed.n - before && !memcmp(again.p ? again.p : "", streamed.p ? streamed.p + before : "", again.n),
				  "%s: round %d piece %d is not valid UTF-8", name, round, k);
		}
		CHECK(tok_stream_flush(&s, &streamed) == 0);
		CHECK_MSG(streamed.n == want.n && !memcmp(streamed.p ? streamed.p : "", want.p ? want.p : "", want.n),
			  "%s: round %d: lossy stream != lossy decode", name, round);
		tok_buf_free(&raw);
		tok_buf_free(&want);
		tok_buf_free(&streamed);
		tok_buf_free(&again);
	}
}

static size_t count(const struct tok_ids *v, int32_t id)
{
	size_t n = 0;
	for (size_t i = 0; i < v->n; i++)
		n += v->ids[i] == id;
	return n;
}

static void test_gpt2(void)
{
	char err[256];
	struct tokenizer *t;
	if (tokenizer_open(&t, VOCAB "gpt-2.gguf", err, sizeof(err))) {
		fprintf(stderr, "skipping the gpt-2 part: %s\n", err);
		return;
	}
	check_stream(t, "gpt-2");
	check_stream_lossy(t, "gpt-2");
	int32_t eot = tokenizer_find(t, "<|endoftext|>");
	CHECK(eot == 50256 && tokenizer_is_eog(t, eot));
	const char *s = "a<|endoftext|>b";
	struct tok_ids on = {0}, off = {0};
	CHECK(tokenizer_encode(t, s, strlen(s), TOK_PARSE_SPECIAL, &on, err, sizeof(err)) == 0);
	CHECK(tokenizer_encode(t, s, strlen(s), 0, &off, err, sizeof(err)) == 0);
	CHECK(on.n == 3 && count(&on, eot) == 1);
	CHECK(off.n > 3 && count(&off, eot) == 0);
	/* A control token decodes to nothing unless asked for. */
	struct tok_buf a = {0}, b = {0};
	CHECK(tokenizer_decode(t, on.ids, on.n, false, true, &a) == 0 && a.n == 2 && !memcmp(a.p, "ab", 2));
	CHECK(tokenizer_decode(t, on.ids, on.n, true, true, &b) == 0 && b.n == strlen(s) && !memcmp(b.p, s, b.n));
	/* Invalid UTF-8 is refused with its offset. */
	struct tok_ids bad = {0};
	CHECK(tokenizer_encode(t, "abc\xff", 4, 0, &bad, err, sizeof(err)) == -EILSEQ && strstr(err, "byte 3"));
	CHECK(tokenizer_encode(t, "ab\xe2\x82", 4, 0, &bad, err, sizeof(err)) == -EILSEQ && strstr(err, "byte 2"));
	CHECK(tokenizer_encode(t, "\xed\xa0\x80", 3, 0, &bad, err, sizeof(err)) == -EILSEQ); /* surrogate */
	tok_ids_free(&bad);
	tok_buf_free(&a);
	tok_buf_free(&b);
	tok_ids_free(&on);
	tok_ids_free(&off);
	tokenizer_free(t);
}

static void test_spm(void)
{
	char err[256];
	struct tokenizer *t;
	if (tokenizer_open(&t, VOCAB "llama-spm.gguf", err, sizeof(err))) {
		fprintf(stderr, "skipping the llama-spm part: %s\n", err);
		return;
	}
	check_stream(t, "llama-spm");
	struct tok_ids v = {0};
	CHECK(tokenizer_encode(t, "Hello", 5, TOK_ADD_SPECIAL, &v, err, sizeof(err)) == 0);
	CHECK(v.n == 2 && v.ids[0] == 1 && v.ids[1] == 15043);
	CHECK(tokenizer_bos(t) == 1 && tokenizer_eos(t) == 2 && tokenizer_is_eog(t, 2) && tokenizer_add_bos(t));
	/* Mid-sequence pieces keep their leading space. */
	struct tok_buf b = {0};
	CHECK(tokenizer_decode(t, v.ids + 1, 1, false, false, &b) == 0 && b.n == 6 && !memcmp(b.p, " Hello", 6));
	/* A byte-fallback emoji streams as nothing, nothing, nothing, then the whole character. */
	struct tok_ids e = {0};
	CHECK(tokenizer_encode(t, "\xf0\x9f\xa6\x99", 4, 0, &e, err, sizeof(err)) == 0);
	struct tok_stream s;
	struct tok_buf out = {0};
	tok_stream_init(&s, t, false, false);
	size_t sizes[8] = {0};
	for (size_t i = 0; i < e.n && i < 8; i++) {
		tok_stream_push(&s, e.ids[i], &out);
		sizes[i] = out.n;
	}
	CHECK(e.n == 5 && sizes[0] == 1 && sizes[1] == 1 && sizes[2] == 1 && sizes[3] == 1 && sizes[4] == 5);
	tok_buf_free(&out);
	tok_buf_free(&b);
	tok_ids_free(&e);
	tok_ids_free(&v);
	tokenizer_free(t);
}

static int write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		return -1;
	fputs(text, f);
	return fclose(f);
}

/* A small SentencePiece-like tokenizer.json: ▁ handling through normalizers, byte fallback, an added
 * non-special token with lstrip and a special token with rstrip. */
static const char *spm_json =
	"{\"added_tokens\": ["
	"{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
	"{\"id\": 1, \"content\": \"<s>\", \"special\": true},"
	"{\"id\": 2, \"content\": \"</s>\", \"special\": true, \"rstrip\": true},"
	"{\"id\": 3, \"content\": \"<tool>\", \"special\": false, \"lstrip\": true}],"
	"\"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"},"
	"  {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},"
	"\"pre_tokenizer\": null,"
	"\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},"
	"  {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1]}}},"
	"\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"},"
	"  \"content\": \" \"}, {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"},"
	"  {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
	"\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
	"  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x21>\": 4, \"<0xC3>\": 5, \"<0xA9>\": 6,"
	"    \"\xe2\x96\x81\": 7, \"a\": 8, \"b\": 9, \"ab\": 10, \"\xe2\x96\x81" "ab\": 11},"
	"  \"merges\": [\"a b\", \"\xe2\x96\x81 ab\"]}}";

static void test_json(void)
{
	char dir[] = "/tmp/ferry_tok_XXXXXX", path[128], err[256];
	if (!mkdtemp(dir)) {
		CHECK(0);
		return;
	}
	snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
	CHECK(write_file(path, spm_json) == 0);
	struct tokenizer *t;
	int rc = tokenizer_open(&t, dir, err, sizeof(err));
	CHECK_MSG(rc == 0, "%s", err);
	if (!rc) {
		struct tok_ids v = {0};
		/* "ab ab!é": ▁ab ▁ab then ! and é by bytes. */
		const char *s = "ab ab!\xc3\xa9";
		CHECK(tokenizer_encode(t, s, strlen(s), TOK_ADD_SPECIAL, &v, err, sizeof(err)) == 0);
		int32_t want[] = {1, 11, 11, 4, 5, 6};
		CHECK_MSG(v.n == 6 && !memcmp(v.ids, want, sizeof(want)), "got %zu ids", v.n);
		struct tok_buf b = {0};
		CHECK(tokenizer_decode(t, v.ids, v.n, false, true, &b) == 0 && b.n == strlen(s) && !memcmp(b.p, s, b.n));
		/* <tool> (not special) is matched without parse_special and swallows the spaces before it; </s>
		 * (special, rstrip) only with parse_special, and swallows the spaces after it. */
		v.n = 0;
		s = "ab  <tool></s>  ab";
		CHECK(tokenizer_encode(t, s, strlen(s), 0, &v, err, sizeof(err)) == 0);
		CHECK(count(&v, 3) == 1 && count(&v, 2) == 0);
		v.n = 0;
		CHECK(tokenizer_encode(t, s, strlen(s), TOK_PARSE_SPECIAL, &v, err, sizeof(err)) == 0);
		int32_t want2[] = {11, 3, 2, 11};
		CHECK_MSG(v.n == 4 && !memcmp(v.ids, want2, sizeof(want2)), "got %zu ids", v.n);
		/* Unknown characters without a byte token fuse into one <unk>. */
		v.n = 0;
		CHECK(tokenizer_encode(t, "zz", 2, 0, &v, err, sizeof(err)) == 0);
		CHECK_MSG(v.n == 2 && v.ids[0] == 7 && v.ids[1] == 0, "got %zu ids", v.n);
		tok_buf_free(&b);
		tok_ids_free(&v);
		tokenizer_free(t);
	}
	/* Components ferry does not implement are refused by name. */
	CHECK(write_file(path, "{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}") == 0);
	CHECK(tokenizer_open(&t, path, err, sizeof(err)) == -ENOTSUP && strstr(err, "WordPiece"));
	CHECK(write_file(path, "{\"normalizer\": {\"type\": \"Precompiled\"}, \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"
			       " \"merges\": []}}") == 0);
	CHECK(tokenizer_open(&t, path, err, sizeof(err)) == -ENOTSUP && strstr(err, "Precompiled"));
	CHECK(write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}") == 0);
	CHECK(tokenizer_open(&t, path, err, sizeof(err)) == -EINVAL && strstr(err, "merges[0]"));
	CHECK(write_file(path, "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [") == 0);
	CHECK(tokenizer_open(&t, path, err, sizeof(err)) == -EINVAL && strstr(err, "tokenizer.json:1:"));
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	test_gpt2();
	test_spm();
	test_json();
	CHECK_DONE();
}
