/*
 * backend.h: the compute backend interface, a vtable. The model code (model.c) runs a forward pass only
 * through these entries and never calls a device API; the CPU backend (always built, the reference) and
 * the CUDA backend implement them.
 *
 * Memory: every float* / void* an op takes is backend memory from alloc(), except where noted as host.
 * Weights: when ops->host_memory is true, host buffers (e.g. the streamer's slots) are valid backend
 * memory and need no upload. Ordering: ops, uploads and downloads take effect in call order; download()
 * and sync() wait for everything issued before them.
 *
 * A step of T tokens is announced with step_begin (positions, sequences, page tables; host arrays);
 * kv_store, attention and rope use them for the current range.
 *
 * Streaming (backends with host_memory false): weights are copied from pinned host buffers on a copy queue
 * that runs beside the compute queue. Fences are small integers naming device events (fence_init makes
 * n of them): a queue records a fence after its work so far, and the other queue waits for it, so uploads
 * overlap compute and a device buffer is overwritten only after the compute that reads it is done
 * (src/engine/weights.c). fence_done may be called from any thread.
 *
 * Dimension letters: T tokens, D model, H heads, Hkv kv heads, Dh head dim, F ffn dim, V vocab,
 * C positions of a sequence.
 */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kernels/kv_pages.h"
#include "base/util.h"

enum op {
	OP_EMBED,
	OP_RMSNORM,
	OP_MATMUL,
	OP_ROPE,
	OP_KV_STORE,
	OP_ATTENTION,
	OP_GLU,
	OP_ADD,
	OP_COUNT
};

/* A weight tensor in backend memory: rows x cols values in format fmt (enum wfmt); 1-D has rows = 1. */
struct tensor {
	const void *data;
	int fmt;
	int64_t rows, cols;
	uint64_t stride; /* stacked experts: bytes from one expert's rows x cols matrix to the next (0: packed) */
};

/* RoPE frequencies of the current step (host data; the backend copies what it needs). */
#define ROPE_MAX_FREQS 512
struct rope_freqs {
	int n;                          /* Dh / 2 */
	double inv_freq[ROPE_MAX_FREQS];
	double mscale;                  /* multiplies cos and sin (YaRN attention factor) */
	bool neox;                      /* pairs (i, i + Dh/2) rather than (2i, 2i+1) */
};

/* What reserve() sizes the backend's workspace for. */
struct backend_reserve {
	int t_max;        /* most tokens per step */
	int t_ops;        /* most tokens per op (a range of the step, step_range) */
	int64_t max_row;  /* widest matmul input or norm row */
	int64_t d_model;  /* embedding row (embed: t_max rows of it) */
	int max_ctx;      /* most positions of a sequence */
	int n_heads, head_dim;
	int max_seqs;     /* page-table rows */
	int max_pages;    /* page-table row length */
	int n_groups;     /* page tables (src/kernels/kv_pages.h, src/engine/kvcache.h) */
	int n_experts_used; /* K: experts per token of a mixture-of-experts model (0: none) */
};

/* A step: T tokens in parts (runs of consecutive positions of one sequence, src/kernels/kv_pages.h), the page
 * tables of every group. Host arrays, valid until the next step_begin. */
struct step_desc {
	int T;
	const int *pos;           /* [T] */
	int n_parts;
	const int *part_t0;       /* [n_parts + 1] */
	const int *part_row;      /* [n_parts] */
	int n_groups, n_rows, max_pages;
	const int *const *pages;  /* [n_groups] tables of n_rows x max_pages */
	/* token trees (src/kernels/kv_pages.h; NULL: the step has none): logical positions [T] (RoPE),
	 * tree bases [T], ancestor masks [T * KV_TREE_WORDS] */
	const int *lpos, *tree_base;
	const uint32_t *tree_mask;
	int t_ops;                /* tokens per range of this step (0: the latest reservation's t_ops) */
};

enum backend_queue { BQ_COMPUTE = 0, BQ_COPY = 1 };

/* Device memory accounting of the CUDA backend (all zero elsewhere). */
struct backend_mem {
	int64_t budget;       /* --vram */
	int64_t context;      /* taken by the CUDA context and libraries before the arena (cudaMemGetInfo) */
	int64_t arena;        /* the one cudaMalloc everything else comes from */
	int64_t arena_used, arena_peak;
	int64_t device_used_peak; /* total - free, sampled at every sync */
	uint64_t launches;        /* kernels launched on the compute stream so far (cuBLAS's own not counted) */
	uint64_t graph_replays, graph_captures; /* step graphs (graph_begin) replayed and captured */
	char gpu[128];
};

struct backend;

