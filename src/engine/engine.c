/*
 * engine.c: opening a model to run (engine.h): backend, KV format, memory plan, streamer options, model,
 * scheduler, in that order; and the figures the commands report.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/numa.h"
#include "base/util.h"
#include "engine/engine.h"
#include "engine/moe_cpu.h"
#include "engine/rates.h"

struct engine {
	struct backend *b;
	struct backend *hb;   /* the host backend of hybrid steps (NULL: none) */
	struct plan_rates rates;
	bool has_rates;
	struct plan_fix fix;  /* the online correction of the hybrid placement (the scheduler's) */
	struct plan plan;     /* until model_init takes it (plan_only: kept here) */
	struct model m;
	struct sched s;
	bool has_model, has_sched;
	struct layout dlay;   /* the draft model (spec.h) */
	struct model dm;
	bool has_dlay, has_draft;
	int *eos;
	struct io_host_alloc pinned; /* the streamer keeps a pointer to it */
};

static void io_log(const char *msg, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "ferry: io: %s\n", msg);
}

/* The KV format: the one asked for, else f16 on a device and f32 on the host. */
static int kv_fmt_of(const char *name, const struct backend *b, char *err, size_t errlen)
{
	int f = b->ops->host_memory ? KV_F32 : KV_F16;
	if (name)
		for (f = 0; f < KV_FMT_COUNT && strcmp(name, kv_fmt_name(f)); f++)
			;
	if (f < KV_FMT_COUNT && b->ops->kv_supports(f))
		return f;
	char fmts[64] = "";
	for (int k = 0; k < KV_FMT_COUNT; k++)
		if (b->ops->kv_supports(k))
			snprintf(fmts + strlen(fmts), sizeof(fmts) - strlen(fmts), "%s%s", fmts[0] ? ", " : "", kv_fmt_name(k));
	snprintf(err, errlen, "--kv %s: not a KV format of the %s backend (%s)", name ? name : "default", b->ops->name,
		 fmts);
	return -EINVAL;
}

/* The rates for this machine and model from the cache, or measured (measure: when the cache has none) into
 * e->rates; e->hb must be open. A failed measurement fails only when `need`. */
static int get_rates(struct engine *e, const struct layout *lay, const struct engine_opts *o, bool measure, bool need,
		     char *err, size_t errlen)
{
	char key[2048], cerr[512];
	rates_key(key, sizeof(key), lay, e->b, e->hb, o->h2d_limit);
	int lr = rates_load(key, &e->rates, cerr, sizeof(cerr));
	if (lr < 0 && measure)
		fprintf(stderr, "ferry: ignoring the rates cache: %s; measuring again\n", cerr);
	e->has_rates = lr > 0;
	if (e->has_rates || !measure)
		return 0;
	int rc = rates_measure(&e->rates, lay, e->b, e->hb, e->pinned.alloc ? &e->pinned : NULL, err, errlen);
	e->has_rates = !rc;
	if (!rc)
		rates_save(key, &e->rates);
	return need ? rc : 0;
}

/* --moe-cpu's mode into the plan, and what it does with a range whose experts are all missing from the
 * device: a token's K, and a range of moe_cpu_t tokens spread evenly over K experts each (for --plan). */
static void moe_policy(struct plan *p, const struct layout *lay, const struct plan_rates *r, int mode)
{
	int K = lay->hp.n_experts_used, E = lay->hp.n_experts, T = p->opt.moe_cpu_t;
	double bytes = (double)weights_expert_bytes(lay);
	int cnt[E > 0 ? E : 1];
	bool host[E > 0 ? E : 1];
	p->moe_cpu = mode;
	p->moe_cpu_k = K;
	for (int i = 0; i < E; i++)
		cnt[i] = 1;
	p->moe_cpu_host1 = moe_cpu_split(mode, r, bytes, NULL, 0, cnt, K, host, NULL);
	int n = T * K < E ? T * K : E; /* the experts such a range chooses, and the tokens of each */
	for (int i = 0; i < n; i++)
		cnt[i] = (T * K + n - 1) / n;
	int h = moe_cpu_split(mode, r, bytes, NULL, 0, cnt, n, host, NULL);
	p->moe_cpu_host_t = n ? (h * K + n / 2) / n : 0;
}

/* The hybrid placement --placement asks for (plan.h): on a device, "auto" measures the rates (or finds them
 * in the cache) and keeps the fastest predicted placement; a list or "cpu" is taken as given and predicted
 * from the rates (a host-memory backend runs a list on a second host backend: the same steps, for the tests
 * and bench/bench_place_cpu.py). Re-makes the plan with it. --moe-cpu (moe_mode) keeps the host backend for
 * a device's missing experts, and auto needs the rates too. */
