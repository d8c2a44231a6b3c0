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
 * A step of T tokens is announced with step_begin (positions, host array); kv_store, attention and rope
 * use the positions of the current step.
 *
 * Dimension letters: T tokens, D model, H heads, Hkv kv heads, Dh head dim, F ffn dim, V vocab,
 * C KV capacity (tokens).
 */
#ifndef FERRY_BACKEND_H
#define FERRY_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

enum op {
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
};

/* RoPE frequencies of the current step (host data; the backend copies what it needs). */
#define ROPE_MAX_FREQS 512
struct rope_freqs {
	int n;                          /* Dh / 2 */
	double inv_freq[ROPE_MAX_FREQS];
	double mscale;                  /* multiplies cos and sin (YaRN attention factor) */
	bool neox;                      /* pairs (i, i + Dh/2) rather than (2i, 2i+1) */
};

/* One layer of KV cache: k and v [C, Hkv*Dh] f32. */
struct kv_layer {
	float *k, *v;
	int capacity;
};

struct backend;

struct backend_ops {
	const char *name;
	bool host_memory;
	void (*destroy)(struct backend *b);
	bool (*supports)(struct backend *b, enum op op, int fmt);
	void *(*alloc)(struct backend *b, size_t bytes);
	void (*free)(struct backend *b, void *p);
	int (*upload)(struct backend *b, void *dst, const void *host_src, size_t n);
	int (*download)(struct backend *b, void *host_dst, const void *src, size_t n);
	int (*sync)(struct backend *b);
	/* Workspace for rows of up to max_row values and attention over up to max_ctx positions; called once
	 * before the first step (the ops fail cleanly, never allocate, when a step needs more). */
	int (*reserve)(struct backend *b, int64_t max_row, int64_t max_ctx);
	/* pos: host [T]; stays valid until the next step_begin */
	int (*step_begin)(struct backend *b, int T, const int *pos);

	int (*rmsnorm)(struct backend *b, float *y, const float *x, const struct tensor *w, int T, float eps);
	/* y[T, W.rows] = x[T, W.cols] . W^T (+ bias[W.rows]); bias may be NULL */
	int (*matmul)(struct backend *b, float *y, const float *x, const struct tensor *W, const struct tensor *bias,
		      int T);
	int (*rope)(struct backend *b, float *x, int n_heads, int Dh, const struct rope_freqs *f);
	int (*kv_store)(struct backend *b, struct kv_layer *kv, const float *k, const float *v, int kv_dim);
	int (*attention)(struct backend *b, float *out, const float *q, const struct kv_layer *kv, int H, int Hkv,
			 int Dh, int window, float scale);
	/* y[n] = act(gate[n]) * up[n], act an enum act (layout.h): silu or gelu_tanh */
	int (*glu)(struct backend *b, float *y, const float *gate, const float *up, int64_t n, int act);
	int (*add)(struct backend *b, float *y, const float *x, int64_t n);
};

struct backend {
	const struct backend_ops *ops;
	void *impl;
	int n_threads;
	char err[ERR_LEN];
};

/* n_threads <= 0: all cores. */
int backend_cpu_create(struct backend **b, int n_threads, char *err, size_t errlen);
void backend_destroy(struct backend *b);

#endif
