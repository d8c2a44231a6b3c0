/*
 * ram_tier.h: which units the RAM tier keeps (io/ internal).
 *
 * The consumer scans units cyclically, so any recency policy (LRU) evicts exactly the unit needed
 * soonest: it is the worst policy for a repeated sequential scan. The tier keeps a fixed set chosen once:
 * the largest number of units that fits the budget, spread evenly over the cycle (units i * n / k for
 * i < k, rounded to the nearest). Spreading matters with few slots: while the consumer works on a resident
 * unit the disk refills the slots for the streamed ones, so the disk's idle time is spread over the cycle
 * instead of bunched up, and the consumer rarely catches up with it.
 */
#ifndef FERRY_IO_RAM_TIER_H
#define FERRY_IO_RAM_TIER_H

#include <stdbool.h>
#include <stdint.h>

/* keep[u] for u < n; returns how many are kept. Deterministic in (bytes, n, budget). */
int ram_tier_choose(const uint64_t *bytes, int n, uint64_t budget, bool *keep);

#endif
