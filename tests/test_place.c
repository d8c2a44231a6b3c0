/*
 * test_place.c: the hybrid placement's planner (src/engine/place.c) on a made-up model of equal layers, where
 * the answers can be worked out by hand:
 *   - every unit streamed, the device fast: a step takes the units' bytes / the upload rate;
 *   - the CPU as fast as the link: auto puts about half of the units on the CPU and predicts about half the
 *     time (the two buses overlap), and says so for steps of up to some tokens;
 *   - a CPU 100x slower than the link: auto keeps every unit on the device;
 *   - resident units cost no upload; a placement list parses, and bad ones fail naming --placement;
 *   - the rates are measured on layer 0, the head and layers spread between (rates_sample);
 *   - --moe-cpu's split (moe_cpu.c): on a laptop's link (13 GB/s) a 1-token range of a 30B-A3B-shaped
 *     model (2.65 MB experts) gives most of a token's 8 missing experts to a CPU that reads 30 GB/s, the
 *     split the balance works out to by hand; ranges of many tokens per expert, where the CPU's rate falls,
 *     give it few or none; off none, all every one; a fast link (H100 PCIe, CPU slower) leaves it two;
 *   - the rates cache keeps what it is given per key ($FERRY_HOME), and FERRY_RATES=measure bypasses it; a
 *     cache file that is not JSON, or an entry with a field that is not a positive number, is an error naming
 *     the file (and the field), and a save afterwards repairs it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/moe_cpu.h"
#include "engine/plan.h"
#include "engine/rates.h"
#include "layout/wfmt.h"


#define L 8
#define UNIT (64ull << 20)

static struct layout_tensor tens[L + 1];
static struct layout_unit units[L];
static struct layout_file file = {.name = "all.bin", .bytes = (L + 2) * UNIT};

static void make_layout(struct layout *lay)
{
	memset(lay, 0, sizeof(*lay));
	lay->hp.n_layers = L;
	lay->n_files = 1;
	lay->files = &file;
	for (int u = 0; u <= L; u++) {
		struct layout_tensor *t = &tens[u];
		snprintf(t->name, sizeof(t->name), "w%d", u);
		t->offset = (uint64_t)u * UNIT;
		t->bytes = t->raw_bytes = UNIT;
		t->ndim = 2;
		t->shape[0] = (int64_t)(UNIT / 4096);
		t->shape[1] = 1024;
		t->fmt = WFMT_F32;
	}
	for (int l = 0; l < L; l++)
		units[l] = (struct layout_unit){1, &tens[l]};
	lay->layers = units;
	lay->head = (struct layout_unit){1, &tens[L]};
}

static void make_plan(struct plan *p, int n_slots, int n_resident)
{
	memset(p, 0, sizeof(*p));
	p->device = true;
	p->n_units = L + 1;
	p->n_slots = n_slots;
	p->resident = calloc(L + 1, sizeof(bool));
	p->on_host = calloc(L + 1, sizeof(bool));
	for (int u = 0; u < n_resident; u++)
		p->resident[u] = true;
	p->n_resident = n_resident;
}

static double rel(double a, double b)
{
	return a > b ? a / b - 1 : b / a - 1;
}

static int count_on(const bool *on)
{
	int n = 0;
	for (int u = 0; u <= L; u++)
		n += on[u];
	return n;
}

/* Places p with rates r ("auto"), keeping the placement in p; returns the units on the host. */
static int place_auto(struct plan *p, const struct layout *lay, const struct plan_rates *r)
{
	bool on[L + 1];
	int t_max;
	char err[256];
	CHECK_MSG(plan_place(p, lay, r, "auto", on, &t_max, err, sizeof(err)) == 0, "auto: %s", err);
	memcpy(p->on_host, on, sizeof(on));
	p->n_on_host = count_on(on);
	p->hybrid_t_max = t_max;
	return p->n_on_host;
}

