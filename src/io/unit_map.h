/*
 * unit_map.h: where a unit's bytes go in its buffer (io/ internal). The buffer starts with an image of
 * the unit's file ranges, one per file (from its first tensor to the 4096-rounded end of its last), so a
 * range is one contiguous read and an uncompressed tensor is used where it lands. Decoded lz4 tensors
 * follow the image, each 4096-aligned.
 */
#ifndef FERRY_IO_UNIT_MAP_H
#define FERRY_IO_UNIT_MAP_H

#include <stdint.h>

#include "layout/layout.h"

struct map_range {
	int file;
	uint64_t off, len; /* in the file */
	uint64_t dst;      /* in the buffer, 4096-aligned */
};

struct unit_map {
	int n_ranges;
	struct map_range ranges[LAYOUT_UNIT_MAX_TENSORS];
	uint64_t image_bytes;                     /* end of the last range in the buffer */
	uint64_t buf_bytes;                       /* image plus decoded tensors */
	uint64_t src[LAYOUT_UNIT_MAX_TENSORS];    /* stored bytes of tensor i in the buffer */
	uint64_t dst[LAYOUT_UNIT_MAX_TENSORS];    /* decoded bytes (== src when uncompressed) */
	bool compressed;                          /* any tensor is lz4 */
	/* The expert-major region (n_exp 0: none, or a layout that cannot be read by expert): expert e's
	 * matrices are file bytes [exp_off + e exp_stride, + exp_stride) of range exp_range, at exp_dst + e
	 * exp_stride in the buffer; the range's bytes before exp_off are the trunk (every other tensor of that
	 * file lies there). */
	int64_t n_exp;
	int exp_range;
	uint64_t exp_off, exp_stride, exp_dst;
};

void unit_map_build(const struct layout *m, int unit, struct unit_map *p);

#endif
