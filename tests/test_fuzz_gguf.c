/* test_fuzz_gguf.c: the GGUF reader on arbitrary bytes (a memfd named through /proc) returns an error or
 * metadata and tensors that lie inside the file; a tokenizer built from whatever metadata parsed either
 * loads and encodes or fails cleanly. Never a crash or an out-of-bounds read. */
#include <stdio.h>
#include <string.h>

#include "fuzz_file.h"
#include "layout/gguf.h"
#include "layout/le.h"
#include "text/tokenizer.h"

static int fuzz_one(const uint8_t *data, size_t size)
{
	char path[64], err[512];
	int fd = fuzz_file(data, size, "gguf", path, sizeof(path));
	if (fd < 0)
		return 0;
	struct gguf g;
	if (gguf_open(&g, path, err, sizeof(err)) == 0) {
		unsigned sum = 0;
		for (uint64_t i = 0; i < g.n_tensors; i++)
			for (uint64_t b = 0; b < g.tensors[i].bytes; b++)
				sum += g.tensors[i].data[b];
		for (uint64_t i = 0; i < g.n_kv; i++) {
			const struct gguf_kv *kv = &g.kv[i];
			for (uint64_t k = 0; kv->type == GGUF_TYPE_ARRAY && k < kv->arr_n; k++) {
				struct gguf_str s = gguf_arr_str(kv, k);
				sum += s.n ? (unsigned char)s.p[s.n - 1] : 0;
				sum += (unsigned)gguf_arr_int(kv, k);
			}
		}
		struct tokenizer *t;
		if (tokenizer_from_gguf(&t, &g, path, err, sizeof(err)) == 0) {
			struct tok_ids ids = {0};
			tokenizer_encode(t, "abab ba", 7, TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL, &ids, err, sizeof(err));
			struct tok_buf out = {0};
			tokenizer_decode(t, ids.ids, ids.n, true, true, &out);
			tok_buf_free(&out);
			tok_ids_free(&ids);
			tokenizer_free(t);
		}
		if (sum == 0xdeadbeef)
			puts("");
		gguf_close(&g);
	}
	close(fd);
	return 0;
}

struct wbuf {
	uint8_t b[2048];
	size_t n;
};

static void w32(struct wbuf *w, uint32_t v) { put_le32(w->b + w->n, v); w->n += 4; }
static void w64(struct wbuf *w, uint64_t v) { put_le64(w->b + w->n, v); w->n += 8; }
static void wstr(struct wbuf *w, const char *s) { w64(w, strlen(s)); memcpy(w->b + w->n, s, strlen(s)); w->n += strlen(s); }
static void kv_str(struct wbuf *w, const char *k, const char *v) { wstr(w, k); w32(w, GGUF_TYPE_STRING); wstr(w, v); }

static void kv_strs(struct wbuf *w, const char *k, const char **v, int n)
{
	wstr(w, k);
	w32(w, GGUF_TYPE_ARRAY);
	w32(w, GGUF_TYPE_STRING);
	w64(w, (uint64_t)n);
	for (int i = 0; i < n; i++)
		wstr(w, v[i]);
}

static void gguf_seed(void (*add)(const uint8_t *, size_t), bool spm)
{
	static const char *toks[] = {"<unk>", "<s>", "a", "b", "ab", "\xc4\xa0", "ba"};
	static const char *merges[] = {"a b", "b a"};
	struct wbuf w = {.n = 0};
	w32(&w, 0x46554747);
	w32(&w, 3);
	w64(&w, 2); /* tensors */
	w64(&w, spm ? 7 : 7);
	kv_str(&w, "general.architecture", "llama");
	wstr(&w, "general.alignment"), w32(&w, GGUF_TYPE_U32), w32(&w, 32);
	kv_str(&w, "tokenizer.ggml.model", spm ? "llama" : "gpt2");
	kv_str(&w, "tokenizer.ggml.pre", "gpt-2");
	kv_strs(&w, "tokenizer.ggml.tokens", toks, 7);
	if (spm) {
		wstr(&w, "tokenizer.ggml.scores"), w32(&w, GGUF_TYPE_ARRAY), w32(&w, GGUF_TYPE_F32), w64(&w, 7);
		for (int i = 0; i < 7; i++)
			w32(&w, 0x3f800000u + (uint32_t)i);
	} else {
		kv_strs(&w, "tokenizer.ggml.merges", merges, 2);
	}
	wstr(&w, "tokenizer.ggml.token_type"), w32(&w, GGUF_TYPE_ARRAY), w32(&w, GGUF_TYPE_I32), w64(&w, 7);
	for (int i = 0; i < 7; i++)
		w32(&w, i < 2 ? 3 : 1);
	wstr(&w, "token_embd.weight"), w32(&w, 2), w64(&w, 4), w64(&w, 2), w32(&w, 0), w64(&w, 0);
	wstr(&w, "blk.0.attn_q.weight"), w32(&w, 1), w64(&w, 32), w32(&w, 8), w64(&w, 32);
	while (w.n % 32)
		w.b[w.n++] = 0;
	for (int i = 0; i < 32 + 34; i++)
		w.b[w.n++] = (uint8_t)i;
	add(w.b, w.n);
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	gguf_seed(add, false);
	gguf_seed(add, true);
}

#include "fuzz_driver.h"