static int place(struct engine *e, const struct layout *lay, const struct engine_opts *o, const struct model_opts *mo,
		 int moe_mode, char *err, size_t errlen)
{
	const char *mode = o->placement ? o->placement : "auto";
	bool device = !e->b->ops->host_memory;
	bool moe = moe_mode != MOE_CPU_OFF && mo->moe_cpu_t > 0 && e->plan.n_resident < e->plan.n_units;
	bool hyb = strcmp(mode, "gpu") && !(!strcmp(mode, "auto") && (!device || e->plan.n_resident == e->plan.n_units));
	if (!hyb && !moe) {
		if (!strcmp(mode, "gpu") && !backend_cpu_create(&e->hb, o->threads, err, errlen)) {
			/* predictions only: the rates an earlier run measured, if the cache has them */
			get_rates(e, lay, o, false, false, err, errlen);
			e->hb->ops->destroy(e->hb);
			e->hb = NULL;
			if (e->has_rates)
				e->plan.pred_device = plan_predict(&e->plan, lay, &e->rates, 1, false);
		}
		return 0;
	}
	int rc = backend_cpu_create(&e->hb, o->threads, err, errlen);
	/* auto chooses from the rates; a list or cpu is predicted from them (--plan, --stats) */
	if (!rc)
		rc = get_rates(e, lay, o, hyb || moe_mode == MOE_CPU_AUTO, hyb && !strcmp(mode, "auto"), err, errlen);
	bool *on_host = rc || !hyb ? NULL : calloc((size_t)e->plan.n_units, sizeof(bool));
	if (!rc && hyb && !on_host) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
	}
	int t_max = 0;
	if (hyb)
		rc = rc ? rc : plan_place(&e->plan, lay, e->has_rates ? &e->rates : NULL, mode, on_host, &t_max, err, errlen);
	int n_on = 0;
	for (int u = 0; !rc && hyb && u < e->plan.n_units; u++)
		n_on += on_host[u];
	if (!rc && n_on && t_max > 0) {
		plan_free(&e->plan);
		rc = plan_make(&e->plan, lay, e->b, mo, o->stream_all, o->t_max_auto, o->kv_host, on_host, err, errlen);
		if (!rc)
			e->plan.hybrid_t_max = t_max;
	}
	if (!rc && e->has_rates) {
		e->plan.pred_device = plan_predict(&e->plan, lay, &e->rates, 1, false);
		e->plan.pred_hybrid = e->plan.n_on_host ? plan_predict(&e->plan, lay, &e->rates, 1, true) : 0;
	}
	if (!rc && moe)
		moe_policy(&e->plan, lay, e->has_rates ? &e->rates : NULL, moe_mode);
	free(on_host);
	return rc;
}

/* The draft model (--draft): the same vocabulary as the target, every unit resident on the device (its
 * weights and KV inside --vram, before the target's plan), sequences and context as the target's. */
static int draft_open(struct engine *e, const struct layout *lay, const struct engine_opts *o, int kv_fmt, char *err,
		      size_t errlen)
{
	char derr[ERR_LEN];
	int rc = layout_open(&e->dlay, o->draft, derr, sizeof(derr));
	if (rc) {
		snprintf(err, errlen, "--draft %s: %s", o->draft, derr);
		return rc;
	}
	e->has_dlay = true;
	const struct layout_hparams *dh = &e->dlay.hp, *th = &lay->hp;
	if (dh->vocab != th->vocab || dh->bos_id != th->bos_id) {
		snprintf(err, errlen, "--draft %s: its vocabulary (%d tokens, bos %d) is not the model's (%d tokens, bos %d)",
			 o->draft, (int)dh->vocab, dh->bos_id, (int)th->vocab, th->bos_id);
		return -EINVAL;
	}
	struct model_opts dmo = {.t_max = o->t_max < 256 ? o->t_max : 256, .max_logits = o->max_seqs, .ctx = o->ctx,
				 .max_seqs = o->max_seqs, .kv_fmt = kv_fmt, .kv_page = o->kv_page};
	struct plan dp;
	rc = plan_make(&dp, &e->dlay, e->b, &dmo, false, false, false, NULL, derr, sizeof(derr));
	if (!rc && dp.device && dp.n_resident < dp.n_units) {
		snprintf(derr, sizeof(derr), "%d of its %d units fit resident (%.2f GiB of weights, %.2f GiB of the arena left)",
			 dp.n_resident, dp.n_units, (double)dp.units_bytes / (1 << 30), (double)dp.avail / (1 << 30));
		plan_free(&dp);
		rc = -ENOMEM;
	}
	if (rc) {
		snprintf(err, errlen, "--draft %s does not fit the budget: %s", o->draft, derr);
		return rc;
	}
	struct io_opts io;
	io_opts_default(&io);
	io.ram = (int64_t)dp.units_bytes + (64 << 20);
	io.reader = o->reader;
	io.log = io_log;
	io.host_alloc = e->pinned.alloc ? &e->pinned : NULL;
	rc = model_init(&e->dm, &e->dlay, e->b, NULL, &dp, &io, derr, sizeof(derr));
	if (rc)
		snprintf(err, errlen, "--draft %s: %s", o->draft, derr);
	e->has_draft = !rc;
	return rc;
}

