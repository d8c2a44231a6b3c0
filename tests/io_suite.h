/*
 * io_suite.h: the layer streamer's tests, run once per reader (test_io_pread.c, test_io_uring.c define
 * SUITE_READER and include this). A generated model (two variants: raw, and lz4 with some tensors
 * compressed and some left raw because they do not compress; every layer with expert-major stacked experts,
 * whose slices arrive request by request) is streamed many times with random slot
 * counts, prefetch depths, RAM budgets, request sizes and access orders; every acquired tensor must hash
 * to what was written. Then faults through the test hook (short reads, EIO mid-layer, a file truncated
 * after open, a corrupted byte) must each give their error naming the file or tensor, and the stream must
 * go on with other units; cancelling and closing mid-flight must drain everything (ASan checks leaks).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "check.h"
#include "io/fault.h"
#include "layout/layout.h"
#include "io/stream.h"

#define N_LAYERS 6
#define N_UNITS (N_LAYERS + 1)
#define D 256
#define F 512
#define V 512

static char root[256];
static uint64_t want_hash[N_UNITS][LAYOUT_UNIT_MAX_TENSORS]; /* XXH3 of each tensor's decoded bytes */
static unsigned rng_state = 12345;

static unsigned rnd(unsigned n)
{
	rng_state = rng_state * 1103515245u + 12345u;
	return (rng_state >> 8) % n;
}

/* Compressible tensors draw from 16 values (like quantized weights); the others are noise. */
static void gen(uint8_t *b, size_t n, int elem, bool compressible, unsigned seed)
{
	for (size_t i = 0; i < n; i += (size_t)elem) {
		seed = seed * 1664525u + 1013904223u;
		uint32_t x = seed ^ seed >> 16; /* an LCG's low bits repeat: mix them before use as noise */
		x *= 0x7feb352du;
		x ^= x >> 15;
		x *= 0x846ca68bu;
		x ^= x >> 16;
		uint32_t v = compressible ? 0x3c00u + ((seed >> 12) & 15u) * 0x11u : x;
		memcpy(b + i, &v, (size_t)elem);
	}
}

struct spec {
	const char *name;
	int fmt, ndim;
	int64_t r, c;
	bool compressible;
};

static const struct spec layer_tensors[] = {
	{"attn_norm.weight", WFMT_F32, 1, D, 0, true},   {"attn_q.weight", WFMT_BF16, 2, D, D, true},
	{"attn_k.weight", WFMT_BF16, 2, D / 2, D, false}, {"ffn_down.weight", WFMT_F16, 2, D, F, true},
	{"ffn_up.weight", WFMT_F32, 2, F, D, false},
};

static int add(struct layout_writer *w, const struct spec *sp, unsigned seed, uint64_t *hash)
{
	int64_t shape[2] = {sp->r, sp->c};
	int elem = wfmt_table[sp->fmt].block_bytes;
	size_t n = (size_t)(sp->ndim == 1 ? sp->r : sp->r * sp->c) * (size_t)elem;
	uint8_t *buf = malloc(n);
	gen(buf, n, elem, sp->compressible, seed);
	*hash = XXH3_64bits(buf, n);
	int rc = layout_writer_tensor_begin(w, sp->name, sp->fmt, sp->ndim, shape);
	rc = rc ? rc : layout_writer_tensor_write(w, buf, n / 3);
	rc = rc ? rc : layout_writer_tensor_write(w, buf + n / 3, n - n / 3);
	rc = rc ? rc : layout_writer_tensor_end(w);
	free(buf);
	return rc;
}

/* A layer's stacked experts, expert-major (layout_writer_experts): E = 3 experts of gate/up [40, D] F16 and
 * down [D, 40] BF16, so every request size cuts through experts and their strides. */
