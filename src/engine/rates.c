/*
 * rates.c: measuring the rates the hybrid placement is chosen from (plan.h, struct plan_rates), at engine
 * start, on a sample of the model's own units: up to RATES_UNITS spread over it (layer 0, the head and layers
 * between, at most RATES_MAX_BYTES of weights: a step's worth of reading, far beyond the caches, in the
 * step's mix of formats and shapes). The sample is read once through a small streamer of pinned slots. Then:
 *   - the host backend multiplies every sampled matrix at 1, 2, 4 and 8 tokens (its rate is not linear in
 *     T), at its own thread count, which is in the cache key; and, apart (host_exp), up to EXP_SAMPLE
 *     experts' gate, up and down of each sampled layer with experts, in their own formats and shapes
 *     (what --moe-cpu weighs against an expert's upload);
 *   - every sampled unit is copied to the device alone (pinned host -> device) into one buffer, and the
 *     device multiplies the first unit at 1, 2, 4 and 8 tokens;
 *   - both at once, as a hybrid step runs them: the host works through half of the sample (its run) while
 *     the copy queue streams the other half (the device's units), each copy with a fence; the host's busy
 *     rate is its time on its half alone over its time beside the copies, the link's busy rate the bytes
 *     whose fences had passed when the host finished over the host's time.
 * Each figure is the best of a few repetitions. The device memory it takes (the largest sampled unit) is
 * given back before the model is made. With a host-memory first backend (a CPU machine running a placement
 * list on a second CPU backend) there is no link: the first backend's rate stands for the device's.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "engine/rates.h"

#define REPS 3
#define RATES_UNITS 8
#define RATES_MAX_BYTES (4ull << 30)
#define MAX_FENCES 256
/* in the cache key: 2 added both backends at 2 and 4 tokens, the busy rates of a real overlap, 8 units; 3 the
 * host's rate on experts */
#define RATES_VERSION 3
#define EXP_SAMPLE 8 /* experts per sampled layer in host_exp, spread over its experts */
#define MATS_MAX (RATES_UNITS * LAYOUT_MAX_TENSORS)

struct mats {
	int n;
	struct tensor t[MATS_MAX];
	uint64_t off[MATS_MAX]; /* where t[i] lies in the device image of its unit */
	uint64_t bytes;
	int64_t max_rows, max_cols;
};

static uint64_t tensor_bytes(const struct tensor *t)
{
	return wfmt_row_bytes(t->fmt, (uint64_t)t->cols) * (uint64_t)t->rows;
}

static void mats_add(struct mats *m, const struct tensor *t, uint64_t off)
{
	if (m->n == MATS_MAX)
		return;
	m->off[m->n] = off;
	m->t[m->n++] = *t;
	m->bytes += tensor_bytes(t);
	m->max_rows = t->rows > m->max_rows ? t->rows : m->max_rows;
	m->max_cols = t->cols > m->max_cols ? t->cols : m->max_cols;
}

static double host_pass(struct backend *b, const struct mats *m, float *y, const float *x, int T)
{
	double t0 = now_sec();
	for (int i = 0; i < m->n; i++)
		b->ops->matmul(b, y, x, &m->t[i], NULL, T);
	b->ops->sync(b);
	return now_sec() - t0;
}

/* Queues copies of every matrix of m into dbuf (one unit's image at a time: the buffer is reused) */
static int copy_all(struct backend *dev, const struct mats *m, char *dbuf)
{
	for (int i = 0; i < m->n; i++)
		if (dev->ops->copy_async(dev, dbuf + m->off[i], m->t[i].data, tensor_bytes(&m->t[i])))
			return -EIO;
	return 0;
}

/* Up to EXP_SAMPLE experts (spread over them) of the stacked experts t (host data at p) into m. */
static void exp_sample(struct mats *m, const struct layout_tensor *t, const void *p)
{
	int64_t E = t->shape[0], shape[2] = {t->shape[1], t->shape[2]};
	uint64_t step = t->stride ? t->stride : layout_tensor_nbytes(t->fmt, 2, shape);
	int n = E < EXP_SAMPLE ? (int)E : EXP_SAMPLE;
	for (int k = 0; k < n; k++) {
		int64_t e = (int64_t)k * E / n;
		struct tensor x = {(const char *)p + (uint64_t)e * step, t->fmt, shape[0], shape[1], 0};
		mats_add(m, &x, 0);
	}
}

