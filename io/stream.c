/*
 * stream.c: synchronous unit reader with a slot cache. Files are opened once; each tensor is read with
 * pread (restarted on short reads) into its aligned place in the slot. Replacement picks the free slot
 * that was loaded longest ago.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "stream.h"

struct slot {
	void *buf;
	int unit;  /* -2: empty */
	int users;
	uint64_t loaded_at;
	void **ptrs;
};

struct io_stream {
	const struct layout *m;
	int *fds;
	int n_slots;
	uint64_t slot_bytes;
	struct slot *slots;
	uint8_t **verified; /* [unit][tensor] */
	uint64_t clock;
	struct io_stats st;
};

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

uint64_t io_unit_slot_bytes(const struct layout *m, int unit)
{
	const struct layout_unit *u = layout_unit_get(m, unit);
	uint64_t n = 0;
	for (int i = 0; i < u->n_tensors; i++)
		n += layout_align_up(u->tensors[i].bytes);
	return n;
}

int io_stream_open(struct io_stream **sp, const struct layout *m, int n_slots, char *err, size_t errlen)
{
	int n_units = m->hp.n_layers + 1;
	struct io_stream *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->m = m;
	s->n_slots = n_slots < 1 ? 1 : n_slots > n_units ? n_units : n_slots;
	for (int u = 0; u < n_units; u++) {
		uint64_t b = io_unit_slot_bytes(m, u);
		s->slot_bytes = b > s->slot_bytes ? b : s->slot_bytes;
	}
	s->fds = malloc(sizeof(int) * (size_t)m->n_files);
	s->slots = calloc((size_t)s->n_slots, sizeof(*s->slots));
	s->verified = calloc((size_t)n_units + 1, sizeof(*s->verified));
	int rc = s->fds && s->slots && s->verified ? 0 : -ENOMEM;
	if (rc)
		snprintf(err, errlen, "out of memory");
	for (int i = 0; s->fds && i < m->n_files; i++)
		s->fds[i] = -1;
	for (int i = 0; !rc && i < m->n_files; i++) {
		char path[4096];
		layout_file_path(m, i, path, sizeof(path));
		s->fds[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (s->fds[i] < 0) {
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
			rc = -errno;
		}
	}
	for (int i = 0; !rc && i < s->n_slots; i++) {
		struct slot *sl = &s->slots[i];
		sl->unit = -2;
		sl->ptrs = calloc(LAYOUT_UNIT_MAX_TENSORS, sizeof(void *));
		if (posix_memalign(&sl->buf, LAYOUT_ALIGN, s->slot_bytes ? s->slot_bytes : LAYOUT_ALIGN) || !sl->ptrs) {
			snprintf(err, errlen, "cannot allocate %d slots of %.1f MiB", s->n_slots,
				 (double)s->slot_bytes / (1 << 20));
			rc = -ENOMEM;
		}
	}
	for (int u = 0; !rc && u <= n_units; u++) {
		s->verified[u] = calloc((size_t)layout_unit_get(m, u - 1)->n_tensors + 1, 1);
		if (!s->verified[u]) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
		}
	}
	if (rc) {
		io_stream_close(s);
		return rc;
	}
	s->st.n_slots = s->n_slots;
	s->st.slot_bytes = s->slot_bytes;
	*sp = s;
	return 0;
}

void io_stream_close(struct io_stream *s)
{
	if (!s)
		return;
	for (int i = 0; s->fds && i < s->m->n_files; i++)
		if (s->fds[i] >= 0)
			close(s->fds[i]);
	for (int i = 0; s->slots && i < s->n_slots; i++) {
		free(s->slots[i].buf);
		free(s->slots[i].ptrs);
	}
	for (int u = 0; s->verified && u <= s->m->hp.n_layers + 1; u++)
		free(s->verified[u]);
	free(s->verified);
	free(s->fds);
	free(s->slots);
	free(s);
}