struct backend_ops {
	const char *name;
	bool host_memory;
	bool (*kv_supports)(int kv_fmt); /* KV page formats the attention kernels read */
	void (*destroy)(struct backend *b);
	bool (*supports)(struct backend *b, enum op op, int fmt);
	void *(*alloc)(struct backend *b, size_t bytes);
	void (*free)(struct backend *b, void *p);
	int (*upload)(struct backend *b, void *dst, const void *host_src, size_t n);
	int (*download)(struct backend *b, void *host_dst, const void *src, size_t n);
	int (*sync)(struct backend *b);
	/* Workspace for the ops of steps within r; called once before the first step (the ops fail cleanly,
	 * never allocate, when a step needs more). */
	int (*reserve)(struct backend *b, const struct backend_reserve *r);
	/* Bytes reserve(r) takes from backend memory (0 where workspace is host memory). */
	size_t (*reserve_bytes)(struct backend *b, const struct backend_reserve *r);
	/* Streaming: NULL where host_memory is true. fence_alloc makes n more fences and returns the first one's
	 * id (ids first .. first + n - 1 belong to the caller until the backend is destroyed), or a negative
	 * errno. */
	int (*fence_alloc)(struct backend *b, int n);
	int (*fence_record)(struct backend *b, enum backend_queue q, int fence);
	int (*fence_wait)(struct backend *b, enum backend_queue q, int fence);
	bool (*fence_done)(struct backend *b, int fence);
	int (*copy_async)(struct backend *b, void *dst, const void *host_src, size_t n); /* on BQ_COPY */
	int (*copy_d2h_async)(struct backend *b, void *host_dst, const void *src, size_t n); /* on BQ_COPY */
	/* pinned host memory for copy_async / copy_d2h_async (KV pools streamed with their layer) */
	void *(*host_alloc)(struct backend *b, size_t bytes);
	void (*host_free)(struct backend *b, void *p);
	/* Page-locked memory for the layer streamer's slots and RAM tier, in the shape of io_host_alloc
	 * (src/io/stream.h) so the engine can hand it over; NULL where the streamer's own memory will do. */
	const char *pinned_name;
	void *(*pinned_alloc)(size_t bytes, void *ctx);
	void (*pinned_free)(void *p, size_t bytes, void *ctx);
	void (*mem)(struct backend *b, struct backend_mem *m); /* NULL: no device memory */
	/* Emulation of a slower link: copies on BQ_COPY take at least bytes / bytes_per_s (0: full speed).
	 * NULL where there is no link. */
	int (*pace)(struct backend *b, double bytes_per_s);
	/* The k (<= 1024) largest of logits[V] (backend memory) into host vals/idx, sorted descending, ties by
	 * lower id; waits like download(). NULL where the host reads all logits anyway. */
	int (*top_k)(struct backend *b, const float *logits, int V, int k, float *vals, int *idx);
	/* The ops then work on the range set by step_range (the whole step until it is called): tokens
	 * t0 .. t0+n-1 of the step, t0 a multiple of reserve's t_ops. */
	int (*step_begin)(struct backend *b, const struct step_desc *s);
	int (*step_range)(struct backend *b, int t0, int n);

