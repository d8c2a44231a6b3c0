/*
 * writer.c: writes a model.ferry directory. Everything goes into OUT.tmp/ first; finish() writes
 * manifest.json, syncs, and renames OUT.tmp to OUT, so an interrupted conversion never looks complete.
 * Tensor data is streamed (pwrite in the caller's chunks) with a running XXH3; memory use is O(1) in the
 * model size. With lz4 on, each tensor of a layer or head file is also encoded chunk by chunk into an
 * unlinked scratch file; at the tensor's end the encoded form replaces the raw bytes in place when it saves
 * enough (the raw bytes come from the caller only once, so both forms are built in one pass).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "layout/layout.h"
#include "layout_internal.h"
#include "layout/le.h"

struct layout_writer {
	char *out_dir, *tmp_dir;
	bool force;
	char err[512];
	/* current file */
	int fd;
	char file_name[32];
	struct layout_file_header hdr;
	uint64_t pos; /* end of data written so far */
	json_t *unit; /* tensor array of the current unit (borrowed from units) */
	/* current tensor */
	struct layout_tensor *t;
	uint64_t t_written;
	XXH3_state_t *xs;
	/* lz4 (layout_writer_set_lz4): scratch file and chunk buffers, shared by all tensors */
	bool lz4, t_lz4;
	int scratch_fd;
	uint8_t *chunk, *shuf, *frame;
	size_t chunk_fill, frame_cap;
	uint64_t comp_bytes;   /* frames of the current tensor written to the scratch file */
	uint64_t *frame_end;   /* [n_frames] */
	uint32_t n_frames, frame_end_cap;
	XXH3_state_t *xs_comp; /* of the stored (encoded) form */
	/* layout_writer_experts: the planned expert-major tensors of the current file */
	int x_n, x_next;
	char x_names[4][LAYOUT_NAME_MAX];
	uint64_t x_off[4], x_stride, x_end;
	/* manifest parts */
	json_t *files, *embed, *layers, *head;
	uint64_t bytes_written;
};

static int fail(struct layout_writer *w, int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(w->err, sizeof(w->err), fmt, ap);
	va_end(ap);
	return rc;
}

const char *layout_writer_error(const struct layout_writer *w)
{
	return w->err;
}

uint64_t layout_writer_bytes_written(const struct layout_writer *w)
{
	return w->bytes_written;
}

void layout_unit_file_name(int kind, int layer, char *buf, size_t n)
{
	if (kind == LAYOUT_KIND_EMBED)
		snprintf(buf, n, "embed.bin");
	else if (kind == LAYOUT_KIND_HEAD)
		snprintf(buf, n, "head.bin");
	else
		snprintf(buf, n, "layer.%03d.bin", layer);
}

#define PARTIAL_MARKER ".ferry-partial" /* in OUT.tmp while ferry writes it */

/* Removes a flat directory written by ferry: checks every entry first (regular files only) and unlinks
 * only when all are, so a directory that is not ferry's is never partly deleted. */
static int remove_flat_dir(const char *dir, char *err, size_t errlen)
{
	char path[4096];
	for (int pass = 0; pass < 2; pass++) {
		DIR *d = opendir(dir);
		if (!d) {
			snprintf(err, errlen, "%s: cannot open: %s", dir, strerror(errno));
			return -errno;
		}
		struct dirent *e;
		int rc = 0;
		while (!rc && (e = readdir(d)) != NULL) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
			struct stat st;
			if (pass == 0 && (lstat(path, &st) || !S_ISREG(st.st_mode))) {
				snprintf(err, errlen, "%s: contains %s which is not a regular file; not removing it", dir,
					 e->d_name);
				rc = -EEXIST;
			} else if (pass == 1 && unlink(path)) {
				snprintf(err, errlen, "%s: %s", path, strerror(errno));
				rc = -errno;
			}
		}
		closedir(d);
		if (rc)
			return rc;
	}
	if (rmdir(dir)) {
		snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		return -errno;
	}
	return 0;
}

