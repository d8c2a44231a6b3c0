/*
 * header.c: the 4096-byte header of every binary file of a model.ferry directory (FORMAT.md, "File header").
 * Parsing checks everything that can be checked without the manifest: magic, version, header checksum,
 * tensor entries inside the file, aligned and not overlapping.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#include "layout/layout.h"
#include "layout_internal.h"
#include "layout/le.h"

uint64_t layout_tensor_nbytes(int fmt, int ndim, const int64_t *shape)
{
	if (ndim < 1 || ndim > LAYOUT_MAX_DIMS)
		return 0;
	uint64_t rows = 1, row;
	for (int d = 0; d < ndim; d++)
		if (shape[d] <= 0 || (uint64_t)shape[d] > (1ull << 40))
			return 0;
	for (int d = 0; d < ndim - 1; d++)
		if (__builtin_mul_overflow(rows, (uint64_t)shape[d], &rows))
			return 0;
	row = wfmt_row_bytes(fmt, (uint64_t)shape[ndim - 1]);
	if (row == 0 || __builtin_mul_overflow(rows, row, &rows) || rows > (1ull << 62))
		return 0;
	return rows;
}

uint64_t layout_header_hash(const uint8_t *buf)
{
	uint8_t tmp[LAYOUT_HEADER_BYTES];
	memcpy(tmp, buf, LAYOUT_HEADER_BYTES);
	memset(tmp + 40, 0, 8);
	return XXH3_64bits(tmp, LAYOUT_HEADER_BYTES);
}

void layout_header_build(uint8_t *buf, const struct layout_file_header *h)
{
	memset(buf, 0, LAYOUT_HEADER_BYTES);
	memcpy(buf, LAYOUT_MAGIC, 8);
	bool strided = false;
	for (int i = 0; i < h->n_tensors; i++)
		strided |= h->tensors[i].stride != 0;
	put_le32(buf + 8, strided ? LAYOUT_VERSION : 1); /* files without experts stay as version 1 wrote them */
	put_le32(buf + 12, LAYOUT_HEADER_BYTES);
	put_le64(buf + 16, h->file_bytes);
	put_le32(buf + 24, (uint32_t)h->kind);
	put_le32(buf + 28, (uint32_t)h->layer);
	put_le32(buf + 32, (uint32_t)h->n_tensors);
	for (int i = 0; i < h->n_tensors; i++) {
		const struct layout_tensor *t = &h->tensors[i];
		uint8_t *e = buf + LAYOUT_ENTRY_OFFSET + i * LAYOUT_ENTRY_BYTES;
		memcpy(e, t->name, strnlen(t->name, LAYOUT_NAME_MAX - 1));
		put_le32(e + 48, (uint32_t)t->fmt);
		put_le32(e + 52, (uint32_t)t->ndim);
		for (int d = 0; d < LAYOUT_MAX_DIMS; d++)
			put_le64(e + 56 + 8 * d, d < t->ndim ? (uint64_t)t->shape[d] : 0);
		put_le64(e + 88, t->offset);
		put_le64(e + 96, t->bytes);
		put_le64(e + 104, t->raw_bytes);
		put_le64(e + 112, t->xxh3);
		put_le32(e + 120, (uint32_t)t->comp);
		put_le32(e + 124, (uint32_t)(t->stride / LAYOUT_ALIGN));
	}
	put_le64(buf + 40, layout_header_hash(buf));
}

