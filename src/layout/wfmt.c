/* wfmt.c: the weight format table (names as written in manifest.json) and the GGML type table, both generated
 * from src/layout/wfmt_list.h. */
#include <ctype.h>
#include <stdio.h>

#include "layout/wfmt.h"

/* The enum is the row's position: a row out of code order (or a code inserted in between) stops the build. */
#define CHECK_ROW(id, code, block, bytes, ggml, kind, k) \
	_Static_assert(WFMT_##id == (code), "src/layout/wfmt_list.h: row " #id " is not at its code's position");
WFMT_LIST(CHECK_ROW)
#undef CHECK_ROW

#define INFO_ROW(id, code, block, bytes, ggml, kind, k) {#id, block, bytes, ggml},
const struct wfmt_info wfmt_table[WFMT_COUNT] = {WFMT_LIST(INFO_ROW)};
#undef INFO_ROW

/* The formats first (entry i is format i), then the GGML types without a format. */
#define GGML_ROW(id, code, block, bytes, ggml, kind, k) {(uint32_t)(ggml), #id, block, bytes, WFMT_##id},
#define GGML_ONLY_ROW(id, ggml, block, bytes) {ggml, #id, block, bytes, -1},
static const struct wfmt_ggml ggml_types[] = {WFMT_LIST(GGML_ROW) GGML_ONLY_LIST(GGML_ONLY_ROW)};
#undef GGML_ROW
#undef GGML_ONLY_ROW

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

const struct wfmt_ggml *wfmt_ggml_find(uint32_t id)
{
	for (size_t i = 0; i < sizeof(ggml_types) / sizeof(ggml_types[0]); i++)
		if (ggml_types[i].id == id && (i >= WFMT_COUNT || wfmt_table[i].ggml >= 0))
			return &ggml_types[i];
	return NULL;
}

int wfmt_sorted(int fmts[WFMT_COUNT], unsigned flags)
{
	int n = 0;
	for (int f = 0; f < WFMT_COUNT; f++) {
		if (!wfmt_table[f].block || ((flags & WFMT_NAMES_GGUF) && wfmt_table[f].ggml < 0))
			continue;
		int i = n++;
		for (; i > 0 && wfmt_table[fmts[i - 1]].block > wfmt_table[f].block; i--)
			fmts[i] = fmts[i - 1];
		fmts[i] = f;
	}
	return n;
}

void wfmt_names(char *buf, size_t len, unsigned flags)
{
	int fmts[WFMT_COUNT], n = wfmt_sorted(fmts, flags);
	size_t at = 0;
	buf[0] = 0;
	for (int i = 0; i < n && at < len; i++) {
		int w = snprintf(buf + at, len - at, "%s%s", at ? ", " : "", wfmt_table[fmts[i]].name);
		for (size_t j = at; j < len && buf[j]; j++)
			buf[j] = flags & WFMT_NAMES_LOWER ? (char)tolower((unsigned char)buf[j]) : buf[j];
		at += w > 0 ? (size_t)w : 0;
	}
}
