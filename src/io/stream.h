/*
 * stream.h: the layer streamer. Reads the streaming units of a model.ferry (layers 0..L-1, then the head
 * as unit L) into pinned host buffers ahead of the consumer, which visits them in cyclic order (0..L, 0..L
 * again for the next step).
 *
 * - A unit is read as one contiguous range per file (tensors are 4096-aligned, so with O_DIRECT straight
 *   into the buffer) by the io_uring reader, or by a pread thread pool where io_uring is not available.
 * - Staging slots (k of them, each the size of the largest unit) hold streamed units. While the consumer
 *   holds unit u, the streamer keeps the next units in cyclic order in flight in the other slots; acquire()
 *   of any other unit works too (it cancels what no longer fits).
 * - The RAM tier pins a fixed, deterministic set of whole units after their first read (evenly spaced
 *   over 0..L, as many as the budget holds; see ram_tier.h for why not LRU). acquire() of a resident unit
 *   hands out the tier buffer itself: no copy, so a GPU upload from it runs at the pinned-copy rate.
 * - Tensors stored as lz4 chunks are decoded by worker threads into the buffer as soon as they arrive,
 *   while later reads continue. Every tensor's XXH3 (of its stored bytes) is checked the first time the
 *   process reads it; a mismatch fails the acquire with the file and tensor named.
 *
 * Threads: one I/O thread and the decode workers per stream; acquire/release/cancel come from one
 * consumer thread. Functions return 0 or -errno and write a one-line message into err.
 */
#ifndef FERRY_IO_STREAM_H
#define FERRY_IO_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "layout/layout.h"

enum io_reader_kind { IO_READER_AUTO = 0, IO_READER_URING, IO_READER_PREAD };

/* Pinned host memory from the consumer's device runtime (cudaHostAlloc); NULL in io_opts: mmap + mlock. */
struct io_host_alloc {
	const char *name;
	void *(*alloc)(size_t bytes, void *ctx); /* page-aligned, or NULL */
	void (*free)(void *p, size_t bytes, void *ctx);
	void *ctx;
};

struct io_opts {
	int n_slots;        /* staging slots; < 0: auto (0 when the RAM tier holds every unit, else 2, or 3 when the
			     * budget allows it) */
	int prefetch;       /* most units in flight ahead of the consumer; 0: as many as free slots */
	int64_t ram;        /* pinned bytes for slots plus the RAM tier; < 0: slots only, no tier */
	int reader;         /* enum io_reader_kind; AUTO uses io_uring when the kernel allows it */
	bool buffered;      /* never O_DIRECT (benchmarks of the page cache; file systems are probed anyway) */
	int depth;          /* read requests in flight (0: 32) */
	uint32_t req_bytes; /* bytes per request, a multiple of 4096 (0: 2 MiB) */
	int n_workers;      /* checksum/decode threads (0: the number of cores, at most 8) */
	bool experts_on_demand; /* units outside the RAM tier read their trunk only; io_unit_experts reads experts */
	const struct io_host_alloc *host_alloc;
	/* One-line notices (reader fallback, O_DIRECT refused, memory not locked), each at most once a stream. */
	void (*log)(const char *msg, void *ctx);
	void *log_ctx;
};

struct io_stats {
	char reader[128];       /* what reads: "io_uring depth 32, fixed files, fixed buffers, O_DIRECT" */
	uint64_t bytes_read;    /* from files, as stored (compressed bytes for lz4 tensors) */
	uint64_t bytes_tier;    /* handed out from the RAM tier without reading */
	uint64_t bytes_reused;  /* handed out from a slot that still held the unit */
	uint64_t bytes_decoded; /* lz4 output */
	uint64_t bytes_experts; /* of bytes_read: experts read on demand (io_unit_experts) */
	uint64_t n_experts;     /* experts read on demand */
	uint64_t n_reads;       /* read requests completed */
	uint64_t n_short;       /* short reads, re-queued for the rest */
	double busy_sec;        /* wall time with at least one read in flight (bytes_read / busy_sec = disk rate) */
	double wait_sec;        /* time the consumer spent waiting in acquire */
	uint64_t n_acquire;
	int n_slots;
	uint64_t slot_bytes;
	int slots_busy_max;     /* most slots loading or held at one time */
	int n_units, tier_units;
	uint64_t tier_bytes;
	bool locked;            /* pinned memory is page-locked (cudaHostAlloc or mlock) */
	int in_flight;          /* requests in flight now (0 after io_stream_cancel) */
};