static bool path_exists(const char *p)
{
	struct stat st;
	return lstat(p, &st) == 0;
}

/* An existing output may be replaced (--force) only when it is a ferry model directory. */
static int check_replaceable(const char *dir, char *err, size_t errlen)
{
	char m[4096];
	snprintf(m, sizeof(m), "%s/manifest.json", dir);
	struct stat st;
	json_t *j = lstat(dir, &st) == 0 && S_ISDIR(st.st_mode) ? json_load_file(m, 0, NULL) : NULL;
	const char *fmt = json_string_value(json_object_get(j, "format"));
	bool ours = fmt && !strcmp(fmt, "ferry");
	json_decref(j);
	if (!ours) {
		snprintf(err, errlen, "%s: exists and is not a ferry model directory; not replacing it", dir);
		return -EEXIST;
	}
	return 0;
}

int layout_writer_begin(struct layout_writer **wp, const char *out_dir, bool force, char *err, size_t errlen)
{
	*wp = NULL;
	size_t n = strlen(out_dir);
	while (n > 1 && out_dir[n - 1] == '/')
		n--;
	if (path_exists(out_dir)) {
		if (!force) {
			snprintf(err, errlen, "%s: already exists (use --force to replace it)", out_dir);
			return -EEXIST;
		}
		int rc = check_replaceable(out_dir, err, errlen);
		if (rc)
			return rc;
	}
	struct layout_writer *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->fd = -1;
	w->scratch_fd = -1;
	w->force = force;
	w->out_dir = strndup(out_dir, n);
	w->tmp_dir = malloc(n + 5);
	w->xs = XXH3_createState();
	w->files = json_array();
	w->embed = json_array();
	w->layers = json_array();
	w->head = json_array();
	if (!w->out_dir || !w->tmp_dir || !w->xs) {
		layout_writer_abort(w);
		return -ENOMEM;
	}
	snprintf(w->tmp_dir, n + 5, "%s.tmp", w->out_dir);
	if (path_exists(w->tmp_dir)) { /* left over from an interrupted conversion, if it carries our marker */
		char marker[4096];
		snprintf(marker, sizeof(marker), "%s/" PARTIAL_MARKER, w->tmp_dir);
		int rc = path_exists(marker) ? remove_flat_dir(w->tmp_dir, err, errlen) : -EEXIST;
		if (rc == -EEXIST && path_exists(w->tmp_dir) && !path_exists(marker))
			snprintf(err, errlen, "%s: exists and was not left by ferry; remove it or choose another output",
				 w->tmp_dir);
		if (rc) {
			free(w->tmp_dir);
			w->tmp_dir = NULL; /* not ours to remove */
			layout_writer_abort(w);
			return rc;
		}
	}
	if (mkdir(w->tmp_dir, 0755)) {
		snprintf(err, errlen, "%s: cannot create: %s", w->tmp_dir, strerror(errno));
		int rc = -errno;
		free(w->tmp_dir);
		w->tmp_dir = NULL;
		layout_writer_abort(w);
		return rc;
	}
	char marker[4096];
	snprintf(marker, sizeof(marker), "%s/" PARTIAL_MARKER, w->tmp_dir);
	int fd = open(marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot create: %s", marker, strerror(errno));
		layout_writer_abort(w);
		return -EIO;
	}
	close(fd);
	*wp = w;
	return 0;
}

int layout_writer_file_begin(struct layout_writer *w, int kind, int layer)
{
	if (w->fd >= 0)
		return fail(w, -EINVAL, "writer: file_begin inside an open file");
	layout_unit_file_name(kind, layer, w->file_name, sizeof(w->file_name));
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", w->tmp_dir, w->file_name);
	w->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0)
		return fail(w, -errno, "%s: cannot create: %s", path, strerror(errno));
	memset(&w->hdr, 0, sizeof(w->hdr));
	w->hdr.kind = kind;
	w->hdr.layer = kind == LAYOUT_KIND_LAYER ? layer : -1;
	w->pos = LAYOUT_HEADER_BYTES;
	if (kind == LAYOUT_KIND_EMBED) {
		w->unit = w->embed;
	} else if (kind == LAYOUT_KIND_HEAD) {
		w->unit = w->head;
	} else {
		if (layer != (int)json_array_size(w->layers))
			return fail(w, -EINVAL, "writer: layer %d written out of order", layer);
		w->unit = json_array();
		json_array_append_new(w->layers, w->unit);
	}
	return 0;
}