static int read_full(struct io_stream *s, int file, void *dst, uint64_t n, uint64_t off, const char *what, char *err,
		     size_t errlen)
{
	int rc = layout_pread_full(s->fds[file], dst, n, off);
	if (rc) {
		snprintf(err, errlen, "%s/%s: %s: read of %llu bytes at offset %llu failed: %s", s->m->dir,
			 s->m->files[file].name, what, (unsigned long long)n, (unsigned long long)off,
			 rc == -EIO ? "unexpected end of file" : strerror(-rc));
		return -EIO;
	}
	s->st.bytes_read += n;
	s->st.n_reads++;
	return 0;
}

static int load_unit(struct io_stream *s, struct slot *sl, int unit, char *err, size_t errlen)
{
	const struct layout_unit *u = layout_unit_get(s->m, unit);
	uint8_t *ver = s->verified[unit + 1];
	double t0 = now_sec();
	uint64_t off = 0;
	sl->unit = -2;
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *t = &u->tensors[i];
		void *dst = (char *)sl->buf + off;
		if (off > s->slot_bytes || t->bytes > s->slot_bytes - off) { /* cannot happen for a unit layout_open accepted */
			snprintf(err, errlen, "unit %d does not fit its %llu-byte slot", unit, (unsigned long long)s->slot_bytes);
			return -EOVERFLOW;
		}
		int rc = read_full(s, t->file, dst, t->bytes, t->offset, t->name, err, errlen);
		if (rc)
			return rc;
		if (!ver[i]) {
			if (XXH3_64bits(dst, t->bytes) != t->xxh3) {
				snprintf(err, errlen, "%s/%s: tensor %s: checksum mismatch (corrupt data)", s->m->dir,
					 s->m->files[t->file].name, t->name);
				return -EBADMSG;
			}
			ver[i] = 1;
		}
		sl->ptrs[i] = dst;
		off += layout_align_up(t->bytes);
	}
	s->st.read_sec += now_sec() - t0;
	sl->unit = unit;
	sl->loaded_at = ++s->clock;
	return 0;
}

int io_unit_acquire(struct io_stream *s, int unit, void *const **ptrs, char *err, size_t errlen)
{
	struct slot *victim = NULL;
	for (int i = 0; i < s->n_slots; i++) {
		struct slot *sl = &s->slots[i];
		if (sl->unit == unit) {
			sl->users++;
			s->st.bytes_reused += layout_unit_bytes(layout_unit_get(s->m, unit));
			*ptrs = sl->ptrs;
			return 0;
		}
		if (sl->users == 0 && (!victim || sl->loaded_at < victim->loaded_at))
			victim = sl;
	}
	if (!victim) {
		snprintf(err, errlen, "all %d I/O slots are in use", s->n_slots);
		return -EBUSY;
	}
	int rc = load_unit(s, victim, unit, err, errlen);
	if (rc)
		return rc;
	victim->users = 1;
	*ptrs = victim->ptrs;
	return 0;
}

void io_unit_release(struct io_stream *s, int unit)
{
	for (int i = 0; i < s->n_slots; i++)
		if (s->slots[i].unit == unit && s->slots[i].users > 0)
			s->slots[i].users--;
}

int io_read_rows(struct io_stream *s, const struct layout_tensor *t, const int *rows, int n, void *dst, char *err,
		 size_t errlen)
{
	if (t->ndim != 2 || t->comp != LAYOUT_COMP_NONE) {
		snprintf(err, errlen, "tensor %s: rows can be read only from an uncompressed 2-D tensor", t->name);
		return -EINVAL;
	}
	uint64_t rb = wfmt_row_bytes(t->fmt, (uint64_t)t->shape[1]);
	double t0 = now_sec();
	for (int i = 0; i < n; i++) {
		if (rows[i] < 0 || rows[i] >= t->shape[0]) {
			snprintf(err, errlen, "token id %d outside the vocabulary (%lld)", rows[i], (long long)t->shape[0]);
			return -EINVAL;
		}
		int rc = read_full(s, t->file, (char *)dst + (size_t)i * rb, rb, t->offset + (uint64_t)rows[i] * rb, t->name,
				   err, errlen);
		if (rc)
			return rc;
	}
	s->st.read_sec += now_sec() - t0;
	return 0;
}

void io_stream_stats(const struct io_stream *s, struct io_stats *out)
{
	*out = s->st;
}