static double best(double a, double b)
{
	return a < b ? a : b;
}

int rates_sample(const struct layout *lay, int *units)
{
	int n = lay->hp.n_layers + 1, k = n < RATES_UNITS ? n : RATES_UNITS, m = 0;
	uint64_t bytes = 0;
	for (int i = 0; i < k; i++) {
		int u = k > 1 ? (int)((int64_t)i * (n - 1) / (k - 1)) : 0;
		uint64_t b = 0;
		const struct layout_unit *lu = layout_unit_get(lay, u);
		for (int j = 0; j < lu->n_tensors; j++)
			b += lu->tensors[j].ndim == 2 ? lu->tensors[j].raw_bytes : 0;
		if (m > 0 && (u == units[m - 1] || bytes + b > RATES_MAX_BYTES))
			continue;
		units[m++] = u;
		bytes += b;
	}
	return m;
}

/* Both paths at once (see the top): host passes over h while copies of c run, one fence per copy. */
static int both_at_once(struct plan_rates *r, struct backend *dev, struct backend *host, const struct mats *h,
			const struct mats *c, char *dbuf, float *hy, const float *hx, double t_copy_c)
{
	double th_alone = 1e30;
	for (int k = 0; k < REPS; k++)
		th_alone = best(th_alone, host_pass(host, h, hy, hx, 1));
	/* copies for three times the host's passes alone: still running when the host, slowed, is done */
	int per_round = c->n, rounds = (int)(3 * REPS * th_alone / t_copy_c) + 1;
	if (rounds * per_round > MAX_FENCES)
		rounds = MAX_FENCES / per_round > 0 ? MAX_FENCES / per_round : 1;
	int n_f = rounds * per_round < MAX_FENCES ? rounds * per_round : MAX_FENCES;
	int f0 = dev->ops->fence_alloc(dev, n_f); /* the backend's until it is destroyed: a few per engine */
	if (f0 < 0)
		return f0;
	dev->ops->sync(dev);
	double t0 = now_sec();
	int q = 0;
	for (int k = 0; k < rounds; k++)
		for (int i = 0; i < c->n && q < n_f; i++, q++)
			if (dev->ops->copy_async(dev, dbuf + c->off[i], c->t[i].data, tensor_bytes(&c->t[i])) ||
			    dev->ops->fence_record(dev, BQ_COPY, f0 + q))
				return -EIO;
	double tb = 0;
	for (int k = 0; k < REPS; k++)
		tb += host_pass(host, h, hy, hx, 1);
	double t_end = now_sec() - t0;
	uint64_t done = 0, all = 0;
	for (int i = 0; i < q; i++) {
		all += tensor_bytes(&c->t[i % c->n]);
		done = dev->ops->fence_done(dev, f0 + i) && done + tensor_bytes(&c->t[i % c->n]) == all ? all : done;
	}
	if (dev->ops->sync(dev))
		return -EIO;
	r->host_busy = r->host[0] * best(1.0, REPS * th_alone / tb);
	/* every copy done before the host finished: they were not measurably slowed */
	r->h2d_busy = done > 0 && done < all ? (double)done / t_end : r->h2d;
	if (r->h2d_busy > r->h2d)
		r->h2d_busy = r->h2d;
	return 0;
}

