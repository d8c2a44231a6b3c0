/*
 * kv_pages.h: the paged KV cache as the kernels see it (CPU and CUDA), shared by kernels/cpu, kernels/cuda
 * and src/ (C and CUDA C++).
 *
 * Pages. A layer's keys (and, separately, its values) live in a pool of n_pages pages; a page holds `page`
 * consecutive positions (a multiple of 64) of one sequence for all Hkv kv heads. A sequence's page table
 * maps its logical page i (positions i*page .. i*page+page-1) to a physical page of the pool, or -1 where the
 * page was never allocated or was released (positions a sliding window no longer sees). Pages are never
 * copied: a sequence grows by taking free pages, and sequences with the same prompt prefix may map the same
 * physical page (src/engine/kvcache.c).
 *
 * Row. A row is the Dh values of one kv head at one position, in the pool's format:
 *   KV_F32  Dh floats                                   (CPU only: the exact reference)
 *   KV_F16  Dh halves (IEEE binary16, round to nearest even)
 *   KV_Q8   Dh int8 q, and Dh/32 f16 scales d: value = q * d; d = amax / 127 over the 32 values, q = round(x / d)
 *   KV_Q4   Dh/2 bytes, and Dh/32 f16 scales d: in each group of 32 values, byte i (0..15) holds value i in
 *           its low nibble and value i + 16 in its high nibble; value = (nibble - 8) * d, where d = m / -8
 *           for m the value of largest magnitude (sign kept), nibble = clamp(round(x / d) + 8, 0, 15)
 *           (ggml's Q4_0 rule); d = 0 when the group is all zeros (values 0).
 * Scales are rounded to f16 first and q is computed from the rounded d, so dequantization is exact given
 * the stored bytes. Q8 and Q4 values are stored rotated: each group of 32 is multiplied by the orthonormal
 * Walsh-Hadamard matrix H32 (Sylvester order, entries +-1/sqrt(32), symmetric, its own inverse) before
 * quantizing, which spreads outliers over the group. The model rotates q, k and v the same way (the
 * backend's hadamard op) before kv_store and rotates the attention output back: q.k and sum p v are
 * unchanged by an orthonormal rotation. The kernels themselves never rotate.
 *
 * Page layout (one page of one pool, bytes): first the q part of every row, head-major,
 *   row (h, r) at  h * page * qrow + r * qrow            (r = position % page, qrow = kv_qrow_bytes)
 * then, for Q8/Q4, the scales,
 *   row (h, r) at  Hkv * page * qrow + (h * page + r) * srow   (srow = kv_srow_bytes)
 * so a tile of consecutive positions of one head is contiguous. qrow is a multiple of 16 for Dh a multiple
 * of 32. Page p of a pool starts at base + p * kv_page_bytes.
 */
#ifndef FERRY_KV_PAGES_H
#define FERRY_KV_PAGES_H

#include <stddef.h>
#include <stdint.h>

enum kv_fmt { KV_F32 = 0, KV_F16 = 1, KV_Q8 = 2, KV_Q4 = 3, KV_FMT_COUNT };

#define KV_GROUP 32      /* values per scale (Q8/Q4) and per Hadamard rotation */
#define KV_PAGE_ALIGN 64 /* a page holds a multiple of this many positions */

static inline int kv_qrow_bytes(int fmt, int Dh)
{
	return fmt == KV_F32 ? 4 * Dh : fmt == KV_F16 ? 2 * Dh : fmt == KV_Q8 ? Dh : Dh / 2;
}

static inline int kv_srow_bytes(int fmt, int Dh)
{
	return fmt == KV_Q8 || fmt == KV_Q4 ? Dh / KV_GROUP * 2 : 0;
}

static inline size_t kv_page_bytes(int fmt, int Hkv, int Dh, int page)
{
	return (size_t)Hkv * (size_t)page * (size_t)(kv_qrow_bytes(fmt, Dh) + kv_srow_bytes(fmt, Dh));
}

static inline int kv_fmt_rotated(int fmt)
{
	return fmt == KV_Q8 || fmt == KV_Q4;
}

static inline const char *kv_fmt_name(int fmt)
{
	return fmt == KV_F32 ? "f32" : fmt == KV_F16 ? "f16" : fmt == KV_Q8 ? "q8" : fmt == KV_Q4 ? "q4" : "?";
}

/* One layer's cache: two pools (keys, values) of n_pages pages each, in backend memory. `group` names the
 * page table the layer uses (src/engine/kvcache.h: full-attention layers share one, sliding-window layers another). */
struct kv_layer {
	void *k, *v;
	int fmt;          /* enum kv_fmt */
	int page;         /* positions per page */
	int Hkv, Dh;
	int n_pages;
	int group;
};

/* The tokens of a step range as the attention and kv_store kernels see them: runs of consecutive tokens of
 * one sequence ("parts"; a sequence cut by a range boundary gives a part in each range). Part i is tokens
 * part_t0[i] .. part_t0[i+1]-1 of the range, its positions are consecutive, and it reads and writes the
 * page-table row part_row[i]. Pointers are in the kernel's memory (device arrays for CUDA); max_pos and
 * max_part are host values. */
struct kv_batch {
	int T;               /* tokens of the range */
	int n_parts;
	const int *part_t0;  /* [n_parts + 1], part_t0[0] = 0, part_t0[n_parts] = T */
	const int *part_row; /* [n_parts] */
	const int *tok_part; /* [T] the part of each token */
	const int *pos;      /* [T] */
	const int *pages;    /* [rows * max_pages]: page table row r at r * max_pages (for the layer's group) */
	int max_pages;
	int max_pos;         /* the largest position of the range */
	int max_part;        /* the most tokens of a part */
};

/* Visibility, exactly as every attention kernel applies it: a query at position p sees key position j of
 * its own sequence iff j <= p and (window == 0 or p - j < window). */

#endif
