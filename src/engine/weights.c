/*
 * weights.c: streaming units into backend memory (weights.h). Fences (n_items + n_slots of them, from the
 * backend's allocator): upload_done of item u is fence0 + u, compute_done of slot s is fence0 + n_items + s.
 *
 * A unit's device image: its tensors grouped into runs that lie close together in the host buffer (gaps
 * under 64 KiB, the 4096-byte alignment padding of the file); each run is one copy of its host span, and
 * runs are packed 256-byte aligned. So a layer read as one file range is one large DMA, and lz4-decoded
 * tensors (elsewhere in the buffer) are copied without the compressed bytes next to them.
 *
 * Routed experts (w->routed, a unit with expert-major tensors): the unit's upload copies its trunk only
 * (attention, norms, router), the device image keeping the host layout so the experts' pointers hold;
 * weights_experts then copies the experts a step's router chose, each one copy of its matrices, from the
 * streamer's buffer (acquired again: RAM-tier units only, so this never waits for I/O; a unit streamed from
 * disk goes up whole) into their places (when
 * more than half of them are missing, the whole expert region in one copy). Which
 * experts the device image holds is kept per unit: a resident unit gathers them over the steps, a slot
 * forgets them when it takes another unit.
 *
 * The expert cache (weights.h, expert_cache.h): for a streamed routed unit, weights_experts looks each
 * routed expert up in the image (valid since the unit's latest stage), then in the cache, and uploads a
 * miss into a cache entry when the policy admits it, else into the image. An entry is overwritten only
 * after the compute queue passed the last unit that read it (its guard's fence, recorded at weights_put)
 * and never while the unit being computed holds it (pinned). exp_at[e] is where expert e is for the
 * current get.
 *
 * A split head (weights.h): items n_units.. are its pieces 1..; a piece's upload copies the head's tensors with
 * its output matrix cut to the piece's rows (cut_off, cut_len: one byte range, rows being whole blocks). Each
 * piece's stage acquires the streamer's buffer and keeps it (head_acq); the last piece's weights_put gives
 * them all back after the latest piece upload, so the buffer is not refilled (and read again) between pieces.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "engine/weights.h"
#include "layout/arch.h"

#define RUN_GAP (64u << 10)
#define DEV_ALIGN 256u

struct weights_unit {
	int unit;        /* the layout unit (a head piece: L) */
	int split;       /* a head piece: its output matrix's tensor index, cut to [cut_off, + cut_len) bytes; -1 */
	uint64_t cut_off, cut_len;
	bool resident;
	bool uploaded;   /* resident: its one upload was issued */
	uint64_t bytes;  /* weights_unit_device_bytes */
	int slot;        /* streamed: slot of its latest upload, -1 none */
	void *dev;       /* resident buffer */
	void **ptrs;     /* [n_tensors] device pointers of the latest upload */
	struct backend *b;
	int fence;       /* upload_done (of the trunk, then of the latest experts) */
	bool held;       /* its streamer buffer kept from its upload to weights_put (weights.h: hold_ok) */
	/* routed experts: the expert region (its first tensor), E experts of stride bytes, exp_len of them
	 * copied per expert; which ones the device image holds */
	int exp_first;   /* tensor index, -1: no experts, or not in the RAM tier (uploaded whole) */
	int64_t n_exp;
	uint64_t exp_stride, exp_len;
	bool *exp_valid; /* [n_exp] */
	const char **exp_at; /* [n_exp] expert e's block for the current get (image or cache entry), NULL */
	void **router;   /* [n_tensors] the router's tensors kept on the device (prediction), the others NULL */
	void *router_mem;
};

static void unhold(struct weights *w, int unit);

static uint64_t align_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

uint64_t weights_unit_device_bytes(const struct layout *lay, int unit)
{
	const struct layout_unit *u = layout_unit_get(lay, unit);
	return align_up(io_unit_slot_bytes(lay, unit), DEV_ALIGN) + (uint64_t)DEV_ALIGN * (uint64_t)u->n_tensors;
}

/* The head's output matrix (its tensor index in the head unit, -1 none) and the bytes of one of its rows. */
static int head_matrix(const struct layout *lay, uint64_t *row_bytes)
{
	const struct layout_unit *lu = layout_unit_get(lay, lay->hp.n_layers);
	const struct layout_tensor *t = layout_tensor_find(lu, arch_output.name);
	if (!t || t->ndim != 2 || t->stride || t->shape[0] < 1)
		return -1;
	*row_bytes = t->raw_bytes / (uint64_t)t->shape[0];
	return (int)(t - lu->tensors);
}