int rates_measure(struct plan_rates *r, const struct layout *lay, struct backend *dev, struct backend *host,
		  const struct io_host_alloc *pinned, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	bool link = !dev->ops->host_memory;
	int units[RATES_UNITS], nu = rates_sample(lay, units);
	struct io_opts io;
	io_opts_default(&io);
	io.n_slots = nu;
	io.ram = -1;
	io.host_alloc = pinned;
	struct io_stream *s = NULL;
	int rc = io_stream_open(&s, lay, &io, err, errlen), acquired = 0;
	/* hm: the sample; dm: its first unit; h, c: its even and odd units (the host's and the copies' halves);
	 * xm: experts of its layers */
	struct mats *hm = calloc(1, sizeof(*hm)), *dm = calloc(1, sizeof(*dm));
	struct mats *h = calloc(1, sizeof(*h)), *c = calloc(1, sizeof(*c)), *xm = calloc(1, sizeof(*xm));
	if (!rc && (!hm || !dm || !h || !c || !xm)) {
		snprintf(err, errlen, "measuring the placement's rates: out of memory");
		rc = -ENOMEM;
	}
	uint64_t dev_bytes = 0;
	while (!rc && acquired < nu) {
		void *const *ptrs = NULL;
		rc = io_unit_acquire(s, units[acquired], &ptrs, err, errlen);
		if (rc)
			break;
		const struct layout_unit *u = layout_unit_get(lay, units[acquired]);
		uint64_t at = 0;
		for (int i = 0; i < u->n_tensors; i++) {
			const struct layout_tensor *t = &u->tensors[i];
			if (t->ndim == 3 && t->comp == LAYOUT_COMP_NONE)
				exp_sample(xm, t, ptrs[i]);
			if (t->ndim != 2)
				continue;
			struct tensor ht = {ptrs[i], t->fmt, t->shape[0], t->shape[1], 0};
			mats_add(hm, &ht, at);
			if (acquired == 0)
				mats_add(dm, &ht, at);
			if (acquired % 2 == 0 || nu == 1)
				mats_add(h, &ht, at);
			if (acquired % 2 == 1 || nu == 1)
				mats_add(c, &ht, at);
			at += (tensor_bytes(&ht) + 255) / 256 * 256;
		}
		dev_bytes = at > dev_bytes ? at : dev_bytes;
		acquired++;
	}
	float *hx = NULL, *hy = NULL, *dx = NULL, *dy = NULL;
	char *dbuf = NULL;
	if (rc)
		goto done;
	int64_t wide = hm->max_rows > hm->max_cols ? hm->max_rows : hm->max_cols;
	wide = xm->max_rows > wide ? xm->max_rows : wide;
	wide = xm->max_cols > wide ? xm->max_cols : wide;
	size_t xy = sizeof(float) * RATES_T * (size_t)wide;
	hx = calloc(1, xy), hy = calloc(1, xy);
	dbuf = link ? dev->ops->alloc(dev, dev_bytes) : NULL;
	dx = dbuf || !link ? dev->ops->alloc(dev, xy) : NULL;
	dy = dx ? dev->ops->alloc(dev, xy) : NULL;
	struct backend_reserve res = {.t_max = RATES_T, .t_ops = RATES_T,
				      .max_row = xm->max_cols > hm->max_cols ? xm->max_cols : hm->max_cols, .d_model = lay->hp.d_model,
				      .max_ctx = 256, .n_heads = lay->hp.n_heads, .head_dim = lay->hp.head_dim,
				      .max_seqs = 1, .max_pages = 1, .n_groups = 1};
	if (!hx || !hy || !dy || host->ops->reserve(host, &res) || dev->ops->reserve(dev, &res)) {
		snprintf(err, errlen, "measuring the placement's rates: out of memory%s%s", dev->err[0] ? ": " : "", dev->err);
		rc = -ENOMEM;
		goto done;
	}
	for (size_t i = 0; i < xy / sizeof(float); i++)
		hx[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
	dev->ops->upload(dev, dx, hx, xy);
	double B = (double)hm->bytes, Bd = (double)dm->bytes;
	host_pass(host, hm, hy, hx, 1); /* warm the caches of the code (the sample's weights are larger) */
	for (int i = 0; i < RATES_NT; i++) {
		double t = 1e30;
		for (int k = 0; k < REPS; k++)
			t = best(t, host_pass(host, hm, hy, hx, rates_t_of(i)));
		r->host[i] = B / t;
		t = 1e30;
		for (int k = 0; xm->n && k < REPS; k++)
			t = best(t, host_pass(host, xm, hy, hx, rates_t_of(i)));
		r->host_exp[i] = xm->n ? (double)xm->bytes / t : r->host[i];
	}
	double th2d = 1e30, tc = 1e30;
	for (int k = 0; link && k < REPS; k++) {
		dev->ops->sync(dev);
		double t0 = now_sec();
		rc = rc ? rc : copy_all(dev, hm, dbuf);
		dev->ops->sync(dev);
		th2d = best(th2d, now_sec() - t0);
		t0 = now_sec();
		rc = rc ? rc : copy_all(dev, c, dbuf);
		dev->ops->sync(dev);
		tc = best(tc, now_sec() - t0);
	}
	if (link) {
		rc = rc ? rc : copy_all(dev, dm, dbuf);
		for (int i = 0; i < dm->n; i++)
			dm->t[i].data = dbuf + dm->off[i];
		dev->ops->sync(dev);
	}
	for (int i = 0; !rc && i < RATES_NT; i++) {
		double t = 1e30;
		for (int k = 0; k < REPS; k++)
			t = best(t, host_pass(dev, dm, dy, dx, rates_t_of(i)));
		r->dev[i] = Bd / t;
	}
	if (link) {
		r->h2d = B / th2d;
		rc = rc ? rc : both_at_once(r, dev, host, h, c, dbuf, hy, hx, tc);
	} else {
		/* no link: nothing is copied, and the two backends take turns */
		r->h2d = r->h2d_busy = RATES_NO_LINK;
		r->host_busy = r->host[0];
	}
	if (rc) {
		snprintf(err, errlen, "measuring the placement's rates: %s", dev->err[0] ? dev->err : "copies failed");
		goto done;
	}
	/* the residual stream across: one row up and down, each with a sync */
	double tx = 1e30;
	for (int k = 0; k < REPS; k++) {
		double t1 = now_sec();
		dev->ops->upload(dev, dx, hx, sizeof(float) * (size_t)lay->hp.d_model);
		dev->ops->download(dev, hy, dx, sizeof(float) * (size_t)lay->hp.d_model);
		tx = best(tx, (now_sec() - t1) / 2);
	}
	r->cross = tx > 1e-9 ? tx : 1e-9;
done:
	if (dy)
		dev->ops->free(dev, dy);
	if (dx)
		dev->ops->free(dev, dx);
	if (dbuf)
		dev->ops->free(dev, dbuf);
	free(hx);
	free(hy);
	for (int i = 0; i < acquired; i++)
		io_unit_release(s, units[i]);
	io_stream_close(s);
	free(hm), free(dm), free(h), free(c), free(xm);
	return rc;
}

static void print_list(FILE *f, const double *r)
{
	for (int i = 0; i < RATES_NT; i++)
		fprintf(f, "%s%.1f", i ? ", " : "", r[i] / 1e9);
	fprintf(f, " GB/s at 1, 2, 4, 8 tokens");
}

void rates_print(FILE *f, const struct plan_rates *r)
{
	if (r->h2d >= RATES_NO_LINK) {
		fprintf(f, "rates: no link; the first backend ");
	} else {
		fprintf(f, "rates: host->device %.1f GB/s (%.1f beside the CPU); device ", r->h2d / 1e9, r->h2d_busy / 1e9);
	}
	print_list(f, r->dev);
	fprintf(f, "; CPU matmuls ");
	print_list(f, r->host);
	fprintf(f, " (%.1f at 1 beside the copies); on experts ", r->host_busy / 1e9);
	print_list(f, r->host_exp);
	fprintf(f, "; crossing %.0f us\n", r->cross * 1e6);
}

/* $FERRY_HOME/rates.json or ~/.cache/ferry/rates.json into buf; false without a home. mk: create the folder. */
static bool cache_path(char *buf, size_t n, bool mk)
{
	const char *fh = getenv("FERRY_HOME"), *home = getenv("HOME");
	char dir[3072];
	if (fh && fh[0])
		snprintf(dir, sizeof(dir), "%s", fh);
	else if (home && home[0])
		snprintf(dir, sizeof(dir), "%s/.cache/ferry", home);
	else
		return false;
	if (mk) {
		char *p = dir;
		while ((p = strchr(p + 1, '/'))) {
			*p = 0;
			mkdir(dir, 0755);
			*p = '/';
		}
		mkdir(dir, 0755);
	}
	snprintf(buf, n, "%s/rates.json", dir);
	return true;
}

void rates_key(char *buf, size_t n, const struct layout *lay, struct backend *dev, struct backend *host,
	       double h2d_limit)
{
	struct backend_mem bm;
	backend_mem_get(dev, &bm);
	char cpu[256] = "cpu";
	FILE *f = fopen("/proc/cpuinfo", "r");
	char line[512];
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
			snprintf(cpu, sizeof(cpu), "%s", strchr(line, ':') + 2);
			cpu[strcspn(cpu, "\n")] = 0;
			break;
		}
	if (f)
		fclose(f);
	int units[RATES_UNITS], nu = rates_sample(lay, units);
	int at = snprintf(buf, n, "v%d | %s | %s | %d threads | link %.3g | units", RATES_VERSION, bm.gpu, cpu,
			  host->n_threads, h2d_limit);
	for (int i = 0; i < nu && at > 0 && (size_t)at < n; i++)
		at += snprintf(buf + at, n - (size_t)at, " %d", units[i]);
	if (at > 0 && (size_t)at < n)
		at += snprintf(buf + at, n - (size_t)at, " of %d | layer", lay->hp.n_layers + 1);
	const struct layout_unit *u = layout_unit_get(lay, 0);
	for (int i = 0; i < u->n_tensors && at > 0 && (size_t)at < n; i++)
		if (u->tensors[i].ndim == 2)
			at += snprintf(buf + at, n - (size_t)at, " %s:%lldx%lld", wfmt_name(u->tensors[i].fmt),
				       (long long)u->tensors[i].shape[0], (long long)u->tensors[i].shape[1]);
}

