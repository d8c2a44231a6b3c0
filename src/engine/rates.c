/*
 * rates.c: measuring the rates the hybrid placement is chosen from (plan.h, struct plan_rates), at engine
 * start, on a sample of the model's own units: up to RATES_UNITS spread over it (layer 0, the head and layers
 * between, at most RATES_MAX_BYTES of weights), so the rates are those of the step's mix of formats and
 * shapes, and the host reads each unit's bytes from memory as a step does (one unit alone, re-read from the
 * caches, overstated the host). The sample is read once through a small streamer of pinned slots; the host
 * backend multiplies every sampled unit's matrices (1 and RATES_T tokens); each unit is copied to the device
 * (pinned host -> device) into one buffer; the device multiplies the first unit; then the host's passes again
 * while copies of the sample run (the two share the memory bus). The host passes use the host backend's own
 * thread count, which is in the cache key. Each figure is the best of a few repetitions. The device memory it
 * takes (the largest sampled unit) is given back before the model is made.
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
#define RATES_UNITS 4
#define RATES_MAX_BYTES (2ull << 30)

struct mats {
	int n;
	struct tensor t[RATES_UNITS * LAYOUT_MAX_TENSORS];
	uint64_t off[RATES_UNITS * LAYOUT_MAX_TENSORS]; /* where t[i] lies in the device image of its unit */
	uint64_t bytes;
	int64_t max_rows, max_cols;
};

static uint64_t tensor_bytes(const struct tensor *t)
{
	return wfmt_row_bytes(t->fmt, (uint64_t)t->cols) * (uint64_t)t->rows;
}

static double host_pass(struct backend *b, const struct mats *m, float *y, const float *x, int T)
{
	double t0 = now_sec();
	for (int i = 0; i < m->n; i++)
		b->ops->matmul(b, y, x, &m->t[i], NULL, T);
	return now_sec() - t0;
}

static double dev_pass(struct backend *b, const struct mats *m, float *y, const float *x, int T)
{
	b->ops->sync(b);
	double t0 = now_sec();
	for (int i = 0; i < m->n; i++)
		b->ops->matmul(b, y, x, &m->t[i], NULL, T);
	b->ops->sync(b);
	return now_sec() - t0;
}

