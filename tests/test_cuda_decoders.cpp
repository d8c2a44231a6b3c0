/*
 * test_cuda_decoders.cpp: the weight decoders of src/kernels/cuda/matmul.cuh (behind the CUDA matvec and the
 * GEMM path's dequantization) compiled for the host, so every format's decoder is checked on every machine,
 * GPU or not. The device intrinsics they use are emulated from their CUDA definitions in tests/cuda_emul.h
 * (__ldg must be aligned to its size: the test fails on a misaligned load).
 * For each format with kernels (src/layout/wfmt_list.h): 3000 blocks of random bytes in a buffer aligned to the
 * format's ALIGN and no more, every value decoded 4 at a time (quantized; F32/F16/BF16 also 1 at a time) and
 * compared bit for bit with cpu_row_to_f32 (which tests/test_dequant.py checks against gguf-py).
 * What it cannot see: the device's own f16 conversion and load paths (tests/test_cuda_matmul.c on a GPU).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_emul.h"

#include "base/xorshift.h"
#include "kernels/cuda/matmul.cuh"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint8_t rand_byte(void)
{
	return (uint8_t)(xorshift64(&rng_state) >> 56);
}

/* values k..k+XV-1 of the row at w, all of them, against ref */
template <class F, int XV> static int compare(const uint8_t *w, const float *ref, int64_t n, const char *name)
{
	float got[4];
	int bad = 0;
	misaligned = 0;
	for (int64_t k = 0; k < n; k += XV) {
		F::template deq<XV>(w, k, got);
		for (int i = 0; i < XV; i++)
			if (memcmp(&got[i], &ref[k + i], 4) && bad++ < 3)
				fprintf(stderr, "%s (%d at a time) value %lld: %a, want %a\n", name, XV, (long long)(k + i),
					got[i], ref[k + i]);
	}
	if (misaligned)
		fprintf(stderr, "%s (%d at a time): %d loads misaligned at an alignment of %d\n", name, XV, misaligned,
			F::ALIGN);
	printf("%-7s %d at a time: %lld values, %d differ, %d misaligned loads\n", name, XV, (long long)n, bad, misaligned);
	return bad + misaligned;
}

template <class F> static int check(int fmt, const char *name)
{
	const int64_t nb = 3000, n = nb * F::BLOCK, bytes = nb * F::BYTES;
	/* 64-aligned + align: exactly the alignment the decoder claims (4 floats at a time: 16, a vector load) */
	const int align = F::BLOCK == 1 ? 16 : F::ALIGN;
	uint8_t *buf = (uint8_t *)aligned_alloc(64, (size_t)((bytes + 128) / 64 * 64 + 64));
	uint8_t *w = buf + (align < 64 ? align : 0);
	float *ref = (float *)malloc(sizeof(float) * (size_t)n);
	for (int64_t i = 0; i < bytes; i++)
		w[i] = rand_byte();
	int bad = cpu_row_to_f32(fmt, w, ref, n) != 0;
	bad += compare<F, 4>(w, ref, n, name);
	if constexpr (F::BLOCK == 1) { /* one at a time: rows aligned to the element only */
		uint8_t *w1 = buf + F::ALIGN;
		memmove(w1, w, (size_t)bytes);
		bad += compare<F, 1>(w1, ref, n, name);
	}
	free(buf);
	free(ref);
	return bad;
}

int main(void)
{
	int bad = 0, formats = 0;
#define CHECK_ROW(id, code, block, bytes, ggml, kind, k) \
	WFMT_RUNS_##kind((bad += check<deq_##k>(WFMT_##id, #id), formats++);, )
	WFMT_LIST(CHECK_ROW)
#undef CHECK_ROW
	printf("%d formats, %s\n", formats, bad ? "FAILED" : "ok");
	return bad ? 1 : 0;
}