int engine_open(struct engine **ep, const struct layout *lay, const struct engine_opts *o, char *err, size_t errlen)
{
	struct engine *e = calloc(1, sizeof(*e));
	*ep = NULL;
	if (!e || (o->n_eos > 0 && !(e->eos = malloc(sizeof(int) * (size_t)o->n_eos)))) {
		free(e);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (o->n_eos > 0)
		memcpy(e->eos, o->eos, sizeof(int) * (size_t)o->n_eos);
	/* several NUMA nodes: memory interleaved over them from here on (the RAM tier, pinned slots; numa.c) */
	struct numa nn;
	char nerr[ERR_LEN];
	int rc = numa_read(&nn, nerr, sizeof(nerr));
	if (rc)
		fprintf(stderr, "ferry: NUMA nodes: %s; memory stays where it is first touched\n", nerr);
	else if (nn.n_nodes > 1 && (rc = numa_interleave(&nn)))
		fprintf(stderr, "ferry: interleaving memory over %d NUMA nodes: %s; memory stays where it is first touched\n",
			nn.n_nodes, strerror(-rc));
	rc = backend_open(&e->b, o->device ? o->device : "auto", o->vram, o->threads, err, errlen);
	if (!rc && o->h2d_limit > 0) {
		if (!e->b->ops->pace) {
			snprintf(err, errlen, "--h2d-limit: the %s backend uploads nothing", e->b->ops->name);
			rc = -EINVAL;
		} else if ((rc = e->b->ops->pace(e->b, o->h2d_limit * 1e9))) {
			snprintf(err, errlen, "--h2d-limit: %s", e->b->err);
		}
	}
	/* the streamer's buffers are pinned by the backend that uploads from them */
	e->pinned = (struct io_host_alloc){e->b ? e->b->ops->pinned_name : NULL, e->b ? e->b->ops->pinned_alloc : NULL,
					   e->b ? e->b->ops->pinned_free : NULL, NULL};
	int kv_fmt = rc ? rc : kv_fmt_of(o->kv, e->b, err, errlen);
	rc = kv_fmt < 0 ? kv_fmt : 0;
	struct model_opts mo = {.t_max = o->t_max, .max_logits = o->max_logits, .ctx = o->ctx, .max_seqs = o->max_seqs,
				.kv_fmt = kv_fmt, .kv_page = o->kv_page, .kv_pages = o->kv_pages};
	/* --moe-cpu: a device's ranges of up to MOE_CPU_T_MAX tokens may have experts computed on the host (off by
	 * default until the CUDA path has run on a GPU: bench/RESULTS.md, "Owed: --moe-cpu on a GPU") */
	int moe_mode = MOE_CPU_OFF;
	if (!rc && o->moe_cpu)
		rc = moe_cpu_parse(o->moe_cpu, &moe_mode, err, errlen);
	if (!rc && moe_mode != MOE_CPU_OFF && lay->hp.n_experts && !e->b->ops->host_memory)
		mo.moe_cpu_t = o->t_max < MOE_CPU_T_MAX ? o->t_max : MOE_CPU_T_MAX;
	if (o->spec.mode != SPEC_OFF) { /* a tree's logits are all of its tokens' */
		int per = 1 + (o->spec.max > 0 ? o->spec.max : SPEC_MAX_DEFAULT), rows = o->max_seqs * per;
		rows = rows < o->t_max ? rows : o->t_max;
		mo.max_logits = rows > mo.max_logits ? rows : mo.max_logits;
	}
	/* the draft first: it must be resident, and the target plans with what it leaves */
	if (!rc && o->draft && !o->plan_only)
		rc = draft_open(e, lay, o, kv_fmt, err, errlen);
	rc = rc ? rc : plan_make(&e->plan, lay, e->b, &mo, o->stream_all, o->t_max_auto, o->kv_host, NULL, err, errlen);
	rc = rc ? rc : place(e, lay, o, &mo, moe_mode, err, errlen);
	if (!rc && !o->plan_only) {
		struct io_opts io;
		io_opts_default(&io);
		io.ram = o->ram >= 0 ? o->ram : (int64_t)(phys_mem_bytes() / 2);
		io.reader = o->reader;
		io.log = io_log;
		io.host_alloc = e->pinned.alloc ? &e->pinned : NULL;
		rc = model_init(&e->m, lay, e->b, e->hb, &e->plan, &io, err, errlen);
		e->has_model = !rc;
		if (!rc)
			model_moe_rates(&e->m, e->has_rates ? &e->rates : NULL);
		/* top-k from a device, which would otherwise copy whole rows; the host reads them in place */
		if (!rc && !o->no_sched)
			rc = sched_init(&e->s, &e->m, e->m.opt.max_seqs, e->b->ops->host_memory ? 0 : o->top_k, e->eos, o->n_eos,
					 err, errlen);
		e->has_sched = !rc && !o->no_sched;
		if (e->has_sched && e->has_rates && e->m.plan.n_on_host && e->m.hb) {
			plan_fix_init(&e->fix, &e->rates);
			e->fix.fixed = strcmp(o->placement ? o->placement : "auto", "auto") != 0;
			e->s.fix = &e->fix;
		}
		const char *sw = getenv("FERRY_PLACE_SWITCH");
		if (e->has_sched && e->m.hb && sw && strchr(sw, ':')) {
			e->s.switch_at = atoi(sw);
			e->s.switch_to = strchr(sw, ':') + 1;
		}
		if (e->has_sched && o->spec.mode != SPEC_OFF)
			rc = sched_spec(&e->s, &o->spec, e->has_draft ? &e->dm : NULL, err, errlen);
	}
	if (rc) {
		engine_close(e);
		return rc;
	}
	*ep = e;
	return 0;
}

void engine_close(struct engine *e)
{
	if (!e)
		return;
	if (e->has_sched)
		sched_free(&e->s);
	if (e->has_model)
		model_free(&e->m);
	if (e->has_draft)
		model_free(&e->dm);
	if (e->has_dlay)
		layout_close(&e->dlay);
	plan_free(&e->plan);
	backend_destroy(e->hb);
	backend_destroy(e->b);
	free(e->eos);
	free(e);
}

const struct plan *engine_plan(const struct engine *e)
{
	return e->has_model ? &e->m.plan : &e->plan;
}

struct model *engine_model(struct engine *e)
{
	return e->has_model ? &e->m : NULL;
}

struct sched *engine_sched(struct engine *e)
{
	return e->has_sched ? &e->s : NULL;
}

struct backend *engine_backend(struct engine *e)
{
	return e->b;
}

const struct plan_rates *engine_rates(const struct engine *e)
{
	return e->has_rates ? &e->rates : NULL;
}

void engine_stats(struct engine *e, struct engine_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->device = e->b->ops->name;
	st->n_threads = e->b->n_threads;
	backend_mem_get(e->b, &st->mem);
	const struct plan *p = engine_plan(e);
	st->opt = p->opt;
	st->n_on_host = p->n_on_host;
	st->n_units = p->n_units;
	st->pred_hybrid = p->pred_hybrid;
	st->pred_device = p->pred_device;
	st->host_bytes = p->host_bytes;
	st->units_bytes = p->units_bytes;
	st->stream_bytes = p->units_bytes - p->resident_bytes - p->host_bytes;
	st->bpw_model = p->bpw_model;
	st->bpw_stream = plan_bpw(p, 's');
	st->bpw_host = plan_bpw(p, 'h');
	st->has_rates = e->has_rates;
	st->rates = e->rates;
	if (e->has_model) {
		st->opt = e->m.opt;
		model_stats(&e->m, &st->model);
		const struct model_hybrid_stats *h = &st->model.hyb;
		if (e->has_rates && h->steps)
			st->pred_mean_t = plan_predict(p, e->m.lay, e->s.fix ? &e->fix.r : &e->rates,
						       (int)((h->tokens + h->steps / 2) / h->steps), true);
		st->has_fix = e->has_sched && e->s.fix;
		if (st->has_fix)
			st->fix = e->fix;
		const struct sched_stats *ss = &e->s.st;
		if (e->has_rates && e->has_sched && ss->decode_steps) {
			int T = (int)((ss->decode_tokens + ss->decode_steps / 2) / ss->decode_steps);
			bool hyb = e->m.hb && p->n_on_host && T <= p->hybrid_t_max;
			st->pred_decode = plan_predict(p, e->m.lay, &e->rates, T, hyb);
			st->pred_decode_fixed = st->has_fix ? plan_predict(p, e->m.lay, &e->fix.r, T, hyb) : st->pred_decode;
		}
	}
	if (e->has_sched) {
		st->sched = e->s.st;
		st->spec_mode = e->s.spec.mode;
		st->spec_alpha = spec_plan_alpha(&e->s.plan);
		spec_plan_cost(&e->s.plan, &st->spec_c0, &st->spec_c1);
		for (int i = 0; i < SPEC_SRC_COUNT; i++)
			st->spec_alone[i] = e->s.plan.chain_pass[i] > 0 ? e->s.plan.chain_tok[i] / e->s.plan.chain_pass[i] : 0;
	}
	if (e->has_draft)
		st->draft_bytes = e->dm.plan.units_bytes;
}

json_t *engine_spec_json(const struct engine_stats *st)
{
	const struct sched_stats *s = &st->sched;
	long long g = s->spec_guessed[SPEC_SRC_LOOKUP] + s->spec_guessed[SPEC_SRC_DRAFT];
	long long a = s->spec_accepted[SPEC_SRC_LOOKUP] + s->spec_accepted[SPEC_SRC_DRAFT];
	return json_pack("{s:s, s:I, s:I, s:I, s:f, s:f, s:I, s:f, s:I, s:I, s:I, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:f, s:f}",
			 "mode", spec_mode_name(st->spec_mode), "passes", (json_int_t)s->spec_passes, "guessed", (json_int_t)g,
			 "accepted", (json_int_t)a, "acceptance", g ? (double)a / (double)g : 0.0, "tokens_per_pass",
			 s->spec_passes ? (double)s->spec_tokens / (double)s->spec_passes : 0.0, "decode_steps",
			 (json_int_t)s->gen_steps, "tokens_per_step", sched_tokens_per_step(s), "lookup_guessed",
			 (json_int_t)s->spec_guessed[SPEC_SRC_LOOKUP], "lookup_accepted",
			 (json_int_t)s->spec_accepted[SPEC_SRC_LOOKUP], "draft_guessed",
			 (json_int_t)s->spec_guessed[SPEC_SRC_DRAFT], "draft_accepted",
			 (json_int_t)s->spec_accepted[SPEC_SRC_DRAFT], "draft_steps", (json_int_t)s->draft_steps, "draft_s",
			 s->draft_s, "alpha", st->spec_alpha, "pass_c0_s", st->spec_c0, "pass_c1_s", st->spec_c1,
			 "draft_bytes", (json_int_t)st->draft_bytes, "lookup_alone", st->spec_alone[SPEC_SRC_LOOKUP],
			 "draft_alone", st->spec_alone[SPEC_SRC_DRAFT]);
}

static json_t *rates_json(const struct plan_rates *r)
{
	return json_pack("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "h2d", r->h2d,
			 "h2d_busy", r->h2d_busy, "host_1", r->host[0], "host_2", r->host[1], "host_4", r->host[2], "host_8",
			 r->host[3], "host_busy", r->host_busy, "dev_1", r->dev[0], "dev_2", r->dev[1], "dev_4", r->dev[2],
			 "dev_8", r->dev[3], "cross_s", r->cross, "host_exp_1", r->host_exp[0], "host_exp_2", r->host_exp[1],
			 "host_exp_4", r->host_exp[2], "host_exp_8", r->host_exp[3]);
}

json_t *engine_stats_json(const struct engine_stats *st)
{
	const struct io_stats *io = &st->model.io;
	const struct backend_mem *bm = &st->mem;
	const struct sched_stats *s = &st->sched;
	json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:f, s:f, s:I, s:I, s:i}", "device", st->device, "gpu", bm->gpu,
			      "prefill_tokens", (json_int_t)s->prefill_tokens, "decode_tokens", (json_int_t)s->decode_tokens,
			      "prefill_s", s->prefill_s, "decode_s", s->decode_s, "h2d_bytes_prefill", (json_int_t)s->h2d_prefill,
			      "h2d_bytes_decode",
			      (json_int_t)s->h2d_decode, "steps", s->steps);
	if (o) {
		json_object_set_new(o, "decode_steps", json_integer(s->decode_steps));
		if (st->pred_decode > 0) {
			json_object_set_new(o, "predicted_decode_step_s", json_real(st->pred_decode));
			json_object_set_new(o, "predicted_decode_step_fixed_s", json_real(st->pred_decode_fixed));
		}
	}
	json_t *v = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "vram_budget", (json_int_t)bm->budget, "vram_context",
			      (json_int_t)bm->context, "vram_arena", (json_int_t)bm->arena, "vram_arena_peak",
			      (json_int_t)bm->arena_peak, "vram_device_used_peak", (json_int_t)bm->device_used_peak,
			      "kernel_launches", (json_int_t)bm->launches, "graph_replays", (json_int_t)bm->graph_replays,
			      "graph_captures", (json_int_t)bm->graph_captures);
	json_t *m = json_pack("{s:i, s:i, s:i, s:i, s:s, s:I, s:i, s:I, s:I, s:i, s:I}", "t_max", st->opt.t_max, "t_sub",
			      st->opt.t_sub, "ctx", st->opt.ctx, "max_seqs", st->opt.max_seqs, "kv",
			      kv_fmt_name(st->opt.kv_fmt), "kv_bytes", (json_int_t)st->model.kv_bytes, "kv_host_layers",
			      st->model.kv_host_layers, "kv_h2d_bytes", (json_int_t)st->model.kv_h2d, "kv_d2h_bytes",
			      (json_int_t)st->model.kv_d2h, "n_slots", st->model.n_slots, "disk_bytes_decode",
			      (json_int_t)s->disk_decode);
	json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:I, s:f, s:f, s:i, s:i}", "reader", io->reader, "bytes_read",
			      (json_int_t)io->bytes_read, "bytes_experts", (json_int_t)io->bytes_experts, "n_experts",
			      (json_int_t)io->n_experts, "bytes_tier", (json_int_t)io->bytes_tier, "busy_s", io->busy_sec,
			      "wait_s", io->wait_sec, "tier_units", io->tier_units, "n_units", io->n_units);
	const struct model_hybrid_stats *hs = &st->model.hyb;
	json_t *h = json_pack("{s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:I, s:I}", "units_on_host", st->n_on_host,
			      "units", st->n_units, "steps", (json_int_t)hs->steps, "tokens", (json_int_t)hs->tokens, "s",
			      hs->sec, "host_s", hs->host_sec, "predicted_step_s", st->pred_hybrid, "predicted_device_step_s",
			      st->pred_device, "host_bytes", (json_int_t)st->host_bytes, "units_bytes",
			      (json_int_t)st->units_bytes, "stream_bytes", (json_int_t)st->stream_bytes);
	json_object_set_new(o, "bpw_model", json_real(st->bpw_model));
	json_object_set_new(o, "bpw_streamed", json_real(st->bpw_stream));
	json_object_set_new(o, "bpw_host", json_real(st->bpw_host));
	const struct plan_rates *r = &st->rates;
	if (h && st->pred_mean_t > 0)
		json_object_set_new(h, "predicted_mean_t_step_s", json_real(st->pred_mean_t));
	if (h && st->has_rates)
		json_object_set_new(h, "rates", rates_json(r));
	const struct plan_fix *fx = &st->fix;
	if (h && st->has_fix && fx->n_obs) {
		double n = (double)fx->n_obs;
		json_t *parts = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:i, s:b}", "steps", (json_int_t)fx->n_obs,
					  "predicted_host_s", fx->pred_sum.host / n, "measured_host_s", fx->meas_host_sum / n,
					  "predicted_upload_s", fx->pred_sum.upload / n, "predicted_device_s",
					  fx->pred_sum.dev / n, "predicted_step_s", fx->pred_sum.step / n, "measured_step_s",
					  fx->meas_step_sum / n, "replans", fx->replans, "units_moved", fx->moved, "fixed",
					  fx->fixed);
		if (parts)
			json_object_set_new(parts, "rates_now", rates_json(&fx->r));
		json_object_set_new(h, "parts", parts);
	}
	json_t *sp = engine_spec_json(st);
	const struct model_moe_stats *x = &st->model.moe;
	if (o && x->layer_steps)
		json_object_set_new(o, "moe", json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:b}", "tokens",
							(json_int_t)x->tokens, "routed", (json_int_t)x->routed, "layer_steps",
							(json_int_t)x->layer_steps, "union_experts", (json_int_t)x->union_experts,
							"union_bytes", (json_int_t)x->union_bytes, "all_bytes",
							(json_int_t)x->all_bytes, "uploads", (json_int_t)x->uploads,
							"routed_uploads", x->routed_uploads));
	if (o && x->layer_steps && x->routed_uploads)
		json_object_update_new(
			json_object_get(o, "moe"),
			json_pack("{s:i, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "cache_entries", x->cache_entries,
				  "cache_hits", (json_int_t)x->cache_hits, "cache_misses", (json_int_t)x->cache_misses,
				  "cache_fills", (json_int_t)x->cache_fills, "cache_evictions", (json_int_t)x->cache_evictions,
				  "cache_refused", (json_int_t)x->cache_refused, "expert_h2d_bytes", (json_int_t)x->expert_h2d,
				  "pred_layers", (json_int_t)x->pred_layers, "pred_routed", (json_int_t)x->pred_routed,
				  "pred_right", (json_int_t)x->pred_right, "pred_guessed", (json_int_t)x->pred_guessed,
				  "pred_uploads", (json_int_t)x->pred_uploads));
	if (o && x->layer_steps && x->routed_uploads)
		json_object_update_new(json_object_get(o, "moe"),
				       json_pack("{s:s, s:I, s:I, s:I}", "cpu_mode", moe_cpu_name(x->cpu_mode), "cpu_ranges",
						 (json_int_t)x->cpu_ranges, "cpu_split_ranges", (json_int_t)x->cpu_split_ranges,
						 "host_experts", (json_int_t)x->host_experts));
	bool ok = o && v && m && j && h && sp && !json_object_update(o, v) && !json_object_update(o, m) &&
		  !json_object_set(o, "io", j) && !json_object_set(o, "hybrid", h) && !json_object_set(o, "spec", sp) &&
		  !json_object_set_new(o, "disk_gbps",
				       json_real(io->busy_sec > 0 ? (double)io->bytes_read / io->busy_sec / 1e9 : 0));
	json_decref(v);
	json_decref(m);
	json_decref(j);
	json_decref(h);
	json_decref(sp);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