/* The rate model, worked out by hand on 9 equal units of B bytes, all streamed, the device's compute free:
 *   - a CPU twice the link (20 and 10 GB/s, as fast beside each other), 2 slots (3 streamed units are
 *     uploaded every step): the balanced split is 6 units on the host and 3 streamed, both paths 3B / 10
 *     GB/s; auto finds it and predicts that;
 *   - the host's rate per token count: every unit on the host at T tokens takes 9B x (seconds per byte at T),
 *     interpolated between the measured counts and extended past 8 by the last slope;
 *   - busy rates apply only while both paths run: all-host and all-device steps do not see them, a hybrid
 *     step is slower with them. */
static void rate_model(const struct layout *lay)
{
	double B = (double)UNIT, cross = 1e-6;
	struct plan_rates r = {.h2d = 10e9, .h2d_busy = 10e9, .host = {20e9, 20e9, 20e9, 20e9}, .host_busy = 20e9,
			       .dev = {1e13, 1e13, 1e13, 1e13}, .cross = cross};
	struct plan p;
	make_plan(&p, 2, 0);
	int n = place_auto(&p, lay, &r);
	struct plan_parts pp;
	double t = plan_predict_parts(&p, lay, &r, 1, true, &pp), want = 3 * B / 10e9;
	CHECK_MSG(n == 6, "a CPU twice the link: %d units on the host, want 6", n);
	CHECK_MSG(rel(t, want) < 0.05, "balanced step %.5f s, want %.5f", t, want);
	CHECK_MSG(rel(pp.host, 6 * B / 20e9) < 1e-3 && rel(pp.upload, 3 * B / 10e9) < 1e-3 && pp.dev < 1e-4 && pp.step == t,
		  "parts: host %.5f upload %.5f device %.6f step %.5f", pp.host, pp.upload, pp.dev, pp.step);

	struct plan_rates h = r;
	double gbs[RATES_NT] = {20e9, 15e9, 10e9, 5e9};
	memcpy(h.host, gbs, sizeof(gbs));
	h.host_busy = h.host[0] / 2; /* never applies: nothing streams */
	memset(p.on_host, 1, sizeof(bool) * (L + 1));
	p.n_on_host = L + 1;
	struct {
		int T;
		double spb;
	} pts[] = {{1, 1 / 20e9}, {2, 1 / 15e9}, {3, (1 / 15e9 + 1 / 10e9) / 2}, {8, 1 / 5e9},
		   {16, 1 / 5e9 + 8 * (1 / 5e9 - 1 / 10e9) / 4}};
	for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
		double got = plan_predict(&p, lay, &h, pts[i].T, true), w = 9 * B * pts[i].spb + cross;
		CHECK_MSG(rel(got, w) < 1e-4, "every unit on the host at T=%d: %.6f s, want %.6f", pts[i].T, got, w);
	}

	struct plan_rates busy = r;
	busy.h2d_busy = r.h2d / 2;
	busy.host_busy = r.host[0] / 2;
	double cpu_only = plan_predict(&p, lay, &busy, 1, true);
	CHECK_MSG(rel(cpu_only, 9 * B / 20e9 + cross) < 1e-4, "every unit on the host saw the busy rates: %.5f", cpu_only);
	memset(p.on_host, 0, sizeof(bool) * (L + 1));
	p.n_on_host = 0;
	double dev_only = plan_predict(&p, lay, &busy, 1, false);
	CHECK_MSG(rel(dev_only, 9 * B / 10e9) < 0.02, "every unit streamed saw the busy rates: %.5f", dev_only);
	place_auto(&p, lay, &r);
	double alone = plan_predict(&p, lay, &r, 1, true), both = plan_predict(&p, lay, &busy, 1, true);
	CHECK_MSG(both > 1.3 * alone && both < 2.01 * alone, "hybrid with busy rates %.5f s, alone %.5f", both, alone);
	free(p.resident), free(p.on_host);
}

