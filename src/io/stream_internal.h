/*
 * stream_internal.h: the streamer's state, shared by stream.c (scheduling, the I/O thread, the consumer
 * calls) and decode.c (checksum and lz4 work on arrived tensors). Everything here is guarded by
 * io_stream.mu, except buffer contents, which belong to whoever the state machine says:
 *
 *   EMPTY --start--> READING --all bytes arrived, all tasks done--> READY --acquire/release--> ...
 *                        \--read error, bad checksum, bad lz4--> FAILED (reported by the next acquire)
 *
 * A load's buffer may be given to another unit only when nothing of it is in flight (inflight == 0: no
 * request in the reader or waiting to be re-queued; tasks == 0: no worker on it) and no consumer holds
 * it (users == 0 and no pending done() condition). A load that is no longer wanted is marked cancelled:
 * nothing more is submitted for it and it becomes EMPTY once drained.
 */
#ifndef FERRY_IO_STREAM_INTERNAL_H
#define FERRY_IO_STREAM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "reader.h"
#include "layout/layout.h"
#include "io/stream.h"
#include "io/unit_map.h"

enum load_state { LOAD_EMPTY, LOAD_READING, LOAD_READY, LOAD_FAILED };

/* Work on one arrived tensor: its checksum (first read in the process), then its lz4 chunks. */
struct task {
	struct load *ld;
	int tensor;
	bool verify;
	struct layout_lz4_info lz;
	uint32_t n, claimed, finished; /* pieces of work: 1 for a checksum, n_chunks for a decode */
	struct task *next;
};

struct load {
	uint8_t *buf;
	uint64_t cap;
	bool tier;      /* a RAM-tier entry: its unit never changes, it is never evicted */
	int unit;       /* -1 when empty (slots only) */
	enum load_state state;
	bool fresh;     /* loaded and not handed out yet (statistics: read vs reused) */
	bool cancelled;
	int users;
	bool (*done)(void *ctx); /* pending release condition */
	void *done_ctx;
	/* what this load reads: the map's ranges (a partial load's trunk range cut at the experts), then the
	 * experts asked for (io_unit_experts), one range each */
	struct map_range *rg; /* [max ranges + max experts] */
	int n_rg;
	bool partial;       /* experts read on demand; have[e]: expert e arrived or is queued */
	bool *have;         /* [most experts of a unit] */
	int range;          /* next range to submit from */
	uint64_t range_pos; /* and the byte in it */
	uint64_t todo;      /* image bytes not arrived yet */
	int inflight;       /* requests in the reader or waiting to be re-queued */
	int tasks;          /* tensors with work queued or running */
	uint64_t left[LAYOUT_UNIT_MAX_TENSORS]; /* stored bytes of tensor i not arrived yet */
	struct task task[LAYOUT_UNIT_MAX_TENSORS];
	void *ptrs[LAYOUT_UNIT_MAX_TENSORS];
	int rc;
	char err[512];
};

struct worker {
	struct io_stream *s;
	pthread_t thread;
	void *dctx;       /* lz4 decoder context */
	uint8_t *scratch; /* unshuffle buffer */
	uint64_t scratch_cap;
};

struct io_stream {
	const struct layout *m;
	struct io_opts o;
	int n_units;
	struct unit_map *maps;  /* [n_units] where each unit's bytes go in its buffer */
	int *fd;                 /* [2 * n_files]: buffered, O_DIRECT (-1 when refused) */
	bool *direct;            /* [n_files]: O_DIRECT still usable */
	struct io_reader *eng;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* consumer: a load changed state */
	pthread_cond_t work_cv; /* workers: tasks queued or stop */
	pthread_t io_thread;
	bool io_started;
	int n_slots;
	struct load *slots;
	struct load **tier; /* [n_units]: the tier entry of a resident unit, else NULL */
	uint8_t **verified; /* [n_units][tensor] */
	int next;           /* unit the consumer is expected to acquire next */
	int64_t max_exp;    /* most experts of a unit that can be read by expert */
	bool paused, stop, workers_stop;
	struct io_req *reqs, *free_reqs, *retry;
	int inflight; /* requests in the reader */
	double busy_since;
	struct task *task_head, **task_tail;
	int n_workers;
	struct worker *workers;
	unsigned noticed; /* bits of enum notice already logged */
	int fatal;
	struct io_stats st;
};

enum notice { NOTICE_URING = 1, NOTICE_DIRECT = 2, NOTICE_MLOCK = 4 };

/* stream.c */
void load_fail(struct load *ld, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void load_check(struct io_stream *s, struct load *ld);
void stream_notice(struct io_stream *s, enum notice which, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* decode.c */
void tensor_arrived(struct io_stream *s, struct load *ld, int i);
void *decode_worker(void *arg);

#endif
