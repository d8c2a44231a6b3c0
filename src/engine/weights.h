/*
 * weights.h: the weights of a streaming unit (layer or head) in backend memory, for the forward pass.
 *
 * On a host-memory backend (CPU) a unit is the streamer's pinned buffer itself. On a device backend
 * (CUDA) units are uploaded from the streamer's buffers into device memory on the backend's copy queue:
 * - resident units get their own device buffer and are uploaded once;
 * - the others rotate through n_slots device slots in cyclic unit order: the upload of the next units
 *   overlaps the compute of the current one, and a slot is overwritten only after the compute queue has
 *   passed the unit that used it (a fence recorded at weights_put). The streamer's host buffer is
 *   released once its upload is done (io_unit_release_after with a fence query).
 * Order of calls per unit: weights_get, the unit's ops, weights_put, then weights_prefetch of what follows.
 *
 * Routed experts: with w->routed, a unit's expert-major experts are not uploaded with it; weights_experts
 * uploads those a step routes to (the device image keeps the host layout, so the pointers hold).
 * The expert cache (n_cache entries of weights_expert_bytes, expert_cache.h the policy): a streamed unit's
 * routed experts are looked up there first and uploaded into an entry when admitted (into the unit's
 * slot image otherwise), so experts stay on the device across steps; weights_expert_ptr says where each
 * one is for the current get. weights_predict uploads guessed experts of a later unit into the cache early;
 * with a cache, every streamed layer's router stays on the device from weights_init (weights_router), so a
 * guess never needs the next layer's slot.
 *
 * A head split in row pieces (head_rows in weights_init; plan.c decides): its output matrix streams as
 * n_pieces items of head_rows rows each (the last shorter), each with the head's other tensors (the norm,
 * small), through the slots like units: item L + k is piece k, after the layers in the cyclic order, so
 * slot_bytes need only hold a piece. The streamer's buffer of the head is held from the first piece's upload
 * to the last one's weights_put, so it is read once per step. weights_pieces tells the model the split.
 *
 * Hybrid steps (model.h): a unit the host backend computes is the streamer's buffer itself (host true in
 * get and put), and the prefetch skips such units (the host mask): their uploads would be wasted.
 */
#ifndef FERRY_WEIGHTS_H
#define FERRY_WEIGHTS_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "engine/expert_cache.h"
#include "layout/layout.h"
#include "io/stream.h"

struct weights_unit;

struct weights {
	struct backend *b;
	struct io_stream *io;
	const struct layout *lay;
	int n_units;              /* L + 1: layers, then the head */
	int n_items;              /* what streams through the slots: n_units + n_pieces - 1 (head pieces 1..) */
	struct weights_unit *u;   /* [n_items]: units 0..L, then the head's pieces 1..n_pieces-1 */
	int n_pieces;             /* the head's pieces on the device (1: whole) */
	int64_t head_rows;        /* rows of its output matrix per piece (n_pieces > 1) */
	int head_acq;             /* acquires of the head's streamer buffer held until its last piece's put */
	int head_last;            /* the piece whose upload was issued last */
	int n_slots;
	void **slot_mem;          /* [n_slots] device slots of slot_bytes */
	int *slot_unit;           /* [n_slots] unit whose upload is (or was last) in the slot, -1 none */
	int next_slot;
	uint64_t slot_bytes;
	uint64_t h2d_bytes;       /* uploaded so far */
	int fence0;               /* the first of its backend fences (weights.c) */
	bool routed;              /* units with expert-major experts upload only the experts weights_experts asks for */
	uint64_t exp_uploads;     /* experts uploaded by weights_experts */
	/* the expert cache: ec.n entries of ec_bytes at ec_mem; compute_done of a unit's use of its entries is
	 * fence ec_fence0 + unit */
	struct expert_cache ec;
	char *ec_mem;
	uint64_t ec_bytes;
	int ec_fence0;
	uint64_t pred_uploads;    /* experts uploaded by weights_predict */
	uint64_t exp_host;        /* experts of device units computed on the host (weights_host_experts) */
	uint64_t exp_h2d;         /* bytes of experts uploaded (routed, whole regions, predicted) */
	/* a streamed unit read by expert keeps its streamer buffer from its upload to weights_put (its routed
	 * experts are read into it then; released, the streamer would refill it and read the trunk again): at
	 * most io_slots - 1 at a time, so the streamer always has a slot; hold_ok false (hybrid steps, whose
	 * host units hold slots too): never */
	bool hold_ok;
	int io_slots, io_held;
};

/* Device bytes a unit takes once uploaded (an upper bound known before reading it). */
uint64_t weights_unit_device_bytes(const struct layout *lay, int unit);

/* Device bytes of the head unit with its output matrix cut to `rows` rows (an upper bound, as above: a piece
 * in a slot), and the most rows a piece of at most cap bytes holds (0: not even one). */