#define N_EXP 3
static const struct spec expert_tensors[] = {
	{"ffn_gate_exps.weight", WFMT_F16, 3, 40, D, true},
	{"ffn_up_exps.weight", WFMT_F16, 3, 40, D, false},
	{"ffn_down_exps.weight", WFMT_BF16, 3, D, 40, true},
};

static int add_experts(struct layout_writer *w, unsigned seed, uint64_t *hash)
{
	const char *names[3];
	int fmts[3];
	int64_t shapes[3][3];
	for (int i = 0; i < 3; i++) {
		names[i] = expert_tensors[i].name;
		fmts[i] = expert_tensors[i].fmt;
		shapes[i][0] = N_EXP;
		shapes[i][1] = expert_tensors[i].r;
		shapes[i][2] = expert_tensors[i].c;
	}
	int rc = layout_writer_experts(w, 3, names, fmts, (const int64_t(*)[3])shapes);
	for (int i = 0; !rc && i < 3; i++) {
		size_t n = (size_t)(N_EXP * shapes[i][1] * shapes[i][2]) * (size_t)wfmt_table[fmts[i]].block_bytes;
		uint8_t *buf = malloc(n);
		gen(buf, n, wfmt_table[fmts[i]].block_bytes, expert_tensors[i].compressible, seed + (unsigned)i);
		hash[i] = XXH3_64bits(buf, n);
		rc = layout_writer_tensor_begin(w, names[i], fmts[i], 3, shapes[i]);
		rc = rc ? rc : layout_writer_tensor_write(w, buf, n / 3);
		rc = rc ? rc : layout_writer_tensor_write(w, buf + n / 3, n - n / 3);
		rc = rc ? rc : layout_writer_tensor_end(w);
		free(buf);
	}
	return rc;
}

static void hparams(struct layout_hparams *hp, int *win)
{
	*hp = (struct layout_hparams){.n_layers = N_LAYERS, .d_model = D, .n_heads = 4, .n_kv_heads = 2, .head_dim = 64,
				      .ffn_dim = F, .vocab = V, .max_pos = 64, .rms_eps = 1e-5, .tied_embeddings = true,
				      .window = win, .bos_id = 1, .n_eos = 1, .eos_ids = {2}};
	strcpy(hp->arch, "llama");
	hp->rope = (struct rope_params){.theta = 10000, .dim = 64, .factor = 1};
}

static int write_model(const char *out, bool lz4)
{
	char err[512];
	struct layout_writer *w;
	int rc = layout_writer_begin(&w, out, true, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "writer: %s\n", err);
		return rc;
	}
	int win[N_LAYERS] = {0};
	struct layout_hparams hp;
	hparams(&hp, win);
	uint64_t embed_hash;
	static const struct spec embed = {"token_embd.weight", WFMT_BF16, 2, V, D, true}, norm = {"output_norm.weight",
												    WFMT_F32, 1, D, 0, true};
	rc = layout_writer_set_lz4(w, lz4);
	rc = rc ? rc : layout_writer_file_begin(w, LAYOUT_KIND_EMBED, -1);
	rc = rc ? rc : add(w, &embed, 1, &embed_hash);
	rc = rc ? rc : layout_writer_file_end(w);
	for (int l = 0; !rc && l < N_LAYERS; l++) {
		rc = layout_writer_file_begin(w, LAYOUT_KIND_LAYER, l);
		int nt = (int)(sizeof(layer_tensors) / sizeof(layer_tensors[0]));
		for (int i = 0; !rc && i < nt; i++)
			rc = add(w, &layer_tensors[i], (unsigned)(100 * l + i), &want_hash[l][i]);
		rc = rc ? rc : add_experts(w, (unsigned)(100 * l + 50), &want_hash[l][nt]);
		rc = rc ? rc : layout_writer_file_end(w);
	}
	rc = rc ? rc : layout_writer_file_begin(w, LAYOUT_KIND_HEAD, -1);
	rc = rc ? rc : add(w, &norm, 7, &want_hash[N_LAYERS][0]);
	rc = rc ? rc : layout_writer_alias(w, "output.weight", -1, "token_embd.weight");
	want_hash[N_LAYERS][1] = embed_hash;
	rc = rc ? rc : layout_writer_file_end(w);
	if (rc) {
		fprintf(stderr, "writer: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
		return rc;
	}
	rc = layout_writer_finish(w, &hp, NULL);
	if (rc) {
		fprintf(stderr, "finish: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
	}
	return rc;
}

static void model_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", root, name);
}

