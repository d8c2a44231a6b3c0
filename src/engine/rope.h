/* rope.h: RoPE inverse frequencies and attention factor for each scaling type (as transformers defines them). */
#ifndef FERRY_ROPE_H
#define FERRY_ROPE_H

#include "backend/backend.h"
#include "layout/layout.h"

/* seq_len: max position of the step + 1 (only dynamic NTK depends on it). */
void rope_freqs_compute(const struct rope_params *r, int seq_len, struct rope_freqs *out);

#endif
