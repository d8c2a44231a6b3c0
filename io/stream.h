/*
 * stream.h: reading streaming units (embedding rows, layers, head) of a model.ferry into host slots.
 *
 * A slot holds one whole unit; its tensors are packed at 4096-byte aligned offsets. acquire() returns the
 * unit's tensor pointers (index i = layout_unit.tensors[i]) and keeps the slot until release(). A unit
 * already in a slot is not read again, so with as many slots as units everything stays resident after
 * the first pass. Each tensor's XXH3 is verified the first time it is read in the process.
 *
 * This version reads synchronously with pread; the io_uring engine with prefetch replaces the inside of
 * these calls without changing them.
 */
#ifndef FERRY_IO_STREAM_H
#define FERRY_IO_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h"

struct io_stats {
	uint64_t bytes_read;   /* from files */
	uint64_t bytes_reused; /* served from a slot that already held the unit */
	uint64_t n_reads;
	double read_sec;       /* time spent reading (the consumer waited for it) */
	int n_slots;
	uint64_t slot_bytes;
};

struct io_stream;

/* n_slots: slots of the largest unit (>= 1; capped at the number of units). */
int io_stream_open(struct io_stream **s, const struct layout *m, int n_slots, char *err, size_t errlen);
void io_stream_close(struct io_stream *s);
/* unit: 0..L-1 layer, L head (embedding rows go through io_read_rows). */
int io_unit_acquire(struct io_stream *s, int unit, void *const **ptrs, char *err, size_t errlen);
void io_unit_release(struct io_stream *s, int unit);
/* Reads rows[i] of a 2-D tensor into dst (n rows, packed). */
int io_read_rows(struct io_stream *s, const struct layout_tensor *t, const int *rows, int n, void *dst, char *err,
		 size_t errlen);
void io_stream_stats(const struct io_stream *s, struct io_stats *out);
/* Bytes of the largest unit as packed in a slot. */
uint64_t io_unit_slot_bytes(const struct layout *m, int unit);

#endif