static int open_model(struct layout *m, const char *name)
{
	char dir[512], err[512];
	model_path(dir, sizeof(dir), name);
	int rc = layout_open(m, dir, err, sizeof(err));
	CHECK_MSG(rc == 0, "%s", err);
	return rc;
}

/* XXH3 of a tensor's decoded bytes in a unit's buffer (an expert-major one's experts in order). */
static uint64_t strided_hash(const void *p, const struct layout_tensor *t)
{
	if (!t->stride)
		return XXH3_64bits(p, t->raw_bytes);
	XXH3_state_t *st = XXH3_createState();
	XXH3_64bits_reset(st);
	for (int64_t e = 0; e < t->shape[0]; e++)
		XXH3_64bits_update(st, (const char *)p + (uint64_t)e * t->stride, t->bytes / (uint64_t)t->shape[0]);
	uint64_t h = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	return h;
}

static bool unit_ok(const struct layout *m, int unit, void *const *ptrs)
{
	const struct layout_unit *u = layout_unit_get(m, unit);
	for (int i = 0; i < u->n_tensors; i++)
		if (strided_hash(ptrs[i], &u->tensors[i]) != want_hash[unit][i]) {
			fprintf(stderr, "unit %d tensor %s: decoded bytes differ from what was written\n", unit,
				u->tensors[i].name);
			return false;
		}
	return true;
}

static void base_opts(struct io_opts *o)
{
	io_opts_default(o);
	o->reader = SUITE_READER;
	o->n_workers = 2;
}

/* The written lz4 model really mixes compressed and raw tensors, and inspect's decoder agrees. */
static void test_lz4_layout(void)
{
	struct layout m;
	if (open_model(&m, "lz4.ferry"))
		return;
	int n_lz4 = 0, n_raw = 0;
	for (int u = -1; u < N_UNITS; u++) {
		const struct layout_unit *un = layout_unit_get(&m, u);
		for (int i = 0; i < un->n_tensors; i++) {
			const struct layout_tensor *t = &un->tensors[i];
			n_lz4 += t->comp == LAYOUT_COMP_LZ4;
			n_raw += t->comp == LAYOUT_COMP_NONE;
			CHECK(t->offset % LAYOUT_ALIGN == 0);
			CHECK(u >= 0 || t->comp == LAYOUT_COMP_NONE); /* embedding rows are read in place */
			if (t->comp == LAYOUT_COMP_LZ4 && u >= 0) {
				CHECK((double)t->bytes <= 0.9 * (double)t->raw_bytes);
				uint8_t *st = malloc(t->bytes), *raw = malloc(t->raw_bytes);
				char err[512];
				CHECK(layout_tensor_read(&m, t, st, err, sizeof(err)) == 0);
				CHECK(layout_lz4_decode(st, t->bytes, t->raw_bytes, raw) == 0);
				CHECK(XXH3_64bits(raw, t->raw_bytes) == want_hash[u][i]);
				free(st);
				free(raw);
			}
		}
	}
	CHECK_MSG(n_lz4 >= N_LAYERS && n_raw >= N_LAYERS, "%d lz4, %d raw tensors", n_lz4, n_raw);
	char err[512];
	CHECK(layout_verify(&m, NULL, NULL, err, sizeof(err)) == 0);
	layout_close(&m);
}

/* Stays "not done" for a few polls, like a GPU event that has not passed yet. */
static bool slow_done(void *ctx)
{
	int *polls = ctx;
	return ++*polls >= 3;
}