static void moe_split_model(void)
{
	double B = 2.65e6; /* an expert of a 30B-A3B at Q4_K: 3 x 2048 x 768 x 4.5 bits */
	struct plan_rates r = {.h2d = 13e9, .h2d_busy = 13e9, .host = {30e9, 25e9, 18e9, 10e9}, .host_busy = 30e9,
			       .dev = {1e12, 1e12, 1e12, 1e12}, .cross = 20e-6,
			       .host_exp = {30e9, 25e9, 18e9, 10e9}};
	int one[8] = {1, 1, 1, 1, 1, 1, 1, 1}, hits[2] = {1, 1};
	bool host[16];
	double pred = 0;
	/* by hand: upload 204 us an expert, host 88 us (+40 us crossing): 6 on the host (568 us) against 2
	 * uploads (408 us); 5 would leave 612 us of uploads, 7 give the host 656 */
	int n = moe_cpu_split(MOE_CPU_AUTO, &r, B, hits, 2, one, 8, host, &pred);
	double up = B / 13e9 + B / 1e12, want = 6 * B / 30e9 + 2 * r.cross;
	CHECK_MSG(n == 6, "laptop, 1 token: the host took %d of 8 missing experts, want 6", n);
	CHECK_MSG(rel(pred, want) < 1e-3 && pred > 2 * up, "laptop, 1 token: predicted %.6f s, want %.6f", pred, want);
	CHECK_MSG(moe_cpu_split(MOE_CPU_OFF, &r, B, hits, 2, one, 8, host, NULL) == 0 && !host[0], "off took some");
	CHECK_MSG(moe_cpu_split(MOE_CPU_ALL, &r, B, hits, 2, one, 8, host, NULL) == 8 && host[7], "all took fewer");
	CHECK_MSG(moe_cpu_split(MOE_CPU_AUTO, NULL, B, hits, 2, one, 8, host, NULL) == 0, "auto without rates took some");
	/* the fewest tokens first: one expert with 3 tokens among seven with 1 stays with the device */
	int mixed[8] = {1, 1, 1, 3, 1, 1, 1, 1};
	n = moe_cpu_split(MOE_CPU_AUTO, &r, B, hits, 2, mixed, 8, host, NULL);
	CHECK_MSG(n == 6 && !host[3], "mixed counts: %d on the host, the 3-token expert %s", n, host[3] ? "too" : "not");
	/* 64 tokens over 16 experts (32 each): the CPU at 32 tokens takes 972 us an expert, so 2 of them beside 14
	 * uploads (2.9 ms); at 256 tokens each none */
	int big[16];
	for (int i = 0; i < 16; i++)
		big[i] = 32;
	n = moe_cpu_split(MOE_CPU_AUTO, &r, B, NULL, 0, big, 16, host, NULL);
	CHECK_MSG(n == 2, "32 tokens an expert: the host took %d of 16 experts, want 2", n);
	for (int i = 0; i < 16; i++)
		big[i] = 256;
	n = moe_cpu_split(MOE_CPU_AUTO, &r, B, NULL, 0, big, 16, host, NULL);
	CHECK_MSG(n == 0, "256 tokens an expert: the host took %d of 16 experts, want none", n);
	/* an H100 on PCIe 5 (50 GB/s) beside a CPU of 20 GB/s: the host takes two (it runs beside the uploads) */
	struct plan_rates fast = r;
	fast.h2d = fast.h2d_busy = 50e9;
	for (int i = 0; i < RATES_NT; i++)
		fast.host_exp[i] = 20e9;
	fast.host_busy = fast.host[0];
	n = moe_cpu_split(MOE_CPU_AUTO, &fast, B, hits, 2, one, 8, host, NULL);
	CHECK_MSG(n == 2, "fast link: the host took %d of 8, want 2", n);
	int mode = -1;
	char err[128] = "";
	CHECK_MSG(moe_cpu_parse("all", &mode, err, sizeof(err)) == 0 && mode == MOE_CPU_ALL, "parse all");
	CHECK_MSG(moe_cpu_parse("most", &mode, err, sizeof(err)) == -EINVAL && strstr(err, "--moe-cpu most"),
		  "parse most: '%s'", err);
}

/* Feeds plan_fix_observe the steps a machine with rates `truth` takes under p (measured = truth's
 * prediction); returns after the first re-plan request or n steps (then -1). */
