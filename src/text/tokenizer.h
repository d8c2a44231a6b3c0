/*
 * tokenizer.h: text <-> token ids, exact to the token against the reference tokenizers.
 *
 * Two model kinds cover the vocabularies in use: byte-level BPE with ranked merges (GPT-2, Llama 3, Qwen2,
 * DeepSeek, StarCoder, Falcon) and SentencePiece-style BPE from scores with byte fallback (Llama 1/2,
 * Phi-3, Gemma). Sources: GGUF metadata (tokenizer.ggml.*) or a Hugging Face tokenizer.json (with
 * tokenizer_config.json beside it). Both are compiled into one pipeline: added/special-token
 * partition -> normalizers -> pre-tokenizers (PCRE2 regex splits) -> BPE -> ids.
 *
 * Special tokens in the text are matched as whole tokens only with TOK_PARSE_SPECIAL (chat templates);
 * user-defined (non-special) added tokens are always matched, as the reference implementations do.
 * Encoding is thread-safe (the word cache is locked); decoding is incremental and UTF-8 safe.
 */
#ifndef FERRY_TOKENIZER_H
#define FERRY_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tokenizer;
struct gguf;

struct tok_ids {
	int32_t *ids;
	size_t n, cap;
};

struct tok_buf {
	char *p;
	size_t n, cap;
};

enum tok_flags {
	TOK_ADD_SPECIAL = 1,   /* BOS/EOS as the model's settings say */
	TOK_PARSE_SPECIAL = 2, /* match special tokens written in the text */
};

/* PATH: a model.ferry directory, a .gguf file, or a tokenizer.json (tokenizer_config.json is read from
 * the same directory when present). */
int tokenizer_open(struct tokenizer **t, const char *path, char *err, size_t errlen);
int tokenizer_from_gguf(struct tokenizer **t, const struct gguf *g, const char *name, char *err, size_t errlen);
int tokenizer_from_json(struct tokenizer **t, const char *json_path, const char *config_path, char *err,
			size_t errlen);
void tokenizer_free(struct tokenizer *t);

/* Appends the ids of TEXT[0..len) to out. Fails on invalid UTF-8 (naming the byte offset). */
int tokenizer_encode(struct tokenizer *t, const char *text, size_t len, unsigned flags, struct tok_ids *out,
		     char *err, size_t errlen);

int32_t tokenizer_n_vocab(const struct tokenizer *t);
int32_t tokenizer_bos(const struct tokenizer *t); /* -1 when the model has none */
int32_t tokenizer_eos(const struct tokenizer *t);
bool tokenizer_add_bos(const struct tokenizer *t);
bool tokenizer_is_eog(const struct tokenizer *t, int32_t id);
/* The end-of-generation ids (*ids valid until the tokenizer changes); returns how many. */
int tokenizer_eog_ids(const struct tokenizer *t, const int32_t **ids);
/* Adds an end-of-generation id (e.g. from generation_config.json). */
void tokenizer_add_eog(struct tokenizer *t, int32_t id);
/* The id of a token with exactly this text, or -1. */
int32_t tokenizer_find(const struct tokenizer *t, const char *text);
/* The vocabulary text of a token (not NUL-terminated), NULL for an id out of range. */
const char *tokenizer_text(const struct tokenizer *t, int32_t id, size_t *len);

/* Decoding. special: render control tokens as their text (otherwise they produce nothing). at_start: the
 * ids begin the sequence, so a SentencePiece leading space added by encoding is removed. */
int tokenizer_decode(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, bool at_start,
		     struct tok_buf *out);

/* The text `tokenizers` decode returns (always valid UTF-8): byte-fallback runs that are not UTF-8 give
 * one U+FFFD per byte token, other invalid bytes one U+FFFD per maximal invalid subsequence. Decodes from
 * the start of a sequence. */
int tokenizer_decode_text(const struct tokenizer *t, const int32_t *ids, size_t n, bool special, struct tok_buf *out);

/* Streaming decode: push ids one at a time; each push appends to out only bytes that end on a complete
 * UTF-8 character, holding back a trailing partial one; flush appends whatever is held. The pushes plus
 * the flush append exactly what tokenizer_decode of the same ids gives (its lossy form when lossy is set). */
struct tok_stream {
	const struct tokenizer *t;
	bool special, strip, started;
	bool lossy; /* set after init: invalid UTF-8 comes out as U+FFFD (tok_buf_add_lossy), for terminals */
	uint8_t hold[4];
	int n_hold;
};

void tok_stream_init(struct tok_stream *s, const struct tokenizer *t, bool special, bool at_start);
int tok_stream_push(struct tok_stream *s, int32_t id, struct tok_buf *out);
int tok_stream_flush(struct tok_stream *s, struct tok_buf *out);

int tok_ids_push(struct tok_ids *v, int32_t id);
void tok_ids_free(struct tok_ids *v);
int tok_buf_add(struct tok_buf *b, const void *p, size_t n);
/* Appends p[0..n) with invalid UTF-8 replaced as Rust's String::from_utf8_lossy does (one U+FFFD per
 * maximal invalid subsequence). */
int tok_buf_add_lossy(struct tok_buf *b, const char *p, size_t n);
void tok_buf_free(struct tok_buf *b);

#endif
