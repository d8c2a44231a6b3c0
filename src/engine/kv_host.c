/*
 * kv_host.c: KV pools in pinned host memory, streamed with their layer through two device staging pairs
 * (kv_host.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/kv_host.h"

int kvh_init(struct kv_host *h, struct backend *b, int L, const bool *host, const size_t *pool_bytes, char *err,
	     size_t errlen)
{
	memset(h, 0, sizeof(*h));
	h->b = b;
	h->n_layers = L;
	for (int l = 0; host && l < L; l++)
		h->n_host += host[l];
	if (!h->n_host)
		return 0;
	const struct backend_ops *op = b->ops;
	if (!op->host_alloc || !op->copy_d2h_async || !op->fence_alloc) {
		snprintf(err, errlen, "the %s backend cannot stream KV pages", op->name);
		return -ENOTSUP;
	}
	h->host_idx = malloc(sizeof(int) * (size_t)L);
	h->host_layer = malloc(sizeof(int) * (size_t)h->n_host);
	h->hk = calloc((size_t)L, sizeof(void *));
	h->hv = calloc((size_t)L, sizeof(void *));
	h->pool_bytes = malloc(2 * sizeof(size_t) * (size_t)L);
	h->order = malloc(sizeof(int) * (size_t)h->n_host);
	h->order_of = malloc(sizeof(int) * (size_t)L);
	bool ok = h->host_idx && h->host_layer && h->hk && h->hv && h->pool_bytes && h->order && h->order_of;
	size_t sk = 0, sv = 0; /* the largest key and value pools: the staging pair's sizes */
	for (int l = 0, i = 0; ok && l < L; l++) {
		size_t bk = pool_bytes[2 * l], bv = pool_bytes[2 * l + 1];
		h->pool_bytes[2 * l] = bk;
		h->pool_bytes[2 * l + 1] = bv;
		h->host_idx[l] = host[l] ? i : -1;
		if (!host[l])
			continue;
		h->host_layer[i++] = l;
		sk = bk > sk ? bk : sk;
		sv = bv > sv ? bv : sv;
		h->hk[l] = op->host_alloc(b, bk);
		h->hv[l] = h->hk[l] ? op->host_alloc(b, bv) : NULL;
		ok = h->hv[l];
	}
	for (int s = 0; ok && s < 2; s++) {
		h->sk[s] = op->alloc(b, sk);
		h->sv[s] = h->sk[s] ? op->alloc(b, sv) : NULL;
		ok = h->sv[s];
	}
	if (ok && (h->fence0 = op->fence_alloc(b, 4)) < 0)
		ok = false;
	if (!ok) {
		snprintf(err, errlen,
			 "out of memory for the KV cache streamed from host memory (%d layers, %zu + %zu bytes a pool pair)%s%s",
			 h->n_host, sk, sv, b->err[0] ? ": " : "", b->err);
		kvh_free(h);
		return -ENOMEM;
	}
	return 0;
}

void kvh_free(struct kv_host *h)
{
	if (!h->b)
		return;
	for (int l = 0; h->hk && l < h->n_layers; l++) {
		if (h->hk[l])
			h->b->ops->host_free(h->b, h->hk[l]);
		if (h->hv[l])
			h->b->ops->host_free(h->b, h->hv[l]);
	}
	for (int s = 0; s < 2; s++) {
		if (h->sk[s])
			h->b->ops->free(h->b, h->sk[s]);
		if (h->sv[s])
			h->b->ops->free(h->b, h->sv[s]);
	}
	free(h->host_idx);
	free(h->host_layer);
	free(h->hk);
	free(h->hv);
	free(h->pool_bytes);
	free(h->order);
	free(h->order_of);
	memset(h, 0, sizeof(*h));
}

/* Uploads the used pages of the step's staged layer i (in its order) into staging pair i % 2 once the
 * compute that used the pair last is done. */
