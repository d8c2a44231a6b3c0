/*
 * layout.h: the on-disk model format (model.ferry/), its reader and its writer.
 *
 * A model directory holds manifest.json plus one binary file per streaming unit: embed.bin, layer.NNN.bin,
 * head.bin. Every binary file starts with a 4096-byte header (magic, version, byte count, tensor table,
 * header checksum) and every tensor starts on a 4096-byte boundary, so a unit can be read with O_DIRECT
 * into an aligned buffer. Byte-level description: src/layout/FORMAT.md.
 *
 * Units: the embedding (unit LAYOUT_UNIT_EMBED), layers 0..L-1, and the head (final norm + output
 * projection). A unit's tensor may live in another unit's file (a tied head points at embed.bin).
 *
 * Functions return 0 or a negative errno-style code and write a one-line message into err.
 */
#ifndef FERRY_LAYOUT_H
#define FERRY_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout/wfmt.h"

#define LAYOUT_MAGIC "FERRYLYR"
#define LAYOUT_VERSION 2     /* written by files with expert-major tensors; others stay version 1 */
#define LAYOUT_VERSION_MIN 1
#define LAYOUT_ALIGN 4096
#define LAYOUT_HEADER_BYTES 4096
#define LAYOUT_ENTRY_BYTES 128
#define LAYOUT_ENTRY_OFFSET 64
#define LAYOUT_MAX_TENSORS ((LAYOUT_HEADER_BYTES - LAYOUT_ENTRY_OFFSET) / LAYOUT_ENTRY_BYTES)
#define LAYOUT_NAME_MAX 48 /* including the terminating NUL */
#define LAYOUT_MAX_DIMS 4
#define LAYOUT_MANIFEST_VERSION 1
#define LAYOUT_UNIT_MAX_TENSORS 64        /* tensors a unit may list (its own and aliases) */
#define LAYOUT_UNIT_MAX_BYTES (1ull << 44) /* 16 TiB: far above any layer, far below overflow */
/* Hyper-parameter bounds: every product the kernels index with (H*Dh, F, V, D) stays far inside int. */
#define LAYOUT_MAX_DIM (1 << 24)
#define LAYOUT_MAX_EXPERTS 1024
#define LAYOUT_MAX_HEAD_DIM 1024

static inline uint64_t layout_align_up(uint64_t x)
{
	return (x + LAYOUT_ALIGN - 1) / LAYOUT_ALIGN * LAYOUT_ALIGN;
}

enum layout_kind { LAYOUT_KIND_EMBED = 0, LAYOUT_KIND_LAYER = 1, LAYOUT_KIND_HEAD = 2 };
enum layout_comp { LAYOUT_COMP_NONE = 0, LAYOUT_COMP_LZ4 = 1 };

enum rope_type { ROPE_DEFAULT = 0, ROPE_LINEAR, ROPE_DYNAMIC, ROPE_YARN, ROPE_LLAMA3 };
/* Which element pairs a rotation acts on: (i, i + d/2) as in HF, or (2i, 2i+1) as in GGUF llama. */
enum rope_style { ROPE_STYLE_NEOX = 0, ROPE_STYLE_NORM = 1 };

struct rope_params {
	enum rope_type type;
	enum rope_style style;
	double theta;            /* base */
	int dim;                 /* rotated dims per head (== head_dim here) */
	double factor;           /* linear, dynamic, yarn, llama3 */
	int original_max_pos;    /* dynamic, yarn, llama3 */
	double low_freq_factor;  /* llama3 */
	double high_freq_factor; /* llama3 */
	double beta_fast, beta_slow;  /* yarn */
	double attention_factor;      /* yarn: <= 0 means derived from factor and mscale */
	double mscale, mscale_all_dim; /* yarn */
	bool truncate;                 /* yarn */
	const double *factors;         /* [dim / 2] divisors of the frequencies (GGUF rope_freqs), NULL when none;
					* owned by the layout_hparams that holds these params */
};

