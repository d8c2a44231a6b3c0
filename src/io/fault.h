/*
 * fault.h: a test hook into the streamer's read completions. Tests install a function that sees every
 * completed read (file, offset, length, destination) before the streamer does and may change its result:
 * a smaller byte count (a short read), a negative errno (an I/O error), or flipped bytes in buf (corruption).
 * Compiled into every build; with no hook installed it costs one atomic load per request.
 */
#ifndef FERRY_IO_FAULT_H
#define FERRY_IO_FAULT_H

#include <stdint.h>

struct io_fault_read {
	const char *file; /* name inside the model directory, e.g. "layer.003.bin" */
	uint64_t off;
	uint32_t len;
	uint8_t *buf; /* res bytes were read here */
};

/* Called on the streamer's I/O thread; *res is the byte count or -errno. */
typedef void (*io_fault_fn)(const struct io_fault_read *r, int *res, void *ctx);

/* Installs fn (NULL removes it) for every stream of the process. */
void io_fault_set(io_fault_fn fn, void *ctx);
void io_fault_apply(const struct io_fault_read *r, int *res);

#endif