/* A piece's rows are a run of their own (upload), and the head's other tensors' runs copy no more than in the
 * whole unit (their count, each 256-byte aligned, at most the tensors'): */
uint64_t weights_head_piece_bytes(const struct layout *lay, int64_t rows)
{
	const struct layout_unit *lu = layout_unit_get(lay, lay->hp.n_layers);
	uint64_t rb, whole = weights_unit_device_bytes(lay, lay->hp.n_layers);
	int i = head_matrix(lay, &rb);
	if (i < 0 || rows >= lu->tensors[i].shape[0])
		return whole;
	return whole - lu->tensors[i].raw_bytes + (uint64_t)rows * rb + DEV_ALIGN;
}

int64_t weights_head_rows_fit(const struct layout *lay, uint64_t cap)
{
	const struct layout_unit *lu = layout_unit_get(lay, lay->hp.n_layers);
	uint64_t rb, base;
	int i = head_matrix(lay, &rb);
	if (i < 0 || !rb)
		return 0;
	base = weights_head_piece_bytes(lay, 0);
	int64_t n = cap > base ? (int64_t)((cap - base) / rb) : 0;
	return n < lu->tensors[i].shape[0] ? n : lu->tensors[i].shape[0];
}

uint64_t weights_expert_bytes(const struct layout *lay)
{
	uint64_t most = 0;
	for (int u = 0; u <= lay->hp.n_layers; u++) {
		const struct layout_unit *lu = layout_unit_get(lay, u);
		uint64_t lo = UINT64_MAX, hi = 0;
		for (int i = 0; i < lu->n_tensors; i++) {
			const struct layout_tensor *t = &lu->tensors[i];
			if (!t->stride)
				continue;
			uint64_t end = t->offset + t->bytes / (uint64_t)t->shape[0];
			lo = t->offset < lo ? t->offset : lo;
			hi = end > hi ? end : hi;
		}
		if (hi > lo && hi - lo > most)
			most = hi - lo;
	}
	return align_up(most, DEV_ALIGN);
}

/* Whether tensor t of a layer is the router or its bias, kept on the device (an uncompressed copy). */
static bool is_router(const struct layout *lay, const struct layout_tensor *t)
{
	const struct arch *a = arch_find(ARCH_KEY_NAME, lay->hp.arch);
	const struct arch_tensor *r = a ? arch_slot_tensor(a, ARCH_SLOT_ROUTER) : NULL;
	const struct arch_tensor *rb = a ? arch_slot_tensor(a, ARCH_SLOT_B_ROUTER) : NULL;
	return t->comp == LAYOUT_COMP_NONE && !t->stride &&
	       ((r && !strcmp(t->name, r->name)) || (rb && !strcmp(t->name, rb->name)));
}

/* Device bytes of layer u's router tensors. */
static uint64_t unit_router_bytes(const struct layout *lay, int u)
{
	const struct layout_unit *lu = layout_unit_get(lay, u);
	uint64_t n = 0;
	for (int i = 0; lay->hp.n_experts && i < lu->n_tensors; i++)
		n += is_router(lay, &lu->tensors[i]) ? align_up(lu->tensors[i].bytes, DEV_ALIGN) : 0;
	return n;
}

uint64_t weights_router_bytes(const struct layout *lay)
{
	uint64_t n = 0;
	for (int u = 0; u < lay->hp.n_layers; u++)
		n += unit_router_bytes(lay, u);
	return n;
}

/* Every streamed layer's router to the device once (read from the file, not the streamer: it is needed before
 * the layer's first read), so prediction can apply layer l + 1's router whatever the slots hold. */
static int keep_routers(struct weights *w, char *err, size_t errlen)
{
	struct backend *b = w->b;
	for (int u = 0; u < w->lay->hp.n_layers; u++) {
		struct weights_unit *wu = &w->u[u];
		const struct layout_unit *lu = layout_unit_get(w->lay, u);
		uint64_t bytes = unit_router_bytes(w->lay, u);
		if (wu->resident || !bytes)
			continue;
		wu->router = calloc((size_t)lu->n_tensors + 1, sizeof(void *));
		char *host = malloc((size_t)bytes);
		if (!wu->router || !host || !(wu->router_mem = b->ops->alloc(b, bytes))) {
			snprintf(err, errlen, "device memory for layer %d's router (%llu bytes): %s", u,
				 (unsigned long long)bytes, wu->router ? b->err : "out of memory");
			free(host);
			return -ENOMEM;
		}
		uint64_t at = 0;
		int rc = 0;
		for (int i = 0; !rc && i < lu->n_tensors; i++) {
			const struct layout_tensor *t = &lu->tensors[i];
			if (!is_router(w->lay, t))
				continue;
			rc = io_read_tensor(w->io, t, host + at, err, errlen);
			wu->router[i] = (char *)wu->router_mem + at;
			at += align_up(t->bytes, DEV_ALIGN);
		}
		if (!rc && b->ops->upload(b, wu->router_mem, host, (size_t)bytes)) {
			snprintf(err, errlen, "layer %d: router upload: %s", u, b->err);
			rc = -EIO;
		}
		free(host);
		if (rc)
			return rc;
	}
	return 0;
}

