/*
 * matmul.c: y[T,N] = x[T,K] . W[N,K]^T + bias. Quantized weights meet 8-bit activations: x is quantized once
 * per call (a tile of MM_TILE tokens at a time, into the caller's workspace; the same codes whatever the
 * thread count) and every row takes integer dots with it (qdot.h). Element formats (F32, F16, BF16) dot
 * their rows with f32 x. Each thread takes an equal run of rows (equal bytes: the rows of a matrix are the
 * same size) and reads each row from memory once per tile, then QDOT_MAX_T tokens at a time from L1: decode is
 * bound by the weight bytes, prefill reuses each row T times. A format with a prefill tile (cpu_qtile_find: the
 * K-quants) takes a tile's tokens (2 or more) in one call over the thread's rows, which decodes each block once for
 * them all. Each output is computed by one thread with one kernel, so results do not depend on the thread count.
 */
#include <omp.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "layout/wfmt.h"

#define MM_TILE QTILE_MAX_T               /* tokens quantized at once: a tile's codes stay in L2 */
#define MM_SERIAL_QUANT (CPU_PAR_MIN * 4) /* values the calling thread quantizes alone (a decode step's x) */
#define MM_RUN_BYTES 16384                /* weight rows taken at once by all the groups of a tile */

size_t cpu_matmul_ws_bytes(int64_t K)
{
	return cpu_xq_bytes(MM_TILE, (int)K);
}

void cpu_matmul(float *y, const float *x, const void *W, int wfmt, const void *bias, int bias_fmt, int T, int N, int K,
		void *ws)
{
	int isa = cpu_qdot_isa();
	cpu_qdot_fn qd = cpu_qdot_find(wfmt, isa);
	cpu_qdot_fn qt = qd ? cpu_qtile_find(wfmt, isa) : NULL;
	cpu_fdot_fn fd = qd ? NULL : cpu_fdot_find(wfmt, isa);
	size_t row_bytes = wfmt_row_bytes(wfmt, (uint64_t)K), bias_bytes = bias ? wfmt_row_bytes(bias_fmt, 1) : 0;
	struct cpu_xq xq;
	bool serial = T <= MM_TILE && (int64_t)T * K <= MM_SERIAL_QUANT;
	if (qd) {
		cpu_xq_init(&xq, ws, MM_TILE, K, (int)wfmt_table[wfmt].block);
		for (int t = 0; serial && t < T; t++)
			cpu_xq_quantize(x + (size_t)t * (size_t)K, t, &xq);
	}
#pragma omp parallel
	{
		int nth = omp_get_num_threads(), me = omp_get_thread_num();
		int n0 = (int)((int64_t)N * me / nth), n1 = (int)((int64_t)N * (me + 1) / nth);
		for (int t0 = 0; t0 < T; t0 += MM_TILE) {
			int tt = T - t0 < MM_TILE ? T - t0 : MM_TILE;
			if (qd && !serial) {
#pragma omp for schedule(static)
				for (int t = 0; t < tt; t++)
					cpu_xq_quantize(x + (size_t)(t0 + t) * (size_t)K, t, &xq);
			}
			/* rows in runs that stay in L1 while every group of QDOT_MAX_T tokens of the tile passes; a
			 * prefill tile takes all the rows and tokens at once */
			bool tiled = qt && tt >= 2;
			int run = tt <= QDOT_MAX_T || tiled ? n1 - n0 : (int)(MM_RUN_BYTES / row_bytes) + 1;
			for (int r0 = n0; r0 < n1; r0 += run) {
				int nr = n1 - r0 < run ? n1 - r0 : run;
				const char *wr = (const char *)W + (size_t)r0 * row_bytes;
				if (tiled)
					qt(wr, row_bytes, nr, &xq, 0, tt, y + (size_t)t0 * (size_t)N + (size_t)r0, N);
				for (int g = 0; !tiled && g < tt; g += QDOT_MAX_T) {
					int gt = tt - g < QDOT_MAX_T ? tt - g : QDOT_MAX_T;
					float *yg = y + (size_t)(t0 + g) * (size_t)N + (size_t)r0;
					if (qd)
						qd(wr, row_bytes, nr, &xq, g, gt, yg, N);
					else
						fd(wr, row_bytes, nr, x + (size_t)(t0 + g) * (size_t)K, K, gt, K, yg, N);
				}
			}
			for (int n = n0; bias && n < n1; n++) {
				float b;
				cpu_row_to_f32(bias_fmt, (const char *)bias + (size_t)n * bias_bytes, &b, 1);
				for (int t = 0; t < tt; t++)
					y[(size_t)(t0 + t) * (size_t)N + (size_t)n] += b;
			}
			if (qd && !serial && t0 + MM_TILE < T) {
#pragma omp barrier
			}
		}
	}
}
