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
 * Row. A row is the Dh values of one kv head at one position, in its pool's row format (a KV format may
 * give keys and values different row formats: KV_FMT_LIST's key and val columns):
 *   KV_F32  Dh floats                                   (CPU only: the exact reference)
 *   KV_F16  Dh halves (IEEE binary16, round to nearest even)
 *   KV_Q8   Dh int8 q, and Dh/32 f16 scales d: value = q * d; d = amax / 127 over the 32 values, q = round(x / d)
 *   KV_Q4   Dh/2 bytes, and Dh/32 f16 scales d: in each group of 32 values, byte i (0..15) holds value i in
 *           its low nibble and value i + 16 in its high nibble; value = (nibble - 8) * d, where d = m / -8
 *           for m the value of largest magnitude (sign kept), nibble = clamp(round(x / d) + 8, 0, 15)
 *           (ggml's Q4_0 rule); d = 0 when the group is all zeros (values 0).
 *   KV_Q5   (ggml's Q5_0 rule) 5-bit codes c = clamp(round(x / d) + 16, 0, 31), d = m / -16, value = (c - 16) * d:
 *           the q part holds the low 4 bits of the codes as Q4's (Dh/2 bytes, nibble pairs (i, i + 16) per
 *           group), the s part the Dh/32 f16 scales and then, per group, the 32 fifth bits as 4 bytes, the
 *           bit of value i at bit i % 8 of byte i / 8 (a little-endian u32 mask). The q part keeps Q4's
 *           16-byte alignment; the s part is only 2-byte aligned.
 *   KV_A4   (affine, for keys: their channels carry large offsets) codes c = clamp(round((x - m) / d), 0, 15)
 *           with m = f16(min) and d = f16((max - m) / 15) over the 32 values, value = c * d + m: the q part as
 *           Q4's nibble pairs (codes unbiased), the s part the Dh/32 f16 steps d, then the Dh/32 f16 minima m
 *   KV_A5   as A4 with 5-bit codes (d = f16((max - m) / 31)): the q part the low 4 bits as Q4's, the s part the
 *           steps, the minima, then per group the fifth bits as Q5's (4 bytes)
 * Scales are rounded to f16 first and q is computed from the rounded d, so dequantization is exact given
 * the stored bytes (A4/A5: the minimum first, the step from it). Group-coded values (Q8, Q4, Q5, A4, A5) are
 * stored rotated: each group of 32 is multiplied by the orthonormal Walsh-Hadamard matrix H32 (Sylvester
 * order, entries +-1/sqrt(32), symmetric, its own inverse) before quantizing, which spreads outliers over the group. The model rotates q, k and v the same way (the
 * backend's hadamard op) before kv_store when either pool's rows are group-coded, and rotates the attention
 * output back: q.k and sum p v are unchanged by an orthonormal rotation (an F16 pool beside a group-coded
 * one just stores rotated values). The kernels themselves never rotate.
 *
 * Page layout (one page of one pool, bytes, in that pool's row format): first the q part of every row,
 * head-major,
 *   row (h, r) at  h * page * qrow + r * qrow            (r = position % page, qrow = kv_qrow_bytes)
 * then, for group-coded rows, the s part,
 *   row (h, r) at  Hkv * page * qrow + (h * page + r) * srow   (srow = kv_srow_bytes)
 * so a tile of consecutive positions of one head is contiguous. qrow is a multiple of 16 for Dh a multiple
 * of 32. Page p of a pool starts at base + p * kv_page_bytes(its row format); a layer's key and value pools
 * have the same pages (n_pages, the page table) but, in a mixed format, different page sizes.
 */
#ifndef FERRY_KV_PAGES_H
#define FERRY_KV_PAGES_H

#include <stddef.h>
#include <stdint.h>

/* Every KV row format, one row each (X-macros): KV_ROW_LIST(X) calls X(id, k, qbits, gbytes) once per row
 * codec, in enum order:
 *   id      KV_<id>; k: the suffix of its CPU kernels kv_quant_<k>, kv_dequant_<k>
 *   qbits   bits per value in the q part of a row: qrow = Dh * qbits / 8
 *   gbytes  bytes per group of KV_GROUP values in the s part (0: none); group-coded rows are stored rotated
 * Every KV format (--kv), KV_FMT_LIST(X): X(id, k, key, val, cuda), in enum order (the order --kv lists them):
 * first one format per row codec, in KV_ROW_LIST's order, whose keys and values both use it, then the mixed
 * formats:
 *   id      KV_<id>; k its name (--kv, plans; #k)
 *   key,val the row formats of the key pool and of the value pool (KV_<key>, KV_<val>: rows of KV_ROW_LIST)
 *   cuda    1: the CUDA kernels read and write it (k_kv_store<row>, k_attention<key, val>); the CPU kernels,
 *           the exact reference, take every format */
#define KV_ROW_LIST(X)     \
	X(F32, f32, 32, 0) \
	X(F16, f16, 16, 0) \
	X(Q8,  q8,  8,  2) \
	X(Q4,  q4,  4,  2) \
	X(Q5,  q5,  4,  6) \
	X(A4,  a4,  4,  4) \
	X(A5,  a5,  4,  8)

#define KV_FMT_LIST(X)                   \
	X(F32,  f32,  F32, F32, 0)       \
	X(F16,  f16,  F16, F16, 1)       \
	X(Q8,   q8,   Q8,  Q8,  1)       \
	X(Q4,   q4,   Q4,  Q4,  1)       \
	X(Q5,   q5,   Q5,  Q5,  1)       \
	X(A4,   a4,   A4,  A4,  1)       \
	X(A5,   a5,   A5,  A5,  1)       \
	X(K8V5, k8v5, Q8,  Q5,  1)       \
	X(K8V4, k8v4, Q8,  Q4,  1)       \
	X(KA5V4, ka5v4, A5, Q4,  1)

/* KV_IF_<0 or 1>(yes, no): a 0/1 column of KV_FMT_LIST as a selector for the tables built from it */
#define KV_IF_1(yes, no) yes
#define KV_IF_0(yes, no) no

#define KV_ENUM_ROW(id, k, key, val, cuda) KV_##id,
enum kv_fmt { KV_FMT_LIST(KV_ENUM_ROW) KV_FMT_COUNT };
#undef KV_ENUM_ROW

#define KV_ROW_COUNT_ROW(id, k, qbits, gbytes) +1
enum { KV_ROW_COUNT = 0 KV_ROW_LIST(KV_ROW_COUNT_ROW) }; /* the row formats are KV_F32 .. KV_ROW_COUNT - 1 */
#undef KV_ROW_COUNT_ROW

#define KV_GROUP 32      /* values per scale (Q8/Q4/Q5) and per Hadamard rotation */
#define KV_PAGE_ALIGN 64 /* a page holds a multiple of this many positions */

/* The functions below test fmt against each row in turn: fmt == KV_<id> ? <the row's value> : ... */

/* The row format of a KV format's keys (pool 0) or values (pool 1) */
static inline int kv_pool_fmt(int fmt, int pool)
{
#define KV_POOL(id, k, key, val, cuda) fmt == KV_##id ? (pool ? KV_##val : KV_##key) :
	return KV_FMT_LIST(KV_POOL) - 1;
#undef KV_POOL
}

/* Bytes of a row's q part and s part in row format rfmt */
static inline int kv_qrow_bytes(int rfmt, int Dh)
{
#define KV_QROW(id, k, qbits, gbytes) rfmt == KV_##id ? Dh * (qbits) / 8 :
	return KV_ROW_LIST(KV_QROW) 0;
#undef KV_QROW
}

static inline int kv_srow_bytes(int rfmt, int Dh)
{
#define KV_SROW(id, k, qbits, gbytes) rfmt == KV_##id ? Dh / KV_GROUP * (gbytes) :
	return KV_ROW_LIST(KV_SROW) 0;
#undef KV_SROW
}

/* Whether a KV format stores rotated values: either of its pools group-coded */
static inline int kv_fmt_rotated(int fmt)
{
	return kv_srow_bytes(kv_pool_fmt(fmt, 0), KV_GROUP) > 0 || kv_srow_bytes(kv_pool_fmt(fmt, 1), KV_GROUP) > 0;
}

/* Bytes of one page of a pool in row format rfmt */
static inline size_t kv_page_bytes(int rfmt, int Hkv, int Dh, int page)
{
	return (size_t)Hkv * (size_t)page * (size_t)(kv_qrow_bytes(rfmt, Dh) + kv_srow_bytes(rfmt, Dh));
}

/* Bytes of one page of KV format fmt's key (pool 0) or value (pool 1) pool */
static inline size_t kv_pool_page_bytes(int fmt, int pool, int Hkv, int Dh, int page)
{
	return kv_page_bytes(kv_pool_fmt(fmt, pool), Hkv, Dh, page);
}

/* Whether the CUDA kernels take fmt */
static inline int kv_fmt_on_cuda(int fmt)
{
#define KV_CUDA(id, k, key, val, cuda) fmt == KV_##id ? (cuda) :
	return KV_FMT_LIST(KV_CUDA) 0;
#undef KV_CUDA
}

static inline const char *kv_fmt_name(int fmt)
{
#define KV_NAME(id, k, key, val, cuda) fmt == KV_##id ? #k :
	return KV_FMT_LIST(KV_NAME) "?";
#undef KV_NAME
}

/* One layer's cache: two pools (keys, values) of n_pages pages each, in backend memory. `group` names the
 * page table the layer uses (src/engine/kvcache.h: full-attention layers share one, sliding-window layers another). */
struct kv_layer {
	void *k, *v;
	int fmt;          /* enum kv_fmt: keys in row format kv_pool_fmt(fmt, 0), values kv_pool_fmt(fmt, 1) */
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
	/* Token trees (speculative steps; NULL: none): each of the T tokens' logical position (RoPE and the
	 * window), the first scratch position of its tree (KV_TREE_NONE for a token of a plain part), and its
	 * ancestor mask [T * KV_TREE_WORDS]: bit i set iff scratch position tree_base + i is the token itself
	 * or one of its ancestors. */
	const int *lpos;
	const int *tree_base;
	const uint32_t *tree_mask;
};

/* Token trees: a tree part stores its tokens' KV at scratch positions base + i (i its index in the part, a
 * parent before its children), past the sequence's committed base positions, while its logical positions
 * are base + depth; only the accepted path is later moved to base, base + 1, ... (kv_rows_move). */
#define KV_TREE_MAX 256
#define KV_TREE_WORDS (KV_TREE_MAX / 32)
#define KV_TREE_NONE 0x7fffffff

/* Visibility, exactly as every attention kernel applies it: a query at stored position p, logical position
 * lp (= p outside trees) and tree base tb (KV_TREE_NONE outside trees) sees key position j of its own
 * sequence iff j <= p, (window == 0 or lp - j < window), and (j < tb or bit j - tb of its ancestor mask).
 * A tree must be shallower than every window (the scheduler's depth cap): an ancestor at index a >= its
 * depth then always passes the window test, so the window acts on committed keys by logical distance. */
static inline int kv_visible(int p, int lp, int tb, const uint32_t *mask, int j, int window)
{
	return j <= p && (window == 0 || lp - j < window) && (j < tb || (mask[(j - tb) >> 5] >> ((j - tb) & 31) & 1));
}

/* Host pools only: copies the K and V rows (every kv head, q and scale parts) of positions from[i] to
 * to[i], i = 0 .. n-1 in order, through the page-table row `pages`; to[i] <= from[i] and both increasing,
 * so no row is overwritten before it is read. */
static inline void kv_rows_move(const struct kv_layer *kv, const int *pages, int n, const int *from, const int *to)
{
	for (int pool = 0; pool < 2; pool++) {
		int rf = kv_pool_fmt(kv->fmt, pool);
		size_t qrow = (size_t)kv_qrow_bytes(rf, kv->Dh), srow = (size_t)kv_srow_bytes(rf, kv->Dh);
		size_t pb = kv_page_bytes(rf, kv->Hkv, kv->Dh, kv->page), sofs = (size_t)kv->Hkv * (size_t)kv->page * qrow;
		uint8_t *base = (uint8_t *)(pool ? kv->v : kv->k);
		for (int i = 0; i < n; i++) {
			if (from[i] == to[i])
				continue;
			size_t fp = (size_t)pages[from[i] / kv->page] * pb, tp = (size_t)pages[to[i] / kv->page] * pb;
			for (int h = 0; h < kv->Hkv; h++) {
				size_t fr = (size_t)h * (size_t)kv->page + (size_t)(from[i] % kv->page);
				size_t tr = (size_t)h * (size_t)kv->page + (size_t)(to[i] % kv->page);
				for (size_t b = 0; b < qrow; b++)
					base[tp + tr * qrow + b] = base[fp + fr * qrow + b];
				for (size_t b = 0; b < srow; b++)
					base[tp + sofs + tr * srow + b] = base[fp + sofs + fr * srow + b];
			}
		}
	}
}

#endif