/* Activation of the gated MLP: down(act(gate) * up). ACT_SWIGLU_OAI is gpt-oss's clamped form:
 * g = min(gate, 7), u = clamp(up, -7, 7), g * sigmoid(1.702 g) * (u + 1). */
enum act { ACT_SILU = 0, ACT_GELU_TANH = 1, ACT_SWIGLU_OAI = 2 };
#define ACT_OAI_ALPHA 1.702f
#define ACT_OAI_LIMIT 7.0f

/* Hyper-parameters, normalized over source formats. Dimension letters: D model, H heads, Hkv kv heads,
 * Dh head dim, F ffn dim, V vocab, L layers. */
struct layout_hparams {
	char arch[32];  /* architecture: a name of src/layout/arch.c ("llama", "mistral", "qwen2", "gemma3", "gpt-oss") */
	int n_layers;   /* L */
	int d_model;    /* D */
	int n_heads;    /* H */
	int n_kv_heads; /* Hkv */
	int head_dim;   /* Dh */
	int ffn_dim;    /* F */
	int vocab;      /* V */
	int max_pos;
	double rms_eps;
	struct rope_params rope;
	bool has_rope_local;
	struct rope_params rope_local; /* sliding-window layers' RoPE when has_rope_local (Gemma 3) */
	int act;              /* enum act */
	double attn_scale;    /* attention score multiplier; 0 = 1/sqrt(head_dim) */
	double embed_scale;   /* embedding multiplier; 0 = none (Gemma: sqrt(d_model)) */
	double final_softcap; /* logits = cap * tanh(logits / cap); 0 = none */
	bool tied_embeddings;
	int *window;    /* [L] sliding window per layer, 0 = full attention */
	int bos_id;     /* -1 when none */
	int n_eos;
	int eos_ids[8];
	/* Mixture of experts (n_experts 0: a dense MLP): each layer's router picks n_experts_used of n_experts
	 * expert MLPs (gated, expert_ffn wide) per token; their outputs are summed with the router's softmax
	 * weights, renormalized over the chosen ones when moe_norm_topk. */
	int n_experts;      /* E */
	int n_experts_used; /* K */
	int expert_ffn;     /* Fe */
	bool moe_norm_topk;
	int shared_ffn;     /* Fs: the shared expert's ffn (Qwen2-MoE), added with a sigmoid gate; 0: none */
};

struct layout_tensor {
	char name[LAYOUT_NAME_MAX];
	int file;           /* index into layout.files */
	uint64_t offset;    /* absolute in the file, multiple of LAYOUT_ALIGN */
	uint64_t bytes;     /* stored bytes */
	uint64_t raw_bytes; /* bytes after decompression (== bytes when uncompressed) */
	int ndim;
	int64_t shape[LAYOUT_MAX_DIMS]; /* outermost first: a Linear weight is [out, in] */
	int fmt;                        /* enum wfmt */
	int comp;                       /* enum layout_comp */
	uint64_t xxh3;                  /* XXH3-64 of the stored bytes (of a strided tensor: its experts' bytes
					 * in expert order) */
	uint64_t stride;                /* expert-major (version 2): [E, rows, cols], expert e's bytes / E at
					 * offset + e * stride, between the same expert's other matrices; 0: contiguous */
};

/* Bytes from a tensor's offset to the end of its last byte in the file. */
static inline uint64_t layout_tensor_span(const struct layout_tensor *t)
{
	return t->stride ? ((uint64_t)t->shape[0] - 1) * t->stride + t->bytes / (uint64_t)t->shape[0] : t->bytes;
}

struct layout_unit {
	int n_tensors;
	struct layout_tensor *tensors;
};

struct layout_file {
	char name[32];
	uint64_t bytes;
	uint64_t header_xxh3;
	int kind;  /* enum layout_kind */
	int layer; /* -1 unless kind == LAYER */
};