static const char *const rate_names[] = {"h2d",	"h2d_busy", "host_1", "host_2", "host_4", "host_8",
					 "host_busy", "dev_1",	   "dev_2",  "dev_4",  "dev_8",	 "cross_s",
					 "host_exp_1", "host_exp_2", "host_exp_4", "host_exp_8"};

static double *rate_field(struct plan_rates *r, int i)
{
	double *f[] = {&r->h2d,	      &r->h2d_busy, &r->host[0], &r->host[1], &r->host[2], &r->host[3],
		       &r->host_busy, &r->dev[0],   &r->dev[1],	 &r->dev[2],  &r->dev[3],  &r->cross,
		       &r->host_exp[0], &r->host_exp[1], &r->host_exp[2], &r->host_exp[3]};
	return f[i];
}

int rates_load(const char *key, struct plan_rates *r, char *err, size_t errlen)
{
	char path[4096];
	const char *m = getenv("FERRY_RATES");
	if ((m && !strcmp(m, "measure")) || !cache_path(path, sizeof(path), false) || access(path, F_OK))
		return 0;
	json_error_t je;
	json_t *root = json_load_file(path, 0, &je);
	if (!json_is_object(root)) {
		snprintf(err, errlen, "%s: %s", path, root ? "not a JSON object" : je.text);
		json_decref(root);
		return -EINVAL;
	}
	json_t *e = json_object_get(root, key);
	int rc = e ? 1 : 0;
	struct plan_rates got = {0};
	for (int i = 0; e && i < (int)(sizeof(rate_names) / sizeof(rate_names[0])); i++) {
		json_t *v = json_object_get(e, rate_names[i]);
		if (!json_is_number(v) || !(json_number_value(v) > 0) || !(json_number_value(v) < 1e30)) {
			snprintf(err, errlen, "%s: entry \"%.200s\": field %s: expected a positive number", path, key,
				 rate_names[i]);
			rc = -EINVAL;
			break;
		}
		*rate_field(&got, i) = json_number_value(v);
	}
	if (rc == 1)
		*r = got;
	json_decref(root);
	return rc;
}

void rates_save(const char *key, const struct plan_rates *r)
{
	char path[4096], tmp[4200];
	if (!cache_path(path, sizeof(path), true))
		return;
	json_t *root = json_load_file(path, 0, NULL);
	if (!json_is_object(root)) {
		json_decref(root);
		root = json_object();
	}
	json_t *e = json_object();
	for (int i = 0; e && i < (int)(sizeof(rate_names) / sizeof(rate_names[0])); i++)
		json_object_set_new(e, rate_names[i], json_real(*rate_field((struct plan_rates *)r, i)));
	if (root && e && !json_object_set_new(root, key, e)) {
		snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
		if (json_dump_file(root, tmp, JSON_INDENT(1)) || rename(tmp, path))
			unlink(tmp);
	}
	json_decref(root);
}
