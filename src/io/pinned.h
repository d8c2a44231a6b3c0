/*
 * pinned.h: page-locked host buffers for slots and the RAM tier (io/ internal). From the consumer's
 * allocator when it gives one (cudaHostAlloc: the GPU can DMA from it), else anonymous mmap + mlock; when
 * mlock is refused (RLIMIT_MEMLOCK) the buffer is used unlocked and *locked says so.
 */
#ifndef FERRY_IO_PINNED_H
#define FERRY_IO_PINNED_H

#include <stdbool.h>
#include <stddef.h>

#include "io/stream.h"

void *pinned_alloc(const struct io_host_alloc *a, size_t bytes, bool *locked);
void pinned_free(const struct io_host_alloc *a, void *p, size_t bytes);

#endif
