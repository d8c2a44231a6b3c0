/* test_tree_attention.c: token-tree attention on the CPU (src/kernels/kv_pages.h): random trees after a
 * committed context, in a range that also carries a plain part of another sequence, stored by cpu_kv_store and
 * attended by cpu_attention, against a brute-force double-precision attention over exactly the keys the tree
 * rule names (committed keys by logical distance within the window, then the token's ancestors and itself),
 * read back from the pages; every KV format, windows on and off. A chain given as a tree gives the bytes of the
 * plain part. kv_rows_move puts a path's rows at consecutive positions, bytes intact. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/rng.h"
#include "check.h"
#include "tree_util.h"
#include "kernels/cpu/cpu_ops.h"

static struct rng rng;

static double urand(void)
{
	return (double)(rng_next(&rng) >> 11) * 0x1.0p-53;
}

#define PAGE 64
#define MAXP 8

/* The f32 row of (h, position p) read back from pool w (0 keys, 1 values) of kv through the page-table row
 * `table`. */
static void row_back(const struct kv_layer *kv, int w, const int *table, int h, int p, float *out)
{
	int rf = kv_pool_fmt(kv->fmt, w);
	size_t qrow = (size_t)kv_qrow_bytes(rf, kv->Dh), srow = (size_t)kv_srow_bytes(rf, kv->Dh);
	const uint8_t *base =
		(const uint8_t *)(w ? kv->v : kv->k) + (size_t)table[p / PAGE] * kv_page_bytes(rf, kv->Hkv, kv->Dh, PAGE);
	size_t r = (size_t)h * PAGE + (size_t)(p % PAGE);
	cpu_kv_row_dequant(rf, base + r * qrow, base + (size_t)kv->Hkv * PAGE * qrow + r * srow, out, kv->Dh);
}

/* One case: sequence 0 holds C committed positions, then a tree of n tokens (random parents, or a chain);
 * sequence 1 a plain part of 3 tokens after 5 committed ones (as_plain: a chain given without the tree
 * fields). Returns the largest relative error; tree_out gets the tree tokens' outputs. */
