/*
 * kv_host.h: KV pools kept in pinned host memory and streamed with their layer, for contexts (or batches)
 * whose KV cache does not fit the device budget (device backends only).
 *
 * A host layer's K and V pools live in pinned host memory. Two device staging pairs take turns: before a
 * host layer computes, the pages in use of its pools (pages 0 .. used-1 of its group: page ids are taken
 * lowest first, so that range is compact) are copied up on the copy queue; after it computes, the pages the
 * step wrote are copied back down, and the staging pair is refilled for the host layer two after it. The
 * compute queue waits for a layer's upload; an upload into a staging pair waits for the compute that used
 * it (fences), and the copy queue's order puts every write-back before the next upload of that layer.
 *
 * Per step this moves the used KV of every host layer up once (and the step's new pages down): the plan
 * prints the cost beside the weights'.
 *
 * Hybrid steps (model.h): the layers the host backend computes read and write their pinned pools in place
 * (kvh_host_view); they are left out of the step's staging order (the skip mask of kvh_step_begin).
 */
#ifndef FERRY_KV_HOST_H
#define FERRY_KV_HOST_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "engine/kvcache.h"

struct kv_host {
	struct backend *b;
	int n_layers, n_host;
	int *host_idx;          /* [L] index among the host layers, -1 for device layers */
	int *host_layer;        /* [n_host] */
	int *order, *order_of;  /* this step's staged host layers [n_order] in layer order; [L] index in it, -1 none */
	int n_order;
	void **hk, **hv;        /* [L] pinned pools of host layers */
	void *sk[2], *sv[2];    /* device staging pools */
	size_t *pool_bytes;     /* [L][2] bytes of layer l's K pool ([2l]) and V pool ([2l + 1]) */
	int fence0;             /* its 4 backend fences: fence0 + s: upload into stage s done; fence0 + 2 + s: compute with it done */
	int used[KVC_GROUPS_MAX]; /* per group: pages in use this step */
	uint64_t h2d, d2h;      /* KV bytes moved so far */
};

/* host: [L] flags (NULL or none set: nothing to do). pool_bytes [L][2]: bytes of each layer's K pool ([2l])
 * and V pool ([2l + 1]; a mixed KV format's differ). */
int kvh_init(struct kv_host *h, struct backend *b, int L, const bool *host, const size_t *pool_bytes, char *err,
	     size_t errlen);
void kvh_free(struct kv_host *h);
/* Step start (after the step's pages are mapped): the pages in use per group; starts the uploads of the
 * first two host layers the step stages (those skip[] does not mark; skip NULL: all). */
int kvh_step_begin(struct kv_host *h, const struct kv_cache *kc, struct kv_layer *kv, const bool *skip);
/* Host layer l's pinned pools as a kv_layer (the shape of kv[l]) for the host backend; false when l is not
 * a host layer. */
bool kvh_host_view(const struct kv_host *h, int l, const struct kv_layer *kv, struct kv_layer *out);
/* Before layer l computes (a staged layer of the step; others: no-op): points kv[l] at its staging pair and makes the compute queue wait for it. */
int kvh_acquire(struct kv_host *h, int l, struct kv_layer *kv);
/* After layer l computed: writes back the pages holding the step's positions (part i: sequence
 * part_row[i], part_span[i] positions from its committed length: the part's tokens, and a token tree's
 * scratch positions before them) and refills the staging pair for the host layer two after. */
int kvh_release(struct kv_host *h, int l, struct kv_layer *kv, const struct kv_cache *kc, int n_parts,
		const int *part_row, const int *part_span);

#endif
