/*
 * stream.c: the layer streamer (stream.h): set-up, the I/O thread, and the consumer's calls.
 *
 * The I/O thread loops: choose loads (which units should be loading: the next ones in cyclic order after the
 * consumer, as many as free slots allow, plus first reads of RAM-tier units), submit (requests of at most
 * req_bytes from the loads nearest the consumer first, up to the reader's depth), wait, and account the
 * completions (short reads re-queued for the rest; O_DIRECT refused at read time: that file goes buffered;
 * errors fail the load with the file and offset named). Tensors whose bytes have all arrived go to the
 * workers (decode.c). State and invariants: stream_internal.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/fault.h"
#include "io/pinned.h"
#include "io/ram_tier.h"
#include "stream_internal.h"

#define GIB (1ull << 30)
#define DONE_POLL_US 100 /* how often pending done() conditions are polled while the I/O thread waits */

static double now_sec(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void io_opts_default(struct io_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->n_slots = -1;
	o->ram = -1;
}

bool io_unit_by_expert(const struct io_stream *s, int unit)
{
	return s->o.experts_on_demand && unit >= 0 && unit < s->n_units && s->maps[unit].n_exp > 0;
}

bool io_unit_in_tier(const struct io_stream *s, int unit)
{
	return unit >= 0 && unit < s->n_units && s->tier[unit] != NULL;
}

uint64_t io_unit_slot_bytes(const struct layout *m, int unit)
{
	struct unit_map p;
	unit_map_build(m, unit, &p);
	return p.buf_bytes;
}

void stream_notice(struct io_stream *s, enum notice which, const char *fmt, ...)
{
	if ((s->noticed & which) || !s->o.log)
		return;
	s->noticed |= which;
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->o.log(msg, s->o.log_ctx);
}

/* ---- load state ---- */

static bool busy(const struct load *ld)
{
	return ld->inflight > 0 || ld->tasks > 0;
}

static bool held(const struct load *ld)
{
	return ld->users > 0 || ld->done != NULL;
}

void load_fail(struct load *ld, int rc, const char *fmt, ...)
{
	if (ld->rc)
		return; /* the first error is the one reported */
	ld->rc = rc;
	ld->state = LOAD_FAILED;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ld->err, sizeof(ld->err), fmt, ap);
	va_end(ap);
}

static void load_reset(struct load *ld)
{
	ld->state = LOAD_EMPTY;
	ld->cancelled = false;
	ld->rc = 0;
	ld->err[0] = 0;
	if (!ld->tier)
		ld->unit = -1;
}

void load_check(struct io_stream *s, struct load *ld)
{
	if (busy(ld))
		return;
	if (ld->cancelled)
		load_reset(ld);
	else if (ld->state == LOAD_READING && ld->todo == 0)
		ld->state = LOAD_READY;
	pthread_cond_broadcast(&s->cv);
	if (s->eng && !pthread_equal(pthread_self(), s->io_thread))
		s->eng->ops->wake(s->eng);
}

static void load_start(struct io_stream *s, struct load *ld, int unit)
{
	const struct unit_map *p = &s->maps[unit];
	const struct layout_unit *u = layout_unit_get(s->m, unit);
	ld->unit = unit;
	ld->state = LOAD_READING;
	ld->fresh = true;
	ld->cancelled = false;
	ld->rc = 0;
	ld->err[0] = 0;
	ld->range = 0;
	ld->range_pos = 0;
	ld->todo = 0;
	ld->partial = !ld->tier && io_unit_by_expert(s, unit);
	ld->n_rg = p->n_ranges;
	memcpy(ld->rg, p->ranges, sizeof(*ld->rg) * (size_t)p->n_ranges);
	if (ld->partial) {
		struct map_range *tr = &ld->rg[p->exp_range];
		tr->len = p->exp_off - tr->off;
		memset(ld->have, 0, sizeof(bool) * (size_t)p->n_exp);
	}
	for (int r = 0; r < ld->n_rg; r++)
		ld->todo += ld->rg[r].len;
	for (int i = 0; i < u->n_tensors; i++) {
		ld->left[i] = ld->partial && u->tensors[i].stride ? 0 : u->tensors[i].bytes;
		ld->ptrs[i] = ld->buf + p->dst[i];
	}
	load_check(s, ld);
}

/* Stops a load; it becomes EMPTY once nothing of it is in flight. */
static void load_cancel(struct io_stream *s, struct load *ld)
{
	if (ld->state == LOAD_EMPTY)
		return;
	ld->cancelled = true;
	load_check(s, ld);
}

