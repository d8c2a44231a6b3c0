/*
 * qdot.c: the activation quantizer, the portable row kernels (the C definition of what every path computes,
 * contract in qdot.h) and the choice of kernels by CPU. Each quantized format has qint_<k>: one block as its
 * integer codes, integer sub-scales and mins per 16 values and f32 scales (from the field formulas of
 * src/layout/quant.h); the portable qdot is generated from it. The portable fdot widens a chunk of the row
 * with cpu_dequant_<k> (exact for the element formats) and dots it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cpu/qdot.h"
#include "kernels/cpu/qint_iq.h"
#include "layout/quant.h"
#include "layout/wfmt.h"

#define ALIGN64(n) (((n) + 63) & ~(size_t)63)

size_t cpu_xq_bytes(int T, int K)
{
	size_t n = (size_t)T * (size_t)K;
	return ALIGN64(n) + ALIGN64(n / 32 * sizeof(float)) + ALIGN64(n / 16 * sizeof(int16_t)) +
	       (size_t)(T + 1) / 2 * (size_t)(K / 32) * CPU_XQ_PAIR_BYTES;
}

void cpu_xq_init(struct cpu_xq *xq, void *buf, int T, int K, int blk)
{
	size_t n = (size_t)T * (size_t)K;
	char *p = buf;
	xq->q = (int8_t *)p;
	xq->d = (float *)(p + ALIGN64(n));
	xq->s = (int16_t *)(p + ALIGN64(n) + ALIGN64(n / 32 * sizeof(float)));
	xq->pair = blk == 32 ? (uint8_t *)xq->s + ALIGN64(n / 16 * sizeof(int16_t)) : NULL;
	xq->K = K;
	xq->blk = blk;
}

void cpu_xq_quantize(const float *x, int t, const struct cpu_xq *xq)
{
	int K = xq->K, B = xq->blk;
	int8_t *q = xq->q + (size_t)t * (size_t)K;
	int16_t *s = xq->s + (size_t)t * (size_t)(K / 16);
	for (int b = 0; b < K / B; b++, x += B, q += B) {
		float amax = 0;
#pragma omp simd reduction(max : amax)
		for (int i = 0; i < B; i++)
			amax = fabsf(x[i]) > amax ? fabsf(x[i]) : amax;
		float id = amax > 0 ? 127.0f / amax : 0.0f, dx = amax / 127.0f;
		xq->d[(size_t)t * (size_t)(K / B) + (size_t)b] = dx;
#pragma omp simd
		for (int i = 0; i < B; i++) {
			float v = x[i] * id; /* in range unless x has a NaN or inf: then -127 or 127, never undefined */
			v = v >= -127.0f && v <= 127.0f ? v : v > 0 ? 127.0f : -127.0f;
			q[i] = (int8_t)nearbyintf(v);
		}
		for (int g = 0; g < B / 16; g++) {
			int sum = 0;
			for (int i = 0; i < 16; i++)
				sum += q[16 * g + i];
			s[b * (B / 16) + g] = (int16_t)sum;
		}
		if (xq->pair) { /* this token's half of its pair's entry: lanes 4h.. of each vector */
			uint8_t *e = xq->pair + ((size_t)(t / 2) * (size_t)(K / 32) + (size_t)b) * CPU_XQ_PAIR_BYTES;
			int h = t % 2;
			int32_t negs[4] = {-(s[2 * b] + s[2 * b + 1]), 0, 0, 0};
			float dxs[4] = {dx, dx, dx, dx};
			memcpy(e + 16 * h, q, 16);
			memcpy(e + 32 + 16 * h, q + 16, 16);
			memcpy(e + 64 + 16 * h, dxs, 16);
			memcpy(e + 96 + 16 * h, negs, 16);
		}
	}
}

/* One block: codes q[B], sub-scales sc[B/16], mins mn[B/16] (0 where the format has none), d, dmin */
#define QINT_ARGS const void *blk, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin

static void qint_q8_0(QINT_ARGS)
{
	const struct block_q8_0 *b = blk;
	memcpy(q, b->qs, QK);
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static void qint_q4_0(QINT_ARGS)
{
	const struct block_q4_0 *b = blk;
	for (int j = 0; j < QK / 2; j++) {
		q[j] = (int8_t)((b->qs[j] & 15) - 8);
		q[j + QK / 2] = (int8_t)((b->qs[j] >> 4) - 8);
	}
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static void qint_q5_0(QINT_ARGS)
{
	const struct block_q5_0 *b = blk;
	uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
		      (uint32_t)b->qh[3] << 24;
	for (int j = 0; j < QK / 2; j++) {
		q[j] = (int8_t)((int)((b->qs[j] & 15) | ((qh >> j) & 1) << 4) - 16);
		q[j + QK / 2] = (int8_t)((int)((b->qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16);
	}
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

/* Q4_K and Q5_K (qh NULL for Q4_K) */
static void qint_k45(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh, uint16_t dh, uint16_t mh, QINT_ARGS)
{
	(void)blk;
	for (int c = 0; c < 4; c++)
		for (int h = 0; h < 2; h++) {
			int j = 2 * c + h;
			uint8_t s, m;
			k_scale_min(j, scales, &s, &m);
			sc[2 * j] = sc[2 * j + 1] = s;
			mn[2 * j] = mn[2 * j + 1] = m;
			for (int l = 0; l < 32; l++) {
				int v = h ? qs[32 * c + l] >> 4 : qs[32 * c + l] & 15;
				if (qh && (qh[l] >> j & 1))
					v += 16;
				q[32 * j + l] = (int8_t)v;
			}
		}
	*d = f16_to_f32(dh);
	*dmin = f16_to_f32(mh);
}

static void qint_q4_k(QINT_ARGS)
{
	const struct block_q4_K *b = blk;
	qint_k45(b->scales, b->qs, NULL, b->d, b->dmin, blk, q, sc, mn, d, dmin);
}

static void qint_q5_k(QINT_ARGS)
{
	const struct block_q5_K *b = blk;
	qint_k45(b->scales, b->qs, b->qh, b->d, b->dmin, blk, q, sc, mn, d, dmin);
}

static void qint_q6_k(QINT_ARGS)
{
	const struct block_q6_K *b = blk;
	const uint8_t *ql = b->ql, *qh = b->qh;
	for (int half = 0; half < 2; half++, ql += 64, qh += 32, q += 128)
		for (int l = 0; l < 32; l++) {
			q[l] = (int8_t)(((ql[l] & 15) | (qh[l] & 3) << 4) - 32);
			q[l + 32] = (int8_t)(((ql[l + 32] & 15) | (qh[l] >> 2 & 3) << 4) - 32);
			q[l + 64] = (int8_t)(((ql[l] >> 4) | (qh[l] >> 4 & 3) << 4) - 32);
			q[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (qh[l] >> 6 & 3) << 4) - 32);
		}
	for (int g = 0; g < QK_K / 16; g++) {
		sc[g] = b->scales[g];
		mn[g] = 0;
	}
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

/* Q4_1 and Q5_1: unsigned codes, y = d q + m taken as a min of 1 per 16 with dmin = -m */
static void qint_q51(const uint8_t *qs, uint32_t qh, uint16_t dh, uint16_t mh, QINT_ARGS)
{
	(void)blk;
	for (int j = 0; j < QK / 2; j++) {
		q[j] = (int8_t)((qs[j] & 15) | ((qh >> j) & 1) << 4);
		q[j + QK / 2] = (int8_t)((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
	}
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 1;
	*d = f16_to_f32(dh);
	*dmin = -f16_to_f32(mh);
}

static void qint_q4_1(QINT_ARGS)
{
	const struct block_q4_1 *b = blk;
	qint_q51(b->qs, 0, b->d, b->m, blk, q, sc, mn, d, dmin);
}

static void qint_q5_1(QINT_ARGS)
{
	const struct block_q5_1 *b = blk;
	uint32_t qh = (uint32_t)b->qh[0] | (uint32_t)b->qh[1] << 8 | (uint32_t)b->qh[2] << 16 |
		      (uint32_t)b->qh[3] << 24;
	qint_q51(b->qs, qh, b->d, b->m, blk, q, sc, mn, d, dmin);
}

/* Q4_Z/Q8_Z (sub 1) and Q4_Z128/Q8_Z128 (sub 4): y = d (q - z) taken as a min of z per 16 with dmin = d */
static void qint_qz(const uint8_t *p, bool eight, int sub, int8_t *q, int16_t *sc, int16_t *mn, float *d, float *dmin)
{
	uint16_t dh;
	int16_t z;
	memcpy(&dh, p, 2);
	memcpy(&z, p + 2, 2);
	for (int s = 0; s < sub; s++, q += QK) {
		const uint8_t *qs = p + 4 + (size_t)s * (eight ? QK : QK / 2);
		if (eight)
			memcpy(q, qs, QK);
		for (int j = 0; !eight && j < QK / 2; j++) {
			q[j] = (int8_t)(qs[j] & 15);
			q[j + QK / 2] = (int8_t)(qs[j] >> 4);
		}
	}
	for (int g = 0; g < sub * QK / 16; g++)
		sc[g] = 1, mn[g] = z;
	*d = *dmin = f16_to_f32(dh);
}

static void qint_q4_z(QINT_ARGS)
{
	qint_qz(blk, false, 1, q, sc, mn, d, dmin);
}

static void qint_q8_z(QINT_ARGS)
{
	qint_qz(blk, true, 1, q, sc, mn, d, dmin);
}

static void qint_q4_z128(QINT_ARGS)
{
	qint_qz(blk, false, QZ_SUB, q, sc, mn, d, dmin);
}

static void qint_q8_z128(QINT_ARGS)
{
	qint_qz(blk, true, QZ_SUB, q, sc, mn, d, dmin);
}

static void qint_q2_k(QINT_ARGS)
{
	const struct block_q2_K *b = blk;
	for (int v = 0; v < QK_K; v++)
		q[v] = (int8_t)(b->qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32)) & 3);
	for (int g = 0; g < QK_K / 16; g++) {
		sc[g] = b->scales[g] & 15;
		mn[g] = b->scales[g] >> 4;
	}
	*d = f16_to_f32(b->d);
	*dmin = f16_to_f32(b->dmin);
}

static void qint_q3_k(QINT_ARGS)
{
	const struct block_q3_K *b = blk;
	for (int v = 0; v < QK_K; v++) {
		int n = v / 128, j = v % 128 / 32, l = v % 32;
		q[v] = (int8_t)((b->qs[32 * n + l] >> (2 * j) & 3) - (b->hmask[l] >> (4 * n + j) & 1 ? 0 : 4));
	}
	for (int g = 0; g < QK_K / 16; g++) {
		sc[g] = (int16_t)(q3k_scale(g, b->scales) - 32);
		mn[g] = 0;
	}
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static const int8_t iq4nl_values[16] = IQ4NL_VALUES;
static const int8_t mxfp4_values[16] = MXFP4_VALUES;

/* 16 bytes of nibbles through a table: codes j (low nibbles) and j + 16 (high) */
static void qint_lut32(const uint8_t *qs, const int8_t *lut, int8_t *q)
{
	for (int j = 0; j < QK / 2; j++) {
		q[j] = lut[qs[j] & 15];
		q[j + QK / 2] = lut[qs[j] >> 4];
	}
}

static void qint_iq4_nl(QINT_ARGS)
{
	const struct block_iq4_nl *b = blk;
	qint_lut32(b->qs, iq4nl_values, q);
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static void qint_iq4_xs(QINT_ARGS)
{
	const struct block_iq4_xs *b = blk;
	for (int s = 0; s < QK_K / QK; s++) {
		qint_lut32(b->qs + 16 * s, iq4nl_values, q + QK * s);
		sc[2 * s] = sc[2 * s + 1] = (int16_t)(iq4xs_scale(s, b->scales_h, b->scales_l) - 32);
		mn[2 * s] = mn[2 * s + 1] = 0;
	}
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static void qint_mxfp4(QINT_ARGS)
{
	const struct block_mxfp4 *b = blk;
	qint_lut32(b->qs, mxfp4_values, q);
	sc[0] = sc[1] = 1;
	mn[0] = mn[1] = 0;
	*d = e8m0_half(b->e);
	*dmin = 0;
}

static void qint_tq1_0(QINT_ARGS)
{
	const struct block_tq1_0 *b = blk;
	for (int v = 0; v < QK_K; v++)
		q[v] = (int8_t)(tq1_code(b->qs, b->qh, v) - 1);
	for (int g = 0; g < QK_K / 16; g++)
		sc[g] = 1, mn[g] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

static void qint_tq2_0(QINT_ARGS)
{
	const struct block_tq2_0 *b = blk;
	for (int v = 0; v < QK_K; v++)
		q[v] = (int8_t)((b->qs[32 * (v / 128) + v % 32] >> (2 * (v % 128 / 32)) & 3) - 1);
	for (int g = 0; g < QK_K / 16; g++)
		sc[g] = 1, mn[g] = 0;
	*d = f16_to_f32(b->d);
	*dmin = 0;
}

typedef void (*qint_fn)(QINT_ARGS);

static void qdot_portable(qint_fn dec, int B, size_t bb, const void *w, const struct cpu_xq *xq, int t0, int T,
			  float *out)
{
	int8_t q[QK_K];
	int16_t sc[QK_K / 16], mn[QK_K / 16];
	float acc[QDOT_MAX_T] = {0};
	int K = xq->K;
	const char *p = w;
	for (int b = 0; b < K / B; b++, p += bb) {
		float d, dmin;
		dec(p, q, sc, mn, &d, &dmin);
		for (int t = 0; t < T; t++) {
			size_t row = (size_t)(t0 + t);
			const int8_t *a = xq->q + row * (size_t)K + (size_t)b * (size_t)B;
			const int16_t *s = xq->s + row * (size_t)(K / 16) + (size_t)b * (size_t)(B / 16);
			float dx = xq->d[row * (size_t)(K / B) + (size_t)b];
			int32_t I = 0, M = 0;
			for (int g = 0; g < B / 16; g++) {
				int32_t dot = 0;
				for (int i = 16 * g; i < 16 * g + 16; i++)
					dot += q[i] * a[i];
				I += sc[g] * dot;
				M += mn[g] * s[g];
			}
			float sd = d * dx, sm = dmin * dx;
			float pi = sd * (float)I, pm = sm * (float)M;
			acc[t] = acc[t] + (pi - pm);
		}
	}
	for (int t = 0; t < T; t++)
		out[t] = acc[t];
}

#define QDOT_PORTABLE(k, block, bytes)                                                                    \
	static void qdot_##k(const void *w, size_t rb, int rows, const struct cpu_xq *xq, int t0, int T,  \
			     float *y, int64_t ldy)                                                       \
	{                                                                                                 \
		for (int r = 0; r < rows; r++) {                                                          \
			float out[QDOT_MAX_T];                                                            \
			qdot_portable(qint_##k, block, bytes, (const char *)w + (size_t)r * rb, xq, t0, T, out); \
			for (int t = 0; t < T; t++)                                                       \
				y[t * ldy + r] = out[t];                                                  \
		}                                                                                         \
	}
#define QDOT_DEF(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(QDOT_PORTABLE(k, block, bytes), )
WFMT_LIST(QDOT_DEF)
#undef QDOT_DEF

/* Element formats (and NF4's blocks of 64): chunks of 256 values widened exactly, dotted with each token's x */
static void fdot_portable(cpu_dequant_fn deq, int block, size_t bytes, const void *w, const float *x, int64_t ldx,
			  int T, int K, float *out)
{
	float buf[256];
	float acc[QDOT_MAX_T] = {0};
	for (int k0 = 0; k0 < K; k0 += 256) {
		int n = K - k0 < 256 ? K - k0 : 256;
		deq((const char *)w + (size_t)(k0 / block) * bytes, buf, n / block);
		for (int t = 0; t < T; t++) {
			const float *xt = x + (size_t)t * (size_t)ldx + k0;
			float s = 0;
			for (int j = 0; j < n; j++)
				s += buf[j] * xt[j];
			acc[t] += s;
		}
	}
	for (int t = 0; t < T; t++)
		out[t] = acc[t];
}

#define FDOT_PORTABLE(k, block, bytes)                                                                         \
	static void fdot_##k(const void *w, size_t rb, int rows, const float *x, int64_t ldx, int T, int K,    \
			     float *y, int64_t ldy)                                                            \
	{                                                                                                      \
		for (int r = 0; r < rows; r++) {                                                               \
			float out[QDOT_MAX_T];                                                                 \
			fdot_portable(cpu_dequant_##k, block, bytes, (const char *)w + (size_t)r * rb, x, ldx, T, K, out); \
			for (int t = 0; t < T; t++)                                                            \
				y[t * ldy + r] = out[t];                                                       \
		}                                                                                              \
	}
#define FDOT_DEF(id, code, block, bytes, ggml, kind, k) WFMT_FDOT_##kind(FDOT_PORTABLE(k, block, bytes), )
WFMT_LIST(FDOT_DEF)
#undef FDOT_DEF

#define QDOT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_QDOT_##kind(qdot_##k, NULL),
static const cpu_qdot_fn qdot_by_fmt[WFMT_COUNT] = {WFMT_LIST(QDOT_ROW)};
#undef QDOT_ROW
#define FDOT_ROW(id, code, block, bytes, ggml, kind, k) WFMT_FDOT_##kind(fdot_##k, NULL),
static const cpu_fdot_fn fdot_by_fmt[WFMT_COUNT] = {WFMT_LIST(FDOT_ROW)};
#undef FDOT_ROW

static bool isa_supported(int isa)
{
#if defined(__x86_64__) || defined(__i386__)
	if (isa == CPU_ISA_AVX2)
		return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
	if (isa == CPU_ISA_AVX512)
		return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
		       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni") &&
		       __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
	return isa == CPU_ISA_PORTABLE;
}

cpu_qdot_fn cpu_qdot_find(int fmt, int isa)
{
	if (fmt < 0 || fmt >= WFMT_COUNT || !isa_supported(isa))
		return NULL;
	return isa == CPU_ISA_AVX2 ? cpu_qdot_find_avx2(fmt) : isa == CPU_ISA_AVX512 ? cpu_qdot_find_avx512(fmt)
											: qdot_by_fmt[fmt];
}

cpu_fdot_fn cpu_fdot_find(int fmt, int isa)
{
	if (fmt < 0 || fmt >= WFMT_COUNT || !isa_supported(isa))
		return NULL;
	return isa == CPU_ISA_AVX2 ? cpu_fdot_find_avx2(fmt) : isa == CPU_ISA_AVX512 ? cpu_fdot_find_avx512(fmt)
											: fdot_by_fmt[fmt];
}

cpu_qdot_fn cpu_qtile_find(int fmt, int isa)
{
	static int off = -1; /* FERRY_QTILE=0: the row kernels instead (A/B measurements) */
	if (off < 0) {
		const char *e = getenv("FERRY_QTILE");
		off = e && !strcmp(e, "0");
	}
	if (off || fmt < 0 || fmt >= WFMT_COUNT || !isa_supported(isa))
		return NULL;
	return isa == CPU_ISA_AVX2 ? cpu_qtile_find_avx2(fmt) : isa == CPU_ISA_AVX512 ? cpu_qtile_find_avx512(fmt) : NULL;
}

static int forced_isa = -1;

void cpu_qdot_force_isa(int isa)
{
	forced_isa = isa;
}

int cpu_qdot_isa(void)
{
	if (forced_isa >= 0 && isa_supported(forced_isa) && cpu_qdot_find(WFMT_Q8_0, forced_isa))
		return forced_isa;
	for (int isa = CPU_ISA_COUNT - 1; isa > CPU_ISA_PORTABLE; isa--)
		if (isa_supported(isa) && cpu_qdot_find(WFMT_Q8_0, isa))
			return isa;
	return CPU_ISA_PORTABLE;
}

const char *cpu_isa_name(int isa)
{
	return isa == CPU_ISA_AVX2 ? "avx2" : isa == CPU_ISA_AVX512 ? "avx512vnni" : "portable";
}