/* Queues copies of every matrix of m into dbuf (one unit's image at a time: the buffer is reused) */
static void copy_all(struct backend *dev, const struct mats *m, char *dbuf)
{
	for (int i = 0; i < m->n; i++)
		dev->ops->copy_async(dev, dbuf + m->off[i], m->t[i].data, tensor_bytes(&m->t[i]));
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

int rates_measure(struct plan_rates *r, const struct layout *lay, struct backend *dev, struct backend *host,
		  const struct io_host_alloc *pinned, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	int units[RATES_UNITS], nu = rates_sample(lay, units);
	struct io_opts io;
	io_opts_default(&io);
	io.n_slots = nu;
	io.ram = -1;
	io.host_alloc = pinned;
	struct io_stream *s = NULL;
	int rc = io_stream_open(&s, lay, &io, err, errlen), acquired = 0;
	struct mats *hm = calloc(1, sizeof(*hm)), *dm = calloc(1, sizeof(*dm));
	if (!rc && (!hm || !dm)) {
		snprintf(err, errlen, "measuring the placement's rates: out of memory");
		rc = -ENOMEM;
	}
	/* the sample's matrices in hm, the first unit's in dm */
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
			if (t->ndim != 2)
				continue;
			struct tensor ht = {ptrs[i], t->fmt, t->shape[0], t->shape[1], 0};
			hm->off[hm->n] = at;
			hm->t[hm->n++] = ht;
			hm->bytes += t->raw_bytes;
			hm->max_rows = t->shape[0] > hm->max_rows ? t->shape[0] : hm->max_rows;
			hm->max_cols = t->shape[1] > hm->max_cols ? t->shape[1] : hm->max_cols;
			if (acquired == 0) {
				dm->off[dm->n] = at;
				dm->t[dm->n++] = ht;
				dm->bytes += t->raw_bytes;
			}
			at += (tensor_bytes(&ht) + 255) / 256 * 256;
		}
		dev_bytes = at > dev_bytes ? at : dev_bytes;
		acquired++;
	}
	if (rc) {
		for (int i = 0; i < acquired; i++)
			io_unit_release(s, units[i]);
		io_stream_close(s);
		free(hm), free(dm);
		return rc;
	}
	size_t xy = sizeof(float) * RATES_T * (size_t)(hm->max_rows > hm->max_cols ? hm->max_rows : hm->max_cols);
	float *hx = calloc(1, xy), *hy = calloc(1, xy);
	char *dbuf = dev->ops->alloc(dev, dev_bytes);
	float *dx = dbuf ? dev->ops->alloc(dev, xy) : NULL, *dy = dx ? dev->ops->alloc(dev, xy) : NULL;
	struct backend_reserve res = {.t_max = RATES_T, .t_ops = RATES_T, .max_row = hm->max_cols, .d_model = lay->hp.d_model,
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
	/* uploads of the whole sample; the first unit's image stays for the device passes */
	double th2d = 1e30;
	for (int k = 0; k < REPS; k++) {
		dev->ops->sync(dev);
		double t0 = now_sec();
		copy_all(dev, hm, dbuf);
		dev->ops->sync(dev);
		th2d = best(th2d, now_sec() - t0);
	}
	copy_all(dev, dm, dbuf);
	for (int i = 0; i < dm->n; i++)
		dm->t[i].data = dbuf + dm->off[i];
	double th1 = 1e30, thT = 1e30, td1 = 1e30, tdT = 1e30;
	host_pass(host, hm, hy, hx, 1); /* warm the caches of the code (the sample's weights are larger) */
	for (int k = 0; k < REPS; k++) {
		th1 = best(th1, host_pass(host, hm, hy, hx, 1));
		thT = best(thT, host_pass(host, hm, hy, hx, RATES_T));
		td1 = best(td1, dev_pass(dev, dm, dy, dx, 1));
		tdT = best(tdT, dev_pass(dev, dm, dy, dx, RATES_T));
	}
	/* both at once: copies of the sample queued for about as long as REPS host passes take (into the image:
	 * the device passes are done) */
	int n_copies = (int)(REPS * th1 / th2d) + 1;
	dev->ops->sync(dev);
	double t0 = now_sec();
	for (int c = 0; c < n_copies; c++)
		for (int i = 0; i < hm->n; i++)
			dev->ops->copy_async(dev, dbuf + hm->off[i], hm->t[i].data, tensor_bytes(&hm->t[i]));
	double tb = 0;
	for (int k = 0; k < REPS; k++)
		tb += host_pass(host, hm, hy, hx, 1);
	dev->ops->sync(dev);
	double tcopy = now_sec() - t0;
	/* the residual stream across: one row up and down, each with a sync */
	double tx = 1e30;
	for (int k = 0; k < REPS; k++) {
		double t1 = now_sec();
		dev->ops->upload(dev, dx, hx, sizeof(float) * (size_t)lay->hp.d_model);
		dev->ops->download(dev, hy, dx, sizeof(float) * (size_t)lay->hp.d_model);
		tx = best(tx, (now_sec() - t1) / 2);
	}
	double B = (double)hm->bytes, Bd = (double)dm->bytes;
	*r = (struct plan_rates){.h2d = B / th2d, .h2d_busy = (double)n_copies * B / tcopy, .host = {B / th1, B / thT},
				 .host_busy = REPS * B / tb, .dev = {Bd / td1, Bd / tdT}, .cross = tx};
	/* a copy queue that outlasted the host passes ran partly alone: its busy rate is then a bound */
	if (r->h2d_busy > r->h2d)
		r->h2d_busy = r->h2d;
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
	free(hm), free(dm);
	return rc;
}

void rates_print(FILE *f, const struct plan_rates *r)
{
	fprintf(f,
		"rates: host->device %.1f GB/s (%.1f beside the CPU); CPU matmuls %.1f GB/s at 1 token, %.1f at %d (%.1f beside "
		"the copies); device %.1f GB/s at 1, %.1f at %d; crossing %.0f us\n",
		r->h2d / 1e9, r->h2d_busy / 1e9, r->host[0] / 1e9, r->host[1] / 1e9, RATES_T, r->host_busy / 1e9,
		r->dev[0] / 1e9, r->dev[1] / 1e9, RATES_T, r->cross * 1e6);
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
	int at = snprintf(buf, n, "%s | %s | %d threads | link %.3g | units", bm.gpu, cpu, host->n_threads, h2d_limit);
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

static const char *const rate_names[] = {"h2d", "h2d_busy", "host_1", "host_t", "host_busy", "dev_1", "dev_t", "cross_s"};

static double *rate_field(struct plan_rates *r, int i)
{
	double *f[] = {&r->h2d, &r->h2d_busy, &r->host[0], &r->host[1], &r->host_busy, &r->dev[0], &r->dev[1], &r->cross};
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