int weights_router(struct weights *w, int unit, void *const **ptrs)
{
	struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	if (w->b->ops->host_memory || !wu || !wu->router)
		return -ENOENT;
	*ptrs = wu->router;
	return 0;
}

int weights_init(struct weights *w, const struct layout *lay, struct backend *b, struct io_stream *io,
		 const bool *resident, int n_slots, int n_cache, int64_t head_rows, char *err, size_t errlen)
{
	memset(w, 0, sizeof(*w));
	w->b = b;
	w->io = io;
	w->lay = lay;
	w->n_units = w->n_items = lay->hp.n_layers + 1;
	w->n_pieces = 1;
	if (b->ops->host_memory)
		return 0;
	int L = lay->hp.n_layers, split = -1;
	uint64_t rb = 0;
	if (head_rows > 0 && !(resident && resident[L]) && (split = head_matrix(lay, &rb)) >= 0) {
		int64_t V = layout_unit_get(lay, L)->tensors[split].shape[0];
		w->n_pieces = (int)((V + head_rows - 1) / head_rows);
		w->head_rows = head_rows;
		w->n_items += w->n_pieces - 1;
	}
	w->u = calloc((size_t)w->n_items, sizeof(*w->u));
	bool all_resident = true;
	for (int u = 0; w->u && u < w->n_items; u++) {
		struct weights_unit *wu = &w->u[u];
		wu->unit = u < L ? u : L;
		wu->split = -1;
		wu->resident = resident && resident[wu->unit];
		wu->slot = -1;
		wu->b = b;
		const struct layout_unit *lu = layout_unit_get(lay, wu->unit);
		wu->ptrs = calloc((size_t)lu->n_tensors + 1, sizeof(void *));
		if (!wu->ptrs)
			goto oom;
		wu->exp_first = -1;
		uint64_t bytes = wu->bytes = weights_unit_device_bytes(lay, wu->unit);
		if (wu->unit == L && w->n_pieces > 1) { /* piece k = u - L of the head's rows */
			int64_t V = lu->tensors[split].shape[0], r0 = (int64_t)(u - L) * head_rows;
			int64_t n = V - r0 < head_rows ? V - r0 : head_rows;
			wu->split = split;
			wu->cut_off = (uint64_t)r0 * rb;
			wu->cut_len = (uint64_t)n * rb;
			bytes = wu->bytes = weights_head_piece_bytes(lay, n);
		}
		for (int i = 0; i < lu->n_tensors; i++) {
			const struct layout_tensor *t = &lu->tensors[i];
			if (!t->stride)
				continue;
			if (wu->exp_first < 0 || t->offset < lu->tensors[wu->exp_first].offset)
				wu->exp_first = i;
			wu->n_exp = t->shape[0];
			wu->exp_stride = t->stride;
		}
		for (int i = 0; wu->exp_first >= 0 && i < lu->n_tensors; i++) {
			const struct layout_tensor *t = &lu->tensors[i];
			uint64_t end = t->offset - lu->tensors[wu->exp_first].offset + t->bytes / (uint64_t)(t->stride ? t->shape[0] : 1);
			if (t->stride && end > wu->exp_len)
				wu->exp_len = end;
		}
		/* routed uploads read the streamer's buffer again during the layer: a RAM-tier unit's is whole; a
		 * unit read by expert gets its routed experts read then (weights_experts); others go up whole */
		if (!io_unit_in_tier(io, wu->unit) && !io_unit_by_expert(io, wu->unit))
			wu->exp_first = -1;
		if (wu->exp_first >= 0 && !(wu->exp_valid = calloc((size_t)wu->n_exp, sizeof(bool))))
			goto oom;
		if (wu->exp_first >= 0 && !(wu->exp_at = calloc((size_t)wu->n_exp, sizeof(char *))))
			goto oom;
		all_resident &= wu->resident;
		if (wu->resident && !(wu->dev = b->ops->alloc(b, bytes))) {
			snprintf(err, errlen, "device memory for resident unit %d (%llu bytes): %s", u, (unsigned long long)bytes,
				 b->err);
			weights_free(w);
			return -ENOMEM;
		}
		if (!wu->resident && bytes > w->slot_bytes)
			w->slot_bytes = bytes;
	}
	if (!w->u)
		goto oom;
	if (!all_resident && n_slots < 2) {
		snprintf(err, errlen, "streaming needs at least 2 device slots (got %d)", n_slots);
		weights_free(w);
		return -EINVAL;
	}
	w->n_slots = all_resident ? 0 : n_slots;
	w->slot_mem = calloc((size_t)w->n_slots + 1, sizeof(void *));
	w->slot_unit = calloc((size_t)w->n_slots + 1, sizeof(int));
	if (!w->slot_mem || !w->slot_unit)
		goto oom;
	for (int s = 0; s < w->n_slots; s++) {
		w->slot_unit[s] = -1;
		if (!(w->slot_mem[s] = b->ops->alloc(b, w->slot_bytes))) {
			snprintf(err, errlen, "device slot %d of %d (%llu bytes): %s", s + 1, w->n_slots,
				 (unsigned long long)w->slot_bytes, b->err);
			weights_free(w);
			return -ENOMEM;
		}
	}
	int64_t n_exp = 0;
	for (int u = 0; u < w->n_units; u++)
		n_exp = w->u[u].exp_first >= 0 && !w->u[u].resident && w->u[u].n_exp > n_exp ? w->u[u].n_exp : n_exp;
	w->ec_bytes = weights_expert_bytes(lay);
	if (n_cache > 0 && n_exp > 0 && w->n_slots > 0) {
		if (ec_init(&w->ec, n_cache, w->n_units, (int)n_exp))
			goto oom;
		if (!(w->ec_mem = b->ops->alloc(b, (size_t)n_cache * w->ec_bytes))) {
			snprintf(err, errlen, "device expert cache of %d x %llu bytes: %s", n_cache,
				 (unsigned long long)w->ec_bytes, b->err);
			weights_free(w);
			return -ENOMEM;
		}
		int rc = keep_routers(w, err, errlen);
		if (rc) {
			weights_free(w);
			return rc;
		}
	}
	int f0 = b->ops->fence_alloc(b, w->n_items + w->n_slots + (w->ec.n ? w->n_units : 0));
	if (f0 < 0) {
		snprintf(err, errlen, "device events: %s", b->err);
		weights_free(w);
		return f0;
	}
	w->fence0 = f0;
	struct io_stats ist;
	io_stream_stats(io, &ist);
	w->io_slots = ist.n_slots;
	w->ec_fence0 = f0 + w->n_items + w->n_slots;
	for (int u = 0; u < w->n_items; u++)
		w->u[u].fence = f0 + u;
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	weights_free(w);
	return -ENOMEM;
}

