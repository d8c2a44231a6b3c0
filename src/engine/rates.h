/*
 * rates.h: the rates the hybrid placement is chosen from (struct plan_rates, plan.h), measured at engine
 * start on the model's first layer (rates.c).
 */
#ifndef FERRY_RATES_H
#define FERRY_RATES_H

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

#endif