int layout_header_parse(const uint8_t *buf, size_t n, struct layout_file_header *h, char *err, size_t errlen)
{
	memset(h, 0, sizeof(*h));
	if (n < LAYOUT_HEADER_BYTES) {
		snprintf(err, errlen, "file is %zu bytes, shorter than the %d-byte header", n, LAYOUT_HEADER_BYTES);
		return -EBADMSG;
	}
	if (memcmp(buf, LAYOUT_MAGIC, 8) != 0) {
		snprintf(err, errlen, "not a ferry model file (bad magic)");
		return -EBADMSG;
	}
	h->version = le32(buf + 8);
	if (h->version < LAYOUT_VERSION_MIN || h->version > LAYOUT_VERSION) {
		snprintf(err, errlen, "format version %u, this ferry reads versions %d..%d", h->version, LAYOUT_VERSION_MIN,
			 LAYOUT_VERSION);
		return -EBADMSG;
	}
	if (le32(buf + 12) != LAYOUT_HEADER_BYTES) {
		snprintf(err, errlen, "header size %u, expected %d", le32(buf + 12), LAYOUT_HEADER_BYTES);
		return -EBADMSG;
	}
	h->header_xxh3 = le64(buf + 40);
	if (layout_header_hash(buf) != h->header_xxh3) {
		snprintf(err, errlen, "header checksum mismatch (corrupt header)");
		return -EBADMSG;
	}
	h->file_bytes = le64(buf + 16);
	h->kind = (int)le32(buf + 24);
	h->layer = (int32_t)le32(buf + 28);
	uint32_t nt = le32(buf + 32);
	if (h->kind < LAYOUT_KIND_EMBED || h->kind > LAYOUT_KIND_HEAD || nt > LAYOUT_MAX_TENSORS) {
		snprintf(err, errlen, "bad header fields (kind %d, %u tensors)", h->kind, nt);
		return -EBADMSG;
	}
	h->n_tensors = (int)nt;
	/* Entries in offset order, none overlapping: a contiguous one starts after everything before it; strided
	 * ones form regions (same E and stride), each next one's expert slice after the previous one's inside
	 * the first one's stride, and the region ends at its first offset + E x stride. */
	uint64_t prev_end = LAYOUT_HEADER_BYTES, reg_base = 0, reg_stride = 0, reg_end = LAYOUT_HEADER_BYTES;
	int64_t reg_e = 0;
	for (int i = 0; i < h->n_tensors; i++) {
		const uint8_t *e = buf + LAYOUT_ENTRY_OFFSET + i * LAYOUT_ENTRY_BYTES;
		struct layout_tensor *t = &h->tensors[i];
		if (memchr(e, 0, LAYOUT_NAME_MAX) == NULL) {
			snprintf(err, errlen, "tensor entry %d: name not terminated", i);
			return -EBADMSG;
		}
		memcpy(t->name, e, LAYOUT_NAME_MAX);
		t->fmt = (int)le32(e + 48);
		t->ndim = (int)le32(e + 52);
		if (t->ndim < 1 || t->ndim > LAYOUT_MAX_DIMS || t->fmt < 0 || t->fmt >= WFMT_COUNT) {
			snprintf(err, errlen, "tensor %s: bad format %d or rank %d", t->name, t->fmt, t->ndim);
			return -EBADMSG;
		}
		for (int d = 0; d < LAYOUT_MAX_DIMS; d++)
			t->shape[d] = (int64_t)le64(e + 56 + 8 * d);
		t->offset = le64(e + 88);
		t->bytes = le64(e + 96);
		t->raw_bytes = le64(e + 104);
		t->xxh3 = le64(e + 112);
		t->comp = (int)le32(e + 120);
		t->stride = (uint64_t)le32(e + 124) * LAYOUT_ALIGN;
		if (t->stride && (h->version < 2 || t->ndim != 3 || t->comp != LAYOUT_COMP_NONE || t->shape[0] < 1 ||
				  t->stride < layout_tensor_nbytes(t->fmt, 2, t->shape + 1))) {
			snprintf(err, errlen, "tensor %s: expert stride %llu in a version %u file, rank %d, compression %d",
				 t->name, (unsigned long long)t->stride, h->version, t->ndim, t->comp);
			return -EBADMSG;
		}
		/* the stored size must be what shape and format say (lz4: the decompressed size) */
		uint64_t want = layout_tensor_nbytes(t->fmt, t->ndim, t->shape);
		bool unused_zero = true;
		for (int d = t->ndim; d < LAYOUT_MAX_DIMS; d++)
			unused_zero &= t->shape[d] == 0;
		bool size_ok = t->comp == LAYOUT_COMP_NONE ? t->bytes == want && t->raw_bytes == want
			     : t->comp == LAYOUT_COMP_LZ4 && t->raw_bytes == want && t->bytes > 0;
		if (want == 0 || !unused_zero || !size_ok) {
			snprintf(err, errlen, "tensor %s: %llu stored bytes (%llu raw, compression %d) do not match its %s shape",
				 t->name, (unsigned long long)t->bytes, (unsigned long long)t->raw_bytes, t->comp,
				 wfmt_name(t->fmt));
			return -EBADMSG;
		}
		uint64_t span = 0;
		bool in_reg = t->stride && t->stride == reg_stride && t->shape[0] == reg_e &&
			      t->offset + t->bytes / (uint64_t)t->shape[0] <= reg_base + reg_stride;
		bool ok = t->offset % LAYOUT_ALIGN == 0 && t->offset >= prev_end && (in_reg || t->offset >= reg_end) &&
			  !__builtin_mul_overflow((uint64_t)t->shape[0], t->stride, &span);
		span = layout_tensor_span(t);
		if (!ok || span > h->file_bytes || t->offset > h->file_bytes - span) {
			snprintf(err, errlen, "tensor %s: offset %llu + %llu bytes is unaligned, overlapping or past the end",
				 t->name, (unsigned long long)t->offset, (unsigned long long)span);
			return -EBADMSG;
		}
		if (t->stride && !in_reg) {
			reg_base = t->offset;
			reg_stride = t->stride;
			reg_e = t->shape[0];
			reg_end = reg_base + (uint64_t)reg_e * reg_stride;
		}
		prev_end = t->stride ? t->offset + t->bytes / (uint64_t)t->shape[0] : t->offset + t->bytes;
	}
	return 0;
}
