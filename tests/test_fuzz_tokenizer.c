/* test_fuzz_tokenizer.c: encoding arbitrary bytes with real vocabularies (byte-level BPE and SentencePiece)
 * never crashes, rejects invalid UTF-8 cleanly, and for the lossless byte-level vocabulary decodes back to
 * the input, streamed or not. Needs ../shared/data/vocab (skips otherwise). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "text/tokenizer.h"

static struct tokenizer *toks[2];
static bool loaded;

static void load(void)
{
	static const char *paths[] = {"../shared/data/vocab/ggml-vocab-gpt-2.gguf",
				      "../shared/data/vocab/ggml-vocab-llama-spm.gguf"};
	char err[256];
	for (int i = 0; i < 2; i++)
		if (tokenizer_open(&toks[i], paths[i], err, sizeof(err))) {
			printf("skip: %s\n", err);
			exit(77);
		}
	loaded = true;
}

static int fuzz_one(const uint8_t *data, size_t size)
{
	if (!loaded)
		load();
	unsigned flags = size ? data[0] & 3 : 0;
	char err[256];
	for (int i = 0; i < 2; i++) {
		struct tok_ids ids = {0};
		if (tokenizer_encode(toks[i], (const char *)data, size, flags, &ids, err, sizeof(err)) == 0) {
			struct tok_buf all = {0}, streamed = {0};
			struct tok_stream s;
			tok_stream_init(&s, toks[i], true, true);
			for (size_t k = 0; k < ids.n; k++)
				tok_stream_push(&s, ids.ids[k], &streamed);
			tok_stream_flush(&s, &streamed);
			tokenizer_decode(toks[i], ids.ids, ids.n, true, true, &all);
			if (all.n != streamed.n || (all.n && memcmp(all.p, streamed.p, all.n)))
				abort();
			/* Byte-level BPE is lossless (BOS/EOS aside, which gpt-2 does not add). */
			if (i == 0 && (all.n != size || (size && memcmp(all.p, data, size))))
				abort();
			tok_buf_free(&all);
			tok_buf_free(&streamed);
		}
		tok_ids_free(&ids);
	}
	return 0;
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	static const char *s[] = {
		"Hello world, it's 2026!  \n\n\ttabs",
		"emoji 🦙🚀👨‍👩‍👧 CJK 你好世界 Ελληνικά кириллица",
		"<s>[INST] special <|endoftext|> tokens </s>",
		"12345678901234567890 3.14 ½ x² ١٢٣",
		"   \xc2\xa0\xe3\x80\x80 \r\n",
	};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		add((const uint8_t *)s[i], strlen(s[i]));
}

#include "fuzz_driver.h"