	/* x[n] = f32(rows[n]) * scale (scale 0: 1): embedding rows read on the host (host rows in format fmt,
	 * supports(OP_EMBED, fmt)) into backend memory, the product taken in f32 on the host. */
	int (*embed)(struct backend *b, float *x, const void *rows, int fmt, int64_t n, float scale);
	int (*rmsnorm)(struct backend *b, float *y, const float *x, const struct tensor *w, int T, float eps);
	/* y[T, W.rows] = x[T, W.cols] . W^T (+ bias[W.rows]); bias may be NULL */
	int (*matmul)(struct backend *b, float *y, const float *x, const struct tensor *W, const struct tensor *bias,
		      int T);
	int (*rope)(struct backend *b, float *x, int n_heads, int Dh, const struct rope_freqs *f);
	/* x[n] in place, each group of 32 times H32 (src/kernels/kv_pages.h) */
	int (*hadamard)(struct backend *b, float *x, int64_t n);
	/* k, v [T, Hkv*Dh] into the layer's pages at the range's positions */
	int (*kv_store)(struct backend *b, const struct kv_layer *kv, const float *k, const float *v);
	/* The accepted path of a token tree: the K and V rows of positions from[i] to to[i] (host arrays,
	 * kv_rows_move's order) through the page-table row `pages` (host, the layer's group) */
	int (*kv_move)(struct backend *b, const struct kv_layer *kv, const int *pages, int n, const int *from,
		       const int *to);
	/* out[T, H*Dh]: each token over its own sequence's keys (src/kernels/kv_pages.h); sinks (backend memory,
	 * [H] f32, NULL: none): a logit per query head that joins the softmax's denominator only (gpt-oss) */
	int (*attention)(struct backend *b, float *out, const float *q, const struct kv_layer *kv, int H, int window,
			 float scale, const float *sinks);
	/* y[n] = act(gate[n]) * up[n], act an enum act (layout.h): silu, gelu_tanh or swiglu_oai (clamped) */
	int (*glu)(struct backend *b, float *y, const float *gate, const float *up, int64_t n, int act);
	int (*add)(struct backend *b, float *y, const float *x, int64_t n);
	/* Mixture of experts. route: each token's K experts of its router logits[T, E] (largest first, ties
	 * by lower id) into host ids[T, K], their softmax weights (over all E, over the K when norm) into host
	 * wts[T, K]; waits like download(). gather_rows: dst[i] = src[rows[i]] (rows of D, host rows[n]).
	 * scatter_add: y[rows[i]] += w[i] * src[i] (host rows[n] without repeats, host w[n]). */
	int (*route)(struct backend *b, int *ids, float *wts, const float *logits, int T, int E, int K, bool norm);
	int (*gather_rows)(struct backend *b, float *dst, const float *src, const int *rows, int n, int64_t D);
	int (*scatter_add)(struct backend *b, float *y, const float *src, const int *rows, const float *w, int n,
			   int64_t D);
	/* dst[t, j] = src[t, perm[j]] for T rows of K: perm an F32 tensor of indices in backend memory (an
	 * act-order weight's column order, src/engine/model.c matmul_in); dst is not src */
	int (*gather_cols)(struct backend *b, float *dst, const float *src, const float *perm, int T, int64_t K);
	/* dst[t * ld + j] = src[t * n + j] for T rows of n (a head piece's logits into their columns of the full
	 * rows, src/engine/model.c head); ld >= n, dst and src apart */
	int (*copy_cols)(struct backend *b, float *dst, int64_t ld, const float *src, int64_t n, int T);
	/* Step graphs (NULL where there are none; CUDA: FERRY_CUDA_GRAPH=1): after step_begin and the embedding,
	 * graph_begin returns BACKEND_GRAPH_REPLAYED when a graph of this step's shape ran the ops the caller
	 * would issue next (it issues none until graph_end is not called), BACKEND_GRAPH_CAPTURING when the ops
	 * the caller issues until graph_end(b, rc) are recorded (not run): graph_end then runs them (0), or
	 * -EAGAIN when they could not be recorded (an upload, a wait for the host: nothing ran, issue them again
	 * plainly), rc the ops' result (nonzero: dropped). 0: issue the ops plainly. Only device-side state may
	 * change between graph_begin and graph_end: no uploads, downloads, copies or fences. owner: whose ops
	 * (a model: two models sharing the backend never replay each other's graphs); key[key_bytes]: what else
	 * the ops take from the host that may change between steps of one shape (model.c: the RoPE tables), a
	 * graph replayed only for the same bytes. */
	int (*graph_begin)(struct backend *b, const void *owner, const void *key, size_t key_bytes);
	int (*graph_end)(struct backend *b, int rc);
};

enum { BACKEND_GRAPH_REPLAYED = 1, BACKEND_GRAPH_CAPTURING = 2 };

struct backend {
	const struct backend_ops *ops;
	void *impl;
	int n_threads;
	char err[ERR_LEN];
};

/* The backend a --device name asks for: "cpu"; "cuda" (this build must have CUDA and a GPU must be visible);
 * "auto" (CUDA when both, else the CPU). vram: the CUDA backend's budget (<= 0: all that is free); threads:
 * the CPU backend's (<= 0: the default, backend_cpu_create). */
int backend_open(struct backend **b, const char *device, int64_t vram, int threads, char *err, size_t errlen);
/* The GPUs this build can see: "none", or the first one's description (probing initializes CUDA). */
const char *backend_gpu_desc(char *buf, size_t n);

/* n_threads <= 0: OMP_NUM_THREADS if set, else the CPUs this process may use (base/threads.h). */
int backend_cpu_create(struct backend **b, int n_threads, char *err, size_t errlen);
/* The CPU posing as a device (cpu.c): host_memory false, `vram` bytes of budgeted memory (<= 0: 4 GiB),
 * synchronous copies and fences; what --device cpu opens when FERRY_CPU_DEVICE=1, so the streamed device
 * path runs (and is tested) without a GPU. */
int backend_cpu_device_create(struct backend **b, int64_t vram, int n_threads, char *err, size_t errlen);

#ifdef FERRY_CUDA
/* The CUDA backend on device 0 with everything on the GPU in `vram` bytes (<= 0: all that is free): the
 * CUDA context, a margin for lazily loaded kernels, then one arena (cudaMalloc) of the rest, from which
 * every alloc() comes. */
int backend_cuda_create(struct backend **b, int64_t vram, char *err, size_t errlen);
#endif
void backend_mem_get(struct backend *b, struct backend_mem *m);

/* The parts of tokens t0 .. t0+n-1 of step s, relative to t0, as struct kv_batch wants them: part_t0
 * [n_parts + 1], part_row [n_parts], tok_part [n] (n + 1 entries each suffice). Returns n_parts; sets the
 * largest position and the most tokens of a part. */
int step_range_parts(const struct step_desc *s, int t0, int n, int *part_t0, int *part_row, int *tok_part,
		     int *max_pos, int *max_part);
void backend_destroy(struct backend *b);

#endif
