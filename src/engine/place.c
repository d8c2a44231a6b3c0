/*
 * place.c: the hybrid placement (plan.h): which units the host backend computes in steps of few tokens,
 * from measured rates (rates.c), and their correction from the steps as they run.
 *
 * plan_predict simulates a step the way model.c runs it, with three clocks: the host (its units' matmuls
 * at the host rate, and the syncs where the residual stream crosses the bus), the device's compute queue
 * (its units at the device rate, each after its upload) and the copy queue (uploads of streamed units in
 * the order weights.c issues them: at each device unit the next n_slots - 1 device units, at a host unit
 * all n_slots; a slot is refilled only after the compute that read it). Three steps are simulated and the
 * last one's time is the prediction (the first pays for uploads the steady state overlaps). The host and
 * the copy engine read the same memory: a host unit runs at the host's busy rate while copies are in
 * flight and at its own rate after them; copies issued while the host works through a run (at its units)
 * run at the link's busy rate, those issued at device units (the host waits on the device) at its own.
 * A rate at T tokens is interpolated between the token counts it was measured at (time per byte linear in T
 * between them, the last slope beyond).
 *
 * plan_place "auto" tries, for every count c of host units among the units that are not resident, layouts
 * of k alternating runs (host run, device run; k from 1 to the most runs c allows), and keeps the fastest
 * predicted 1-token step; then the largest step (in tokens, powers of two up to 64) for which hybrid still
 * beats every unit on the device. plan_fix_observe / plan_replace run the same search again during decode
 * with rates corrected from measured steps.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan.h"
#include "engine/weights.h"

#define HYBRID_T_MAX 64

double plan_spb_at(const double rate[RATES_NT], int T)
{
	int i = 0;
	while (i + 2 < RATES_NT && rates_t_of(i + 1) < T)
		i++;
	double t0 = rates_t_of(i), t1 = rates_t_of(i + 1), s0 = 1 / rate[i], s1 = 1 / rate[i + 1];
	double slope = (s1 - s0) / (t1 - t0);
	if (T > t1 && slope < 0)
		return s1;
	double s = s0 + slope * (T - t0);
	return s > 0 ? s : s0;
}

static double maxd(double a, double b)
{
	return a > b ? a : b;
}

struct sim {
	const struct plan *p;
	const struct plan_rates *r;
	const uint64_t *ub;
	const bool *host;
	double th, tg, tc;   /* host, compute queue, copy queue */
	double *ready;       /* [n_units] upload done (-1: not staged) */
	int *slot_of;        /* [n_units] */
	double *slot_free;   /* [n_slots] */
	int *slot_unit;      /* [n_slots] */
	int next_slot;
	struct plan_parts sum; /* this step's parts so far */
};

static void sim_stage(struct sim *s, int u, bool busy)
{
	if (s->ready[u] >= 0)
		return;
	int sl = s->next_slot;
	s->next_slot = (s->next_slot + 1) % s->p->n_slots;
	if (s->slot_unit[sl] >= 0)
		s->ready[s->slot_unit[sl]] = -1;
	s->slot_unit[sl] = u;
	s->slot_of[u] = sl;
	double start = maxd(maxd(s->tc, s->th), s->slot_free[sl]);
	double dt = (double)s->ub[u] / (busy ? s->r->h2d_busy : s->r->h2d);
	s->tc = start + dt;
	s->sum.upload += dt;
	s->ready[u] = s->tc;
}

static void sim_prefetch(struct sim *s, int u, int ahead, bool busy)
{
	int n = s->p->n_units;
	if (s->p->n_slots <= 0)
		return;
	for (int k = 1; k <= n && ahead > 0; k++) {
		int v = (u + k) % n;
		if ((s->host && s->host[v]) || s->p->resident[v])
			continue;
		sim_stage(s, v, busy);
		ahead--;
	}
}

/* Seconds of a host unit of `bytes` at T tokens starting at s->th, the copy queue busy until s->tc. */
static double sim_host_unit(const struct sim *s, double bytes, int T)
{
	const struct plan_rates *r = s->r;
	double spb = plan_spb_at(r->host, T), spb_busy = spb * r->host[0] / r->host_busy;
	double overlap = s->tc - s->th;
	if (overlap <= 0)
		return bytes * spb;
	if (bytes * spb_busy <= overlap)
		return bytes * spb_busy;
	return overlap + (bytes - overlap / spb_busy) * spb;
}