void weights_free(struct weights *w)
{
	struct backend *b = w->b;
	if (b && !b->ops->host_memory)
		b->ops->sync(b);
	for (; w->head_acq > 0; w->head_acq--)
		io_unit_release(w->io, w->n_units - 1);
	for (int u = 0; w->u && u < w->n_items; u++) {
		unhold(w, u);
		if (w->u[u].dev)
			b->ops->free(b, w->u[u].dev);
		free(w->u[u].ptrs);
		free(w->u[u].exp_valid);
		free(w->u[u].exp_at);
		free(w->u[u].router);
		if (w->u[u].router_mem)
			b->ops->free(b, w->u[u].router_mem);
	}
	if (w->io && w->u) /* the device is synchronized above: the streamer must not call upload_done on freed units */
		io_forget_done(w->io);
	if (w->ec_mem)
		b->ops->free(b, w->ec_mem);
	ec_free(&w->ec);
	for (int s = 0; w->slot_mem && s < w->n_slots; s++)
		if (w->slot_mem[s])
			b->ops->free(b, w->slot_mem[s]);
	free(w->u);
	free(w->slot_mem);
	free(w->slot_unit);
	memset(w, 0, sizeof(*w));
}

static bool upload_done(void *ctx)
{
	struct weights_unit *wu = ctx;
	return wu->b->ops->fence_done(wu->b, wu->fence);
}

/* Whether unit wu's experts are uploaded as routed (weights_experts) rather than with the unit. */
static bool routed(const struct weights *w, const struct weights_unit *wu)
{
	return w->routed && wu->exp_first >= 0;
}

