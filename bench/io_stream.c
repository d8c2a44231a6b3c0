/*
 * io_stream.c: the layer streamer against this machine's floors (`make bench-io ARGS="..."`; results in
 * bench/RESULTS.md). Builds a model-sized file set once (bf16 layers of --layer bytes, --size in all; a
 * second, lz4-compressed set of --size/4), drops the page cache when permitted, and prints each figure with
 * its floor and their ratio:
 *   disk floor      raw io_uring O_DIRECT reads of the layer files, depth x request grid (32, 64 x 1, 4 MiB)
 *                   or the given --qd/--req: the best the disk allows; nothing of ferry's. A virtual disk
 *                   drifts, so each figure below is compared with the mean of two raw reads at the best
 *                   setting taken right before and right after it
 *   stream          ferry's streamer, no RAM tier, a consumer that takes each unit and gives it back at once,
 *                   steady passes (checksums are checked on the first pass only): floor = disk floor
 *   stream + tier   RAM tier holding half the units: floor = all bytes / (streamed bytes / disk floor)
 *   tier -> GPU     cudaMemcpy from RAM-tier buffers (cudaHostAlloc) vs from a fresh cudaHostAlloc buffer of
 *                   the same size (CUDA builds with a GPU only)
 *   lz4 stream      raw bytes delivered per second from the lz4 set: floor = min(disk floor x raw/stored,
 *                   workers x one core's decode rate)
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <liburing.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/xorshift.h"
#include "layout/layout.h"
#include "io/stream.h"
#ifdef FERRY_CUDA
#include "kernels/cuda/cuda_probe.h"
#endif

#define MIB (1ull << 20)
#define GB 1e9
#define D 4096
#define POOL (64 * MIB) /* random bf16 values, written again and again at shifting offsets */

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static uint8_t *pool;

/* Gaussian-like bf16 (sum of four uniforms), std 0.02: what trained weights look like to lz4. */
static void make_pool(void)
{
	pool = malloc(POOL);
#pragma omp parallel for
	for (long blk = 0; blk < (long)(POOL / MIB); blk++) {
		uint64_t x = 0x9e3779b97f4a7c15ull * (uint64_t)(blk + 1);
		uint16_t *p = (uint16_t *)(pool + (uint64_t)blk * MIB);
		for (size_t i = 0; i < MIB / 2; i++) {
			float s = 0;
			for (int k = 0; k < 4; k++) {
				xorshift64(&x);
				s += (float)(x >> 40) / (float)(1 << 24);
			}
			float v = (s - 2.0f) * 0.02f * 1.732f;
			uint32_t u;
			memcpy(&u, &v, 4);
			p[i] = (uint16_t)(u >> 16);
		}
	}
}

static int add(struct layout_writer *w, const char *name, int fmt, int ndim, int64_t r, int64_t c, uint64_t *shift)
{
	int64_t shape[2] = {r, c};
	uint64_t n = layout_tensor_nbytes(fmt, ndim, shape);
	int rc = layout_writer_tensor_begin(w, name, fmt, ndim, shape);
	for (uint64_t done = 0; !rc && done < n;) {
		uint64_t at = (*shift + done) % POOL, k = n - done < POOL - at ? n - done : POOL - at;
		k = k < 16 * MIB ? k : 16 * MIB;
		rc = layout_writer_tensor_write(w, pool + at, k);
		done += k;
	}
	*shift += 12345 * 4096 + 2;
	return rc ? rc : layout_writer_tensor_end(w);
}

