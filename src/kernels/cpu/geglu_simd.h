/*
 * geglu_simd.h: gelu_tanh(gate) * up, one definition for every path. geglu.c includes it bare (the scalar
 * element, the portable path and every vector path's tail); geglu_avx2.c and geglu_avx512.c define the vector
 * macros below first and get GEGLU_ROW, the same operations on L lanes.
 *
 * What it computes: the float expression 0.5f * x * (1 + tanh(u)) * up, u = k * (x + 0.044715f * x*x*x) with
 * k = sqrt(2/pi), evaluated as PyTorch's gelu(approximate="tanh") and ferry's former libm form are (f32, left
 * to right, no fused multiply-add), where tanh(u) is tanh of the float u computed in double and rounded once
 * to float: correctly rounded except where the exact value lies within ~4e-16 (relative) of a halfway point
 * between two floats. libm's tanhf (glibc 2.36: fdlibm's, within 2 ulp) agrees with it on nearly every input
 * (tests/test_geglu.c measures how many), so the activations are those of the libm form to an ulp of tanh.
 *
 * tanh(a) for a = |u| (the sign put back on the float result) is em / (em + 2), em = expm1(2a) =
 * 2^n (expm1(r) + 1) - 1, 2a = n ln2 + r with |r| <= ln2/2 (ln2 split in two so n ln2_hi is exact),
 * expm1(r) by its Taylor series to r^13 (truncation < 4e-18 relative): every step adds or divides positive
 * numbers (no cancellation), so em and tanh keep ~2e-16 relative accuracy down to the smallest float
 * (tanh(a) = a there, as libm returns). a is clamped to 10 (tanh(10) rounds to 1.0f, as does every larger
 * a), which keeps 2^n finite; a NaN passes the clamp (minpd returns its second operand on a NaN, the scalar
 * test mirrors it) and comes out NaN. So gelu(+inf) = +inf, gelu(-inf) = NaN (-inf * 0), as with libm.
 *
 * Results are bit-identical on every path: the same IEEE operations in the same order on each lane (the
 * Makefile compiles these files with -ffp-contract=off: no contraction into FMAs either), 2^n built from the
 * bits of n + 1.5 * 2^52 (no double -> int64 conversion, which AVX2 lacks).
 */
#ifndef FERRY_GEGLU_SIMD_H
#define FERRY_GEGLU_SIMD_H

#include <stdint.h>
#include <string.h>

#define GEGLU_K 0.7978845608028654f /* sqrt(2 / pi) */
#define GEGLU_C 0.044715f
#define GEGLU_A_MAX 10.0
#define GEGLU_INV_LN2 1.4426950408889634
#define GEGLU_LN2_HI 6.93147180369123816490e-01 /* ln 2 rounded to 32 significant bits */
#define GEGLU_LN2_LO 1.90821492927058770002e-10 /* ln 2 - GEGLU_LN2_HI */
#define GEGLU_ROUND 6755399441055744.0      /* 1.5 * 2^52: adding it rounds to an integer in the low bits */
/* 1/j! for j = 2..13, the Taylor coefficients of expm1 after the first */
#define GEGLU_E2 (1.0 / 2)
#define GEGLU_E3 (1.0 / 6)
#define GEGLU_E4 (1.0 / 24)
#define GEGLU_E5 (1.0 / 120)
#define GEGLU_E6 (1.0 / 720)
#define GEGLU_E7 (1.0 / 5040)
#define GEGLU_E8 (1.0 / 40320)
#define GEGLU_E9 (1.0 / 362880)
#define GEGLU_E10 (1.0 / 3628800)
#define GEGLU_E11 (1.0 / 39916800)
#define GEGLU_E12 (1.0 / 479001600)
#define GEGLU_E13 (1.0 / 6227020800)
#define GEGLU_ONE_BITS 0x3ff0000000000000ull

static inline uint32_t geglu_f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof(u));
	return u;
}

static inline float geglu_bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof(f));
	return f;
}