/* Bytes from a tensor's first byte in the streamer's buffer to its last (decoded: raw_bytes). */
static uint64_t extent(const struct layout_tensor *t)
{
	return t->stride ? layout_tensor_span(t) : t->raw_bytes;
}

/* Copies the item's tensors from the streamer's buffer to dev (runs of nearby tensors as one copy each) on
 * the copy queue, filling wu->ptrs. */
static int upload(struct weights *w, int item, void *const *host, char *dev, uint64_t cap, char *err, size_t errlen)
{
	struct weights_unit *wu = &w->u[item];
	const struct layout_unit *lu = layout_unit_get(w->lay, wu->unit);
	int n = lu->n_tensors, order[LAYOUT_MAX_TENSORS];
	FERRY_ASSERT(n <= LAYOUT_MAX_TENSORS);
	const char *src[LAYOUT_MAX_TENSORS]; /* each tensor's bytes in the buffer: a head piece's rows only */
	uint64_t len[LAYOUT_MAX_TENSORS];
	for (int i = 0; i < n; i++) {
		src[i] = (const char *)host[i] + (i == wu->split ? wu->cut_off : 0);
		len[i] = i == wu->split ? wu->cut_len : extent(&lu->tensors[i]);
	}
	for (int i = 0; i < n; i++) { /* by host address (insertion sort: a few dozen tensors) */
		int j = i;
		for (; j > 0 && src[order[j - 1]] > src[i]; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
	uint64_t at = 0;
	for (int i = 0; i < n;) {
		const char *lo = src[order[i]];
		const char *hi = lo + len[order[i]];
		int j = i + 1;
		for (; j < n && order[i] != wu->split; j++) { /* expert-major tensors interleave: a tensor starting
								 * inside the run joins it; a head piece's rows go alone */
			const char *p = src[order[j]], *end = p + len[order[j]];
			if ((p >= hi && (uint64_t)(p - hi) >= RUN_GAP) || order[j] == wu->split)
				break;
			hi = end > hi ? end : hi;
		}
		uint64_t span = (uint64_t)(hi - lo);
		if (at + span > cap) {
			snprintf(err, errlen, "unit %d: %llu bytes do not fit its device buffer of %llu", wu->unit,
				 (unsigned long long)(at + span), (unsigned long long)cap);
			return -ENOSPC;
		}
		for (int k = i; k < j; k++)
			wu->ptrs[order[k]] = dev + at + (src[order[k]] - lo);
		/* routed experts stay behind (weights_experts): the run's other tensors go in sub-runs */
		for (int k = i; k < j;) {
			if (routed(w, wu) && lu->tensors[order[k]].stride) {
				k++;
				continue;
			}
			const char *a = src[order[k]], *z = a + len[order[k]];
			int q = k + 1;
			for (; q < j && !(routed(w, wu) && lu->tensors[order[q]].stride); q++) {
				const char *e = src[order[q]] + len[order[q]];
				z = e > z ? e : z;
			}
			if (w->b->ops->copy_async(w->b, dev + at + (a - lo), a, (size_t)(z - a))) {
				snprintf(err, errlen, "unit %d: upload: %s", wu->unit, w->b->err);
				return -EIO;
			}
			w->h2d_bytes += (uint64_t)(z - a);
			k = q;
		}
		at = align_up(at + span, DEV_ALIGN);
		i = j;
	}
	return 0;
}

/* Whether a streamed unit keeps its streamer buffer from its upload to weights_put (weights.h: hold_ok). */
static bool holds(const struct weights *w, int unit)
{
	const struct weights_unit *wu = &w->u[unit];
	return w->hold_ok && !wu->resident && routed(w, wu) && !io_unit_in_tier(w->io, unit);
}

/* Gives back the streamer buffer a unit kept (held), once its uploads are done. */
static void unhold(struct weights *w, int unit)
{
	struct weights_unit *wu = &w->u[unit];
	if (!wu->held)
		return;
	wu->held = false;
	w->io_held--;
	io_unit_release_after(w->io, unit, upload_done, wu);
}

/* Issues the upload of an item (no-op when its latest upload is still valid). */
static int stage(struct weights *w, int item, char *err, size_t errlen)
{
	struct weights_unit *wu = &w->u[item];
	int unit = wu->unit;
	if (wu->resident ? wu->uploaded : wu->slot >= 0 && w->slot_unit[wu->slot] == item)
		return 0;
	struct backend *b = w->b;
	int slot = -1;
	char *dev = wu->dev;
	uint64_t cap = wu->bytes;
	if (!wu->resident) {
		slot = w->next_slot;
		w->next_slot = (w->next_slot + 1) % w->n_slots;
		if (w->slot_unit[slot] >= 0) {
			w->u[w->slot_unit[slot]].slot = -1;
			unhold(w, w->slot_unit[slot]);
		}
		w->slot_unit[slot] = -1;
		dev = w->slot_mem[slot];
		cap = w->slot_bytes;
		/* the slot's previous unit must be done on the compute queue before it is overwritten */
		if (b->ops->fence_wait(b, BQ_COPY, w->fence0 + w->n_items + slot)) {
			snprintf(err, errlen, "unit %d: %s", unit, b->err);
			return -EIO;
		}
	}
	void *const *host;
	int rc = io_unit_acquire(w->io, unit, &host, err, errlen);
	if (rc)
		return rc;
	rc = upload(w, item, host, dev, cap, err, errlen);
	if (!rc && b->ops->fence_record(b, BQ_COPY, wu->fence)) {
		snprintf(err, errlen, "unit %d: %s", unit, b->err);
		rc = -EIO;
	}
	if (rc) {
		b->ops->sync(b);
		io_unit_release(w->io, unit);
		return rc;
	}
	if (wu->split >= 0) { /* a head piece: the buffer stays until the last piece's put */
		w->io_held += !w->head_acq++;
		w->head_last = item;
	} else if (holds(w, unit) && w->io_held + 1 < w->io_slots) {
		wu->held = true;
		w->io_held++;
	} else {
		io_unit_release_after(w->io, unit, upload_done, wu);
	}
	if (wu->exp_valid)
		memset(wu->exp_valid, 0, sizeof(bool) * (size_t)wu->n_exp);
	if (wu->resident) {
		wu->uploaded = true;
	} else {
		wu->slot = slot;
		w->slot_unit[slot] = item;
	}
	return 0;
}

int weights_pieces(const struct weights *w, int unit, int64_t *rows)
{
	*rows = w->head_rows;
	return unit == w->n_units - 1 ? w->n_pieces : 1;
}

int weights_get(struct weights *w, int unit, bool host, void *const **ptrs, char *err, size_t errlen)
{
	FERRY_ASSERT(unit >= 0 && unit < w->n_items && (unit < w->n_units || !(host || w->b->ops->host_memory)));
	if (host || w->b->ops->host_memory)
		return io_unit_acquire(w->io, unit, ptrs, err, errlen);
	int rc = stage(w, unit, err, errlen);
	if (rc)
		return rc;
	if (w->u[unit].exp_at)
		memset(w->u[unit].exp_at, 0, sizeof(char *) * (size_t)w->u[unit].n_exp);
	if (w->b->ops->fence_wait(w->b, BQ_COMPUTE, w->u[unit].fence)) {
		snprintf(err, errlen, "unit %d: %s", unit, w->b->err);
		return -EIO;
	}
	*ptrs = w->u[unit].ptrs;
	return 0;
}

/* Whether unit wu's experts go through the expert cache. */
static bool cached(const struct weights *w, const struct weights_unit *wu)
{
	return w->ec.n && routed(w, wu) && !wu->resident;
}

/* An entry for (unit, e) admitted by the policy (pin: the unit computing with it, -1 none), its previous
 * reader's compute passed on the copy queue; NULL when none is admitted. */
static char *cache_take(struct weights *w, int unit, int e, int pin, int *rc)
{
	int i = ec_insert(&w->ec, unit, e, pin);
	if (i < 0)
		return NULL;
	int g = w->ec.ent[i].guard;
	if (g >= 0 && w->b->ops->fence_wait(w->b, BQ_COPY, w->ec_fence0 + g))
		*rc = -EIO;
	return w->ec_mem + (uint64_t)i * w->ec_bytes;
}

/* One expert's copy from the streamer's buffer into dst. */
static int copy_expert(struct weights *w, struct weights_unit *wu, void *const *host, int64_t e, char *dst)
{
	const char *src = (const char *)host[wu->exp_first] + (uint64_t)e * wu->exp_stride;
	w->h2d_bytes += wu->exp_len;
	w->exp_h2d += wu->exp_len;
	return w->b->ops->copy_async(w->b, dst, src, (size_t)wu->exp_len) ? -EIO : 0;
}

int weights_experts(struct weights *w, int unit, bool on_host, const bool *used, char *err, size_t errlen)
{
	struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	if (on_host || w->b->ops->host_memory) /* computed from the streamer's buffer, which it holds */
		return io_unit_experts(w->io, unit, used, err, errlen);
	if (!wu || !routed(w, wu))
		return 0;
	struct backend *b = w->b;
	char *image = wu->ptrs[wu->exp_first];
	int n = 0;
	for (int64_t e = 0; e < wu->n_exp; e++) { /* where each routed expert already is */
		if (!used[e] || wu->exp_at[e])
			continue;
		int i = -1;
		if (cached(w, wu)) {
			ec_use(&w->ec, unit, (int)e);
			i = ec_find(&w->ec, unit, (int)e, true);
		}
		if (wu->exp_valid[e])
			wu->exp_at[e] = image + (uint64_t)e * wu->exp_stride;
		else if (i >= 0)
			wu->exp_at[e] = w->ec_mem + (uint64_t)i * w->ec_bytes;
		else
			n++;
	}
	if (!n)
		return 0;
	void *const *host;
	int rc = io_unit_acquire(w->io, unit, &host, err, errlen);
	/* the streamer's buffer holds what is copied (read from disk now when the unit is read by expert) */
	bool all = 2 * (int64_t)n > wu->n_exp, need[wu->n_exp];
	for (int64_t e = 0; e < wu->n_exp; e++)
		need[e] = all || (used[e] && !wu->exp_at[e]);
	if (!rc && (rc = io_unit_experts(w->io, unit, need, err, errlen)))
		io_unit_release(w->io, unit);
	if (rc)
		return rc;
	/* most experts missing (a prefill, a large batch): the whole region into the image in one copy */
	if (all) {
		uint64_t len = (uint64_t)(wu->n_exp - 1) * wu->exp_stride + wu->exp_len;
		if (b->ops->copy_async(b, image, host[wu->exp_first], (size_t)len))
			rc = -EIO;
		for (int64_t e = 0; !rc && e < wu->n_exp; e++) {
			wu->exp_valid[e] = true;
			if (used[e] && !wu->exp_at[e])
				wu->exp_at[e] = image + (uint64_t)e * wu->exp_stride;
		}
		w->h2d_bytes += len;
		w->exp_uploads += (uint64_t)n;
		w->exp_h2d += len;
	}
	for (int64_t e = 0; !rc && e < wu->n_exp; e++) {
		if (!used[e] || wu->exp_at[e])
			continue;
		char *dst = cached(w, wu) ? cache_take(w, unit, (int)e, unit, &rc) : NULL;
		if (!dst) {
			dst = image + (uint64_t)e * wu->exp_stride;
			wu->exp_valid[e] = true;
		}
		rc = rc ? rc : copy_expert(w, wu, host, e, dst);
		wu->exp_at[e] = dst;
		w->exp_uploads++;
	}
	if (!rc && b->ops->fence_record(b, BQ_COPY, wu->fence))
		rc = -EIO;
	if (rc) {
		snprintf(err, errlen, "unit %d: expert upload: %s", unit, b->err);
		b->ops->sync(b);
		io_unit_release(w->io, unit);
		return rc;
	}
	io_unit_release_after(w->io, unit, upload_done, wu);
	if (b->ops->fence_wait(b, BQ_COMPUTE, wu->fence)) {
		snprintf(err, errlen, "unit %d: %s", unit, b->err);
		return -EIO;
	}
	return 0;
}

void weights_experts_present(const struct weights *w, int unit, const bool *used, bool *present)
{
	const struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	int64_t E = w->lay->hp.n_experts;
	for (int64_t e = 0; e < E; e++) {
		bool at = !wu || !routed(w, wu) || wu->exp_at[e] || wu->exp_valid[e];
		if (!at && cached(w, wu))
			at = w->ec.where[(int64_t)unit * w->ec.n_exp + e] >= 0;
		present[e] = used[e] && at;
	}
}

int weights_host_experts(struct weights *w, int unit, const bool *need, void *const **ptrs, char *err,
			 size_t errlen)
{
	int rc = io_unit_acquire(w->io, unit, ptrs, err, errlen);
	if (!rc && (rc = io_unit_experts(w->io, unit, need, err, errlen)))
		io_unit_release(w->io, unit);
	struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	for (int64_t e = 0; !rc && e < w->lay->hp.n_experts; e++) {
		if (!need[e])
			continue;
		w->exp_host++;
		if (wu && cached(w, wu)) {
			ec_use(&w->ec, unit, (int)e);
			ec_find(&w->ec, unit, (int)e, true); /* not there: a miss */
		}
	}
	return rc;
}

void weights_host_put(struct weights *w, int unit)
{
	io_unit_release(w->io, unit);
}

int weights_peek(struct weights *w, int unit, void *const **ptrs)
{
	struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	if (w->b->ops->host_memory || !wu || !(wu->resident ? wu->uploaded : wu->slot >= 0 && w->slot_unit[wu->slot] == unit))
		return -ENOENT;
	if (w->b->ops->fence_wait(w->b, BQ_COMPUTE, wu->fence))
		return -EIO;
	*ptrs = wu->ptrs;
	return 0;
}

const void *weights_expert_ptr(const struct weights *w, int unit, int e, const void *stacked)
{
	const struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	if (w->b->ops->host_memory || !wu || !routed(w, wu) || !wu->exp_at[e])
		return NULL;
	return wu->exp_at[e] + ((const char *)stacked - (const char *)wu->ptrs[wu->exp_first]);
}

int weights_predict(struct weights *w, int unit, const bool *guess, char *err, size_t errlen)
{
	struct weights_unit *wu = w->u ? &w->u[unit] : NULL;
	if (w->b->ops->host_memory || !wu || !cached(w, wu))
		return 0;
	if (!io_unit_in_tier(w->io, unit)) { /* read by expert: its guessed experts start coming from disk now */
		bool need[wu->n_exp];
		for (int64_t e = 0; e < wu->n_exp; e++)
			need[e] = guess[e] && ec_find(&w->ec, unit, (int)e, false) < 0;
		io_unit_experts_ahead(w->io, unit, need);
		return 0;
	}
	struct backend *b = w->b;
	void *const *host = NULL;
	int rc = 0, n = 0;
	for (int64_t e = 0; !rc && e < wu->n_exp; e++) {
		if (!guess[e] || ec_find(&w->ec, unit, (int)e, false) >= 0)
			continue;
		if (!host && (rc = io_unit_acquire(w->io, unit, &host, err, errlen)))
			return rc;
		char *dst = cache_take(w, unit, (int)e, -1, &rc);
		if (!dst)
			continue;
		rc = rc ? rc : copy_expert(w, wu, host, e, dst);
		w->pred_uploads++;
		n++;
	}
	if (!host)
		return 0;
	if (!rc && n && b->ops->fence_record(b, BQ_COPY, wu->fence))
		rc = -EIO;
	if (rc) {
		snprintf(err, errlen, "unit %d: predicted expert upload: %s", unit, b->err);
		b->ops->sync(b);
		io_unit_release(w->io, unit);
		return rc;
	}
	if (n)
		io_unit_release_after(w->io, unit, upload_done, wu);
	else
		io_unit_release(w->io, unit);
	return 0;
}

void weights_put(struct weights *w, int unit, bool host)
{
	if (host || w->b->ops->host_memory) {
		io_unit_release(w->io, unit);
		return;
	}
	struct weights_unit *wu = &w->u[unit];
	unhold(w, unit);
	if (!wu->resident && wu->slot >= 0)
		w->b->ops->fence_record(w->b, BQ_COMPUTE, w->fence0 + w->n_items + wu->slot);
	if (wu->split >= 0 && unit == w->n_items - 1 && w->head_acq) { /* the last piece: the head's buffer back */
		for (; w->head_acq > 0; w->head_acq--) /* once the latest piece upload (the copy queue is in order) */
			io_unit_release_after(w->io, wu->unit, upload_done, &w->u[w->head_last]);
		w->io_held--;
	}
	if (cached(w, wu)) { /* the entries it read are free to go once the compute queue passes here */
		ec_unpin(&w->ec, unit);
		w->b->ops->fence_record(w->b, BQ_COMPUTE, w->ec_fence0 + unit);
	}
}

int weights_prefetch(struct weights *w, int unit, const bool *host, char *err, size_t errlen)
{
	if (w->b->ops->host_memory || w->n_slots == 0)
		return 0;
	/* The current item keeps its slot; the others take the next streamed items in cyclic order. */
	int ahead = host && host[w->u[unit].unit] ? w->n_slots : w->n_slots - 1;
	for (int k = 1; k <= w->n_items && ahead > 0; k++) {
		int u = (unit + k) % w->n_items;
		if (host && host[w->u[u].unit])
			continue;
		if (w->u[u].resident) {
			if (!w->u[u].uploaded) {
				int rc = stage(w, u, err, errlen);
				if (rc)
					return rc;
			}
			continue;
		}
		/* a unit that could not keep its buffer would have its trunk read again for its experts: it is
		 * uploaded when its turn comes instead (the streamer still reads it ahead) */
		if (holds(w, u) && w->io_held + 1 >= w->io_slots && !(w->u[u].slot >= 0 && w->slot_unit[w->u[u].slot] == u))
			break;
		int rc = stage(w, u, err, errlen);
		if (rc)
			return rc;
		ahead--;
	}
	return 0;
}