/* A Llama-shaped model of n_layers layers of about layer_bytes (bf16, D = 4096, F to fit). */
static int write_set(const char *dir, int n_layers, int64_t F, bool lz4)
{
	char err[512];
	struct layout_writer *w;
	fprintf(stderr, "io_stream: writing %s (%d layers%s)\n", dir, n_layers, lz4 ? ", lz4" : "");
	int rc = layout_writer_begin(&w, dir, true, err, sizeof(err));
	if (rc) {
		fprintf(stderr, "io_stream: %s\n", err);
		return rc;
	}
	int *win = calloc((size_t)n_layers, sizeof(int));
	struct layout_hparams hp = {.n_layers = n_layers, .d_model = D, .n_heads = 32, .n_kv_heads = 8, .head_dim = 128,
				    .ffn_dim = (int)F, .vocab = 8192, .max_pos = 4096, .rms_eps = 1e-5,
				    .tied_embeddings = true, .window = win, .bos_id = 1, .n_eos = 1, .eos_ids = {2}};
	strcpy(hp.arch, "llama");
	hp.rope = (struct rope_params){.theta = 10000, .dim = 128, .factor = 1};
	uint64_t shift = 0;
	rc = layout_writer_set_lz4(w, lz4);
	rc = rc ? rc : layout_writer_file_begin(w, LAYOUT_KIND_EMBED, -1);
	rc = rc ? rc : add(w, "token_embd.weight", WFMT_BF16, 2, 8192, D, &shift);
	rc = rc ? rc : layout_writer_file_end(w);
	for (int l = 0; !rc && l < n_layers; l++) {
		rc = layout_writer_file_begin(w, LAYOUT_KIND_LAYER, l);
		rc = rc ? rc : add(w, "attn_norm.weight", WFMT_F32, 1, D, 0, &shift);
		rc = rc ? rc : add(w, "attn_q.weight", WFMT_BF16, 2, D, D, &shift);
		rc = rc ? rc : add(w, "ffn_up.weight", WFMT_BF16, 2, F, D, &shift);
		rc = rc ? rc : add(w, "ffn_down.weight", WFMT_BF16, 2, D, F, &shift);
		rc = rc ? rc : layout_writer_file_end(w);
	}
	rc = rc ? rc : layout_writer_file_begin(w, LAYOUT_KIND_HEAD, -1);
	rc = rc ? rc : add(w, "output_norm.weight", WFMT_F32, 1, D, 0, &shift);
	rc = rc ? rc : layout_writer_alias(w, "output.weight", -1, "token_embd.weight");
	rc = rc ? rc : layout_writer_file_end(w);
	if (rc) {
		fprintf(stderr, "io_stream: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
	} else if ((rc = layout_writer_finish(w, &hp, NULL))) {
		fprintf(stderr, "io_stream: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
	}
	free(win);
	return rc;
}

/* Opens dir when it holds a set of this shape, else (re)writes it. */
static int get_set(struct layout *m, const char *dir, int n_layers, int64_t F, bool lz4)
{
	char err[512];
	if (layout_open(m, dir, err, sizeof(err)) == 0) {
		if (m->hp.n_layers == n_layers && m->hp.ffn_dim == F)
			return 0;
		layout_close(m);
	}
	int rc = write_set(dir, n_layers, F, lz4);
	if (!rc && (rc = layout_open(m, dir, err, sizeof(err))))
		fprintf(stderr, "io_stream: %s\n", err);
	return rc;
}

static void mkdir_p(const char *dir)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s", dir);
	for (char *c = p + 1; *c; c++)
		if (*c == '/') {
			*c = 0;
			mkdir(p, 0755);
			*c = '/';
		}
	mkdir(p, 0755);
}

static bool drop_caches(void)
{
	sync();
	int fd = open("/proc/sys/vm/drop_caches", O_WRONLY);
	bool ok = fd >= 0 && write(fd, "1", 1) == 1;
	if (fd >= 0)
		close(fd);
	return ok;
}

/* Raw io_uring O_DIRECT reads of the streamed files (layers, head), qd requests of req bytes in flight into
 * registered buffers (as ferry's slots are), nothing else: GB/s, or -1 when io_uring or O_DIRECT is
 * unavailable. */
static double raw_uring(const struct layout *m, int qd, uint64_t req)
{
	struct io_uring ring;
	if (io_uring_queue_init((unsigned)qd, &ring, 0) < 0)
		return -1;
	uint8_t *buf;
	if (posix_memalign((void **)&buf, 4096, (size_t)qd * req)) {
		io_uring_queue_exit(&ring);
		return -1;
	}
	int nf = 0, fds[m->n_files];
	uint64_t sizes[m->n_files];
	for (int i = 0; i < m->n_files; i++) {
		if (m->files[i].kind == LAYOUT_KIND_EMBED)
			continue;
		char path[4096];
		layout_file_path(m, i, path, sizeof(path));
		fds[nf] = open(path, O_RDONLY | O_DIRECT);
		sizes[nf] = m->files[i].bytes;
		if (fds[nf] >= 0)
			nf++;
	}
	int file = 0, inflight = 0, free_slot[qd], n_free = qd;
	struct iovec iov[qd];
	for (int i = 0; i < qd; i++) {
		free_slot[i] = i;
		iov[i] = (struct iovec){buf + (uint64_t)i * req, req};
	}
	bool fixed = io_uring_register_buffers(&ring, iov, (unsigned)qd) == 0;
	uint64_t off = 0, bytes = 0;
	bool failed = false;
	double t0 = now();
	while (!failed && (file < nf || inflight)) {
		while (file < nf && n_free) {
			int s = free_slot[--n_free];
			uint64_t len = sizes[file] - off < req ? sizes[file] - off : req;
			struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
			if (fixed)
				io_uring_prep_read_fixed(sqe, fds[file], buf + (uint64_t)s * req, (unsigned)len, off, s);
			else
				io_uring_prep_read(sqe, fds[file], buf + (uint64_t)s * req, (unsigned)len, off);
			io_uring_sqe_set_data64(sqe, (uint64_t)s);
			inflight++;
			off += len;
			if (off == sizes[file])
				file++, off = 0;
		}
		struct io_uring_cqe *cqe;
		if (io_uring_submit_and_wait(&ring, 1) < 0)
			break;
		unsigned head, n = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			failed |= cqe->res <= 0;
			bytes += cqe->res > 0 ? (uint64_t)cqe->res : 0;
			free_slot[n_free++] = (int)io_uring_cqe_get_data64(cqe);
			inflight--;
			n++;
		}
		io_uring_cq_advance(&ring, n);
	}
	double t = now() - t0;
	for (int i = 0; i < nf; i++)
		close(fds[i]);
	io_uring_queue_exit(&ring);
	free(buf);
	return failed || nf == 0 ? -1 : (double)bytes / t / GB;
}

