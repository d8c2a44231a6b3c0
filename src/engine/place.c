/*
 * place.c: the hybrid placement (plan.h): which units the host backend computes in steps of few tokens,
 * from measured rates (rates.c).
 *
 * plan_predict simulates a step the way model.c runs it, with three clocks: the host (its units' matmuls
 * at the host rate, and the syncs where the residual stream crosses the bus), the device's compute queue
 * (its units at the device rate, each after its upload) and the copy queue (uploads of streamed units in
 * the order weights.c issues them: at each device unit the next n_slots - 1 device units, at a host unit
 * all n_slots; a slot is refilled only after the compute that read it). Three steps are simulated and the
 * last one's time is the prediction (the first pays for uploads the steady state overlaps). The host and
 * the copy engine read the same memory: with units on both, the "busy" rates apply.
 *
 * plan_place "auto" tries, for every count c of host units among the units that are not resident, layouts
 * of k alternating runs (host run, device run; k from 1 to the most runs c allows), and keeps the fastest
 * predicted 1-token step; then the largest step (in tokens, powers of two up to 64) for which hybrid still
 * beats every unit on the device.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/plan.h"
#include "engine/weights.h"

#define HYBRID_T_MAX 64

/* Seconds of a unit of `bytes` at T tokens from rates measured at 1 and RATES_T tokens (time linear in T). */
static double unit_time(double bytes, const double rate[2], double rate1, int T)
{
	double t1 = bytes / rate1, tr = bytes / rate[1];
	double per = (tr - bytes / rate[0]) / (RATES_T - 1);
	return t1 + (per > 0 ? per : 0) * (T - 1);
}

static double maxd(double a, double b)
{
	return a > b ? a : b;
}

struct sim {
	const struct plan *p;
	const uint64_t *ub;
	const bool *host;
	double h2d;
	double th, tg, tc;   /* host, compute queue, copy queue */
	double *ready;       /* [n_units] upload done (-1: not staged) */
	int *slot_of;        /* [n_units] */
	double *slot_free;   /* [n_slots] */
	int *slot_unit;      /* [n_slots] */
	int next_slot;
};

static void sim_stage(struct sim *s, int u)
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
	s->tc = start + (double)s->ub[u] / s->h2d;
	s->ready[u] = s->tc;
}

static void sim_prefetch(struct sim *s, int u, int ahead)
{
	int n = s->p->n_units;
	for (int k = 1; k <= n && ahead > 0; k++) {
		int v = (u + k) % n;
		if ((s->host && s->host[v]) || s->p->resident[v])
			continue;
		sim_stage(s, v);
		ahead--;
	}
}

double plan_predict(const struct plan *p, const struct layout *lay, const struct plan_rates *r, int T, bool hybrid)
{
	int n = p->n_units;
	uint64_t *ub = malloc(sizeof(uint64_t) * (size_t)n);
	double *ready = malloc(sizeof(double) * (size_t)n);
	int *slot_of = malloc(sizeof(int) * (size_t)n);
	int ns = p->n_slots > 0 ? p->n_slots : 1;
	double *slot_free = calloc((size_t)ns, sizeof(double));
	int *slot_unit = malloc(sizeof(int) * (size_t)ns);
	if (!ub || !ready || !slot_of || !slot_free || !slot_unit) {
		free(ub), free(ready), free(slot_of), free(slot_free), free(slot_unit);
		return 0;
	}
	bool both = hybrid && p->n_on_host > 0 && p->n_on_host < n;
	struct sim s = {.p = p, .ub = ub, .host = hybrid ? p->on_host : NULL, .h2d = both ? r->h2d_busy : r->h2d,
			.ready = ready, .slot_of = slot_of, .slot_free = slot_free, .slot_unit = slot_unit};
	for (int u = 0; u < n; u++) {
		ub[u] = weights_unit_device_bytes(lay, u);
		ready[u] = p->resident[u] ? 0 : -1;
	}
	for (int i = 0; i < ns; i++)
		slot_unit[i] = -1;
	double host1 = both ? r->host_busy : r->host[0], end[3] = {0};
	bool prev_host = s.host && s.host[0];
	for (int step = 0; step < 3; step++) {
		for (int u = 0; u < n; u++) {
			bool h = s.host && s.host[u];
			if (h) {
				if (!prev_host) /* download the residual stream: waits for the device */
					s.th = maxd(s.th, s.tg) + r->cross;
				sim_prefetch(&s, u, p->n_slots);
				s.th += unit_time((double)ub[u], r->host, host1, T);
			} else {
				if (prev_host)
					s.tg = maxd(s.tg, s.th) + r->cross;
				if (!p->resident[u] && p->n_slots > 0)
					sim_stage(&s, u);
				s.tg = maxd(maxd(s.tg, s.th), ready[u]) + unit_time((double)ub[u], r->dev, r->dev[0], T);
				if (!p->resident[u] && p->n_slots > 0) {
					slot_free[slot_of[u]] = s.tg;
					sim_prefetch(&s, u, p->n_slots - 1);
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
	return end[2] - end[1];
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
	/* the candidates: the units that are not resident, in order */
	int *cand = malloc(sizeof(int) * (size_t)n);
	bool *best = calloc((size_t)n, sizeof(bool));
	struct plan q = *p;
	q.on_host = calloc((size_t)n, sizeof(bool));
	if (!cand || !best || !q.on_host) {
		free(cand), free(best), free(q.on_host);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	int N = 0;
	for (int u = 0; u < n; u++)
		if (!p->resident[u])
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
	memcpy(on_host, best, sizeof(bool) * (size_t)n);
	memcpy(q.on_host, best, sizeof(bool) * (size_t)n);
	q.n_on_host = 0;
	for (int u = 0; u < n; u++)
		q.n_on_host += best[u];
	for (int T = 1; q.n_on_host && T <= HYBRID_T_MAX; T *= 2)
		if (plan_predict(&q, lay, r, T, true) < plan_predict(&q, lay, r, T, false))
			*t_max = T;
	if (!*t_max)
		memset(on_host, 0, sizeof(bool) * (size_t)n);
	free(cand), free(best), free(q.on_host);
	return 0;
}