/* The live load of a unit: its tier entry, or the slot that holds it. */
static struct load *find_load(struct io_stream *s, int unit)
{
	if (s->tier[unit])
		return s->tier[unit];
	for (int i = 0; i < s->n_slots; i++)
		if (s->slots[i].unit == unit && !s->slots[i].cancelled && s->slots[i].state != LOAD_EMPTY)
			return &s->slots[i];
	return NULL;
}

static int distance(const struct io_stream *s, int unit)
{
	return (unit - s->next + s->n_units) % s->n_units;
}

/* ---- the I/O thread ---- */

static void choose_loads(struct io_stream *s)
{
	int n_held = 0, want[s->n_units > 0 ? s->n_units : 1], n_want = 0;
	for (int i = 0; i < s->n_slots; i++) {
		struct load *ld = &s->slots[i];
		if (ld->done && ld->users == 0 && ld->done(ld->done_ctx))
			ld->done = NULL;
		n_held += held(ld);
	}
	int room = s->n_slots - n_held;
	int cap = s->o.prefetch > 0 ? s->o.prefetch : s->n_slots > 2 ? s->n_slots : 2;
	room = room < cap ? room : cap;
	int tier_reading = 0;
	for (int u = 0; u < s->n_units; u++)
		tier_reading += s->tier[u] && s->tier[u]->state == LOAD_READING;
	for (int i = 0; i < s->n_units; i++) {
		int u = (s->next + i) % s->n_units;
		struct load *t = s->tier[u];
		if (t) {
			if (t->state == LOAD_EMPTY && !busy(t) && tier_reading < cap) {
				load_start(s, t, u);
				tier_reading++;
			}
			continue;
		}
		if (n_want == room)
			break;
		want[n_want++] = u;
	}
	for (int w = 0; w < n_want; w++) {
		if (find_load(s, want[w]))
			continue;
		struct load *victim = NULL, *cancel = NULL;
		for (int i = 0; i < s->n_slots; i++) {
			struct load *ld = &s->slots[i];
			bool wanted = false;
			for (int k = 0; k < n_want && ld->unit >= 0; k++)
				wanted |= want[k] == ld->unit && !ld->cancelled;
			if (held(ld) || wanted)
				continue;
			if (!busy(ld) && (!victim || ld->state == LOAD_EMPTY))
				victim = ld;
			else if (busy(ld) && !ld->cancelled && (!cancel || distance(s, ld->unit) > distance(s, cancel->unit)))
				cancel = ld;
		}
		if (victim) {
			if (victim->state != LOAD_EMPTY)
				load_reset(victim);
			load_start(s, victim, want[w]);
		} else {
			if (cancel)
				load_cancel(s, cancel);
			break; /* the rest waits for a slot to drain */
		}
	}
	int busy_slots = 0;
	for (int i = 0; i < s->n_slots; i++)
		busy_slots += held(&s->slots[i]) || busy(&s->slots[i]);
	if (busy_slots > s->st.slots_busy_max)
		s->st.slots_busy_max = busy_slots;
}

/* The reading load the consumer waits for first (one it holds: experts it asked for), else the one nearest it,
 * with bytes still to submit. */
static struct load *next_to_submit(struct io_stream *s)
{
	struct load *best = NULL;
	for (int i = 0; i < s->n_slots + s->n_units; i++) {
		struct load *ld = i < s->n_slots ? &s->slots[i] : s->tier[i - s->n_slots];
		if (!ld || ld->state != LOAD_READING || ld->cancelled || ld->range == ld->n_rg)
			continue;
		if (!best || (ld->users > 0) > (best->users > 0) ||
		    ((ld->users > 0) == (best->users > 0) && distance(s, ld->unit) < distance(s, best->unit)))
			best = ld;
	}
	return best;
}

static bool aligned(uint64_t off, uint64_t len, const void *buf)
{
	return off % LAYOUT_ALIGN == 0 && len % LAYOUT_ALIGN == 0 && (uintptr_t)buf % LAYOUT_ALIGN == 0;
}

