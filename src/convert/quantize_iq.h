/*
 * quantize_iq.h: the quantizers of the grid IQ formats (IQ2_XXS, IQ2_XS, IQ2_S, IQ3_XXS, IQ3_S, IQ1_S, IQ1_M;
 * blocks: src/layout/quant_iq.h), called by quant_row (quantize.c) one block of 256 values at a time with the
 * block's weights already computed.
 */
#ifndef FERRY_QUANTIZE_IQ_H
#define FERRY_QUANTIZE_IQ_H

#include <stdbool.h>

/* Whether fmt (enum wfmt) is one of the grid IQ formats quant_iq_block writes */
bool quant_iq_supported(int fmt);
/* 256 values x with weights w (> 0 where they matter) into one block of format fmt at dst */
void quant_iq_block(int fmt, const float *x, const float *w, void *dst);

/* on: IQ1_S and IQ1_M searched as the other kinds are (candidate scales around the largest magnitude, each
 * refit; n and its two neighbours per sub-block), the quantizer before the split search and its reference in
 * tests (dequant_tool quant-dense); off (the default): the split search. Set before quantizing, not during. */
void quant_iq_dense(bool on);

#endif