static json_t *tensor_json(const struct layout_tensor *t, const char *file)
{
	json_t *shape = json_array();
	for (int d = 0; d < t->ndim; d++)
		json_array_append_new(shape, json_integer(t->shape[d]));
	char hex[17];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)t->xxh3);
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:o, s:s, s:s, s:s}", "name", t->name, "file", file, "offset",
			      (json_int_t)t->offset, "bytes", (json_int_t)t->bytes, "raw_bytes", (json_int_t)t->raw_bytes,
			      "shape", shape, "format", wfmt_name(t->fmt), "compression",
			      t->comp == LAYOUT_COMP_LZ4 ? "lz4" : "none", "xxh3", hex);
	if (t->stride)
		json_object_set_new(o, "expert_stride", json_integer((json_int_t)t->stride));
	return o;
}

int layout_writer_experts(struct layout_writer *w, int n, const char *const *names, const int *fmts,
			  const int64_t (*shapes)[3])
{
	if (w->fd < 0 || w->t || n < 1 || n > 4 || w->x_next < w->x_n)
		return fail(w, -EINVAL, "writer: experts outside a file, inside a tensor, or %d tensors", n);
	uint64_t per[4], stride = 0;
	for (int i = 0; i < n; i++) {
		per[i] = layout_tensor_nbytes(fmts[i], 2, shapes[i] + 1);
		if (!per[i] || shapes[i][0] != shapes[0][0] || strlen(names[i]) >= LAYOUT_NAME_MAX)
			return fail(w, -EINVAL, "tensor %s: experts of shape %lld x %lld x %lld in %s", names[i],
				    (long long)shapes[i][0], (long long)shapes[i][1], (long long)shapes[i][2],
				    wfmt_name(fmts[i]));
		w->x_off[i] = stride;
		stride += layout_align_up(per[i]);
		strcpy(w->x_names[i], names[i]);
	}
	if (stride / LAYOUT_ALIGN > UINT32_MAX)
		return fail(w, -E2BIG, "tensor %s: one expert's matrices take %llu bytes", names[0],
			    (unsigned long long)stride);
	uint64_t base = layout_align_up(w->pos);
	for (int i = 0; i < n; i++)
		w->x_off[i] += base;
	w->x_n = n;
	w->x_next = 0;
	w->x_stride = stride;
	w->x_end = base + (uint64_t)shapes[0][0] * stride;
	return 0;
}

int layout_writer_tensor_begin(struct layout_writer *w, const char *name, int fmt, int ndim, const int64_t *shape)
{
	if (w->fd < 0 || w->t)
		return fail(w, -EINVAL, "writer: tensor_begin outside a file or inside a tensor");
	if (w->hdr.n_tensors >= LAYOUT_MAX_TENSORS)
		return fail(w, -E2BIG, "%s: more than %d tensors in one file", w->file_name, LAYOUT_MAX_TENSORS);
	if (strlen(name) >= LAYOUT_NAME_MAX)
		return fail(w, -ENAMETOOLONG, "tensor name '%s' longer than %d bytes", name, LAYOUT_NAME_MAX - 1);
	uint64_t nbytes = layout_tensor_nbytes(fmt, ndim, shape);
	if (nbytes == 0)
		return fail(w, -EINVAL, "tensor %s: shape does not fit format %s", name, wfmt_name(fmt));
	struct layout_tensor *t = &w->hdr.tensors[w->hdr.n_tensors];
	memset(t, 0, sizeof(*t));
	strcpy(t->name, name);
	t->fmt = fmt;
	t->ndim = ndim;
	memcpy(t->shape, shape, sizeof(int64_t) * (size_t)ndim);
	t->offset = layout_align_up(w->pos);
	t->bytes = t->raw_bytes = nbytes;
	t->comp = LAYOUT_COMP_NONE;
	bool planned = w->x_next < w->x_n;
	if (planned && (strcmp(name, w->x_names[w->x_next]) || ndim != 3))
		return fail(w, -EINVAL, "writer: tensor %s begun where the experts' %s was planned", name,
			    w->x_names[w->x_next]);
	if (planned) {
		t->offset = w->x_off[w->x_next++];
		t->stride = w->x_stride;
		if (layout_tensor_nbytes(fmt, 2, shape + 1) > w->x_stride)
			return fail(w, -EINVAL, "tensor %s: not the planned experts' shape or format", name);
	}
	w->t = t;
	w->t_written = 0;
	XXH3_64bits_reset(w->xs);
	w->t_lz4 = w->lz4 && w->hdr.kind != LAYOUT_KIND_EMBED && !planned;
	w->chunk_fill = 0;
	w->comp_bytes = 0;
	w->n_frames = 0;
	XXH3_64bits_reset(w->xs_comp);
	return 0;
}