static int feed(struct plan_fix *f, struct plan *p, const struct layout *lay, const struct plan_rates *truth, int T,
		int n)
{
	for (int i = 0; i < n; i++) {
		struct plan_parts tp;
		double step = plan_predict_parts(p, lay, truth, T, true, &tp);
		if (plan_fix_observe(f, p, lay, T, step, tp.host))
			return i + 1;
	}
	return -1;
}

/* The online correction: rates that are wrong by 2x (the host, then the link) are corrected from synthetic
 * measured steps after PLAN_FIX_STEPS steps, and the placement moves toward the truth's best; right rates
 * never re-plan, nor does a placement the user gave. */
static void online_fix(const struct layout *lay)
{
	struct plan_rates said = {.h2d = 10e9, .h2d_busy = 10e9, .host = {10e9, 10e9, 10e9, 10e9}, .host_busy = 10e9,
				  .dev = {1e13, 1e13, 1e13, 1e13}, .cross = 1e-6};
	struct plan p;
	make_plan(&p, 3, 0);
	int n0 = place_auto(&p, lay, &said);
	struct plan_fix f;
	plan_fix_init(&f, &said);
	CHECK_MSG(feed(&f, &p, lay, &said, 1, 20) < 0 && f.replans == 0, "rates that are right asked for a re-plan");

	/* the host at half the rate it was measured at */
	struct plan_rates truth = said;
	for (int i = 0; i < RATES_NT; i++)
		truth.host[i] /= 2;
	truth.host_busy /= 2;
	plan_fix_init(&f, &said);
	int k = feed(&f, &p, lay, &truth, 1, 20);
	CHECK_MSG(k == PLAN_FIX_STEPS, "a host 2x slower: re-plan asked after %d steps, want %d", k, PLAN_FIX_STEPS);
	CHECK_MSG(rel(f.r.host[0], truth.host[0]) < 0.02 && rel(f.r.h2d, truth.h2d) < 0.1,
		  "corrected host %.2f GB/s (truth %.2f), link %.2f (truth %.2f)", f.r.host[0] / 1e9, truth.host[0] / 1e9,
		  f.r.h2d / 1e9, truth.h2d / 1e9);
	double before = plan_predict(&p, lay, &truth, 1, true);
	plan_replace(&p, lay, &f.r, NULL);
	double after = plan_predict(&p, lay, &truth, 1, true);
	CHECK_MSG(p.n_on_host < n0 && after < 0.9 * before, "re-placed: %d units on the host (were %d), truth's step %.5f s (was %.5f)",
		  p.n_on_host, n0, after, before);
	CHECK_MSG(rel(p.pred_hybrid, after) < PLAN_FIX_TOL, "re-placed prediction %.5f s, truth %.5f", p.pred_hybrid, after);
	CHECK_MSG(feed(&f, &p, lay, &truth, 1, 20) < 0, "corrected rates asked for another re-plan");

	/* the link at half its measured rate: the host was right, the link is fitted from the step times */
	struct plan q;
	make_plan(&q, 3, 0);
	place_auto(&q, lay, &said);
	truth = said;
	truth.h2d /= 2;
	truth.h2d_busy /= 2;
	plan_fix_init(&f, &said);
	k = feed(&f, &q, lay, &truth, 1, 20);
	CHECK_MSG(k == PLAN_FIX_STEPS && rel(f.r.h2d, truth.h2d) < 0.05 && rel(f.r.host[0], said.host[0]) < 0.02,
		  "a link 2x slower: re-plan after %d steps, link %.2f GB/s (truth %.2f), host %.2f", k, f.r.h2d / 1e9,
		  truth.h2d / 1e9, f.r.host[0] / 1e9);
	int nq = q.n_on_host;
	plan_replace(&q, lay, &f.r, NULL);
	CHECK_MSG(q.n_on_host > nq, "a slower link: %d units on the host, were %d", q.n_on_host, nq);
	/* only the units allowed may go to the host */
	bool may[L + 1] = {0};
	may[L] = true;
	plan_replace(&q, lay, &f.r, may);
	CHECK_MSG(q.n_on_host <= 1 && !memchr(q.on_host, 1, L), "re-placed outside may_host: %d units", q.n_on_host);

	/* a placement the user gave is observed, never re-placed */
	plan_fix_init(&f, &said);
	f.fixed = true;
	CHECK_MSG(feed(&f, &p, lay, &truth, 1, 20) < 0 && f.n_obs == 20, "a given placement asked for a re-plan");
	free(p.resident), free(p.on_host), free(q.resident), free(q.on_host);
}