static void reader_submit(struct io_stream *s, struct io_req *r)
{
	int rc = s->eng->ops->submit(s->eng, r);
	if (rc) { /* cannot happen within the depth the reader was made for */
		r->ld->inflight--;
		load_fail(r->ld, rc, "%s/%s: cannot queue a read: %s", s->m->dir, s->m->files[r->file].name,
			  strerror(-rc));
		load_check(s, r->ld);
		r->next = s->free_reqs;
		s->free_reqs = r;
		return;
	}
	if (s->inflight++ == 0)
		s->busy_since = now_sec();
}

static void submit(struct io_stream *s)
{
	while (s->free_reqs || s->retry) {
		struct io_req *r = s->retry;
		if (r) {
			s->retry = r->next;
			if (r->ld->cancelled || r->ld->state != LOAD_READING) {
				r->ld->inflight--;
				load_check(s, r->ld);
				r->next = s->free_reqs;
				s->free_reqs = r;
				continue;
			}
			reader_submit(s, r);
			continue;
		}
		struct load *ld = next_to_submit(s);
		if (!ld)
			break;
		const struct map_range *pr = &ld->rg[ld->range];
		r = s->free_reqs;
		s->free_reqs = r->next;
		uint64_t pos = ld->range_pos, dst = pr->dst + pos;
		uint64_t len = pr->len - pos, off = pr->off + pos;
		uint64_t to_boundary = s->o.req_bytes - off % s->o.req_bytes; /* requests aligned in the file, as the
										* device lays out its blocks */
		len = len < to_boundary ? len : to_boundary;
		len = len < GIB - dst % GIB ? len : GIB - dst % GIB; /* inside one registered piece */
		*r = (struct io_req){.file = pr->file, .off = off, .len = (uint32_t)len, .buf = ld->buf + dst,
				     .ld = ld, .dst = dst};
		r->direct = s->direct[r->file] && aligned(r->off, len, r->buf);
		ld->range_pos += len;
		if (ld->range_pos == pr->len) {
			ld->range++;
			ld->range_pos = 0;
		}
		ld->inflight++;
		reader_submit(s, r);
	}
}

/* Bytes of tensor t (its bytes at a in the buffer; an expert-major one's slices a + e x stride) inside
 * [lo, hi). */
static uint64_t tensor_overlap(const struct layout_tensor *t, uint64_t a, uint64_t lo, uint64_t hi)
{
	uint64_t per = t->stride ? t->bytes / (uint64_t)t->shape[0] : t->bytes, got = 0;
	uint64_t n = t->stride ? (uint64_t)t->shape[0] : 1, step = t->stride ? t->stride : per;
	uint64_t e0 = lo > a ? (lo - a) / step : 0;
	for (uint64_t e = e0; e < n && a + e * step < hi; e++) {
		uint64_t x = a + e * step, y = x + per;
		uint64_t l = lo > x ? lo : x, h = hi < y ? hi : y;
		got += l < h ? h - l : 0;
	}
	return got;
}

/* Bytes [dst, dst + n) of the load's buffer have arrived. */
static void credit(struct io_stream *s, struct load *ld, uint64_t dst, uint64_t n)
{
	const struct layout_unit *u = layout_unit_get(s->m, ld->unit);
	const struct unit_map *p = &s->maps[ld->unit];
	ld->todo -= n;
	for (int i = 0; i < u->n_tensors && ld->state == LOAD_READING; i++) {
		if (ld->left[i] == 0)
			continue;
		uint64_t got = tensor_overlap(&u->tensors[i], p->src[i], dst, dst + n);
		if (!got)
			continue;
		ld->left[i] -= got;
		if (ld->left[i] == 0)
			tensor_arrived(s, ld, i);
	}
}

static void complete(struct io_stream *s, struct io_req *r)
{
	struct load *ld = r->ld;
	const char *name = s->m->files[r->file].name;
	int res = r->res;
	if (--s->inflight == 0)
		s->st.busy_sec += now_sec() - s->busy_since;
	s->st.n_reads++;
	io_fault_apply(&(struct io_fault_read){name, r->off, r->len, r->buf}, &res);
	if (ld->state == LOAD_READING && !ld->cancelled) {
		if (res == -EINVAL && r->direct) {
			stream_notice(s, NOTICE_DIRECT, "%s/%s: O_DIRECT refused at read time; reading it buffered", s->m->dir,
				      name);
			s->direct[r->file] = false;
			r->direct = false;
			r->next = s->retry;
			s->retry = r;
			return;
		}
		if (res < 0) {
			load_fail(ld, -EIO, "%s/%s: read of %u bytes at offset %llu failed: %s", s->m->dir, name, r->len,
				  (unsigned long long)r->off, strerror(-res));
		} else if (res == 0) {
			load_fail(ld, -EIO, "%s/%s: unexpected end of file at offset %llu (truncated?)", s->m->dir, name,
				  (unsigned long long)r->off);
		} else {
			s->st.bytes_read += (uint64_t)res;
			credit(s, ld, r->dst, (uint64_t)res);
			if ((uint32_t)res < r->len) {
				s->st.n_short++;
				r->off += (uint64_t)res;
				r->dst += (uint64_t)res;
				r->buf += res;
				r->len -= (uint32_t)res;
				r->direct = r->direct && aligned(r->off, r->len, r->buf);
				r->next = s->retry;
				s->retry = r;
				return;
			}
		}
	}
	ld->inflight--;
	r->next = s->free_reqs;
	s->free_reqs = r;
	load_check(s, ld);
}