void engine_stats_print(FILE *f, const struct engine_stats *st)
{
	const struct io_stats *io = &st->model.io;
	char sb[32], tb[32], gd[256];
	fmt_bytes(io->slot_bytes, sb, sizeof(sb));
	fmt_bytes(io->tier_bytes, tb, sizeof(tb));
	double mib = 1 << 20;
	fprintf(f,
		"ferry: io: %s; disk %.1f MiB in %llu reads (%llu short), %.3fs busy (%.2f GB/s); "
		"RAM tier %d/%d units (%s): %.1f MiB served; %.1f MiB reused from slots; %.1f MiB decoded (lz4); "
		"waited %.3fs for I/O over %llu acquires; %d slots of %s (%d busy at most)%s\n"
		"ferry: backend %s, %d threads (GPU: %s); peak RSS %.1f MiB\n",
		io->reader, (double)io->bytes_read / mib, (unsigned long long)io->n_reads, (unsigned long long)io->n_short,
		io->busy_sec, io->busy_sec > 0 ? (double)io->bytes_read / io->busy_sec / 1e9 : 0.0, io->tier_units,
		io->n_units, tb, (double)io->bytes_tier / mib, (double)io->bytes_reused / mib,
		(double)io->bytes_decoded / mib, io->wait_sec, (unsigned long long)io->n_acquire, io->n_slots, sb,
		io->slots_busy_max, io->locked ? "" : ", not locked in memory", st->device, st->n_threads,
		backend_gpu_desc(gd, sizeof(gd)), (double)peak_rss_bytes() / (1 << 20));
	fprintf(f, "ferry: weights: %.2f bits per weight; per step %.1f MiB streamed (%.2f bits per weight)", st->bpw_model,
		(double)st->stream_bytes / mib, st->bpw_stream);
	if (st->n_on_host)
		fprintf(f, ", %.1f MiB read on the host (%.2f bits per weight)", (double)st->host_bytes / mib, st->bpw_host);
	fprintf(f, "\n");
	const struct model_hybrid_stats *h = &st->model.hyb;
	if (st->n_on_host) {
		fprintf(f, "ferry: hybrid: %d of %d units on the host; %llu steps (%llu tokens) at %.2f ms a step, %.2f ms of it in "
			   "host units",
			st->n_on_host, st->n_units, (unsigned long long)h->steps, (unsigned long long)h->tokens,
			h->steps ? 1e3 * h->sec / (double)h->steps : 0.0, h->steps ? 1e3 * h->host_sec / (double)h->steps : 0.0);
		if (st->pred_hybrid > 0)
			fprintf(f, "; predicted %.2f ms a step of the mean tokens, %.2f ms a 1-token step (every unit on the "
				   "device: %.2f ms)", 1e3 * st->pred_mean_t, 1e3 * st->pred_hybrid, 1e3 * st->pred_device);
		fprintf(f, "\n");
	}
	const struct sched_stats *ss = &st->sched;
	if (st->pred_decode > 0)
		fprintf(f, "ferry: decode: %d steps of %.1f tokens at %.2f ms a step; predicted %.2f ms (start-up rates), %.2f "
			   "(corrected)\n",
			ss->decode_steps, (double)ss->decode_tokens / ss->decode_steps, 1e3 * ss->decode_s / ss->decode_steps,
			1e3 * st->pred_decode, 1e3 * st->pred_decode_fixed);
	const struct plan_fix *fx = &st->fix;
	if (st->has_fix && fx->n_obs) {
		double n = (double)fx->n_obs, ms = 1e3 / n;
		fprintf(f, "ferry: hybrid parts, mean of %ld steps: host compute predicted %.2f ms, measured %.2f; uploads "
			   "predicted %.2f ms and device compute %.2f (on the device's queues, not timed); the rest of the step "
			   "(waits on the device, crossings) predicted %.2f ms, measured %.2f; step predicted %.2f ms, "
			   "measured %.2f\n",
			fx->n_obs, ms * fx->pred_sum.host, ms * fx->meas_host_sum, ms * fx->pred_sum.upload, ms * fx->pred_sum.dev,
			ms * (fx->pred_sum.step - fx->pred_sum.host), ms * (fx->meas_step_sum - fx->meas_host_sum),
			ms * fx->pred_sum.step, ms * fx->meas_step_sum);
		if (fx->replans) {
			fprintf(f, "ferry: hybrid re-placed %d times from measured steps (%d units moved); now ", fx->replans,
				fx->moved);
			rates_print(f, &fx->r);
		}
	}
	const struct model_moe_stats *x = &st->model.moe;
	if (x->layer_steps)
		fprintf(f, "ferry: experts: %.2f distinct per layer and step, %llu (token, layer, expert) choices; their bytes %.2f "
			   "MiB per token, %.1f%% of the layers' experts; %s\n",
			(double)x->union_experts / (double)x->layer_steps, (unsigned long long)x->routed,
			x->tokens ? (double)x->union_bytes / (double)x->tokens / mib : 0.0,
			x->all_bytes ? 100.0 * (double)x->union_bytes / (double)x->all_bytes : 0.0,
			x->routed_uploads ? "a device uploads just these" : "whole layers uploaded or read in place");
	if (x->layer_steps && x->tokens)
		fprintf(f, "ferry: experts from disk: %.3f MiB read per token, %.3f MiB of it experts read one by one (%llu "
			   "reads)\n",
			(double)io->bytes_read / (double)x->tokens / mib, (double)io->bytes_experts / (double)x->tokens / mib,
			(unsigned long long)io->n_experts);
	if (x->layer_steps && x->routed_uploads)
		fprintf(f, "ferry: experts uploaded: %llu of the %llu chosen (%.1f%% already on the device)\n",
			(unsigned long long)x->uploads, (unsigned long long)x->union_experts,
			x->union_experts ? 100.0 * (1.0 - (double)x->uploads / (double)x->union_experts) : 0.0);
	if (x->layer_steps && x->routed_uploads) {
		fprintf(f, "ferry: expert cache: %d entries; %llu hits, %llu misses (%.1f%% hit rate), %llu filled, %llu "
			   "evicted, %llu refused; experts uploaded %.3f MiB per token\n",
			x->cache_entries, (unsigned long long)x->cache_hits, (unsigned long long)x->cache_misses,
			x->cache_hits + x->cache_misses ? 100.0 * (double)x->cache_hits / (double)(x->cache_hits + x->cache_misses)
							: 0.0,
			(unsigned long long)x->cache_fills, (unsigned long long)x->cache_evictions,
			(unsigned long long)x->cache_refused, x->tokens ? (double)x->expert_h2d / (double)x->tokens / mib : 0.0);
		fprintf(f, "ferry: expert prediction: %llu layers guessed; %llu of their %llu routed experts guessed (%.1f%% "
			   "accuracy), %llu guesses, %llu uploaded early\n",
			(unsigned long long)x->pred_layers, (unsigned long long)x->pred_right, (unsigned long long)x->pred_routed,
			x->pred_routed ? 100.0 * (double)x->pred_right / (double)x->pred_routed : 0.0,
			(unsigned long long)x->pred_guessed, (unsigned long long)x->pred_uploads);
		double tk = x->tokens ? (double)x->tokens : 1;
		fprintf(f, "ferry: experts per token: %.2f computed on the host, %.2f uploaded, %.2f cache hits; --moe-cpu %s: "
			   "%llu of %llu device ranges split\n",
			(double)x->host_experts / tk, (double)x->uploads / tk, (double)x->cache_hits / tk,
			moe_cpu_name(x->cpu_mode), (unsigned long long)x->cpu_split_ranges, (unsigned long long)x->cpu_ranges);
	}
	if (st->spec_mode != SPEC_OFF) {
		long long g = ss->spec_guessed[0] + ss->spec_guessed[1], a = ss->spec_accepted[0] + ss->spec_accepted[1];
		fprintf(f,
			"ferry: spec %s: %lld passes, %.2f tokens per pass; %lld decode steps, %.2f tokens per step (plain steps "
			"included); accepted %lld of %lld guesses (%.1f%%: lookup %lld/%lld, draft %lld/%lld); %lld draft steps "
			"in %.3fs; planner: acceptance %.2f, pass %.2f ms + %.3f ms a token\n",
			spec_mode_name(st->spec_mode), ss->spec_passes,
			ss->spec_passes ? (double)ss->spec_tokens / (double)ss->spec_passes : 0.0, ss->gen_steps,
			sched_tokens_per_step(ss), a, g, g ? 100.0 * (double)a / (double)g : 0.0,
			ss->spec_accepted[0], ss->spec_guessed[0], ss->spec_accepted[1], ss->spec_guessed[1], ss->draft_steps,
			ss->draft_s, st->spec_alpha, 1e3 * st->spec_c0, 1e3 * st->spec_c1);
		if (st->spec_mode == SPEC_COMBINED)
			fprintf(f, "ferry: spec combined: a source's own chain alone would have given %.2f tokens a pass (lookup), "
				   "%.2f (draft); the better one is kept whole\n",
				st->spec_alone[SPEC_SRC_LOOKUP], st->spec_alone[SPEC_SRC_DRAFT]);
	}
	const struct backend_mem *bm = &st->mem;
	if (!bm->budget)
		return;
	double gb = 1e9, gi = 1 << 30;
	long long n_decode = st->sched.decode_tokens;
	fprintf(f,
		"ferry: device %s: --vram %.3f GiB; context %.3f GiB, arena %.3f GiB (peak %.3f GiB used); device memory "
		"in use at most %.3f GiB (cudaMemGetInfo)\n"
		"ferry: uploaded %.3f GB of weights in prefill, %.3f GB in decode (%.3f GB per decode step)\n",
		bm->gpu, (double)bm->budget / gi, (double)bm->context / gi, (double)bm->arena / gi,
		(double)bm->arena_peak / gi, (double)bm->device_used_peak / gi, (double)st->sched.h2d_prefill / gb,
		(double)st->sched.h2d_decode / gb, n_decode ? (double)st->sched.h2d_decode / (double)n_decode / gb : 0.0);
	if (bm->launches) /* launched one by one; a graph's kernels count once, when it is captured */
		fprintf(f, "ferry: %llu kernel launches, %.1f per step (%d steps; cuBLAS's own not counted)\n",
			(unsigned long long)bm->launches,
			st->sched.steps ? (double)bm->launches / (double)st->sched.steps : 0.0, st->sched.steps);
	if (bm->graph_captures)
		fprintf(f, "ferry: CUDA graphs: %llu replays, %llu captures\n", (unsigned long long)bm->graph_replays,
			(unsigned long long)bm->graph_captures);
}
