/*
 * rates.c: measuring the rates the hybrid placement is chosen from (plan.h, struct plan_rates), at engine
 * start, on the model's own first layer: read once through a small streamer of pinned slots, its matrices
 * multiplied on the host backend (1 and RATES_T tokens), copied to the device (pinned host -> device) and
 * multiplied there; then the host's matmuls again while copies run (the two share the memory bus). Each
 * figure is the best of a few repetitions. The device memory it takes is given back before the model is
 * made. About 20 passes over one layer in all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"
#include "engine/rates.h"

#define REPS 3

struct mats {
	int n;
	struct tensor t[LAYOUT_MAX_TENSORS];
	uint64_t bytes;
	int64_t max_rows, max_cols;
};

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

static double best(double a, double b)
{
	return a < b ? a : b;
}

int rates_measure(struct plan_rates *r, const struct layout *lay, struct backend *dev, struct backend *host,
		  const struct io_host_alloc *pinned, char *err, size_t errlen)
{
	memset(r, 0, sizeof(*r));
	const struct layout_unit *u = layout_unit_get(lay, 0);
	struct io_opts io;
	io_opts_default(&io);
	io.n_slots = 2;
	io.ram = -1;
	io.host_alloc = pinned;
	struct io_stream *s = NULL;
	int rc = io_stream_open(&s, lay, &io, err, errlen);
	void *const *ptrs = NULL;
	rc = rc ? rc : io_unit_acquire(s, 0, &ptrs, err, errlen);
	if (rc) {
		io_stream_close(s);
		return rc;
	}
	struct mats hm = {0}, dm = {0};
	uint64_t dev_bytes = 0;
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *t = &u->tensors[i];
		if (t->ndim != 2)
			continue;
		hm.t[hm.n++] = (struct tensor){ptrs[i], t->fmt, t->shape[0], t->shape[1]};
		hm.bytes += t->raw_bytes;
		hm.max_rows = t->shape[0] > hm.max_rows ? t->shape[0] : hm.max_rows;
		hm.max_cols = t->shape[1] > hm.max_cols ? t->shape[1] : hm.max_cols;
		dev_bytes += (t->raw_bytes + 255) / 256 * 256;
	}
	dm = hm;
	size_t xy = sizeof(float) * RATES_T * (size_t)(hm.max_rows > hm.max_cols ? hm.max_rows : hm.max_cols);
	float *hx = calloc(1, xy), *hy = calloc(1, xy);
	char *dbuf = dev->ops->alloc(dev, dev_bytes);
	float *dx = dbuf ? dev->ops->alloc(dev, xy) : NULL, *dy = dx ? dev->ops->alloc(dev, xy) : NULL;
	struct backend_reserve res = {.t_max = RATES_T, .t_ops = RATES_T, .max_row = hm.max_cols, .d_model = lay->hp.d_model,
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
	/* uploads, each tensor where the device's copy of the layer keeps it */
	double th2d = 1e30;
	for (int k = 0; k < REPS; k++) {
		dev->ops->sync(dev);
		double t0 = now_sec();
		uint64_t at = 0;
		for (int i = 0; i < hm.n; i++) {
			dev->ops->copy_async(dev, dbuf + at, hm.t[i].data, wfmt_row_bytes(hm.t[i].fmt, (uint64_t)hm.t[i].cols) *
									       (uint64_t)hm.t[i].rows);
			dm.t[i].data = dbuf + at;
			at += (wfmt_row_bytes(hm.t[i].fmt, (uint64_t)hm.t[i].cols) * (uint64_t)hm.t[i].rows + 255) / 256 * 256;
		}
		dev->ops->sync(dev);
		th2d = best(th2d, now_sec() - t0);
	}
	double th1 = 1e30, thT = 1e30, td1 = 1e30, tdT = 1e30;
	host_pass(host, &hm, hy, hx, 1); /* warm the caches of the code, not of the weights (they are larger) */
	for (int k = 0; k < REPS; k++) {
		th1 = best(th1, host_pass(host, &hm, hy, hx, 1));
		thT = best(thT, host_pass(host, &hm, hy, hx, RATES_T));
		td1 = best(td1, dev_pass(dev, &dm, dy, dx, 1));
		tdT = best(tdT, dev_pass(dev, &dm, dy, dx, RATES_T));
	}
	/* both at once: copies queued for about as long as REPS host passes take */
	int n_copies = (int)(REPS * th1 / th2d) + 1;
	dev->ops->sync(dev);
	double t0 = now_sec();
	for (int c = 0; c < n_copies; c++)
		for (int i = 0; i < hm.n; i++)
			dev->ops->copy_async(dev, (void *)dm.t[i].data, hm.t[i].data,
					     wfmt_row_bytes(hm.t[i].fmt, (uint64_t)hm.t[i].cols) * (uint64_t)hm.t[i].rows);
	double tb = 0;
	for (int k = 0; k < REPS; k++)
		tb += host_pass(host, &hm, hy, hx, 1);
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
	double B = (double)hm.bytes;
	*r = (struct plan_rates){.h2d = B / th2d, .h2d_busy = (double)n_copies * B / tcopy, .host = {B / th1, B / thT},
				 .host_busy = REPS * B / tb, .dev = {B / td1, B / tdT}, .cross = tx};
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
	io_unit_release(s, 0);
	io_stream_close(s);
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