/* tanh(u) rounded to float, as described above */
static inline float geglu_tanh(float u)
{
	uint32_t sign = geglu_f32_bits(u) & 0x80000000u;
	double a = geglu_bits_f32(geglu_f32_bits(u) & 0x7fffffffu);
	a = GEGLU_A_MAX < a ? GEGLU_A_MAX : a;
	double z = a + a;
	double nb = z * GEGLU_INV_LN2 + GEGLU_ROUND;
	double n = nb - GEGLU_ROUND;
	double r = (z - n * GEGLU_LN2_HI) - n * GEGLU_LN2_LO;
	double q = GEGLU_E12 + r * GEGLU_E13;
	q = GEGLU_E11 + r * q;
	q = GEGLU_E10 + r * q;
	q = GEGLU_E9 + r * q;
	q = GEGLU_E8 + r * q;
	q = GEGLU_E7 + r * q;
	q = GEGLU_E6 + r * q;
	q = GEGLU_E5 + r * q;
	q = GEGLU_E4 + r * q;
	q = GEGLU_E3 + r * q;
	q = GEGLU_E2 + r * q;
	q = 1.0 + r * q;
	double p = r * q;
	uint64_t nbits, sbits;
	memcpy(&nbits, &nb, sizeof(nbits));
	sbits = (nbits << 52) + GEGLU_ONE_BITS;
	double s;
	memcpy(&s, &sbits, sizeof(s));
	double em = s * p + (s - 1.0);
	float t = (float)(em / (em + 2.0));
	return geglu_bits_f32(geglu_f32_bits(t) | sign);
}

static inline float geglu_one(float x, float up)
{
	float u = GEGLU_K * (x + GEGLU_C * x * x * x);
	return 0.5f * x * (1.0f + geglu_tanh(u)) * up;
}

#endif

/* The vector row: VF a float vector and VD a double vector of L lanes; F_* and D_* their operations (F_ANDNOT(a,
 * b) = ~a & b, D_MIN(a, b) = a < b ? a : b, D_POW2(nb) = 2^n from the bits of nb = n + GEGLU_ROUND). */
#ifdef GEGLU_ROW
static inline VD geglu_tanh_abs_v(VD a)
{
	a = D_MIN(D_SET1(GEGLU_A_MAX), a);
	VD z = D_ADD(a, a);
	VD nb = D_ADD(D_MUL(z, D_SET1(GEGLU_INV_LN2)), D_SET1(GEGLU_ROUND));
	VD n = D_SUB(nb, D_SET1(GEGLU_ROUND));
	VD r = D_SUB(D_SUB(z, D_MUL(n, D_SET1(GEGLU_LN2_HI))), D_MUL(n, D_SET1(GEGLU_LN2_LO)));
	VD q = D_ADD(D_SET1(GEGLU_E12), D_MUL(r, D_SET1(GEGLU_E13)));
	q = D_ADD(D_SET1(GEGLU_E11), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E10), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E9), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E8), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E7), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E6), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E5), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E4), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E3), D_MUL(r, q));
	q = D_ADD(D_SET1(GEGLU_E2), D_MUL(r, q));
	q = D_ADD(D_SET1(1.0), D_MUL(r, q));
	VD p = D_MUL(r, q);
	VD s = D_POW2(nb);
	VD em = D_ADD(D_MUL(s, p), D_SUB(s, D_SET1(1.0)));
	return D_DIV(em, D_ADD(em, D_SET1(2.0)));
}

static void GEGLU_ROW(float *y, const float *gate, const float *up, int64_t n)
{
	const VF sign = F_SET1(-0.0f);
	int64_t i = 0;
	for (; i + L <= n; i += L) {
		VF x = F_LOADU(gate + i);
		VF u = F_MUL(F_SET1(GEGLU_K), F_ADD(x, F_MUL(F_MUL(F_MUL(F_SET1(GEGLU_C), x), x), x)));
		VF t = F_FROM_D(geglu_tanh_abs_v(D_FROM_F(F_ANDNOT(sign, u))));
		t = F_OR(t, F_AND(sign, u));
		VF g = F_MUL(F_MUL(F_SET1(0.5f), x), F_ADD(F_SET1(1.0f), t));
		F_STOREU(y + i, F_MUL(g, F_LOADU(up + i)));
	}
	for (; i < n; i++)
		y[i] = geglu_one(gate[i], up[i]);
}
#endif
