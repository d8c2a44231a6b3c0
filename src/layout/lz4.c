/*
 * lz4.c: the stored form of a compressed tensor (FORMAT.md, "Compressed tensors"): the raw bytes cut into
 * chunks, each chunk byte-shuffled by element width and written as one LZ4 frame; a table of frame ends
 * and a 16-byte footer follow the frames. Chunks are independent, so a reader decodes them in parallel
 * and as soon as they arrive. The writer encodes, the streamer (io/) decodes; both go through here.
 */
#include <errno.h>
#include <lz4frame.h>
#include <stdlib.h>
#include <string.h>

#include "layout/layout.h"
#include "layout/le.h"

int layout_lz4_shuffle_width(int fmt)
{
	return fmt == WFMT_F16 || fmt == WFMT_BF16 ? 2 : fmt == WFMT_F32 ? 4 : 1;
}

/* Byte b of element i goes to b * n_elems + i: the exponent bytes of bf16/f16/f32 values end up together,
 * where LZ4 finds their repeats. */
static void shuffle(uint8_t *dst, const uint8_t *src, size_t n, int width)
{
	size_t ne = n / (size_t)width;
	for (size_t i = 0; i < ne; i++)
		for (int b = 0; b < width; b++)
			dst[(size_t)b * ne + i] = src[i * (size_t)width + (size_t)b];
	memcpy(dst + ne * (size_t)width, src + ne * (size_t)width, n - ne * (size_t)width);
}

static void unshuffle(uint8_t *dst, const uint8_t *src, size_t n, int width)
{
	size_t ne = n / (size_t)width;
	if (width == 2) { /* the common case (bf16, f16), written so the compiler vectorizes it */
		const uint8_t *lo = src, *hi = src + ne;
		for (size_t i = 0; i < ne; i++) {
			dst[2 * i] = lo[i];
			dst[2 * i + 1] = hi[i];
		}
	} else {
		for (size_t i = 0; i < ne; i++)
			for (int b = 0; b < width; b++)
				dst[i * (size_t)width + (size_t)b] = src[(size_t)b * ne + i];
	}
	memcpy(dst + ne * (size_t)width, src + ne * (size_t)width, n - ne * (size_t)width);
}

size_t layout_lz4_frame_bound(size_t chunk)
{
	LZ4F_preferences_t p = {.frameInfo = {.blockSizeID = LZ4F_max4MB, .contentSize = chunk}};
	return LZ4F_compressFrameBound(chunk, &p);
}

int64_t layout_lz4_encode_chunk(const void *src, size_t n, int width, void *scratch, void *dst, size_t cap)
{
	shuffle(scratch, src, n, width);
	LZ4F_preferences_t p = {.frameInfo = {.blockSizeID = LZ4F_max4MB, .blockMode = LZ4F_blockIndependent,
					      .contentSize = n}};
	size_t k = LZ4F_compressFrame(dst, cap, scratch, n, &p);
	return LZ4F_isError(k) ? -EIO : (int64_t)k;
}

int layout_lz4_parse(const uint8_t *stored, uint64_t bytes, uint64_t raw_bytes, struct layout_lz4_info *info)
{
	if (bytes < LAYOUT_LZ4_FOOTER_BYTES)
		return -EBADMSG;
	const uint8_t *f = stored + bytes - LAYOUT_LZ4_FOOTER_BYTES;
	info->chunk_raw = le64(f);
	info->n_chunks = le32(f + 8);
	info->width = (int)le32(f + 12);
	if (info->chunk_raw == 0 || info->chunk_raw > LAYOUT_LZ4_MAX_CHUNK || info->n_chunks == 0 ||
	    (info->width != 1 && info->width != 2 && info->width != 4) || info->chunk_raw % (uint64_t)info->width ||
	    (raw_bytes + info->chunk_raw - 1) / info->chunk_raw != info->n_chunks ||
	    (uint64_t)info->n_chunks * 8 > bytes - LAYOUT_LZ4_FOOTER_BYTES)
		return -EBADMSG;
	info->table = f - 8 * (uint64_t)info->n_chunks;
	uint64_t table_off = (uint64_t)(info->table - stored), prev = 0;
	for (uint32_t i = 0; i < info->n_chunks; i++) {
		uint64_t e = le64(info->table + 8 * (uint64_t)i);
		if (e <= prev || e > table_off)
			return -EBADMSG;
		prev = e;
	}
	if (prev != table_off)
		return -EBADMSG;
	info->raw_bytes = raw_bytes;
	return 0;
}

void layout_lz4_chunk(const struct layout_lz4_info *info, uint32_t i, uint64_t *src_off, uint64_t *src_len,
		      uint64_t *dst_off, uint64_t *dst_len)
{
	uint64_t begin = i ? le64(info->table + 8 * (uint64_t)(i - 1)) : 0;
	*src_off = begin;
	*src_len = le64(info->table + 8 * (uint64_t)i) - begin;
	*dst_off = (uint64_t)i * info->chunk_raw;
	*dst_len = info->raw_bytes - *dst_off < info->chunk_raw ? info->raw_bytes - *dst_off : info->chunk_raw;
}

int layout_lz4_decode_chunk(void **dctx, const void *src, size_t src_len, void *dst, size_t dst_len, int width,
			    void *scratch)
{
	if (!*dctx && LZ4F_isError(LZ4F_createDecompressionContext((LZ4F_dctx **)dctx, LZ4F_VERSION)))
		return -ENOMEM;
	LZ4F_dctx *d = *dctx;
	size_t out = dst_len, in = src_len;
	size_t k = LZ4F_decompress(d, width == 1 ? dst : scratch, &out, src, &in, NULL);
	if (LZ4F_isError(k) || k != 0 || in != src_len || out != dst_len) {
		LZ4F_resetDecompressionContext(d);
		return -EBADMSG;
	}
	if (width > 1)
		unshuffle(dst, scratch, dst_len, width);
	return 0;
}

void layout_lz4_free_dctx(void *dctx)
{
	if (dctx)
		LZ4F_freeDecompressionContext(dctx);
}

int layout_lz4_decode(const uint8_t *stored, uint64_t bytes, uint64_t raw_bytes, void *dst)
{
	struct layout_lz4_info info;
	int rc = layout_lz4_parse(stored, bytes, raw_bytes, &info);
	if (rc)
		return rc;
	void *dctx = NULL, *scratch = malloc(info.chunk_raw);
	rc = scratch ? 0 : -ENOMEM;
	for (uint32_t i = 0; !rc && i < info.n_chunks; i++) {
		uint64_t so, sl, d, dl;
		layout_lz4_chunk(&info, i, &so, &sl, &d, &dl);
		rc = layout_lz4_decode_chunk(&dctx, stored + so, sl, (uint8_t *)dst + d, dl, info.width, scratch);
	}
	layout_lz4_free_dctx(dctx);
	free(scratch);
	return rc;
}
