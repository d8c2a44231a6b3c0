/* synth_iq.h: `ferry synth`'s fillers for the grid IQ formats (synth_iq.c), the synth_fill_<k> of their rows
 * of src/layout/wfmt_list.h, used by synth_model.c's table. Signature as there: one row of K values (K a
 * multiple of 256) at dst whose values have RMS rms, drawn from r. */
#ifndef FERRY_SYNTH_IQ_H
#define FERRY_SYNTH_IQ_H

#include <stdint.h>

#include "base/rng.h"

#define SYNTH_IQ_DECL(k) void synth_fill_##k(int fmt, uint8_t *dst, int64_t K, double rms, struct rng *r);
SYNTH_IQ_DECL(iq2_xxs)
SYNTH_IQ_DECL(iq2_xs)
SYNTH_IQ_DECL(iq2_s)
SYNTH_IQ_DECL(iq3_xxs)
SYNTH_IQ_DECL(iq3_s)
SYNTH_IQ_DECL(iq1_s)
SYNTH_IQ_DECL(iq1_m)
#undef SYNTH_IQ_DECL

#endif