static bool pending_done(const struct io_stream *s)
{
	for (int i = 0; i < s->n_slots; i++)
		if (s->slots[i].done && s->slots[i].users == 0)
			return true;
	return false;
}

static void *io_main(void *arg)
{
	struct io_stream *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		if (s->stop) {
			for (int i = 0; i < s->n_slots + s->n_units; i++) {
				struct load *ld = i < s->n_slots ? &s->slots[i] : s->tier[i - s->n_slots];
				if (ld && ld->state == LOAD_READING)
					load_cancel(s, ld);
			}
		} else if (!s->paused) {
			choose_loads(s);
		}
		submit(s);
		if (s->stop && s->inflight == 0 && !s->retry)
			break;
		long timeout = pending_done(s) ? DONE_POLL_US : -1;
		pthread_mutex_unlock(&s->mu);
		struct io_req *done = NULL;
		int rc = s->eng->ops->flush(s->eng);
		if (!rc)
			rc = s->eng->ops->wait(s->eng, timeout, &done);
		pthread_mutex_lock(&s->mu);
		if (rc && !s->fatal) { /* the reader itself broke (not one read): nothing can be read any more */
			s->fatal = rc;
			snprintf(s->st.reader + strlen(s->st.reader), sizeof(s->st.reader) - strlen(s->st.reader),
				 " (failed: %s)", strerror(-rc));
			pthread_cond_broadcast(&s->cv);
		}
		while (done) {
			struct io_req *r = done;
			done = r->next;
			complete(s, r);
		}
		if (s->fatal && s->inflight == 0)
			break;
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

/* ---- set-up ---- */

static void log_nothing(const char *msg, void *ctx)
{
	(void)msg;
	(void)ctx;
}

static int open_files(struct io_stream *s, char *err, size_t errlen)
{
	const struct layout *m = s->m;
	for (int i = 0; i < 2 * m->n_files; i++)
		s->fd[i] = -1;
	for (int i = 0; i < m->n_files; i++) {
		char path[4096];
		layout_file_path(m, i, path, sizeof(path));
		s->fd[2 * i] = open(path, O_RDONLY | O_CLOEXEC);
		if (s->fd[2 * i] < 0) {
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
			return -errno;
		}
		if (s->o.buffered)
			continue;
		s->fd[2 * i + 1] = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
		if (s->fd[2 * i + 1] < 0)
			stream_notice(s, NOTICE_DIRECT, "%s: O_DIRECT refused (%s); reading buffered", path, strerror(errno));
		s->direct[i] = s->fd[2 * i + 1] >= 0;
	}
	return 0;
}

/* Slots and RAM tier from the budget (stream.h, io_opts.n_slots and ram). */
static int alloc_buffers(struct io_stream *s, char *err, size_t errlen)
{
	int n = s->n_units;
	uint64_t slot = 0, total = 0, bytes[n];
	for (int u = 0; u < n; u++) {
		bytes[u] = s->maps[u].buf_bytes;
		slot = bytes[u] > slot ? bytes[u] : slot;
		total += bytes[u];
	}
	int64_t ram = s->o.ram;
	int n_slots = s->o.n_slots;
	if (n_slots < 0)
		n_slots = ram >= 0 && total <= (uint64_t)ram ? 0 : ram >= 0 && (uint64_t)ram >= 4 * slot ? 3 : 2;
	n_slots = n_slots > n ? n : n_slots;
	uint64_t spent = (uint64_t)n_slots * slot;
	bool keep[n];
	int kept = ram >= 0 && (uint64_t)ram > spent ? ram_tier_choose(bytes, n, (uint64_t)ram - spent, keep) : 0;
	if (kept < n && n_slots == 0)
		n_slots = 1; /* a streamed unit needs somewhere to land */
	s->n_slots = n_slots;
	s->slots = calloc((size_t)n_slots + 1, sizeof(*s->slots));
	s->tier = calloc((size_t)n, sizeof(*s->tier));
	if (!s->slots || !s->tier) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->st.locked = true;
	for (int i = 0; i < n + n_slots; i++) {
		struct load *ld;
		uint64_t cap;
		if (i < n_slots) {
			ld = &s->slots[i];
			cap = slot;
			ld->unit = -1;
		} else if (kept && keep[i - n_slots]) {
			ld = s->tier[i - n_slots] = calloc(1, sizeof(*ld));
			if (!ld) {
				snprintf(err, errlen, "out of memory");
				return -ENOMEM;
			}
			ld->tier = true;
			ld->unit = i - n_slots;
			cap = bytes[i - n_slots];
			s->st.tier_units++;
			s->st.tier_bytes += cap;
		} else {
			continue;
		}
		ld->rg = calloc(LAYOUT_UNIT_MAX_TENSORS + (size_t)s->max_exp, sizeof(*ld->rg));
		ld->have = calloc((size_t)s->max_exp + 1, sizeof(bool));
		if (!ld->rg || !ld->have) {
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		bool locked;
		ld->cap = cap ? cap : LAYOUT_ALIGN;
		ld->buf = pinned_alloc(s->o.host_alloc, ld->cap, &locked);
		if (!ld->buf) {
			snprintf(err, errlen, "cannot allocate %.1f MiB of pinned memory for %s", (double)ld->cap / (1 << 20),
				 ld->tier ? "the RAM tier" : "an I/O slot");
			return -ENOMEM;
		}
		if (!locked) {
			s->st.locked = false;
			stream_notice(s, NOTICE_MLOCK, "I/O buffers are not locked in memory (mlock: RLIMIT_MEMLOCK too low)");
		}
	}
	s->st.n_slots = n_slots;
	s->st.slot_bytes = slot;
	return 0;
}

static int start_reader(struct io_stream *s, char *err, size_t errlen)
{
	struct io_files files = {s->m->n_files, s->fd};
	int n_regs = 0;
	struct io_region regs[s->n_slots + s->n_units + 1];
	for (int i = 0; i < s->n_slots + s->n_units; i++) {
		struct load *ld = i < s->n_slots ? &s->slots[i] : s->tier[i - s->n_slots];
		if (ld)
			regs[n_regs++] = (struct io_region){ld->buf, ld->cap};
	}
	int rc = -ENOSYS;
	char why[256] = "";
	if (s->o.reader != IO_READER_PREAD)
		rc = io_uring_reader_create(&s->eng, s->o.depth, &files, regs, n_regs, why, sizeof(why));
	if (rc && s->o.reader == IO_READER_URING) {
		snprintf(err, errlen, "--io=uring: %s", why);
		return rc;
	}
	if (rc) {
		if (s->o.reader == IO_READER_AUTO)
			stream_notice(s, NOTICE_URING, "%s; reading with a pread thread pool", why);
		rc = io_pread_reader_create(&s->eng, s->o.depth < 8 ? s->o.depth : 8, &files, err, errlen);
		if (rc)
			return rc;
	}
	int n_direct = 0;
	for (int i = 0; i < s->m->n_files; i++)
		n_direct += s->direct[i];
	snprintf(s->st.reader, sizeof(s->st.reader), "%s, %s", s->eng->desc,
		 n_direct == s->m->n_files ? "O_DIRECT" : n_direct ? "O_DIRECT on some files" : "buffered");
	return 0;
}

int io_stream_open(struct io_stream **sp, const struct layout *m, const struct io_opts *o, char *err, size_t errlen)
{
	struct io_stream *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	s->m = m;
	s->o = *o;
	if (!s->o.log)
		s->o.log = log_nothing;
	s->o.depth = s->o.depth > 0 ? s->o.depth : 32;
	s->o.req_bytes = s->o.req_bytes ? (uint32_t)layout_align_up(s->o.req_bytes) : 2u << 20;
	s->o.req_bytes = s->o.req_bytes < GIB ? s->o.req_bytes : (uint32_t)GIB;
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	s->n_workers = s->o.n_workers > 0 ? s->o.n_workers : cores < 1 ? 1 : cores > 8 ? 8 : (int)cores;
	s->n_units = m->hp.n_layers + 1;
	s->task_tail = &s->task_head;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	s->maps = calloc((size_t)s->n_units, sizeof(*s->maps));
	s->fd = calloc(2 * (size_t)m->n_files, sizeof(int));
	s->direct = calloc((size_t)m->n_files, sizeof(bool));
	s->verified = calloc((size_t)s->n_units, sizeof(*s->verified));
	s->reqs = calloc((size_t)s->o.depth, sizeof(*s->reqs));
	s->workers = calloc((size_t)s->n_workers, sizeof(*s->workers));
	int rc = s->maps && s->fd && s->direct && s->verified && s->reqs && s->workers ? 0 : -ENOMEM;
	for (int u = 0; !rc && u < s->n_units; u++) {
		unit_map_build(m, u, &s->maps[u]);
		s->max_exp = s->maps[u].n_exp > s->max_exp ? s->maps[u].n_exp : s->max_exp;
		s->verified[u] = calloc((size_t)layout_unit_get(m, u)->n_tensors + 1, 1);
		rc = s->verified[u] ? 0 : -ENOMEM;
	}
	if (rc)
		snprintf(err, errlen, "out of memory");
	s->st.n_units = s->n_units;
	for (int i = 0; !rc && i < s->o.depth; i++) {
		s->reqs[i].next = s->free_reqs;
		s->free_reqs = &s->reqs[i];
	}
	rc = rc ? rc : open_files(s, err, errlen);
	rc = rc ? rc : alloc_buffers(s, err, errlen);
	rc = rc ? rc : start_reader(s, err, errlen);
	for (int i = 0; !rc && i < s->n_workers; i++) {
		s->workers[i].s = s;
		rc = -pthread_create(&s->workers[i].thread, NULL, decode_worker, &s->workers[i]);
		if (rc)
			s->n_workers = i;
	}
	if (!rc) {
		rc = -pthread_create(&s->io_thread, NULL, io_main, s);
		s->io_started = rc == 0;
	}
	if (rc) {
		if (!err[0] || rc == -EAGAIN)
			snprintf(err, errlen, "cannot start the streamer's threads: %s", strerror(-rc));
		io_stream_close(s);
		return rc;
	}
	*sp = s;
	return 0;
}

void io_stream_close(struct io_stream *s)
{
	if (!s)
		return;
	if (s->io_started) {
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		s->eng->ops->wake(s->eng);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->io_thread, NULL);
	}
	pthread_mutex_lock(&s->mu);
	s->workers_stop = true;
	pthread_cond_broadcast(&s->work_cv);
	pthread_mutex_unlock(&s->mu);
	for (int i = 0; s->workers && i < s->n_workers; i++)
		pthread_join(s->workers[i].thread, NULL);
	if (s->eng)
		s->eng->ops->destroy(s->eng);
	for (int i = 0; s->slots && i < s->n_slots + s->n_units; i++) {
		struct load *ld = i < s->n_slots ? &s->slots[i] : s->tier ? s->tier[i - s->n_slots] : NULL;
		if (!ld)
			continue;
		if (ld->buf)
			pinned_free(s->o.host_alloc, ld->buf, ld->cap);
		free(ld->rg);
		free(ld->have);
		if (i >= s->n_slots)
			free(ld);
	}
	for (int i = 0; s->fd && i < 2 * s->m->n_files; i++)
		if (s->fd[i] >= 0)
			close(s->fd[i]);
	for (int u = 0; s->verified && u < s->n_units; u++)
		free(s->verified[u]);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	pthread_cond_destroy(&s->work_cv);
	free(s->verified);
	free(s->maps);
	free(s->fd);
	free(s->direct);
	free(s->reqs);
	free(s->workers);
	free(s->slots);
	free(s->tier);
	free(s);
}

/* ---- the consumer ---- */

/* Wakes the I/O thread when it may have something to do. Once every unit sits READY in the RAM tier it has
 * nothing, and waking it anyway would take a core from the consumer's compute threads on every acquire. */
static void wake_io(struct io_stream *s)
{
	bool idle = s->n_slots == 0;
	for (int u = 0; idle && u < s->n_units; u++)
		idle = s->tier[u] && s->tier[u]->state == LOAD_READY;
	if (!idle)
		s->eng->ops->wake(s->eng);
}

int io_unit_acquire(struct io_stream *s, int unit, void *const **ptrs, char *err, size_t errlen)
{
	if (unit < 0 || unit >= s->n_units) {
		snprintf(err, errlen, "unit %d outside 0..%d", unit, s->n_units - 1);
		return -EINVAL;
	}
	double t0 = now_sec();
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	s->next = unit;
	s->paused = false;
	wake_io(s);
	for (;;) {
		struct load *ld = find_load(s, unit);
		if (ld && ld->state == LOAD_READY) {
			if (!ld->fresh)
				*(ld->tier ? &s->st.bytes_tier : &s->st.bytes_reused) +=
					layout_unit_bytes(layout_unit_get(s->m, unit));
			ld->fresh = false;
			ld->users++;
			ld->done = NULL; /* the new holder releases again */
			*ptrs = ld->ptrs;
			break;
		}
		if (ld && ld->state == LOAD_FAILED) {
			rc = ld->rc;
			snprintf(err, errlen, "%s", ld->err);
			load_cancel(s, ld); /* the next acquire reads again */
			break;
		}
		int n_held = 0;
		for (int i = 0; i < s->n_slots; i++)
			n_held += s->slots[i].users > 0;
		if (!ld && n_held == s->n_slots) {
			snprintf(err, errlen, "all %d I/O slots are held by the consumer", s->n_slots);
			rc = -EBUSY;
			break;
		}
		if (s->fatal) {
			snprintf(err, errlen, "%s: the reader failed: %s", s->m->dir, strerror(-s->fatal));
			rc = -EIO;
			break;
		}
		pthread_cond_wait(&s->cv, &s->mu);
	}
	s->next = (unit + 1) % s->n_units;
	s->st.n_acquire++;
	s->st.wait_sec += now_sec() - t0;
	wake_io(s);
	pthread_mutex_unlock(&s->mu);
	return rc;
}

/* The load of a unit the consumer holds. */
static struct load *held_load(struct io_stream *s, int unit)
{
	struct load *ld = unit >= 0 && unit < s->n_units ? find_load(s, unit) : NULL;
	return ld && ld->users > 0 ? ld : NULL;
}

void io_unit_release(struct io_stream *s, int unit)
{
	io_unit_release_after(s, unit, NULL, NULL);
}

void io_unit_release_after(struct io_stream *s, int unit, bool (*done)(void *ctx), void *ctx)
{
	pthread_mutex_lock(&s->mu);
	struct load *ld = held_load(s, unit);
	if (ld) {
		ld->users--;
		if (done && !ld->tier) { /* tier buffers are never refilled: nothing to wait for */
			ld->done = done;
			ld->done_ctx = ctx;
		}
		wake_io(s);
	}
	pthread_mutex_unlock(&s->mu);
}

void io_forget_done(struct io_stream *s)
{
	pthread_mutex_lock(&s->mu);
	for (int i = 0; i < s->n_slots; i++)
		s->slots[i].done = NULL;
	wake_io(s);
	pthread_mutex_unlock(&s->mu);
}

/* Queues the reads of the experts want[] marks that a partial load lacks; returns how many. */
static int queue_experts(struct io_stream *s, struct load *ld, const bool *want)
{
	const struct unit_map *p = &s->maps[ld->unit];
	const struct map_range *r = &p->ranges[p->exp_range];
	int n = 0;
	for (int64_t e = 0; ld->partial && e < p->n_exp; e++) {
		if (!want[e] || ld->have[e])
			continue;
		uint64_t off = p->exp_off + (uint64_t)e * p->exp_stride, end = r->off + r->len;
		uint64_t len = end - off < p->exp_stride ? end - off : p->exp_stride; /* the file's last expert may be short */
		ld->rg[ld->n_rg++] = (struct map_range){r->file, off, len, p->exp_dst + (uint64_t)e * p->exp_stride};
		ld->todo += len;
		ld->have[e] = true;
		s->st.bytes_experts += len;
		s->st.n_experts++;
		n++;
	}
	if (n && (ld->state == LOAD_READY || ld->state == LOAD_READING)) {
		ld->state = LOAD_READING;
		s->eng->ops->wake(s->eng);
	}
	return n;
}

int io_unit_experts(struct io_stream *s, int unit, const bool *want, char *err, size_t errlen)
{
	double t0 = now_sec();
	int rc = 0;
	pthread_mutex_lock(&s->mu);
	struct load *ld = held_load(s, unit);
	if (!ld) {
		snprintf(err, errlen, "unit %d: experts asked for a unit the consumer does not hold", unit);
		rc = -EINVAL;
	} else if (queue_experts(s, ld, want) || ld->state == LOAD_READING) {
		while (ld->state == LOAD_READING && !s->fatal)
			pthread_cond_wait(&s->cv, &s->mu);
		if (ld->state == LOAD_FAILED) {
			rc = ld->rc;
			snprintf(err, errlen, "%s", ld->err);
		} else if (s->fatal) {
			snprintf(err, errlen, "%s: the reader failed: %s", s->m->dir, strerror(-s->fatal));
			rc = -EIO;
		}
	}
	s->st.wait_sec += now_sec() - t0;
	pthread_mutex_unlock(&s->mu);
	return rc;
}

void io_unit_experts_ahead(struct io_stream *s, int unit, const bool *want)
{
	pthread_mutex_lock(&s->mu);
	struct load *ld = unit >= 0 && unit < s->n_units ? find_load(s, unit) : NULL;
	if (ld && (ld->state == LOAD_READY || ld->state == LOAD_READING))
		queue_experts(s, ld, want);
	pthread_mutex_unlock(&s->mu);
}

void io_stream_cancel(struct io_stream *s)
{
	pthread_mutex_lock(&s->mu);
	s->paused = true;
	for (;;) {
		bool draining = false;
		for (int i = 0; i < s->n_slots + s->n_units; i++) {
			struct load *ld = i < s->n_slots ? &s->slots[i] : s->tier[i - s->n_slots];
			if (!ld || held(ld))
				continue;
			if (ld->state == LOAD_READING || ld->state == LOAD_FAILED)
				load_cancel(s, ld);
			draining |= busy(ld);
		}
		if (!draining && !s->retry)
			break;
		wake_io(s);
		pthread_cond_wait(&s->cv, &s->mu);
	}
	pthread_mutex_unlock(&s->mu);
}

/* Reads len bytes of tensor t's file at off into dst (synchronous, counted as read). */
static int read_at(struct io_stream *s, const struct layout_tensor *t, uint64_t off, uint64_t len, void *dst,
		   char *err, size_t errlen)
{
	int rc = layout_pread_full(s->fd[2 * t->file], dst, len, off);
	if (rc) {
		snprintf(err, errlen, "%s/%s: %s: read of %llu bytes at offset %llu failed: %s", s->m->dir,
			 s->m->files[t->file].name, t->name, (unsigned long long)len, (unsigned long long)off,
			 rc == -EIO ? "unexpected end of file" : strerror(-rc));
		return -EIO;
	}
	pthread_mutex_lock(&s->mu);
	s->st.bytes_read += len;
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int io_read_rows(struct io_stream *s, const struct layout_tensor *t, const int *rows, int n, void *dst, char *err,
		 size_t errlen)
{
	if (t->ndim != 2 || t->comp != LAYOUT_COMP_NONE) {
		snprintf(err, errlen, "tensor %s: rows can be read only from an uncompressed 2-D tensor", t->name);
		return -EINVAL;
	}
	uint64_t rb = wfmt_row_bytes(t->fmt, (uint64_t)t->shape[1]);
	for (int i = 0; i < n; i++) {
		if (rows[i] < 0 || rows[i] >= t->shape[0]) {
			snprintf(err, errlen, "token id %d outside the vocabulary (%lld)", rows[i], (long long)t->shape[0]);
			return -EINVAL;
		}
		int rc = read_at(s, t, t->offset + (uint64_t)rows[i] * rb, rb, (char *)dst + (size_t)i * rb, err, errlen);
		if (rc)
			return rc;
	}
	return 0;
}

int io_read_tensor(struct io_stream *s, const struct layout_tensor *t, void *dst, char *err, size_t errlen)
{
	if (t->comp != LAYOUT_COMP_NONE || t->stride) {
		snprintf(err, errlen, "tensor %s: only an uncompressed, packed tensor can be read whole", t->name);
		return -EINVAL;
	}
	return read_at(s, t, t->offset, t->bytes, dst, err, errlen);
}

void io_stream_stats(struct io_stream *s, struct io_stats *out)
{
	pthread_mutex_lock(&s->mu);
	*out = s->st;
	out->in_flight = s->inflight;
	if (s->inflight)
		out->busy_sec += now_sec() - s->busy_since;
	pthread_mutex_unlock(&s->mu);
}