int main(void)
{
	struct layout lay;
	make_layout(&lay);
	char err[256];
	double B = (double)UNIT;
	struct plan_rates r = {.h2d = 10e9, .h2d_busy = 10e9, .host = {10e9, 10e9, 10e9, 10e9}, .host_busy = 10e9,
			       .dev = {1e12, 1e12, 1e12, 1e12}, .cross = 1e-5, .host_exp = {10e9, 10e9, 10e9, 10e9}};
	struct plan p;
	make_plan(&p, 3, 0);
	double all = plan_predict(&p, &lay, &r, 1, false);
	double want = (L + 1) * B / r.h2d;
	CHECK_MSG(rel(all, want) < 0.05, "every unit streamed: %.4f s, want about %.4f", all, want);

	bool on[L + 1];
	int t_max = -1;
	CHECK_MSG(plan_place(&p, &lay, &r, "auto", on, &t_max, err, sizeof(err)) == 0, "auto: %s", err);
	int n = 0;
	for (int u = 0; u <= L; u++)
		n += on[u];
	memcpy(p.on_host, on, sizeof(on));
	p.n_on_host = n;
	double hyb = plan_predict(&p, &lay, &r, 1, true);
	CHECK_MSG(n >= 3 && n <= 6, "auto put %d of %d units on the host, want about half", n, L + 1);
	CHECK_MSG(hyb < 0.7 * all && hyb > 0.4 * all, "hybrid %.4f s against %.4f on the device alone", hyb, all);
	CHECK_MSG(t_max >= 1, "hybrid steps up to %d tokens", t_max);

	/* a slow CPU: nothing moves */
	struct plan_rates slow = r;
	slow.host[0] = slow.host[1] = slow.host[2] = slow.host[3] = slow.host_busy = 1e8;
	memset(p.on_host, 0, sizeof(bool) * (L + 1));
	p.n_on_host = 0;
	CHECK_MSG(plan_place(&p, &lay, &slow, "auto", on, &t_max, err, sizeof(err)) == 0, "auto slow: %s", err);
	n = 0;
	for (int u = 0; u <= L; u++)
		n += on[u];
	CHECK_MSG(n == 0 && t_max == 0, "a CPU 100x slower than the link got %d units (t_max %d)", n, t_max);

	/* resident units are not uploaded */
	struct plan q;
	make_plan(&q, 3, 4);
	double res = plan_predict(&q, &lay, &r, 1, false);
	want = (L + 1 - 4) * B / r.h2d;
	CHECK_MSG(rel(res, want) < 0.05, "4 of 9 resident: %.4f s, want about %.4f", res, want);

	/* lists */
	CHECK_MSG(plan_place(&p, &lay, NULL, "0-2,5,head", on, &t_max, err, sizeof(err)) == 0, "list: %s", err);
	bool want_on[L + 1] = {true, true, true, false, false, true, false, false, true};
	CHECK_MSG(!memcmp(on, want_on, sizeof(on)) && t_max > 0, "0-2,5,head parsed wrong");
	CHECK_MSG(plan_place(&p, &lay, NULL, "cpu", on, &t_max, err, sizeof(err)) == 0 && on[0] && on[L], "cpu");
	CHECK_MSG(plan_place(&p, &lay, NULL, "gpu", on, &t_max, err, sizeof(err)) == 0 && !on[0] && t_max == 0, "gpu");
	const char *bad[] = {"8", "3-1", "a", "0,", "", "1-", "-1", "2,,3", "head2"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = 0;
		CHECK_MSG(plan_place(&p, &lay, NULL, bad[i], on, &t_max, err, sizeof(err)) != 0 && strstr(err, "--placement"),
		      "'%s' accepted", bad[i]);
	}
	/* the rates' sample: layer 0, the head and layers spread between them */
	int su[8], sn = rates_sample(&lay, su), want_su[8] = {0, 1, 2, 3, 4, 5, 6, L};
	CHECK_MSG(sn == 8 && !memcmp(su, want_su, sizeof(su)), "rates sample: %d units: %d %d %d %d %d %d %d %d", sn,
		  su[0], su[1], su[2], su[3], su[4], su[5], su[6], su[7]);
	rate_model(&lay);
	online_fix(&lay);
	moe_split_model();
	/* the rates cache: a round trip under $FERRY_HOME, another key misses, FERRY_RATES=measure ignores it */
	char home[] = "/tmp/ferry_test_place_XXXXXX";
	CHECK_MSG(mkdtemp(home) != NULL, "mkdtemp");
	char sub[128];
	snprintf(sub, sizeof(sub), "%s/a/b", home);
	setenv("FERRY_HOME", sub, 1);
	struct plan_rates got = {0};
	char cerr[512];
	CHECK_MSG(rates_load("k1", &got, cerr, sizeof(cerr)) == 0, "a cache that is not there loaded");
	rates_save("k1", &r);
	rates_save("k2", &slow);
	CHECK_MSG(rates_load("k1", &got, cerr, sizeof(cerr)) == 1 && !memcmp(&got, &r, sizeof(r)),
		  "k1 did not come back as saved");
	CHECK_MSG(rates_load("k2", &got, cerr, sizeof(cerr)) == 1 && got.host[0] == slow.host[0],
		  "k2 did not come back as saved");
	CHECK_MSG(rates_load("k3", &got, cerr, sizeof(cerr)) == 0, "k3 loaded");
	/* bad input: an entry with a field that is not a positive number, a file that is not JSON; each
	 * named in the error, got left as it was, and a save afterwards repairs the file */
	char path[300];
	snprintf(path, sizeof(path), "%s/rates.json", sub);
	const char *bad_files[] = {"{\"k1\": {\"h2d\": -1}}", "{\"k1\": {\"h2d\": 1, \"h2d_busy\": \"x\"}}",
				   "{\"k1\": 5}", "[1, 2]", "{\"k1\": {"};
	const char *bad_why[] = {"field h2d", "field h2d_busy", "field h2d", "not a JSON object", path};
	for (size_t i = 0; i < sizeof(bad_files) / sizeof(bad_files[0]); i++) {
		FILE *f = fopen(path, "w");
		CHECK_MSG(f && fputs(bad_files[i], f) >= 0 && fclose(f) == 0, "writing %s", path);
		struct plan_rates keep = slow;
		cerr[0] = 0;
		int lr = rates_load("k1", &keep, cerr, sizeof(cerr));
		CHECK_MSG(lr < 0 && strstr(cerr, path) && strstr(cerr, bad_why[i]) && keep.host[0] == slow.host[0],
			  "cache '%s': rc %d, error '%s'", bad_files[i], lr, cerr);
		CHECK_MSG(rates_load("k9", &keep, cerr, sizeof(cerr)) == (strchr(bad_files[i], '[') ||
									  !strcmp(bad_files[i], "{\"k1\": {") ? -EINVAL : 0),
			  "cache '%s': another key", bad_files[i]);
		rates_save("k1", &r);
		CHECK_MSG(rates_load("k1", &got, cerr, sizeof(cerr)) == 1 && !memcmp(&got, &r, sizeof(r)),
			  "cache '%s' not repaired by a save: %s", bad_files[i], cerr);
	}
	setenv("FERRY_RATES", "measure", 1);
	CHECK_MSG(rates_load("k1", &got, cerr, sizeof(cerr)) == 0, "FERRY_RATES=measure still read the cache");
	unsetenv("FERRY_RATES");
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", home);
	CHECK_MSG(system(cmd) == 0, "%s", cmd);

	free(p.resident), free(p.on_host), free(q.resident), free(q.on_host);
	CHECK_DONE();
}