int layout_writer_set_lz4(struct layout_writer *w, bool on)
{
	if (!on || w->lz4)
		return 0;
	char path[4096];
	snprintf(path, sizeof(path), "%s/.lz4-scratch", w->tmp_dir);
	w->scratch_fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (w->scratch_fd < 0)
		return fail(w, -errno, "%s: cannot create: %s", path, strerror(errno));
	unlink(path); /* anonymous from now on: nothing to clean up whatever happens */
	w->frame_cap = layout_lz4_frame_bound(LAYOUT_LZ4_CHUNK);
	w->chunk = malloc(LAYOUT_LZ4_CHUNK);
	w->shuf = malloc(LAYOUT_LZ4_CHUNK);
	w->frame = malloc(w->frame_cap);
	w->xs_comp = XXH3_createState();
	if (!w->chunk || !w->shuf || !w->frame || !w->xs_comp)
		return fail(w, -ENOMEM, "out of memory");
	w->lz4 = true;
	return 0;
}

static int pwrite_full(struct layout_writer *w, int fd, const void *data, size_t n, uint64_t off)
{
	const char *p = data;
	while (n) {
		ssize_t k = pwrite(fd, p, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return fail(w, -errno, "%s/%s: write failed: %s", w->tmp_dir, w->file_name, strerror(errno));
		p += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
	return 0;
}

/* Encodes the buffered chunk as one frame appended to the scratch file. */
static int lz4_emit(struct layout_writer *w)
{
	int64_t k = layout_lz4_encode_chunk(w->chunk, w->chunk_fill, layout_lz4_shuffle_width(w->t->fmt), w->shuf,
					    w->frame, w->frame_cap);
	if (k < 0)
		return fail(w, -EIO, "tensor %s: lz4 encoding failed", w->t->name);
	if (w->n_frames == w->frame_end_cap) {
		uint32_t cap = w->frame_end_cap ? 2 * w->frame_end_cap : 64;
		uint64_t *fe = realloc(w->frame_end, sizeof(*fe) * cap);
		if (!fe)
			return fail(w, -ENOMEM, "out of memory");
		w->frame_end = fe;
		w->frame_end_cap = cap;
	}
	int rc = pwrite_full(w, w->scratch_fd, w->frame, (size_t)k, w->comp_bytes);
	if (rc)
		return rc;
	XXH3_64bits_update(w->xs_comp, w->frame, (size_t)k);
	w->comp_bytes += (uint64_t)k;
	w->frame_end[w->n_frames++] = w->comp_bytes;
	w->chunk_fill = 0;
	return 0;
}

static int lz4_feed(struct layout_writer *w, const uint8_t *p, size_t n)
{
	while (n) {
		size_t k = LAYOUT_LZ4_CHUNK - w->chunk_fill < n ? LAYOUT_LZ4_CHUNK - w->chunk_fill : n;
		memcpy(w->chunk + w->chunk_fill, p, k);
		w->chunk_fill += k;
		p += k;
		n -= k;
		if (w->chunk_fill == LAYOUT_LZ4_CHUNK) {
			int rc = lz4_emit(w);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* At the tensor's end: the frames, table and footer replace the raw bytes when they save enough. */
static int lz4_finish(struct layout_writer *w)
{
	struct layout_tensor *t = w->t;
	int rc = w->chunk_fill ? lz4_emit(w) : 0;
	if (rc)
		return rc;
	uint64_t tail = 8 * (uint64_t)w->n_frames + LAYOUT_LZ4_FOOTER_BYTES;
	uint64_t stored = w->comp_bytes + tail;
	if ((double)stored > (1.0 - LAYOUT_LZ4_MIN_SAVING) * (double)t->bytes)
		return 0;
	for (uint64_t off = 0; off < w->comp_bytes; off += w->frame_cap) {
		size_t n = w->comp_bytes - off < w->frame_cap ? (size_t)(w->comp_bytes - off) : w->frame_cap;
		if (layout_pread_full(w->scratch_fd, w->frame, n, off))
			return fail(w, -EIO, "%s: scratch file read failed", w->tmp_dir);
		rc = pwrite_full(w, w->fd, w->frame, n, t->offset + off);
		if (rc)
			return rc;
	}
	uint8_t *tb = malloc((size_t)tail);
	if (!tb)
		return fail(w, -ENOMEM, "out of memory");
	for (uint32_t i = 0; i < w->n_frames; i++)
		put_le64(tb + 8 * (size_t)i, w->frame_end[i]);
	uint8_t *f = tb + 8 * (size_t)w->n_frames;
	put_le64(f, LAYOUT_LZ4_CHUNK);
	put_le32(f + 8, w->n_frames);
	put_le32(f + 12, (uint32_t)layout_lz4_shuffle_width(t->fmt));
	XXH3_64bits_update(w->xs_comp, tb, (size_t)tail);
	rc = pwrite_full(w, w->fd, tb, (size_t)tail, t->offset + w->comp_bytes);
	free(tb);
	if (rc)
		return rc;
	t->bytes = stored;
	t->comp = LAYOUT_COMP_LZ4;
	return 0;
}

int layout_writer_tensor_write(struct layout_writer *w, const void *data, size_t n)
{
	if (!w->t)
		return fail(w, -EINVAL, "writer: tensor_write outside a tensor");
	if (w->t_written + n > w->t->bytes)
		return fail(w, -EINVAL, "tensor %s: more than %llu bytes written", w->t->name,
			    (unsigned long long)w->t->bytes);
	int rc = 0;
	const struct layout_tensor *t = w->t;
	uint64_t per = t->stride ? t->bytes / (uint64_t)t->shape[0] : t->bytes;
	for (size_t done = 0; !rc && done < n;) { /* a strided tensor: each expert's bytes at its place */
		uint64_t at = w->t_written + done, e = at / per, in = at % per;
		size_t k = per - in < n - done ? (size_t)(per - in) : n - done;
		rc = pwrite_full(w, w->fd, (const char *)data + done, k, t->offset + e * (t->stride ? t->stride : per) + in);
		done += k;
	}
	if (rc)
		return rc;
	w->t_written += n;
	XXH3_64bits_update(w->xs, data, n);
	w->bytes_written += n;
	return w->t_lz4 ? lz4_feed(w, data, n) : 0;
}

int layout_writer_tensor_end(struct layout_writer *w)
{
	struct layout_tensor *t = w->t;
	if (!t)
		return fail(w, -EINVAL, "writer: tensor_end outside a tensor");
	if (w->t_written != t->bytes)
		return fail(w, -EINVAL, "tensor %s: %llu of %llu bytes written", t->name,
			    (unsigned long long)w->t_written, (unsigned long long)t->bytes);
	t->xxh3 = XXH3_64bits_digest(w->xs);
	if (w->t_lz4) {
		int rc = lz4_finish(w);
		if (rc)
			return rc;
		if (t->comp == LAYOUT_COMP_LZ4)
			t->xxh3 = XXH3_64bits_digest(w->xs_comp);
		/* raw bytes of a replaced tensor may lie past the stored ones: the gap up to the next tensor must
		 * read as zeros (anything further is overwritten or truncated away by file_end) */
		static const uint8_t zeros[LAYOUT_ALIGN];
		uint64_t end = t->offset + t->bytes;
		rc = pwrite_full(w, w->fd, zeros, (size_t)(layout_align_up(end) - end), end);
		if (rc)
			return rc;
	}
	w->pos = t->stride ? w->x_end : t->offset + t->bytes;
	w->hdr.n_tensors++;
	json_array_append_new(w->unit, tensor_json(t, w->file_name));
	w->t = NULL;
	return 0;
}

int layout_writer_file_end(struct layout_writer *w)
{
	if (w->fd < 0 || w->t || w->x_next < w->x_n)
		return fail(w, -EINVAL, "writer: file_end outside a file, inside a tensor or before the planned experts");
	w->x_n = w->x_next = 0;
	uint64_t end = layout_align_up(w->pos);
	w->hdr.file_bytes = end;
	uint8_t buf[LAYOUT_HEADER_BYTES];
	layout_header_build(buf, &w->hdr);
	if (ftruncate(w->fd, (off_t)end) || pwrite(w->fd, buf, sizeof(buf), 0) != (ssize_t)sizeof(buf) ||
	    fsync(w->fd))
		return fail(w, errno ? -errno : -EIO, "%s/%s: write failed: %s", w->tmp_dir, w->file_name,
			    errno ? strerror(errno) : "short write");
	close(w->fd);
	w->fd = -1;
	char hex[17];
	snprintf(hex, sizeof(hex), "%016llx", (unsigned long long)layout_header_hash(buf));
	json_array_append_new(w->files, json_pack("{s:s, s:I, s:i, s:i, s:s}", "name", w->file_name, "bytes",
						  (json_int_t)end, "kind", w->hdr.kind, "layer", w->hdr.layer,
						  "header_xxh3", hex));
	return 0;
}

int layout_writer_alias(struct layout_writer *w, const char *name, int src_unit, const char *src_name)
{
	if (!w->unit || w->t)
		return fail(w, -EINVAL, "writer: alias outside a unit");
	json_t *src = src_unit < 0 ? w->embed : json_array_get(w->layers, (size_t)src_unit);
	size_t i;
	json_t *t;
	json_array_foreach(src, i, t)
	{
		if (strcmp(json_string_value(json_object_get(t, "name")), src_name) == 0) {
			json_t *copy = json_deep_copy(t);
			json_object_set_new(copy, "name", json_string(name));
			json_array_append_new(w->unit, copy);
			return 0;
		}
	}
	return fail(w, -ENOENT, "writer: alias source %s not found", src_name);
}

int layout_writer_write_text(struct layout_writer *w, const char *dst_name, const char *text, size_t n)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", w->tmp_dir, dst_name);
	FILE *f = fopen(path, "wb");
	if (!f)
		return fail(w, -errno, "%s: cannot create: %s", path, strerror(errno));
	size_t k = fwrite(text, 1, n, f);
	if (fflush(f) || fsync(fileno(f)) || k != n) {
		fclose(f);
		return fail(w, -EIO, "%s: write failed", path);
	}
	fclose(f);
	return 0;
}

int layout_writer_copy_file(struct layout_writer *w, const char *src_path, const char *dst_name)
{
	FILE *f = fopen(src_path, "rb");
	if (!f)
		return fail(w, -errno, "%s: cannot open: %s", src_path, strerror(errno));
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (;;) {
		if (len == cap) {
			cap = cap ? cap * 2 : 1 << 16;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return fail(w, -ENOMEM, "%s: out of memory", src_path);
			}
			buf = nb;
		}
		size_t k = fread(buf + len, 1, cap - len, f);
		len += k;
		if (k == 0)
			break;
	}
	int bad = ferror(f);
	fclose(f);
	int rc = bad ? fail(w, -EIO, "%s: read failed", src_path) : layout_writer_write_text(w, dst_name, buf, len);
	free(buf);
	return rc;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	int rc = fsync(fd) ? -errno : 0;
	close(fd);
	return rc;
}

int layout_writer_finish(struct layout_writer *w, const struct layout_hparams *hp, void *extra)
{
	json_t *x = extra;
	if (w->fd >= 0) {
		json_decref(x);
		return fail(w, -EINVAL, "writer: finish with an open file");
	}
	if ((int)json_array_size(w->layers) != hp->n_layers) {
		json_decref(x);
		return fail(w, -EINVAL, "writer: %zu layers written, hparams say %d", json_array_size(w->layers),
			    hp->n_layers);
	}
	json_t *units = json_pack("{s:O, s:O, s:O}", "embed", w->embed, "layers", w->layers, "head", w->head);
	json_t *m = json_pack("{s:s, s:i, s:o, s:O, s:o}", "format", "ferry", "version", LAYOUT_MANIFEST_VERSION,
			      "hparams", layout_hparams_to_json(hp), "files", w->files, "units", units);
	if (x) {
		json_object_update_missing(m, x);
		json_decref(x);
	}
	char path[4096], final[4096] = "";
	snprintf(path, sizeof(path), "%s/manifest.json", w->tmp_dir);
	int rc = json_dump_file(m, path, JSON_INDENT(1) | JSON_SORT_KEYS);
	json_decref(m);
	if (rc)
		return fail(w, -EIO, "%s: write failed", path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fsync(fd)) {
		if (fd >= 0)
			close(fd);
		return fail(w, -EIO, "%s: sync failed", path);
	}
	close(fd);
	snprintf(path, sizeof(path), "%s/" PARTIAL_MARKER, w->tmp_dir);
	if (unlink(path) || fsync_dir(w->tmp_dir))
		return fail(w, -EIO, "%s: sync failed", w->tmp_dir);
	/* Replace an existing model (already checked to be one) only after the new one is complete. */
	if (path_exists(w->out_dir)) {
		if (!w->force)
			return fail(w, -EEXIST, "%s: appeared during conversion; not replacing it", w->out_dir);
		snprintf(final, sizeof(final), "%s.old", w->out_dir);
		if (path_exists(final) && remove_flat_dir(final, w->err, sizeof(w->err)))
			return -EEXIST;
		if (rename(w->out_dir, final))
			return fail(w, -errno, "%s: cannot move aside: %s", w->out_dir, strerror(errno));
	}
	if (rename(w->tmp_dir, w->out_dir)) {
		int e = errno;
		if (final[0])
			rename(final, w->out_dir); /* put the old model back */
		return fail(w, -e, "%s: cannot rename to %s: %s", w->tmp_dir, w->out_dir, strerror(e));
	}
	char *parent = strdup(w->out_dir);
	char *slash = parent ? strrchr(parent, '/') : NULL;
	if (parent) {
		if (slash)
			*slash = 0;
		fsync_dir(slash ? (*parent ? parent : "/") : ".");
		free(parent);
	}
	if (final[0] && path_exists(final))
		remove_flat_dir(final, w->err, sizeof(w->err));
	free(w->tmp_dir);
	w->tmp_dir = NULL; /* nothing left to clean up */
	layout_writer_abort(w);
	return 0;
}

void layout_writer_abort(struct layout_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0)
		close(w->fd);
	if (w->tmp_dir) {
		char err[256];
		remove_flat_dir(w->tmp_dir, err, sizeof(err));
	}
	json_decref(w->files);
	json_decref(w->embed);
	json_decref(w->layers);
	json_decref(w->head);
	if (w->xs)
		XXH3_freeState(w->xs);
	if (w->xs_comp)
		XXH3_freeState(w->xs_comp);
	if (w->scratch_fd >= 0)
		close(w->scratch_fd);
	free(w->chunk);
	free(w->shuf);
	free(w->frame);
	free(w->frame_end);
	free(w->out_dir);
	free(w->tmp_dir);
	free(w);
}
