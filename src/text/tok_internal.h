/*
 * tok_internal.h: the compiled tokenizer shared by its loaders (tok_gguf.c, tok_json.c), the text
 * pipeline (tok_pre.c), the BPE engine (tok_bpe.c) and the encode/decode entry points (tokenizer.c).
 *
 * Token types follow GGUF's tokenizer.ggml.token_type; a tokenizer.json is mapped onto them (special added
 * tokens -> CONTROL, other added tokens -> USER, <0xXX> with byte_fallback -> BYTE).
 */
#ifndef FERRY_TOK_INTERNAL_H
#define FERRY_TOK_INTERNAL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "base/strmap.h"
#include "text/tokenizer.h"

enum tok_type {
	TOK_TYPE_NORMAL = 1,
	TOK_TYPE_UNKNOWN = 2,
	TOK_TYPE_CONTROL = 3,
	TOK_TYPE_USER = 4,
	TOK_TYPE_UNUSED = 5,
	TOK_TYPE_BYTE = 6,
};

/* How pairs are chosen: by merge rank over token ids (GPT-2 style), or by the score of the merged text's
 * token (SentencePiece BPE). */
enum tok_merge_kind { TOK_MERGE_RANKS, TOK_MERGE_SCORES };

enum tok_norm_kind { TN_NFC, TN_NFD, TN_NFKC, TN_NFKD, TN_PREPEND, TN_REPLACE, TN_LOWERCASE, TN_STRIP };

struct tok_norm {
	enum tok_norm_kind kind;
	char *a, *b; /* PREPEND: a; REPLACE: a -> b (a literal, or re) */
	size_t na, nb;
	pcre2_code *re;
	bool left, right; /* STRIP */
};

enum tok_split { SPLIT_REMOVED, SPLIT_ISOLATED, SPLIT_MERGED_PREV, SPLIT_MERGED_NEXT, SPLIT_CONTIGUOUS };
enum tok_pre_kind { TP_SPLIT, TP_BYTELEVEL, TP_METASPACE };
enum tok_prepend { PREPEND_ALWAYS, PREPEND_FIRST, PREPEND_NEVER };

struct tok_pre {
	enum tok_pre_kind kind;
	pcre2_code *re; /* SPLIT; BYTELEVEL with use_regex */
	enum tok_split behavior;
	bool invert;
	bool add_prefix_space; /* BYTELEVEL */
	char repl[8];          /* METASPACE replacement (UTF-8) */
	size_t nrepl;
	enum tok_prepend prepend;
	bool split;
};

struct tok_added {
	int32_t id;
	bool special, lstrip, rstrip, single_word;
	bool normalized; /* matched in the normalized text, by its normalized content (HF) */
};

/* Byte trie over added-token texts for leftmost-longest matching. */
struct tok_trie_node {
	int32_t child, sibling; /* first child, next sibling; -1 none */
	uint8_t byte;
	int32_t added; /* index in added[], or -1 */
};

struct tok_trie {
	struct tok_trie_node *node; /* node[0] is the root */
	int n, cap;
	int n_words;
	uint8_t first_byte[256]; /* 1 if some word starts with this byte */
};

struct tokenizer {
	char name[256];
	int32_t n_vocab;
	struct tok_buf texts; /* all token texts, back to back */
	uint64_t *off;
	uint32_t *len;
	float *score;
	uint8_t *type;
	struct strmap vocab;

	enum tok_merge_kind merge;
	bool barrier[128];  /* scores merges: ASCII bytes in no token's text, so no merge crosses them */
	bool byte_level;    /* pre-tokens arrive byte-mapped (a ByteLevel step): symbols are their code points */
	bool byte_fallback; /* unknown characters become <0xXX> tokens */
	bool ignore_merges; /* a pre-token that is a whole vocabulary entry is taken as is */
	int32_t unk;
	bool fuse_unk;
	struct pairmap merges;   /* (a << 32 | b) -> (rank, merged id) */
	int32_t byte_tok[256];   /* byte_level: id of the byte's code point; byte_fallback: id of <0xXX> */
	char byte_map[256][2];   /* GPT-2's byte -> printable code point, as UTF-8 */
	uint8_t byte_map_len[256];
	int16_t cp_byte[324];    /* and back: code point (< 324) -> byte, -1 outside the map */