double plan_predict_parts(const struct plan *p, const struct layout *lay, const struct plan_rates *r, int T,
			  bool hybrid, struct plan_parts *parts)
{
	int n = p->n_units;
	uint64_t *ub = malloc(sizeof(uint64_t) * (size_t)n);
	double *ready = malloc(sizeof(double) * (size_t)n);
	int *slot_of = malloc(sizeof(int) * (size_t)n);
	int ns = p->n_slots > 0 ? p->n_slots : 1;
	double *slot_free = calloc((size_t)ns, sizeof(double));
	int *slot_unit = malloc(sizeof(int) * (size_t)ns);
	if (parts)
		memset(parts, 0, sizeof(*parts));
	if (!ub || !ready || !slot_of || !slot_free || !slot_unit) {
		free(ub), free(ready), free(slot_of), free(slot_free), free(slot_unit);
		return 0;
	}
	struct sim s = {.p = p, .r = r, .ub = ub, .host = hybrid ? p->on_host : NULL, .ready = ready, .slot_of = slot_of,
			.slot_free = slot_free, .slot_unit = slot_unit};
	for (int u = 0; u < n; u++) {
		ub[u] = weights_unit_device_bytes(lay, u);
		ready[u] = p->resident[u] ? 0 : -1;
	}
	for (int i = 0; i < ns; i++)
		slot_unit[i] = -1;
	double end[3] = {0};
	bool prev_host = s.host && s.host[0];
	for (int step = 0; step < 3; step++) {
		memset(&s.sum, 0, sizeof(s.sum));
		for (int u = 0; u < n; u++) {
			bool h = s.host && s.host[u];
			if (h) {
				if (!prev_host) /* download the residual stream: waits for the device */
					s.th = maxd(s.th, s.tg) + r->cross;
				sim_prefetch(&s, u, p->n_slots, true);
				double dt = sim_host_unit(&s, (double)ub[u], T);
				s.th += dt;
				s.sum.host += dt;
			} else {
				if (prev_host)
					s.tg = maxd(s.tg, s.th) + r->cross;
				if (!p->resident[u] && p->n_slots > 0)
					sim_stage(&s, u, false);
				double dt = (double)ub[u] * plan_spb_at(r->dev, T);
				s.tg = maxd(maxd(s.tg, s.th), ready[u]) + dt;
				s.sum.dev += dt;
				if (!p->resident[u] && p->n_slots > 0) {
					slot_free[slot_of[u]] = s.tg;
					sim_prefetch(&s, u, p->n_slots - 1, false);
				}
			}
			prev_host = h;
		}
		/* the logits come back to the host */
		s.th = maxd(s.th, s.tg) + r->cross;
		s.tg = s.th;
		end[step] = s.th;
	}
	free(ub), free(ready), free(slot_of), free(slot_free), free(slot_unit);
	if (parts) {
		*parts = s.sum;
		parts->step = end[2] - end[1];
	}
	return end[2] - end[1];
}

double plan_predict(const struct plan *p, const struct layout *lay, const struct plan_rates *r, int T, bool hybrid)
{
	return plan_predict_parts(p, lay, r, T, hybrid, NULL);
}

/* "0-9,20,head" into on_host[n_units] */
static int parse_list(const char *list, int n_units, bool *on_host, char *err, size_t errlen)
{
	const char *q = list;
	if (!*q)
		goto bad;
	while (*q) {
		int a, b;
		char *end;
		if (!strncmp(q, "head", 4)) {
			a = b = n_units - 1;
			end = (char *)q + 4;
		} else {
			long v = strtol(q, &end, 10);
			if (end == q || v < 0 || v >= n_units - 1)
				goto bad;
			a = b = (int)v;
			if (*end == '-') {
				const char *r = end + 1;
				long w = strtol(r, &end, 10);
				if (end == r || w < v || w >= n_units - 1)
					goto bad;
				b = (int)w;
			}
		}
		for (int u = a; u <= b; u++)
			on_host[u] = true;
		if (*end == ',' && end[1])
			end++;
		else if (*end)
			goto bad;
		q = end;
	}
	return 0;
bad:
	snprintf(err, errlen,
		 "--placement %s: expected auto, gpu, cpu or a list of layers (0 to %d) and ranges for the host, e.g. 0-9,20,head",
		 list, n_units - 2);
	return -EINVAL;
}

