/*
 * test_place.c: the hybrid placement's planner (src/engine/place.c) on a made-up model of equal layers, where
 * the answers can be worked out by hand:
 *   - every unit streamed, the device fast: a step takes the units' bytes / the upload rate;
 *   - the CPU as fast as the link: auto puts about half of the units on the CPU and predicts about half the
 *     time (the two buses overlap), and says so for steps of up to some tokens;
 *   - a CPU 100x slower than the link: auto keeps every unit on the device;
 *   - resident units cost no upload; a placement list parses, and bad ones fail naming --placement;
 *   - the rates are measured on layer 0, the head and layers spread between (rates_sample);
 *   - the rates cache keeps what it is given per key ($FERRY_HOME), and FERRY_RATES=measure bypasses it; a
 *     cache file that is not JSON, or an entry with a field that is not a positive number, is an error naming
 *     the file (and the field), and a save afterwards repairs it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
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

int main(void)
{
	struct layout lay;
	make_layout(&lay);
	char err[256];
	double B = (double)UNIT;
	struct plan_rates r = {.h2d = 10e9, .h2d_busy = 10e9, .host = {10e9, 10e9}, .host_busy = 10e9,
			       .dev = {1e12, 1e12}, .cross = 1e-5};
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
	slow.host[0] = slow.host[1] = slow.host_busy = 1e8;
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
	int su[4], sn = rates_sample(&lay, su);
	CHECK_MSG(sn == 4 && su[0] == 0 && su[1] == 2 && su[2] == 5 && su[3] == L, "rates sample: %d units: %d %d %d %d",
		  sn, su[0], su[1], su[2], su[3]);
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