struct layout {
	char *dir;
	struct layout_hparams hp;
	int n_files;
	struct layout_file *files;
	struct layout_unit embed;
	struct layout_unit *layers; /* [L] */
	struct layout_unit head;
	char *tokenizer_file;     /* relative names, NULL when absent */
	char *chat_template_file;
	void *manifest;           /* json_t*, owned */
};

/* Reader. layout_open parses manifest.json and checks every file's header against it (magic, version,
 * size, header checksum, tensor table); tensor data is not read. */
int layout_open(struct layout *m, const char *dir, char *err, size_t errlen);
void layout_close(struct layout *m);
/* unit: -1 embed, 0..L-1 layer, L head */
const struct layout_unit *layout_unit_get(const struct layout *m, int unit);
const struct layout_tensor *layout_tensor_find(const struct layout_unit *u, const char *name);
/* Path of file i into buf. */
int layout_file_path(const struct layout *m, int file, char *buf, size_t n);
/* Bytes of a tensor of this format and shape (outermost first); 0 when a dim is not positive, the innermost
 * dim is not a multiple of the format's block, or the size would exceed 2^62. */
uint64_t layout_tensor_nbytes(int fmt, int ndim, const int64_t *shape);
/* pread of exactly n bytes (restarted on EINTR and short reads): 0, -errno, or -EIO at end of file. */
int layout_pread_full(int fd, void *buf, uint64_t n, uint64_t off);
/* Reads tensor t into dst (t->bytes) and checks its XXH3. 0, or -EIO/-EBADMSG with a message. */
int layout_tensor_read(const struct layout *m, const struct layout_tensor *t, void *dst, char *err, size_t errlen);
/* Reads and verifies every tensor; calls bad(t) for each mismatch. Returns the number of bad tensors, or a
 * negative code when a file cannot be read. */
int layout_verify(const struct layout *m, void (*bad)(const struct layout_tensor *t, const char *why, void *ctx),
		  void *ctx, char *err, size_t errlen);
uint64_t layout_unit_bytes(const struct layout_unit *u);

/* Header of a binary file: parse and check (used by the reader, the streamer and inspect). */
struct layout_file_header {
	uint32_t version;
	uint64_t file_bytes;
	int kind;
	int layer;
	int n_tensors;
	uint64_t header_xxh3;
	struct layout_tensor tensors[LAYOUT_MAX_TENSORS]; /* .file is unset */
};
int layout_header_parse(const uint8_t *buf, size_t n, struct layout_file_header *h, char *err, size_t errlen);

/* Compressed tensors (compression LAYOUT_COMP_LZ4, FORMAT.md): chunks of raw bytes, each byte-shuffled by
 * the element width and stored as one LZ4 frame, then a table of frame ends (u64 each, from the tensor's
 * start) and a footer {u64 chunk_raw, u32 n_chunks, u32 width}. */
#define LAYOUT_LZ4_CHUNK (1u << 20)      /* raw bytes per chunk written by the writer */
#define LAYOUT_LZ4_MAX_CHUNK (64u << 20) /* largest chunk a reader accepts */
#define LAYOUT_LZ4_FOOTER_BYTES 16
#define LAYOUT_LZ4_MIN_SAVING 0.10 /* a tensor is stored compressed only when that saves at least this */
struct layout_lz4_info {
	uint64_t chunk_raw, raw_bytes;
	uint32_t n_chunks;
	int width;            /* shuffle width in bytes: 1 (none), 2 (f16, bf16), 4 (f32) */
	const uint8_t *table; /* n_chunks little-endian u64 frame ends, inside the stored bytes */
};
int layout_lz4_shuffle_width(int fmt);
size_t layout_lz4_frame_bound(size_t chunk);
/* Shuffles n bytes of src through scratch (n bytes) and writes one frame into dst; its size or -EIO. */
int64_t layout_lz4_encode_chunk(const void *src, size_t n, int width, void *scratch, void *dst, size_t cap);
/* Checks the footer and frame table of stored bytes; 0 or -EBADMSG. */
int layout_lz4_parse(const uint8_t *stored, uint64_t bytes, uint64_t raw_bytes, struct layout_lz4_info *info);
/* Where chunk i lies in the stored bytes (its frame) and in the raw bytes. */
void layout_lz4_chunk(const struct layout_lz4_info *info, uint32_t i, uint64_t *src_off, uint64_t *src_len,
		      uint64_t *dst_off, uint64_t *dst_len);
