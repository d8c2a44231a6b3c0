/*
 * rates.h: the rates the hybrid placement is chosen from (struct plan_rates, plan.h), measured at engine
 * start on a sample of the model's units spread over it (rates.c).
 */
#ifndef FERRY_RATES_H
#define FERRY_RATES_H

#include <stdbool.h>
#include <stdio.h>

#include "backend/backend.h"
#include "engine/plan.h"
#include "io/stream.h"
#include "layout/layout.h"

/* dev a device backend, host the host backend of hybrid steps; pinned: the device's pinned allocator for
 * the streamer (NULL: its own). Takes and gives back device memory: call before the model is made. */
int rates_measure(struct plan_rates *r, const struct layout *lay, struct backend *dev, struct backend *host,
		  const struct io_host_alloc *pinned, char *err, size_t errlen);
void rates_print(FILE *f, const struct plan_rates *r);
/* The units rates_measure samples (layer 0, the head and layers between; at most 4 and 2 GiB of weights)
 * into units[4]; returns how many. */
int rates_sample(const struct layout *lay, int *units);

/* The rates cache: measured rates are kept per machine and model shape in $FERRY_HOME/rates.json (default
 * ~/.cache/ferry/rates.json) under a key naming the version of the rates, the GPU, the CPU, the threads, the link limit and the first
 * layer's tensors, so a placement is measured once and the same command places (and computes) the same way
 * every time. rates_load: 1 when key is there, 0 when not (or FERRY_RATES=measure, which ignores the cache),
 * -EINVAL for a cache file that is not a JSON object or an entry of key with a field that is not a positive
 * number (err names the file, the key and the field; the caller measures again and rates_save replaces the
 * entry, or the file when it is not an object); rates_save writes through a temporary name, silently
 * skipping what it cannot write. */
int rates_load(const char *key, struct plan_rates *r, char *err, size_t errlen);
void rates_save(const char *key, const struct plan_rates *r);
/* The key for these backends and model (buf of n bytes). */
void rates_key(char *buf, size_t n, const struct layout *lay, struct backend *dev, struct backend *host,
	       double h2d_limit);

#endif