/* The auto search (see the top): the fastest predicted placement of p's units that are not resident and
 * that may_host allows (NULL: all) into on_host, the largest step it still wins at into *t_max (0: every unit
 * on the device). */
static int search(const struct plan *p, const struct layout *lay, const struct plan_rates *r, const bool *may_host,
		  bool *on_host, int *t_max)
{
	int n = p->n_units;
	*t_max = 0;
	if (n < 1)
		return -EINVAL;
	memset(on_host, 0, sizeof(bool) * (size_t)n);
	int *cand = malloc(sizeof(int) * (size_t)n);
	bool *best = calloc((size_t)n, sizeof(bool));
	struct plan q = *p;
	q.on_host = calloc((size_t)n, sizeof(bool));
	if (!cand || !best || !q.on_host) {
		free(cand), free(best), free(q.on_host);
		return -ENOMEM;
	}
	int N = 0;
	for (int u = 0; u < n; u++)
		if (!p->resident[u] && (!may_host || may_host[u]))
			cand[N++] = u;
	q.n_on_host = 0;
	double t_best = plan_predict(&q, lay, r, 1, false);
	for (int c = 1; c <= N; c++) {
		int kmax = c < N - c ? c : N - c;
		for (int k = 1; k <= (kmax > 0 ? kmax : 1); k++) {
			/* k rounds: round i takes host units [c*i/k, c*(i+1)/k) then device units likewise */
			memset(q.on_host, 0, sizeof(bool) * (size_t)n);
			int at = 0;
			for (int i = 0; i < k; i++) {
				int h = c * (i + 1) / k - c * i / k, d = (N - c) * (i + 1) / k - (N - c) * i / k;
				for (int j = 0; j < h; j++)
					q.on_host[cand[at++]] = true;
				at += d;
			}
			q.n_on_host = c;
			double t = plan_predict(&q, lay, r, 1, true);
			if (t > 0 && t < t_best) {
				t_best = t;
				memcpy(best, q.on_host, sizeof(bool) * (size_t)n);
			}
		}
	}
	memcpy(q.on_host, best, sizeof(bool) * (size_t)n);
	q.n_on_host = 0;
	for (int u = 0; u < n; u++)
		q.n_on_host += best[u];
	for (int T = 1; q.n_on_host && T <= HYBRID_T_MAX; T *= 2)
		if (plan_predict(&q, lay, r, T, true) < plan_predict(&q, lay, r, T, false))
			*t_max = T;
	if (*t_max)
		memcpy(on_host, best, sizeof(bool) * (size_t)n);
	free(cand), free(best), free(q.on_host);
	return 0;
}

