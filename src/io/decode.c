/*
 * decode.c: work on tensors as soon as their stored bytes have arrived, on worker threads, while the I/O
 * thread keeps reading: the XXH3 of the stored bytes the first time the process reads the tensor, then,
 * for lz4 tensors, one piece of work per chunk (chunks are independent, so several workers decode one
 * tensor at once). A tensor's decode starts only after its checksum passed, so the decoder never sees
 * bytes that failed verification. Workers take the stream's mutex only to claim and finish work.
 */
#include <errno.h>
#include <stdlib.h>
#include <xxhash.h>

#include "stream_internal.h"

static void queue(struct io_stream *s, struct task *t)
{
	t->claimed = t->finished = 0;
	t->next = NULL;
	*s->task_tail = t;
	s->task_tail = &t->next;
	pthread_cond_signal(&s->work_cv);
}

/* Sets up the decode of an lz4 tensor; false (and the load failed) when its footer is corrupt. */
static bool decode_task(struct io_stream *s, struct load *ld, struct task *t)
{
	const struct layout_tensor *lt = &layout_unit_get(s->m, ld->unit)->tensors[t->tensor];
	t->verify = false;
	if (layout_lz4_parse(ld->buf + s->maps[ld->unit].src[t->tensor], lt->bytes, lt->raw_bytes, &t->lz)) {
		load_fail(ld, -EBADMSG, "%s/%s: tensor %s: corrupt lz4 table", s->m->dir, s->m->files[lt->file].name,
			  lt->name);
		return false;
	}
	t->n = t->lz.n_chunks;
	return true;
}

void tensor_arrived(struct io_stream *s, struct load *ld, int i)
{
	const struct layout_tensor *lt = &layout_unit_get(s->m, ld->unit)->tensors[i];
	struct task *t = &ld->task[i];
	t->ld = ld;
	t->tensor = i;
	if (!s->verified[ld->unit][i]) {
		t->verify = true;
		t->n = 1;
	} else if (lt->comp != LAYOUT_COMP_LZ4 || !decode_task(s, ld, t)) {
		return;
	}
	ld->tasks++;
	queue(s, t);
}

/* XXH3 of a tensor's stored bytes in a unit's buffer: a strided one's experts in order. */
static uint64_t tensor_hash(const uint8_t *src, const struct layout_tensor *lt)
{
	if (!lt->stride)
		return XXH3_64bits(src, lt->bytes);
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return ~lt->xxh3; /* a mismatch: the load fails rather than use unchecked bytes */
	XXH3_64bits_reset(st);
	uint64_t per = lt->bytes / (uint64_t)lt->shape[0];
	for (int64_t e = 0; e < lt->shape[0]; e++)
		XXH3_64bits_update(st, src + (uint64_t)e * lt->stride, per);
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

static int run_piece(struct worker *w, struct task *t, uint32_t piece, uint64_t *decoded)
{
	struct io_stream *s = w->s;
	struct load *ld = t->ld;
	const struct layout_tensor *lt = &layout_unit_get(s->m, ld->unit)->tensors[t->tensor];
	const uint8_t *src = ld->buf + s->maps[ld->unit].src[t->tensor];
	if (t->verify)
		return tensor_hash(src, lt) == lt->xxh3 ? 0 : -EBADMSG;
	uint64_t so, sl, d, dl;
	layout_lz4_chunk(&t->lz, piece, &so, &sl, &d, &dl);
	if (w->scratch_cap < t->lz.chunk_raw) {
		free(w->scratch);
		w->scratch = malloc(t->lz.chunk_raw);
		w->scratch_cap = w->scratch ? t->lz.chunk_raw : 0;
		if (!w->scratch)
			return -ENOMEM;
	}
	*decoded = dl;
	return layout_lz4_decode_chunk(&w->dctx, src + so, sl, ld->buf + s->maps[ld->unit].dst[t->tensor] + d, dl,
				       t->lz.width, w->scratch);
}

/* A task's last piece is done: mark the checksum, chain the decode, or finish. */
static void finish_task(struct io_stream *s, struct task *t)
{
	struct load *ld = t->ld;
	const struct layout_tensor *lt = &layout_unit_get(s->m, ld->unit)->tensors[t->tensor];
	if (t->verify && ld->rc == 0 && !ld->cancelled) {
		s->verified[ld->unit][t->tensor] = 1;
		if (lt->comp == LAYOUT_COMP_LZ4 && decode_task(s, ld, t)) {
			queue(s, t);
			return;
		}
	}
	ld->tasks--;
	load_check(s, ld);
}

void *decode_worker(void *arg)
{
	struct worker *w = arg;
	struct io_stream *s = w->s;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->task_head && !s->workers_stop)
			pthread_cond_wait(&s->work_cv, &s->mu);
		if (s->workers_stop)
			break;
		struct task *t = s->task_head;
		uint32_t piece = t->claimed++;
		if (t->claimed == t->n) {
			s->task_head = t->next;
			if (!s->task_head)
				s->task_tail = &s->task_head;
		}
		struct load *ld = t->ld;
		int rc = 0;
		uint64_t decoded = 0;
		if (ld->rc == 0 && !ld->cancelled) { /* else the work is dropped; the load only drains */
			pthread_mutex_unlock(&s->mu);
			rc = run_piece(w, t, piece, &decoded);
			pthread_mutex_lock(&s->mu);
		}
		s->st.bytes_decoded += decoded;
		if (rc) {
			const struct layout_tensor *lt = &layout_unit_get(s->m, ld->unit)->tensors[t->tensor];
			const char *why = rc == -ENOMEM ? "out of memory for decoding"
					  : t->verify ? "checksum mismatch (corrupt data)"
						      : "corrupt lz4 data";
			load_fail(ld, rc, "%s/%s: tensor %s: %s", s->m->dir, s->m->files[lt->file].name, lt->name, why);
		}
		if (++t->finished == t->n)
			finish_task(s, t);
	}
	pthread_mutex_unlock(&s->mu);
	layout_lz4_free_dctx(w->dctx);
	free(w->scratch);
	return NULL;
}