static int upload(struct kv_host *h, int i, const struct kv_layer *kv)
{
	if (i >= h->n_order)
		return 0;
	struct backend *b = h->b;
	int l = h->order[i], s = i % 2;
	size_t used = (size_t)h->used[kv[l].group], np = (size_t)kv[l].n_pages;
	size_t nk = used * (h->pool_bytes[2 * l] / np), nv = used * (h->pool_bytes[2 * l + 1] / np);
	int rc = b->ops->fence_wait(b, BQ_COPY, h->fence0 + 2 + s);
	if (!rc && nk) {
		rc = b->ops->copy_async(b, h->sk[s], h->hk[l], nk);
		rc = rc ? rc : b->ops->copy_async(b, h->sv[s], h->hv[l], nv);
		h->h2d += nk + nv;
	}
	return rc ? rc : b->ops->fence_record(b, BQ_COPY, h->fence0 + s);
}

int kvh_step_begin(struct kv_host *h, const struct kv_cache *kc, struct kv_layer *kv, const bool *skip)
{
	if (!h->n_host)
		return 0;
	h->n_order = 0;
	for (int l = 0; l < h->n_layers; l++) {
		h->order_of[l] = -1;
		if (h->host_idx[l] >= 0 && !(skip && skip[l])) {
			h->order_of[l] = h->n_order;
			h->order[h->n_order++] = l;
		}
	}
	for (int g = 0; g < kc->n_groups; g++) {
		int mx = 0;
		for (size_t i = 0; i < (size_t)kc->max_seqs * (size_t)kc->max_pages; i++)
			mx = kc->tables[g][i] + 1 > mx ? kc->tables[g][i] + 1 : mx;
		h->used[g] = mx;
	}
	int rc = upload(h, 0, kv);
	return rc ? rc : upload(h, 1, kv);
}

bool kvh_host_view(const struct kv_host *h, int l, const struct kv_layer *kv, struct kv_layer *out)
{
	if (!h->n_host || h->host_idx[l] < 0)
		return false;
	*out = kv[l];
	out->k = h->hk[l];
	out->v = h->hv[l];
	return true;
}

int kvh_acquire(struct kv_host *h, int l, struct kv_layer *kv)
{
	if (!h->n_host || h->order_of[l] < 0)
		return 0;
	int s = h->order_of[l] % 2;
	kv[l].k = h->sk[s];
	kv[l].v = h->sv[s];
	return h->b->ops->fence_wait(h->b, BQ_COMPUTE, h->fence0 + s);
}

int kvh_release(struct kv_host *h, int l, struct kv_layer *kv, const struct kv_cache *kc, int n_parts,
		const int *part_row, const int *part_span)
{
	if (!h->n_host || h->order_of[l] < 0)
		return 0;
	struct backend *b = h->b;
	int i = h->order_of[l], s = i % 2, g = kv[l].group;
	size_t pbk = h->pool_bytes[2 * l] / (size_t)kv[l].n_pages, pbv = h->pool_bytes[2 * l + 1] / (size_t)kv[l].n_pages;
	int rc = b->ops->fence_record(b, BQ_COMPUTE, h->fence0 + 2 + s);
	rc = rc ? rc : b->ops->fence_wait(b, BQ_COPY, h->fence0 + 2 + s);
	for (int p = 0; !rc && p < n_parts; p++) {
		int len = kc->seqs[part_row[p]].len;
		const int *row = kc->tables[g] + (size_t)part_row[p] * (size_t)kc->max_pages;
		for (int j = len / kc->page; !rc && j <= (len + part_span[p] - 1) / kc->page; j++) {
			if (row[j] < 0)
				continue;
			size_t ok = (size_t)row[j] * pbk, ov = (size_t)row[j] * pbv;
			rc = b->ops->copy_d2h_async(b, (char *)h->hk[l] + ok, (char *)h->sk[s] + ok, pbk);
			rc = rc ? rc : b->ops->copy_d2h_async(b, (char *)h->hv[l] + ov, (char *)h->sv[s] + ov, pbv);
			h->d2h += pbk + pbv;
		}
	}
	kv[l].k = kv[l].v = NULL;
	return rc ? rc : upload(h, i + 2, kv);
}
