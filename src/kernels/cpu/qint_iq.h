/*
 * qint_iq.h: the integer form of the grid IQ blocks (src/kernels/cpu/dequant_iq.c), the qint_<k> of
 * src/layout/wfmt_list.h's IQ rows, from which qdot.c generates their portable dots. Arguments as qdot.c's
 * QINT_ARGS: one block -> its 256 codes q, the sub-scale of each 16 in sc, mins mn (0: no IQ format has
 * them), the f32 scale d (exact: the f16 d times a power of two) and dmin (0).
 */
#ifndef FERRY_QINT_IQ_H
#define FERRY_QINT_IQ_H

#include <stdint.h>

#define QINT_IQ_DECL(k) void qint_##k(const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin);
QINT_IQ_DECL(iq2_xxs)
QINT_IQ_DECL(iq2_xs)
QINT_IQ_DECL(iq2_s)
QINT_IQ_DECL(iq3_xxs)
QINT_IQ_DECL(iq3_s)
QINT_IQ_DECL(iq1_s)
QINT_IQ_DECL(iq1_m)
#undef QINT_IQ_DECL

#endif