static uint64_t units_bytes(const struct layout *m, bool raw)
{
	uint64_t n = 0;
	for (int u = 0; u <= m->hp.n_layers; u++) {
		const struct layout_unit *un = layout_unit_get(m, u);
		for (int i = 0; i < un->n_tensors; i++)
			n += raw ? un->tensors[i].raw_bytes : un->tensors[i].bytes;
	}
	return n;
}

/* Seconds of n cyclic passes over every unit (acquire, release), back to back. */
static double passes(struct io_stream *s, const struct layout *m, int n)
{
	char err[512];
	double t0 = now();
	for (int k = 0; k < n * (m->hp.n_layers + 1); k++) {
		int u = k % (m->hp.n_layers + 1);
		void *const *p;
		if (io_unit_acquire(s, u, &p, err, sizeof(err))) {
			fprintf(stderr, "io_stream: %s\n", err);
			exit(1);
		}
		io_unit_release(s, u);
	}
	return now() - t0;
}

/* Steady-state seconds per pass: a first pass (checksums, RAM tier filled), then n timed passes that follow
 * it without a break, so the prefetch in flight when timing starts matches the one when it stops. */
static double steady(struct io_stream *s, const struct layout *m, int n, double *first)
{
	*first = passes(s, m, 1);
	return passes(s, m, n) / n;
}

static void print_log(const char *msg, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "io_stream: io: %s\n", msg);
}

static struct io_stream *open_stream(const struct layout *m, int64_t ram, int qd, uint64_t req,
				     const struct io_host_alloc *ha)
{
	struct io_opts o;
	io_opts_default(&o);
	o.ram = ram;
	o.n_slots = ram < 0 ? 3 : -1;
	o.depth = qd;
	o.req_bytes = (uint32_t)req;
	o.host_alloc = ha;
	o.log = print_log;
	struct io_stream *s;
	char err[512];
	if (io_stream_open(&s, m, &o, err, sizeof(err))) {
		fprintf(stderr, "io_stream: %s\n", err);
		exit(1);
	}
	return s;
}

static void row(const char *what, double fig, double floor_, const char *unit)
{
	if (fig < 0 || floor_ <= 0)
		printf("| %-44s | %s | | |\n", what, fig < 0 ? "n/a" : "measured, no floor");
	else
		printf("| %-44s | %8.2f %s | %8.2f %s | %.2f |\n", what, fig, unit, floor_, unit, fig / floor_);
}

