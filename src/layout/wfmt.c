/* wfmt.c: the weight format table (names as written in manifest.json). */
#include "layout/wfmt.h"

const struct wfmt_info wfmt_table[WFMT_COUNT] = {
	[WFMT_F32] = {"F32", 1, 4},     [WFMT_F16] = {"F16", 1, 2},     [WFMT_BF16] = {"BF16", 1, 2},
	[WFMT_Q8_0] = {"Q8_0", 32, 34}, [WFMT_Q4_0] = {"Q4_0", 32, 18}, [WFMT_Q4_K] = {"Q4_K", 256, 144},
	[WFMT_Q5_K] = {"Q5_K", 256, 176}, [WFMT_Q6_K] = {"Q6_K", 256, 210}, [WFMT_NF4] = {"NF4", 0, 0},
	[WFMT_INT4G] = {"INT4G", 0, 0}, [WFMT_INT8G] = {"INT8G", 0, 0}, [WFMT_Q5_0] = {"Q5_0", 32, 22},
};

int wfmt_from_name(const char *name)
{
	for (int i = 0; name && i < WFMT_COUNT; i++)
		if (strcmp(wfmt_table[i].name, name) == 0)
			return i;
	return -1;
}


const char *wfmt_name(int fmt)
{
	return fmt >= 0 && fmt < WFMT_COUNT ? wfmt_table[fmt].name : "?";
}

uint64_t wfmt_row_bytes(int fmt, uint64_t n)
{
	if (fmt < 0 || fmt >= WFMT_COUNT || wfmt_table[fmt].block == 0 || n % wfmt_table[fmt].block)
		return 0;
	return n / wfmt_table[fmt].block * wfmt_table[fmt].block_bytes;
}