static void test_random_streaming(int rounds)
{
	struct layout models[2];
	if (open_model(&models[0], "raw.ferry") || open_model(&models[1], "lz4.ferry"))
		return;
	uint64_t unit_bytes = io_unit_slot_bytes(&models[1], 0), total = 0;
	for (int u = 0; u < N_UNITS; u++)
		total += io_unit_slot_bytes(&models[1], u);
	int polls[N_UNITS];
	struct io_stats sum = {0}; /* the rounds together must have covered every path */
	int partial_tier = 0, no_tier = 0;
	for (int round = 0; round < rounds; round++) {
		const struct layout *m = &models[round % 2];
		struct io_opts o;
		base_opts(&o);
		static const int64_t rams[] = {-1, 0, 1, 2, 4};
		int64_t pick = rams[rnd(6) % 5];
		o.ram = pick < 0 ? -1 : pick == 4 ? (int64_t)total * 2 : pick * (int64_t)unit_bytes * 2;
		o.n_slots = (int)rnd(5) - 1; /* -1 auto, 0..3 */
		o.prefetch = (int)rnd(4);
		o.depth = 1 + (int)rnd(8);
		o.req_bytes = 4096u << rnd(6);
		o.buffered = rnd(4) == 0;
		o.n_workers = 1 + (int)rnd(3);
		struct io_stream *s;
		char err[512];
		int rc = io_stream_open(&s, m, &o, err, sizeof(err));
		CHECK_MSG(rc == 0, "round %d: %s", round, err);
		if (rc)
			continue;
		struct io_stats st;
		io_stream_stats(s, &st);
		for (int step = 0; step < 3 * N_UNITS; step++) {
			int u = rnd(5) == 0 ? (int)rnd(N_UNITS) : step % N_UNITS; /* mostly cyclic, sometimes anywhere */
			void *const *p;
			rc = io_unit_acquire(s, u, &p, err, sizeof(err));
			CHECK_MSG(rc == 0, "round %d step %d unit %d: %s", round, step, u, err);
			if (rc)
				break;
			CHECK_MSG(unit_ok(m, u, p), "round %d step %d unit %d (%d slots, %d tier units, ram %lld)", round, step, u,
				  st.n_slots, st.tier_units, (long long)o.ram);
			/* sometimes hold a second unit at once, when a slot is free for it */
			int u2 = (u + 1) % N_UNITS;
			void *const *p2;
			bool two = st.n_slots >= 2 && rnd(4) == 0;
			if (two) {
				rc = io_unit_acquire(s, u2, &p2, err, sizeof(err));
				CHECK_MSG(rc == 0 && unit_ok(m, u2, p2), "round %d: second unit %d: %s", round, u2, rc ? err : "");
				if (!rc)
					io_unit_release(s, u2);
			}
			if (rnd(3) == 0) {
				polls[u] = 0;
				io_unit_release_after(s, u, slow_done, &polls[u]);
			} else {
				io_unit_release(s, u);
			}
		}
		io_stream_stats(s, &st);
		CHECK(st.n_acquire >= 3 * N_UNITS && st.bytes_read > 0);
		CHECK(st.tier_units == N_UNITS || st.n_slots >= 1);
		sum.bytes_decoded += st.bytes_decoded;
		sum.bytes_tier += st.bytes_tier;
		sum.bytes_reused += st.bytes_reused;
		partial_tier += st.tier_units > 0 && st.tier_units < N_UNITS;
		no_tier += st.tier_units == 0;
		io_stream_close(s);
	}
	CHECK_MSG(sum.bytes_decoded && sum.bytes_tier && sum.bytes_reused && partial_tier && no_tier,
		  "decoded %llu, tier %llu, reused %llu bytes; %d rounds with a partial tier, %d with none",
		  (unsigned long long)sum.bytes_decoded, (unsigned long long)sum.bytes_tier,
		  (unsigned long long)sum.bytes_reused, partial_tier, no_tier);
	layout_close(&models[0]);
	layout_close(&models[1]);
}

