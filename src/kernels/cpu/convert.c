/* convert.c: stored weight rows -> f32 (the only place the CPU kernels look at a weight format; quantized
 * blocks are dequantized by dequant.c). */
#include <string.h>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/qdot.h"
#include "layout/wfmt.h"

bool cpu_fmt_supported(int fmt)
{
	return fmt == WFMT_F32 || fmt == WFMT_F16 || fmt == WFMT_BF16 || cpu_dequant_find(fmt) != NULL;
}

int cpu_row_to_f32(int fmt, const void *src, float *dst, int64_t n)
{
	const uint16_t *h = src;
	switch (fmt) {
	case WFMT_F32:
		memcpy(dst, src, (size_t)n * sizeof(float));
		return 0;
	case WFMT_F16:
		for (int64_t i = 0; i < n; i++)
			dst[i] = f16_to_f32(h[i]);
		return 0;
	case WFMT_BF16:
		for (int64_t i = 0; i < n; i++)
			dst[i] = bf16_to_f32(h[i]);
		return 0;
	default: {
		cpu_dequant_fn deq = cpu_dequant_find(fmt);
		if (!deq || n % wfmt_table[fmt].block)
			return -1;
		deq(src, dst, n / wfmt_table[fmt].block);
		return 0;
	}
	}
}