uint64_t weights_head_piece_bytes(const struct layout *lay, int64_t rows);
int64_t weights_head_rows_fit(const struct layout *lay, uint64_t cap);

/* Device bytes of one expert-cache entry: the largest expert (its gate, up and down) of any unit; 0 for a
 * model without expert-major experts. */
uint64_t weights_expert_bytes(const struct layout *lay);

/* Device bytes of the streamed layers' routers (and biases), kept on the device with an expert cache so that
 * prediction needs no slot; 0 without experts (the plan reserves them with the cache). */
uint64_t weights_router_bytes(const struct layout *lay);

/* resident: [n_units] flags (NULL: none) of units kept in device memory; n_slots >= 2 unless every unit
 * is resident; n_cache: expert-cache entries (ignored on host-memory backends); head_rows: a streamed head
 * goes in pieces of that many rows of its output matrix (0: whole; ignored where it is resident or on a
 * host-memory backend). */
int weights_init(struct weights *w, const struct layout *lay, struct backend *b, struct io_stream *io,
		 const bool *resident, int n_slots, int n_cache, int64_t head_rows, char *err, size_t errlen);
/* The pieces unit is computed in on the device (1 unless it is a split head: weights_get, put and prefetch
 * then take items unit + k for pieces k = 0..n-1, their output matrix rows [k * rows, ...) in *rows). */
int weights_pieces(const struct weights *w, int unit, int64_t *rows);
void weights_free(struct weights *w);
/* ptrs[i]: the unit's tensor i in backend memory, valid until weights_put; the compute queue waits for
 * its upload. unit: an item (above), a unit except for a split head's pieces 1.. . A piece's output matrix
 * pointer is its first row. */
int weights_get(struct weights *w, int unit, bool host, void *const **ptrs, char *err, size_t errlen);
void weights_put(struct weights *w, int unit, bool host);
/* Routed experts: between weights_get and weights_put of a unit, makes the experts that used[E] marks
 * present: in the streamer's buffer of a unit read by expert (io_unit_experts: read from disk); on a device
 * (w->routed) also in its device image or the cache (uploading those it lacks, the compute queue waiting
 * for them). No-op for units without experts. */
int weights_experts(struct weights *w, int unit, bool host, const bool *used, char *err, size_t errlen);
/* --moe-cpu (moe_cpu.h), between weights_get and weights_experts of a device unit: present[e] for the
 * experts used[E] marks that the unit's device image or the expert cache already holds (nothing counted,
 * nothing pinned); every used expert of a unit whose experts are not routed (uploaded with it). */
void weights_experts_present(const struct weights *w, int unit, const bool *used, bool *present);
/* The experts need[E] marks of a device unit, computed on the host instead of uploaded: the streamer's
 * buffer (acquired again; read from disk now for a unit read by expert), ptrs its tensors there; counted as
 * routed uses (and cache misses) for the cache's policy. weights_host_put gives the buffer back. */
int weights_host_experts(struct weights *w, int unit, const bool *need, void *const **ptrs, char *err,
			 size_t errlen);
void weights_host_put(struct weights *w, int unit);
/* Where expert e's matrix of a stacked tensor lies for the current get of a device unit, given that tensor's
 * pointer from weights_get (`stacked`, expert 0 in the unit's image); NULL where the pointers of the image
 * hold (not a routed unit, a host unit, a host-memory backend). Valid after weights_experts marked e. */
const void *weights_expert_ptr(const struct weights *w, int unit, int e, const void *stacked);
/* The device pointers of a unit whose upload is already issued (resident, or in a slot), the compute queue
 * waiting for it, without taking it; -ENOENT when it is not on the device (or on host-memory backends). */
int weights_peek(struct weights *w, int unit, void *const **ptrs);
/* A streamed layer's kept router: ptrs[i] the device copy of its router tensors, NULL for the others;
 * -ENOENT when none is kept (no expert cache, a resident or compressed router, host-memory backends). */
int weights_router(struct weights *w, int unit, void *const **ptrs);
/* Prediction: uploads into the expert cache the experts guess[E] marks of a later streamed unit that the
 * cache lacks and admits (the compute queue's next weights_get of that unit waits for them); a wrong guess
 * costs only its copies. No-op without a cache or where weights_experts would not route. */
int weights_predict(struct weights *w, int unit, const bool *guess, char *err, size_t errlen);
/* Starts the uploads of the units after `unit` (cyclic) that fit in the free slots, skipping those host[]
 * marks (NULL: none); all slots when `unit` itself is a host unit (no device slot is in use), else all but
 * its own. No-op on the CPU. */
int weights_prefetch(struct weights *w, int unit, const bool *host, char *err, size_t errlen);

#endif