/* ---- faults ---- */

struct fault {
	const char *file; /* only reads of this file; NULL: any */
	int mode;         /* 0 short, 1 EIO, 2 corrupt, 3 delay */
	uint64_t at;      /* EIO/corrupt: the read that covers this file offset */
	int count;
};

static void fault_hook(const struct io_fault_read *r, int *res, void *ctx)
{
	struct fault *f = ctx;
	if (f->file && strcmp(r->file, f->file))
		return;
	bool covers = f->at >= r->off && f->at < r->off + r->len;
	if (f->mode == 0 && *res > 1 && f->count++ % 2 == 0)
		*res = *res / 2 + 1; /* an odd count: the rest is re-queued unaligned */
	else if (f->mode == 1 && covers && *res > 0)
		*res = -EIO, f->count++;
	else if (f->mode == 2 && covers && *res > (int)(f->at - r->off))
		r->buf[f->at - r->off] ^= 0x20, f->count++;
	else if (f->mode == 3)
		usleep(2000);
}

static struct io_stream *open_stream(const struct layout *m, int64_t ram, int n_slots)
{
	struct io_opts o;
	base_opts(&o);
	o.ram = ram;
	o.n_slots = n_slots;
	o.req_bytes = 64 << 10;
	o.depth = 4;
	struct io_stream *s = NULL;
	char err[512];
	int rc = io_stream_open(&s, m, &o, err, sizeof(err));
	CHECK_MSG(rc == 0, "%s", err);
	return s;
}

static void pass(struct io_stream *s, const struct layout *m, const char *what)
{
	char err[512];
	for (int u = 0; u < N_UNITS; u++) {
		void *const *p;
		int rc = io_unit_acquire(s, u, &p, err, sizeof(err));
		CHECK_MSG(rc == 0 && unit_ok(m, u, p), "%s: unit %d: %s", what, u, rc ? err : "wrong bytes");
		if (!rc)
			io_unit_release(s, u);
	}
}

static void test_short_reads(const char *model)
{
	struct layout m;
	if (open_model(&m, model))
		return;
	struct fault f = {.mode = 0};
	io_fault_set(fault_hook, &f);
	struct io_stream *s = open_stream(&m, -1, 2);
	if (s) {
		pass(s, &m, "short reads");
		pass(s, &m, "short reads, second pass");
		struct io_stats st;
		io_stream_stats(s, &st);
		CHECK_MSG(st.n_short > 10, "%llu short reads", (unsigned long long)st.n_short);
		io_stream_close(s);
	}
	io_fault_set(NULL, NULL);
	layout_close(&m);
}

static void expect_error(struct io_stream *s, int unit, int want_rc, const char *w1, const char *w2)
{
	void *const *p;
	char err[512] = "";
	int rc = io_unit_acquire(s, unit, &p, err, sizeof(err));
	CHECK_MSG(rc == want_rc && strstr(err, w1) && strstr(err, w2), "unit %d: rc %d (want %d): %s", unit, rc, want_rc,
		  err);
	if (rc == 0)
		io_unit_release(s, unit);
}

static void test_eio(const char *model)
{
	struct layout m;
	if (open_model(&m, model))
		return;
	const struct layout_tensor *t = &m.layers[2].tensors[3];
	struct fault f = {.file = "layer.002.bin", .mode = 1, .at = t->offset + t->bytes / 2};
	io_fault_set(fault_hook, &f);
	struct io_stream *s = open_stream(&m, -1, 2);
	if (s) {
		for (int u = 0; u < 2; u++)
			expect_error(s, u, 0, "", "");
		expect_error(s, 2, -EIO, "layer.002.bin", "Input/output error");
		CHECK(f.count > 0);
		expect_error(s, 3, 0, "", ""); /* the stream goes on with other files */
		io_fault_set(NULL, NULL);
		pass(s, &m, "after EIO");       /* and reads layer 2 again once the disk is fine */
		io_stream_close(s);
	}
	io_fault_set(NULL, NULL);
	layout_close(&m);
}