int plan_place(const struct plan *p, const struct layout *lay, const struct plan_rates *r, const char *mode,
	       bool *on_host, int *t_max, char *err, size_t errlen)
{
	int n = p->n_units;
	if (n < 1 || n > (1 << 24)) {
		snprintf(err, errlen, "--placement: a model of %d units", n);
		return -EINVAL;
	}
	memset(on_host, 0, sizeof(bool) * (size_t)n);
	*t_max = 16;
	if (!mode || !strcmp(mode, "gpu")) {
		*t_max = 0;
		return 0;
	}
	if (!strcmp(mode, "cpu")) {
		memset(on_host, 1, sizeof(bool) * (size_t)n);
		return 0;
	}
	if (strcmp(mode, "auto"))
		return parse_list(mode, n, on_host, err, errlen);
	*t_max = 0;
	if (!r || !p->device || p->n_resident == n)
		return 0;
	if (search(p, lay, r, NULL, on_host, t_max)) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

void plan_set_host(struct plan *p, const struct layout *lay, const bool *on)
{
	p->n_on_host = 0;
	p->host_bytes = 0;
	for (int u = 0; u < p->n_units; u++) {
		p->on_host[u] = on[u];
		p->n_on_host += on[u];
		p->host_bytes += on[u] ? weights_unit_device_bytes(lay, u) : 0;
	}
}

bool plan_replace(struct plan *p, const struct layout *lay, const struct plan_rates *r, const bool *may_host)
{
	int n = p->n_units, t_max = 0;
	bool *on = malloc(sizeof(bool) * (size_t)n);
	if (!on || search(p, lay, r, may_host, on, &t_max)) {
		free(on);
		return false;
	}
	bool changed = memcmp(on, p->on_host, sizeof(bool) * (size_t)n) != 0;
	plan_set_host(p, lay, on);
	p->hybrid_t_max = p->n_on_host ? t_max : 0;
	p->pred_device = plan_predict(p, lay, r, 1, false);
	p->pred_hybrid = p->n_on_host ? plan_predict(p, lay, r, 1, true) : 0;
	free(on);
	return changed;
}

void plan_fix_init(struct plan_fix *f, const struct plan_rates *r)
{
	memset(f, 0, sizeof(*f));
	f->r = *r;
}

/* Rates r with the link's scaled by g */
static struct plan_rates link_scaled(const struct plan_rates *r, double g)
{
	struct plan_rates c = *r;
	c.h2d *= g;
	c.h2d_busy *= g;
	return c;
}

int plan_fix_observe(struct plan_fix *f, const struct plan *p, const struct layout *lay, int T, double step_s,
		     double host_s)
{
	struct plan_parts pp;
	double pred = plan_predict_parts(p, lay, &f->r, T, true, &pp);
	f->pred_sum.host += pp.host, f->pred_sum.upload += pp.upload, f->pred_sum.dev += pp.dev, f->pred_sum.step += pred;
	f->meas_step_sum += step_s, f->meas_host_sum += host_s, f->n_obs++;
	if (!(pred > 0) || !(step_s > 0) || fabs(step_s / pred - 1) <= PLAN_FIX_TOL) {
		f->n_off = 0;
		f->meas_step = f->meas_host = f->pred_step = f->pred_host = f->sum_t = 0;
		return 0;
	}
	f->n_off++;
	f->meas_step += step_s, f->meas_host += host_s, f->pred_step += pred, f->pred_host += pp.host, f->sum_t += T;
	if (f->n_off < PLAN_FIX_STEPS || f->replans >= PLAN_FIX_MAX || f->fixed)
		return 0;
	struct plan_rates c = f->r;
	/* the host: its compute as measured (its busy rate scales with the others) */
	if (f->pred_host > 0 && f->meas_host > 0) {
		double k = f->pred_host / f->meas_host;
		for (int i = 0; i < RATES_NT; i++)
			c.host[i] *= k;
		c.host_busy *= k;
	}
	/* the link: the factor that brings the predicted step of the mean tokens to the measured mean (the
	 * predicted step falls as the link speeds up); left as it is when the step does not depend on it */
	int Tm = (int)(f->sum_t / f->n_off + 0.5);
	double want = f->meas_step / f->n_off, lo = 1.0 / 16, hi = 16;
	struct plan_rates a = link_scaled(&c, lo), b = link_scaled(&c, hi);
	double plo = plan_predict(p, lay, &a, Tm, true), phi = plan_predict(p, lay, &b, Tm, true);
	if (plo > want && phi < want && fabs(plan_predict(p, lay, &c, Tm, true) / want - 1) > PLAN_FIX_TOL / 3) {
		for (int it = 0; it < 40; it++) {
			double mid = sqrt(lo * hi);
			struct plan_rates m = link_scaled(&c, mid);
			if (plan_predict(p, lay, &m, Tm, true) > want)
				lo = mid;
			else
				hi = mid;
		}
		c = link_scaled(&c, sqrt(lo * hi));
	}
	f->r = c;
	f->n_off = 0;
	f->meas_step = f->meas_host = f->pred_step = f->pred_host = f->sum_t = 0;
	f->replans++;
	return 1;
}
