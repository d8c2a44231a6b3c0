/* test_fuzz_tokenizer_json.c: arbitrary bytes as a tokenizer.json (mutations of small but complete ones:
 * byte-level BPE with Split/Digits/added tokens and a TemplateProcessing post-processor; SentencePiece-style
 * with normalizers, byte fallback and decoders; Whitespace/Punctuation/Metaspace pre-tokenizers) never
 * crash: the file is refused with a message, or it loads and then encodes, decodes and streams fixed texts
 * with every flag combination, the stream equal to the whole decode. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "text/tokenizer.h"

static const char *const texts[] = {
	"Hello world, it's 2026!  \n\n\ttabs ab ab!\xc3\xa9",
	"<s>[INST] <tool> special </s> tokens <|endoftext|>x",
	"  \xc2\xa0\xe3\x80\x80 caf\xc3\xa9 CAFE\xcc\x81 \xc4\xb0stanbul 12345 \xf0\x9f\xa6\x99",
	"",
};

static int fuzz_one(const uint8_t *data, size_t size)
{
	int fd = memfd_create("tokenizer.json", 0);
	if (fd < 0 || write(fd, data, size) != (ssize_t)size)
		abort();
	char path[64], err[256];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	struct tokenizer *t;
	if (tokenizer_from_json(&t, path, NULL, err, sizeof(err)) == 0) {
		for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++)
			for (unsigned flags = 0; flags < 4; flags++) {
				struct tok_ids ids = {0};
				if (tokenizer_encode(t, texts[i], strlen(texts[i]), flags, &ids, err, sizeof(err)) == 0) {
					struct tok_buf all = {0}, streamed = {0}, text = {0};
					struct tok_stream s;
					tok_stream_init(&s, t, flags & 1, true);
					for (size_t k = 0; k < ids.n; k++)
						tok_stream_push(&s, ids.ids[k], &streamed);
					tok_stream_flush(&s, &streamed);
					tokenizer_decode(t, ids.ids, ids.n, flags & 1, true, &all);
					if (all.n != streamed.n || (all.n && memcmp(all.p, streamed.p, all.n)))
						abort();
					tokenizer_decode_text(t, ids.ids, ids.n, flags & 1, &text);
					tok_buf_free(&all);
					tok_buf_free(&streamed);
					tok_buf_free(&text);
				}
				tok_ids_free(&ids);
			}
		tokenizer_free(t);
	}
	close(fd);
	return 0;
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	static const char *s[] = {
		/* byte-level BPE (vocabulary: the printable ASCII bytes as GPT-2 maps them, a few merges) */
		"{\"added_tokens\": [{\"id\": 0, \"content\": \"<|endoftext|>\", \"special\": true, \"normalized\": false},"
		" {\"id\": 1, \"content\": \"<tool>\", \"special\": false, \"normalized\": true, \"lstrip\": true, \"single_word\": true}],"
		" \"normalizer\": {\"type\": \"NFC\"},"
		" \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Digits\", \"individual_digits\": false},"
		"  {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(?i:'s|'t)| ?\\\\p{L}+| ?\\\\p{N}+| ?[^\\\\s\\\\p{L}\\\\p{N}]+|\\\\s+\"},"
		"   \"behavior\": \"Isolated\", \"invert\": false},"
		"  {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true, \"use_regex\": false}]},"
		" \"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": [{\"SpecialToken\": {\"id\": \"<|endoftext|>\", \"type_id\": 0}},"
		"  {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}], \"pair\": [], \"special_tokens\": {\"<|endoftext|>\": {\"id\": \"<|endoftext|>\", \"ids\": [0], \"tokens\": [\"<|endoftext|>\"]}}},"
		" \"decoder\": {\"type\": \"ByteLevel\"},"
		" \"model\": {\"type\": \"BPE\", \"ignore_merges\": true, \"vocab\": {\"<|endoftext|>\": 0, \"<tool>\": 1, \"H\": 2, \"e\": 3, \"l\": 4,"
		"  \"o\": 5, \"h\": 16, \"\xc4\xa0\": 6, \"w\": 7, \"r\": 8, \"d\": 9, \"he\": 10, \"ll\": 11, \"hell\": 12, \"\xc4\xa0w\": 13, \"1\": 14, \"2\": 15},"
		"  \"merges\": [\"h e\", \"l l\", \"he ll\", \"\xc4\xa0 w\"]}}",
		/* SentencePiece-style */
		"{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},"
		" {\"id\": 1, \"content\": \"<s>\", \"special\": true}, {\"id\": 2, \"content\": \"</s>\", \"special\": true, \"rstrip\": true}],"
		" \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [{\"type\": \"NFKC\"}, {\"type\": \"Lowercase\"}, {\"type\": \"Strip\", \"strip_left\": true, \"strip_right\": false},"
		"  {\"type\": \"Prepend\", \"prepend\": \"\xe2\x96\x81\"}, {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\xe2\x96\x81\"}]},"
		" \"pre_tokenizer\": null,"
		" \"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"Replace\", \"pattern\": {\"String\": \"\xe2\x96\x81\"}, \"content\": \" \"},"
		"  {\"type\": \"ByteFallback\"}, {\"type\": \"Fuse\"}, {\"type\": \"Strip\", \"content\": \" \", \"start\": 1, \"stop\": 0}]},"
		" \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"unk_token\": \"<unk>\", \"fuse_unk\": true,"
		"  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2, \"<0x21>\": 3, \"<0xC3>\": 4, \"<0xA9>\": 5,"
		"   \"\xe2\x96\x81\": 6, \"a\": 7, \"b\": 8, \"ab\": 9, \"\xe2\x96\x81" "ab\": 10}, \"merges\": [[\"a\", \"b\"], [\"\xe2\x96\x81\", \"ab\"]]}}",
		/* Whitespace / Punctuation / Metaspace */
		"{\"added_tokens\": [], \"normalizer\": {\"type\": \"NFD\"},"
		" \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Whitespace\"}, {\"type\": \"Punctuation\", \"behavior\": \"Isolated\"},"
		"  {\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": true}]},"
		" \"decoder\": {\"type\": \"Metaspace\", \"replacement\": \"\xe2\x96\x81\", \"prepend_scheme\": \"first\", \"split\": true},"
		" \"model\": {\"type\": \"BPE\", \"unk_token\": \"?\", \"vocab\": {\"?\": 0, \"\xe2\x96\x81\": 1, \"a\": 2, \"b\": 3, \"\xe2\x96\x81" "a\": 4, \"!\": 5},"
		"  \"merges\": [\"\xe2\x96\x81 a\"]}}",
	};
	for (size_t i = 0; i < sizeof(s) / sizeof(s[0]); i++)
		add((const uint8_t *)s[i], strlen(s[i]));
}

#include "fuzz_driver.h"