static double run_case(int fmt, int window, int C, int n, const int *parent, bool as_plain, float *tree_out)
{
	int Hkv = 2, g = 2, H = Hkv * g, Dh = 32, kvd = Hkv * Dh, C1 = 5, n1 = 3, T = n + n1;
	struct kv_layer kv = {.fmt = fmt, .page = PAGE, .Hkv = Hkv, .Dh = Dh, .n_pages = 2 * MAXP};
	kv.k = calloc(2 * MAXP, kv_pool_page_bytes(fmt, 0, Hkv, Dh, PAGE));
	kv.v = calloc(2 * MAXP, kv_pool_page_bytes(fmt, 1, Hkv, Dh, PAGE));
	int table[2 * MAXP];
	for (int i = 0; i < 2 * MAXP; i++)
		table[i] = 2 * MAXP - 1 - i; /* reversed: pages out of order */
	/* the committed history of both sequences, stored as plain parts */
	int hist_n = C + C1, *hp = malloc(sizeof(int) * (size_t)hist_n), *htp = malloc(sizeof(int) * (size_t)hist_n);
	float *hk = malloc(sizeof(float) * (size_t)hist_n * kvd), *hv = malloc(sizeof(float) * (size_t)hist_n * kvd);
	for (int t = 0; t < hist_n; t++) {
		hp[t] = t < C ? t : t - C;
		htp[t] = t < C ? 0 : 1;
	}
	for (int i = 0; i < hist_n * kvd; i++)
		hk[i] = (float)(2 * urand() - 1), hv[i] = (float)(2 * urand() - 1);
	int h_t0[3] = {0, C, hist_n}, rows[2] = {0, 1};
	struct kv_batch hb = {.T = hist_n, .n_parts = 2, .part_t0 = h_t0, .part_row = rows, .tok_part = htp, .pos = hp,
			      .pages = table, .max_pages = MAXP, .max_pos = C, .max_part = C};
	cpu_kv_store(&kv, hk, hv, &hb);

	/* the step: the tree (sequence 0), then the plain part (sequence 1) */
	int pos[64], lpos[64], tb[64], tp[64], depth[64];
	uint32_t mask[64 * KV_TREE_WORDS];
	tree_fields(n, parent, C, depth, pos, lpos, tb, tp, mask);
	for (int j = 0; j < n1; j++) {
		pos[n + j] = lpos[n + j] = C1 + j;
		tb[n + j] = KV_TREE_NONE;
		tp[n + j] = 1;
	}
	float *k = malloc(sizeof(float) * (size_t)T * kvd), *v = malloc(sizeof(float) * (size_t)T * kvd);
	float *q = malloc(sizeof(float) * (size_t)T * H * Dh), *out = malloc(sizeof(float) * (size_t)T * H * Dh);
	for (int i = 0; i < T * kvd; i++)
		k[i] = (float)(2 * urand() - 1), v[i] = (float)(2 * urand() - 1);
	for (int i = 0; i < T * H * Dh; i++)
		q[i] = (float)(2 * urand() - 1);
	int s_t0[3] = {0, n, T};
	struct kv_batch bt = {.T = T, .n_parts = 2, .part_t0 = s_t0, .part_row = rows, .tok_part = tp, .pos = pos,
			      .pages = table, .max_pages = MAXP, .max_pos = C + n - 1, .max_part = n,
			      .lpos = as_plain ? NULL : lpos, .tree_base = as_plain ? NULL : tb,
			      .tree_mask = as_plain ? NULL : mask};
	cpu_kv_store(&kv, k, v, &bt);
	int64_t per = cpu_attention_scratch(bt.max_pos + 1, Dh);
	float *scr = malloc(sizeof(float) * (size_t)per * 64);
	float scale = 0.3f;
	cpu_attention(out, q, &kv, &bt, H, window, scale, NULL, scr, per);

	/* the reference: exactly the keys the rule names */
	double worst = 0;
	float kr[64], vr[64];
	for (int t = 0; t < T; t++) {
		int seq = tp[t], keys[256], nk = 0;
		for (int j = 0; j <= pos[t]; j++) {
			bool committed = t >= n || j < C;
			bool vis = committed ? window == 0 || lpos[t] - j < window : false;
			if (!committed)
				for (int a = t; a >= 0 && !vis; a = parent[a])
					vis = C + a == j;
			if (vis)
				keys[nk++] = j;
		}
		for (int h = 0; h < H; h++) {
			double sc[256], mx = -INFINITY, sum = 0, o[64] = {0}, num = 0, den = 0;
			const float *qh = q + ((size_t)t * H + h) * Dh;
			for (int i = 0; i < nk; i++) {
				row_back(&kv, 0, table + seq * MAXP, h / g, keys[i], kr);
				double s = 0;
				for (int d = 0; d < Dh; d++)
					s += (double)qh[d] * kr[d];
				sc[i] = s * scale;
				mx = sc[i] > mx ? sc[i] : mx;
			}
			for (int i = 0; i < nk; i++)
				sum += sc[i] = exp(sc[i] - mx);
			for (int i = 0; i < nk; i++) {
				row_back(&kv, 1, table + seq * MAXP, h / g, keys[i], vr);
				for (int d = 0; d < Dh; d++)
					o[d] += sc[i] / sum * vr[d];
			}
			const float *oh = out + ((size_t)t * H + h) * Dh;
			for (int d = 0; d < Dh; d++) {
				num += (oh[d] - o[d]) * (oh[d] - o[d]);
				den += o[d] * o[d];
			}
			double e = sqrt(num / (den > 0 ? den : 1));
			worst = e > worst || isnan(e) ? (isnan(e) ? INFINITY : e) : worst;
		}
	}
	if (tree_out)
		memcpy(tree_out, out, sizeof(float) * (size_t)n * H * Dh);

	/* kv_rows_move: the path to the deepest token, moved to C, C+1, ... keeps each row's bytes */
	int deep = 0, path[64], np = 0;
	for (int j = 0; j < n; j++)
		deep = depth[j] > depth[deep] ? j : deep;
	for (int a = deep; a >= 0; a = parent[a])
		path[np++] = a;
	int from[64], to[64];
	float before[2][64][64], after[64];
	for (int i = 0; i < np; i++) {
		from[i] = C + path[np - 1 - i];
		to[i] = C + i;
		for (int w = 0; w < 2; w++)
			row_back(&kv, w, table, 1, from[i], before[w][i]);
	}
	kv_rows_move(&kv, table, np, from, to);
	int bad = 0;
	for (int i = 0; i < np; i++)
		for (int w = 0; w < 2; w++) {
			row_back(&kv, w, table, 1, to[i], after);
			bad += memcmp(after, before[w][i], sizeof(float) * (size_t)Dh) != 0;
		}
	CHECK_MSG(bad == 0, "fmt %s: %d moved rows differ", kv_fmt_name(fmt), bad);

	free(kv.k), free(kv.v), free(hp), free(htp), free(hk), free(hv), free(k), free(v), free(q), free(out), free(scr);
	return worst;
}

int main(void)
{
	rng_seed(&rng, 20);
	int H = 4, Dh = 32;
	for (int fmt = 0; fmt < KV_FMT_COUNT; fmt++)
		for (int w = 0; w < 3; w++) {
			int window = w == 0 ? 0 : w == 1 ? 40 : 100;
			for (int rep = 0; rep < 6; rep++) {
				int n = 1 + (int)(urand() * 40), C = 1 + (int)(urand() * 150), parent[64];
				for (int j = 0; j < n; j++) /* shallow and bushy, or deep */
					parent[j] = j == 0 ? -1 : (int)(urand() * (rep % 2 ? j : (j < 4 ? j : 4))) - (urand() < 0.1);
				if (window && n > window)
					n = window;
				double e = run_case(fmt, window, C, n, parent, false, NULL);
				/* f32 rows are exact; f16/q8/q4 read the same stored rows, so only f32 arithmetic differs */
				CHECK_MSG(e < 1e-5, "fmt %s window %d C %d tree of %d: relative error %.3g", kv_fmt_name(fmt), window,
					  C, n, e);
			}
			/* a chain as a tree computes the bytes of the same tokens as a plain part */
			int n = 9, C = 70, chain[64];
			for (int j = 0; j < n; j++)
				chain[j] = j - 1;
			struct rng seed = rng;
			float tree_out[9 * 4 * 32], plain_out[9 * 4 * 32];
			double e = run_case(fmt, window, C, n, chain, false, tree_out);
			rng = seed; /* the same values, the tree fields dropped */
			run_case(fmt, window, C, n, chain, true, plain_out);
			CHECK_MSG(memcmp(tree_out, plain_out, sizeof(float) * (size_t)n * H * Dh) == 0,
				  "fmt %s window %d: a chain as a tree differs from the plain part", kv_fmt_name(fmt), window);
			CHECK(e < 1e-5);
		}
	CHECK_DONE();
}
