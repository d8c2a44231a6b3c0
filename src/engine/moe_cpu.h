/*
 * moe_cpu.h: experts computed on the host (--moe-cpu, issues 21 and 22): in a device step, a range's routed
 * experts that the device does not hold (not in the expert cache, not in the layer's device image) are
 * either uploaded and computed by the device, or computed by the host backend from the streamer's buffer
 * (the RAM tier; read from disk first for a layer outside it) while the device computes the rest. This is
 * the per-expert choice; moe.c runs it (moe_range) and sums the partial outputs in a fixed order.
 *
 * Modes: off (every expert on the device), all (every missing expert on the host), auto (per range, the
 * split moe_cpu_split predicts fastest from the measured rates). Only ranges of at most MOE_CPU_T_MAX
 * tokens are split: larger ones (prefill, big batches) run every expert on the device.
 */
#ifndef FERRY_MOE_CPU_H
#define FERRY_MOE_CPU_H

#include <stdbool.h>
#include <stddef.h>

#include "engine/plan.h"

enum moe_cpu_mode { MOE_CPU_OFF, MOE_CPU_AUTO, MOE_CPU_ALL };

#define MOE_CPU_T_MAX 64

/* "off", "auto" or "all" into *mode; -EINVAL with err naming the option otherwise. */
int moe_cpu_parse(const char *name, int *mode, char *err, size_t errlen);
const char *moe_cpu_name(int mode);

/* One range of a device step: the experts the device holds, hit_cnt[n_hits] tokens each (computed on the
 * device, first), and those it lacks, miss_cnt[n_miss] tokens each, every expert `bytes` of weights. Sets
 * host[i] for the misses the host computes (the others are uploaded) and returns how many:
 *   off: none; all: every one;
 *   auto: from rates r (NULL: none), the host's time on its experts (host_exp at their token counts, at the
 *   busy rate: the copy queue runs beside it; plus a crossing, the rows up and down) against the device's
 *   (the hits' compute, then each uploaded miss's copy at the link's busy rate and its compute), misses
 *   moved to the host in order of fewest tokens (ties: lower index) while that shortens the longer side.
 * *pred_s (NULL: not wanted): the predicted seconds of the range's experts, the longer side. */
int moe_cpu_split(int mode, const struct plan_rates *r, double bytes, const int *hit_cnt, int n_hits,
		  const int *miss_cnt, int n_miss, bool *host, double *pred_s);

#endif
