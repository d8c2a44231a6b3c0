/*
 * moe_cpu.c: which missing experts of a range the host computes (moe_cpu.h). The costs are those of
 * place.c's simulator, per expert instead of per unit: seconds per byte at the expert's token count from the
 * measured rates (plan_spb_at), the host at its busy rate (copies run beside it), uploads at the link's busy
 * rate. The split is a greedy balance of two sides that run at once; with every expert of a layer the same
 * size, the cheapest experts to compute on the host are those with the fewest tokens.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/moe_cpu.h"

static const char *const names[] = {"off", "auto", "all"};

int moe_cpu_parse(const char *name, int *mode, char *err, size_t errlen)
{
	for (int i = 0; i < 3; i++)
		if (!strcmp(name, names[i])) {
			*mode = i;
			return 0;
		}
	snprintf(err, errlen, "--moe-cpu %s: expected auto, off or all", name);
	return -EINVAL;
}

const char *moe_cpu_name(int mode)
{
	return mode >= 0 && mode < 3 ? names[mode] : "?";
}

static double maxd(double a, double b)
{
	return a > b ? a : b;
}

int moe_cpu_split(int mode, const struct plan_rates *r, double bytes, const int *hit_cnt, int n_hits,
		  const int *miss_cnt, int n_miss, bool *host, double *pred_s)
{
	for (int i = 0; i < n_miss; i++)
		host[i] = mode == MOE_CPU_ALL;
	if (pred_s)
		*pred_s = 0;
	if (mode == MOE_CPU_ALL)
		return n_miss;
	if (mode != MOE_CPU_AUTO || !r || !n_miss)
		return 0;
	double dev = 0, hst = 0, busy = r->host[0] / r->host_busy;
	for (int i = 0; i < n_hits; i++)
		dev += bytes * plan_spb_at(r->dev, hit_cnt[i]);
	for (int i = 0; i < n_miss; i++)
		dev += bytes / r->h2d_busy + bytes * plan_spb_at(r->dev, miss_cnt[i]);
	int n = 0;
	/* fewest tokens first: a selection over the misses not yet taken (a range has at most E of them) */
	for (;;) {
		int best = -1;
		for (int i = 0; i < n_miss; i++)
			if (!host[i] && (best < 0 || miss_cnt[i] < miss_cnt[best]))
				best = i;
		if (best < 0)
			break;
		double h = bytes * plan_spb_at(r->host_exp, miss_cnt[best]) * busy + (n ? 0 : 2 * r->cross);
		double d = bytes / r->h2d_busy + bytes * plan_spb_at(r->dev, miss_cnt[best]);
		if (maxd(hst + h, dev - d) >= maxd(hst, dev))
			break;
		host[best] = true;
		hst += h;
		dev -= d;
		n++;
	}
	if (pred_s)
		*pred_s = maxd(hst, dev);
	return n;
}