struct io_stream;

void io_opts_default(struct io_opts *o);
int io_stream_open(struct io_stream **s, const struct layout *m, const struct io_opts *o, char *err, size_t errlen);
/* Stops prefetching, waits for every request and decode in flight, frees everything. */
void io_stream_close(struct io_stream *s);

/* unit: 0..L-1 layer, L head (embedding rows go through io_read_rows). ptrs[i] is the data of
 * layout_unit.tensors[i], decoded, until the unit is released. Errors: -EIO (read failed or file
 * truncated), -EBADMSG (checksum mismatch or corrupt lz4), -EBUSY (every slot held by the consumer). */
int io_unit_acquire(struct io_stream *s, int unit, void *const **ptrs, char *err, size_t errlen);
/* The consumer is done with the data: the buffer may be refilled. */
void io_unit_release(struct io_stream *s, int unit);
/* The consumer is done once done(ctx) returns true (e.g. a query of a GPU event recorded after the upload
 * from this buffer). The streamer calls done from its I/O thread, only while it wants the buffer back, and
 * never after it returned true; it must be thread-safe and must not block. */
void io_unit_release_after(struct io_stream *s, int unit, bool (*done)(void *ctx), void *ctx);
/* Every pending done(ctx) of io_unit_release_after counts as true from now on: for a consumer that has waited
 * for all of them itself (a device synchronized) and is about to free what their ctx points to. */
void io_forget_done(struct io_stream *s);
/* Units outside the RAM tier, with experts_on_demand, are read without their expert-major experts (the
 * trunk: attention, norms, router, biases); these calls read experts into their places in the buffer, one
 * read each (expert-major experts are never compressed; their checksums, over all experts, are not
 * checked by such reads). io_unit_experts: those want[E] marks that the held unit's buffer lacks, waiting
 * for them (a no-op for a unit read whole). io_unit_experts_ahead: the same for a unit loading or loaded
 * but not necessarily held, without waiting (prediction); a no-op when it has no live load. */
int io_unit_experts(struct io_stream *s, int unit, const bool *want, char *err, size_t errlen);
void io_unit_experts_ahead(struct io_stream *s, int unit, const bool *want);
/* Whether the unit is read without its experts when it is not in the RAM tier (experts_on_demand). */
bool io_unit_by_expert(const struct io_stream *s, int unit);
/* Stops prefetching and waits until no request or decode is in flight (units the consumer holds and the
 * RAM tier's finished units stay); the next acquire starts again. */
void io_stream_cancel(struct io_stream *s);

/* Reads rows[i] of an uncompressed 2-D tensor into dst (n rows, packed); synchronous. */
int io_read_rows(struct io_stream *s, const struct layout_tensor *t, const int *rows, int n, void *dst, char *err,
		 size_t errlen);
/* Reads an uncompressed, packed tensor whole into dst (t->bytes); synchronous, unverified (the streamer checks
 * the checksum when it reads the tensor's unit). */
int io_read_tensor(struct io_stream *s, const struct layout_tensor *t, void *dst, char *err, size_t errlen);
void io_stream_stats(struct io_stream *s, struct io_stats *out);
/* Bytes of buffer a unit needs: its file ranges plus room for decoded lz4 tensors. */
uint64_t io_unit_slot_bytes(const struct layout *m, int unit);
/* Whether the unit stays in the RAM tier once read (an acquire after its first read never waits for I/O). */
bool io_unit_in_tier(const struct io_stream *s, int unit);

#endif