	struct tok_norm *norm;
	int n_norm;
	struct tok_pre *pre;
	int n_pre;

	struct tok_added *added;
	int n_added;
	struct tok_trie trie;      /* added tokens matched in the raw text */
	struct tok_trie trie_norm; /* HF normalized:true added tokens, by normalized content */
	pcre2_code *word_re;       /* a \w character as Rust's regex has it (single_word), or NULL */

	int32_t bos, eos;
	bool add_bos, add_eos;
	/* TemplateProcessing's specials before and after the text when there are several (else bos/eos) */
	int32_t *tmpl_pre, *tmpl_post;
	int n_tmpl_pre, n_tmpl_post;
	int32_t *eog;
	int n_eog;

	bool hf; /* from tokenizer.json: Hugging Face's semantics where they differ from llama.cpp's */

	/* decoding */
	bool dec_byte_level, dec_byte_fallback;
	bool dec_space;      /* ▁ -> ' ' */
	int dec_strip;       /* leading spaces removed at the start of a sequence */
	bool dec_meta_first; /* Metaspace decoder: every ▁ of the first token is removed */
	bool dec_join;       /* no decoder: tokens joined with ' ' (HF) */

	/* word cache for pre-tokenized words */
	pthread_mutex_t lock;
	struct strmap cache;
	struct tok_ids cache_ids;
};

/* tok_vocab.c: building the vocabulary and the shared parts of a tokenizer. */
struct tokenizer *tok_alloc(int32_t n_vocab, const char *name);
int tok_set_token(struct tokenizer *t, int32_t id, const char *s, size_t n, float score, int type);
/* After all tokens are set: the text index; byte tables; the added-token trie from types CONTROL, USER
 * and UNKNOWN (ranks/merges are loader-specific). */
int tok_finish(struct tokenizer *t, char *err, size_t errlen);
int tok_add_merge(struct tokenizer *t, const char *a, size_t na, const char *b, size_t nb, int32_t rank);
void tok_add_eog_text(struct tokenizer *t);
int tok_added_push(struct tokenizer *t, struct tok_added a);
pcre2_code *tok_regex(const char *pattern, size_t len, char *err, size_t errlen);
int tok_norm_push(struct tokenizer *t, struct tok_norm n);
int tok_pre_push(struct tokenizer *t, struct tok_pre p);

/* tok_pre.c: the text pipeline on one segment between added tokens. */
struct tok_piece {
	uint32_t off, len;
};

struct tok_work {
	struct tok_buf text;  /* normalized text and any text the pre-tokenizers add */
	struct tok_buf tmp;
	struct tok_piece *pieces, *next;
	size_t n, cap, n_next, cap_next;
	uint32_t origin;   /* offset in text of the original text's offset 0 (HF's Metaspace "first"), or UINT32_MAX */
	bool origin_kept;  /* tok_normalize: the normalized text still starts at the segment's first character */
	pcre2_match_data *md;
	/* BPE scratch */
	void *sym, *heap;
	size_t cap_sym, cap_heap;
};

int tok_normalize(const struct tokenizer *t, const char *s, size_t n, struct tok_work *w, char *err,
		  size_t errlen);
/* Pre-tokenizes text[off..off+len) into w->pieces; origin as in struct tok_work. */
int tok_pretokenize(const struct tokenizer *t, uint32_t off, uint32_t len, uint32_t origin, struct tok_work *w,
		    char *err, size_t errlen);
/* Unicode White_Space (Rust's char::is_whitespace). */
bool tok_is_space(uint32_t cp);
/* The byte of a byte-level code point, -1 if it is none. */
static inline int tok_cp_byte(const struct tokenizer *t, uint32_t cp)
{
	return cp < 324 ? t->cp_byte[cp] : -1;
}
void tok_work_free(struct tok_work *w);

/* tok_bpe.c: one pre-token to ids. */
int tok_bpe_word(struct tokenizer *t, const char *s, size_t n, struct tok_work *w, struct tok_ids *out);

extern const char *const tok_gpt2_regex;

#endif
