/* layout_internal.h: helpers shared by the reader and the writer of layout/ (not part of the API). */
#ifndef FERRY_LAYOUT_INTERNAL_H
#define FERRY_LAYOUT_INTERNAL_H

#include <stdint.h>

#include "layout/layout.h"

uint64_t layout_header_hash(const uint8_t *buf);
void layout_header_build(uint8_t *buf, const struct layout_file_header *h);
void layout_unit_file_name(int kind, int layer, char *buf, size_t n);

#endif