/* Decodes one frame into dst_len bytes at dst, unshuffling through scratch (dst_len bytes). *dctx is a
 * decoder context created on first use (one per thread; free with layout_lz4_free_dctx). 0 or -EBADMSG. */
int layout_lz4_decode_chunk(void **dctx, const void *src, size_t src_len, void *dst, size_t dst_len, int width,
			    void *scratch);
void layout_lz4_free_dctx(void *dctx);
/* Decodes a whole compressed tensor (stored bytes -> raw_bytes at dst); 0 or -EBADMSG/-ENOMEM. */
int layout_lz4_decode(const uint8_t *stored, uint64_t bytes, uint64_t raw_bytes, void *dst);

/* Writer: converters call begin, then per file file_begin / tensor_begin / tensor_write / tensor_end /
 * file_end, alias for a tensor shared with an earlier unit, then finish (writes manifest.json and renames
 * OUT.tmp to OUT) or abort (removes OUT.tmp). Tensors are added to the unit of the current file. */
struct layout_writer;
int layout_writer_begin(struct layout_writer **w, const char *out_dir, bool force, char *err, size_t errlen);
/* Store tensors of layer and head files as lz4 chunks when that saves >= LAYOUT_LZ4_MIN_SAVING (embed.bin is
 * never compressed: its rows are read on demand). Call before the first file. */
int layout_writer_set_lz4(struct layout_writer *w, bool on);
int layout_writer_file_begin(struct layout_writer *w, int kind, int layer);
int layout_writer_tensor_begin(struct layout_writer *w, const char *name, int fmt, int ndim, const int64_t *shape);
int layout_writer_tensor_write(struct layout_writer *w, const void *data, size_t n);
int layout_writer_tensor_end(struct layout_writer *w);
int layout_writer_file_end(struct layout_writer *w);
/* Experts stored expert-major: the n tensors [E, rows, cols] of names/fmts/shapes (one layer's stacked experts,
 * the same E) get one region of the current file where expert e's matrices lie together (one read), each
 * aligned, expert after expert. Call before the first of them; each is then written as usual (tensor_begin,
 * its bytes in expert order, tensor_end), in this order. Never compressed. */
int layout_writer_experts(struct layout_writer *w, int n, const char *const *names, const int *fmts,
			  const int64_t (*shapes)[3]);
/* Adds to the current unit a tensor entry that points at an already written tensor (by name and unit). */
int layout_writer_alias(struct layout_writer *w, const char *name, int src_unit, const char *src_name);
/* Copies a file (tokenizer.json, ...) into the output directory under dst_name. */
int layout_writer_copy_file(struct layout_writer *w, const char *src_path, const char *dst_name);
int layout_writer_write_text(struct layout_writer *w, const char *dst_name, const char *text, size_t n);
/* extra: json_t* object merged into the manifest (tokenizer, generation, source); reference is stolen. */
int layout_writer_finish(struct layout_writer *w, const struct layout_hparams *hp, void *extra);
void layout_writer_abort(struct layout_writer *w);
const char *layout_writer_error(const struct layout_writer *w);
uint64_t layout_writer_bytes_written(const struct layout_writer *w);

/* Hyper-parameters <-> JSON (json_t*), shared by writer and reader. */
void *layout_hparams_to_json(const struct layout_hparams *hp);
int layout_hparams_from_json(struct layout_hparams *hp, const void *json, char *err, size_t errlen);
void layout_hparams_free(struct layout_hparams *hp);
/* Range checks shared by the reader and the converters (dims, products, rope parameters, windows). */
int layout_hparams_check(const struct layout_hparams *hp, char *err, size_t errlen);
const char *layout_rope_type_name(int type);

#endif