/* Single-core decode rate of lz4 tensors (GB/s of raw output), from memory. */
static double decode_rate(const struct layout *m)
{
	const struct layout_tensor *t = NULL;
	for (int i = 0; !t && i < m->layers[0].n_tensors; i++)
		if (m->layers[0].tensors[i].comp == LAYOUT_COMP_LZ4)
			t = &m->layers[0].tensors[i];
	if (!t)
		return -1;
	uint8_t *st = malloc(t->bytes), *raw = malloc(t->raw_bytes);
	char err[512];
	double best = -1;
	if (layout_tensor_read(m, t, st, err, sizeof(err)) == 0)
		for (int r = 0; r < 3; r++) {
			double t0 = now();
			if (layout_lz4_decode(st, t->bytes, t->raw_bytes, raw))
				break;
			double g = (double)t->raw_bytes / (now() - t0) / GB;
			best = g > best ? g : best;
		}
	free(st);
	free(raw);
	return best;
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {{"size", required_argument, 0, 's'}, {"dir", required_argument, 0, 'd'},
					   {"qd", required_argument, 0, 'q'},   {"req", required_argument, 0, 'r'},
					   {"layer", required_argument, 0, 'l'}, {"help", no_argument, 0, 'h'},
					   {0}};
	uint64_t size = 16ull << 30, layer = 256 * MIB, req_opt = 0;
	int qd_opt = 0, c;
	const char *dir = "models/io_bench";
	while ((c = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (c) {
		case 's': size = strtoull(optarg, NULL, 10) << (strchr(optarg, 'G') ? 30 : strchr(optarg, 'M') ? 20 : 0); break;
		case 'l': layer = strtoull(optarg, NULL, 10) << (strchr(optarg, 'M') ? 20 : 0); break;
		case 'd': dir = optarg; break;
		case 'q': qd_opt = atoi(optarg); break;
		case 'r': req_opt = strtoull(optarg, NULL, 10) << (strchr(optarg, 'M') ? 20 : strchr(optarg, 'K') ? 10 : 0); break;
		default:
			printf("usage: io_stream [--size 16G] [--dir models/io_bench] [--qd N] [--req 4M] [--layer 256M]\n");
			return c == 'h' ? 0 : 2;
		}
	}
	if (layer < 48 * MIB || size < 2 * layer) {
		fprintf(stderr, "io_stream: --layer must be >= 48M and --size >= 2 layers\n");
		return 2;
	}
	int64_t F = (int64_t)((layer - 2ull * D * D) / (4ull * D)) / 256 * 256;
	int n_layers = (int)(size / layer), n_lz4 = n_layers / 4 > 2 ? n_layers / 4 : 2;
	char raw_dir[4096], lz4_dir[4096];
	mkdir_p(dir);
	snprintf(raw_dir, sizeof(raw_dir), "%s/raw.ferry", dir);
	snprintf(lz4_dir, sizeof(lz4_dir), "%s/lz4.ferry", dir);
	make_pool();
	struct layout m, z;
	if (get_set(&m, raw_dir, n_layers, F, false) || get_set(&z, lz4_dir, n_lz4, F, true))
		return 1;
	free(pool);
	uint64_t total = units_bytes(&m, false);
	bool dropped = drop_caches();
	printf("io_stream: %d layers of %.0f MiB (%.2f GB streamed per pass) in %s; page cache %s\n", n_layers,
	       (double)io_unit_slot_bytes(&m, 0) / MIB, (double)total / GB, raw_dir,
	       dropped ? "dropped before each floor measurement" : "NOT dropped (not permitted; O_DIRECT bypasses it)");

	/* the disk floor */
	int qds[] = {32, 64}, best_qd = 32;
	uint64_t reqs[] = {1 * MIB, 4 * MIB}, best_req = 4 * MIB;
	double disk = -1;
	for (int i = 0; i < 2; i++)
		for (int j = 0; j < 2; j++) {
			int qd = qd_opt ? qd_opt : qds[i];
			uint64_t rq = req_opt ? req_opt : reqs[j];
			if ((qd_opt && i) || (req_opt && j))
				continue;
			drop_caches();
			double g = raw_uring(&m, qd, rq);
			printf("io_stream: raw io_uring O_DIRECT, depth %d, %llu KiB requests: %.2f GB/s\n", qd,
			       (unsigned long long)(rq >> 10), g);
			if (g > disk)
				disk = g, best_qd = qd, best_req = rq;
		}

	/* ferry, no tier: pass 1 checks checksums, then the steady state; at least 4 GB timed */
	int n_pass = (int)(4 * GB / (double)total) + 2;
	double d1 = raw_uring(&m, best_qd, best_req);
	struct io_stream *s = open_stream(&m, -1, best_qd, best_req, NULL);
	double t1, t2 = steady(s, &m, n_pass, &t1);
	struct io_stats st;
	io_stream_stats(s, &st);
	io_stream_close(s);
	printf("io_stream: ferry stream (%s, %d slots): first pass %.2f GB/s (with checksums), steady %.2f GB/s\n",
	       st.reader, st.n_slots, (double)total / t1 / GB, (double)total / t2 / GB);

	double d2 = raw_uring(&m, best_qd, best_req);
	/* ferry with half the units in the RAM tier */
	s = open_stream(&m, (int64_t)(total / 2 + 3 * io_unit_slot_bytes(&m, 0)), best_qd, best_req, NULL);
	double t3 = steady(s, &m, n_pass, &t1);
	io_stream_stats(s, &st);
	io_stream_close(s);
	uint64_t streamed = total - st.tier_bytes;
	double d3 = raw_uring(&m, best_qd, best_req);
	printf("io_stream: ferry stream + RAM tier: %d/%d units resident, %d slots\n", st.tier_units, st.n_units,
	       st.n_slots);

	/* RAM tier -> GPU */
	double gpu = -1, gpu_floor = -1;
#ifdef FERRY_CUDA
	char desc[256];
	if (cuda_probe(desc, sizeof(desc)) > 0) {
		static const struct io_host_alloc ha = {"cudaHostAlloc", cuda_host_alloc, cuda_host_free, NULL};
		s = open_stream(&m, (int64_t)total * 2, best_qd, best_req, &ha);
		passes(s, &m, 1);
		double sec = 0;
		uint64_t bytes = 0;
		char err[512];
		for (int u = 0; u < m.hp.n_layers; u++) {
			void *const *p;
			if (io_unit_acquire(s, u, &p, err, sizeof(err)))
				break;
			uint64_t b = io_unit_slot_bytes(&m, u);
			double t = cuda_h2d_seconds(p[0], b, 5);
			io_unit_release(s, u);
			if (t <= 0)
				break;
			sec += t;
			bytes += b;
		}
		io_stream_close(s);
		uint64_t b = io_unit_slot_bytes(&m, 0);
		void *h = cuda_host_alloc(b, NULL);
		double tf = h ? cuda_h2d_seconds(h, b, 9) : -1;
		cuda_host_free(h, b, NULL);
		if (sec > 0 && tf > 0) {
			gpu = (double)bytes / sec / GB;
			gpu_floor = (double)b / tf / GB;
		}
		printf("io_stream: GPU %s\n", desc);
	}
#endif

	/* lz4 */
	uint64_t z_raw = units_bytes(&z, true), z_stored = units_bytes(&z, false);
	s = open_stream(&z, -1, best_qd, best_req, NULL);
	double t5 = steady(s, &z, (int)(4 * GB / (double)z_raw) + 2, &t1);
	io_stream_stats(s, &st);
	io_stream_close(s);
	double d4 = raw_uring(&m, best_qd, best_req);
	printf("io_stream: raw io_uring at depth %d, %llu KiB around the ferry runs: %.2f %.2f %.2f %.2f GB/s\n", best_qd,
	       (unsigned long long)(best_req >> 10), d1, d2, d3, d4);
	double dec = decode_rate(&z);
	int workers = (int)sysconf(_SC_NPROCESSORS_ONLN);
	workers = workers > 8 ? 8 : workers;
	double lz4_floor = (d3 + d4) / 2 * (double)z_raw / (double)z_stored;
	lz4_floor = dec > 0 && dec * workers < lz4_floor ? dec * workers : lz4_floor;
	printf("io_stream: lz4 set: %d layers, stored %.1f%% of raw; one core decodes %.2f GB/s, %d workers\n", n_lz4,
	       100.0 * (double)z_stored / (double)z_raw, dec, workers);

	printf("\n| figure | measured | floor | ratio |\n|---|---|---|---|\n");
	row("raw io_uring O_DIRECT (the disk floor)", disk, disk, "GB/s");
	row("ferry stream from disk, no RAM tier", (double)total / t2 / GB, (d1 + d2) / 2, "GB/s");
	row("ferry stream, half the units in the RAM tier", (double)total / t3 / GB,
	    (double)total / ((double)streamed / ((d2 + d3) / 2 * GB)) / GB, "GB/s");
	if (gpu < 0)
		printf("| %-44s | n/a (no GPU) | | |\n", "RAM tier -> GPU vs pinned cudaMemcpy");
	else
		row("RAM tier -> GPU vs pinned cudaMemcpy", gpu, gpu_floor, "GB/s");
	row("lz4 stream (raw bytes delivered)", (double)z_raw / t5 / GB, lz4_floor, "GB/s");
	layout_close(&m);
	layout_close(&z);
	return 0;
}