static void test_corrupt(const char *model)
{
	struct layout m;
	if (open_model(&m, model))
		return;
	const struct layout_tensor *t = &m.layers[1].tensors[1]; /* attn_q.weight: lz4 in the lz4 model */
	struct fault f = {.file = "layer.001.bin", .mode = 2, .at = t->offset + 10};
	io_fault_set(fault_hook, &f);
	struct io_stream *s = open_stream(&m, -1, 1);
	if (s) {
		expect_error(s, 1, -EBADMSG, "layer.001.bin", "attn_q.weight");
		io_fault_set(NULL, NULL);
		pass(s, &m, "after a corrupt read"); /* not marked verified: checked again, now fine */
		io_stream_close(s);
	}
	io_fault_set(NULL, NULL);
	layout_close(&m);
}

static void test_truncated(const char *model)
{
	char src[512], dst[512], cmd[2048], path[600];
	model_path(src, sizeof(src), model);
	model_path(dst, sizeof(dst), "trunc.ferry");
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
	CHECK(system(cmd) == 0);
	struct layout m;
	if (open_model(&m, "trunc.ferry"))
		return;
	struct io_stream *s = open_stream(&m, -1, 2);
	snprintf(path, sizeof(path), "%s/layer.004.bin", dst);
	CHECK(truncate(path, (off_t)m.layers[4].tensors[2].offset) == 0); /* after open: the reads find it short */
	if (s) {
		expect_error(s, 4, -EIO, "layer.004.bin", "truncated");
		expect_error(s, 5, 0, "", "");
		expect_error(s, 0, 0, "", "");
		expect_error(s, 4, -EIO, "layer.004.bin", "truncated");
		io_stream_close(s);
	}
	layout_close(&m);
}

static void test_cancel(const char *model)
{
	struct layout m;
	if (open_model(&m, model))
		return;
	struct fault f = {.mode = 3}; /* slow reads: plenty in flight */
	io_fault_set(fault_hook, &f);
	for (int round = 0; round < 4; round++) {
		struct io_stream *s = open_stream(&m, round % 2 ? 1 << 20 : -1, 3);
		if (!s)
			continue;
		if (round >= 2) { /* close with prefetch in flight */
			io_stream_close(s);
			continue;
		}
		void *const *p;
		char err[512];
		CHECK(io_unit_acquire(s, 0, &p, err, sizeof(err)) == 0);
		io_stream_cancel(s);
		struct io_stats st;
		io_stream_stats(s, &st);
		CHECK_MSG(st.in_flight == 0, "%d requests in flight after cancel", st.in_flight);
		CHECK(unit_ok(&m, 0, p)); /* a held unit survives a cancel */
		io_unit_release(s, 0);
		pass(s, &m, "after cancel");
		io_stream_close(s);
	}
	io_fault_set(NULL, NULL);
	layout_close(&m);
}

static int suite_main(void)
{
	alarm(300); /* a hang fails the test instead of the runner's timeout */
	snprintf(root, sizeof(root), "/var/tmp/ferry_test_io_XXXXXX"); /* a disk file system: O_DIRECT */
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	char dir[512];
	model_path(dir, sizeof(dir), "raw.ferry");
	CHECK(write_model(dir, false) == 0);
	model_path(dir, sizeof(dir), "lz4.ferry");
	CHECK(write_model(dir, true) == 0);
	test_lz4_layout();
	test_random_streaming(24);
	for (int i = 0; i < 2; i++) {
		const char *model = i ? "lz4.ferry" : "raw.ferry";
		test_short_reads(model);
		test_eio(model);
		test_corrupt(model);
		test_truncated(model);
		test_cancel(model);
	}
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", root);
	CHECK_DONE();
}
