/*
 * plan.c: the memory planner (plan.h). Order of preference: every unit resident (no streaming at all);
 * else the largest tokens-per-op that leaves room for 2 slots, then a third slot (slack for steps whose
 * compute is as long as an upload), then resident units with what is left. When even 2 slots do not fit,
 * the tokens per op shrink first (to 1024), then the sequences in flight (their KV pages), then the tokens
 * per op (to 64), then the tokens per step. The arena is allocated once,
 * so a small reserve covers the allocator's 256-byte rounding and the RoPE tables.
 *
 * A streamed head larger than the largest layer (a bf16 70B's 2.1 GB against its 1.7 GB layers, a 256k
 * vocabulary) goes in row pieces of at most a layer's bytes (head_pieces), so the slots are sized by the
 * layers; FERRY_HEAD_PIECES=N (tests of the split path) streams the head in N pieces whatever the budget,
 * 1: whole. A head that ends up resident stays whole.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/moe_cpu.h"
#include "engine/plan.h"
#include "base/util.h"
#include "engine/weights.h"

#define PLAN_RESERVE (16u << 20)
#define T_SUB_MIN 64
/* Below this many tokens per op the GEMM path dequantizes each weight matrix too often for what it
 * multiplies (measured: a 4096-token step in ops of 64 took 9 s, in ops of 4096 1.5 s on an H200): the
 * sequences in flight shrink first. */
#define T_SUB_GEMM 1024

static uint64_t fixed_bytes(const struct layout *lay, struct backend *b, const struct model_opts *o, const bool *kv_host,
			    struct model_mem *mm)
{
	model_mem_plan(&lay->hp, b, o, kv_host, mm);
	return mm->act + mm->kv + mm->ws;
}

static double gib(uint64_t v)
{
	return (double)v / (1 << 30);
}

/* The longest ctx (a multiple of the page) of one sequence with which fixed bytes of o, in KV format fmt,
 * plus 2 slots fit avail. */
static int ctx_fit(const struct layout *lay, struct backend *b, const struct model_opts *o, int fmt, uint64_t slots,
		   uint64_t avail)
{
	struct model_opts t = *o;
	struct model_mem mm;
	int page = o->kv_page > 0 ? o->kv_page : 256, lo = 0, hi = (1 << 24) / page;
	t.kv_fmt = fmt;
	t.kv_pages = 0;
	t.max_seqs = 1;
	while (lo < hi) {
		int mid = (lo + hi + 1) / 2;
		t.ctx = mid * page;
		if (fixed_bytes(lay, b, &t, NULL, &mm) + slots <= avail)
			lo = mid;
		else
			hi = mid - 1;
	}
	return lo * page;
}

/* FERRY_HEAD_PIECES (the file's comment; 0 unset) */
static int head_forced(void)
{
	const char *force = getenv("FERRY_HEAD_PIECES");
	return force && *force ? atoi(force) : 0;
}

/* A streamed head in row pieces (the file's comment): sets opt.head_rows, head_pieces and the slot size. */
static void split_head(struct plan *p, const struct layout *lay)
{
	int L = lay->hp.n_layers;
	uint64_t layers = 0;
	for (int u = 0; u < L; u++) {
		uint64_t ub = weights_unit_device_bytes(lay, u);
		layers = ub > layers ? ub : layers;
	}
	int64_t V = lay->hp.vocab, rows = 0;
	int n = head_forced();
	if (n > 1)
		rows = (V + n - 1) / n;
	else if (p->head_bytes > layers && n != 1)
		rows = weights_head_rows_fit(lay, layers);
	rows = rows < 1 && (n > 1 || (p->head_bytes > layers && n != 1)) ? 1 : rows;
	if (rows < 1 || rows >= V || weights_head_piece_bytes(lay, rows) >= p->head_bytes)
		return; /* whole (no output matrix to cut, or no saving) */
	p->head_pieces = (int)((V + rows - 1) / rows);
	p->opt.head_rows = rows = (V + p->head_pieces - 1) / p->head_pieces; /* even pieces: the fewest, no larger */
	uint64_t piece = p->piece_bytes = weights_head_piece_bytes(lay, rows);
	p->slot_bytes = layers > piece ? layers : piece;
}

static int count_host(const bool *h, int L)
{
	int n = 0;
	for (int l = 0; l < L; l++)
		n += h[l];
	return n;
}

int plan_make(struct plan *p, const struct layout *lay, struct backend *b, const struct model_opts *want,
	      bool stream_all, bool t_max_auto, bool kv_host, const bool *on_host, char *err, size_t errlen)
{
	memset(p, 0, sizeof(*p));
	struct model_opts *o = &p->opt;
	*o = *want;
	o->head_rows = 0;
	p->head_pieces = 1;
	o->max_seqs = o->max_seqs > 0 ? o->max_seqs : 1;
	o->t_sub = o->t_max;
	int L = lay->hp.n_layers;
	p->n_units = lay->hp.n_layers + 1;
	p->resident = calloc((size_t)p->n_units, sizeof(bool));
	p->kv_host = calloc((size_t)L, sizeof(bool));
	p->on_host = calloc((size_t)p->n_units, sizeof(bool));
	p->unit_bits = calloc((size_t)p->n_units, sizeof(uint64_t));
	p->unit_values = calloc((size_t)p->n_units, sizeof(uint64_t));
	if (!p->resident || !p->kv_host || !p->on_host || !p->unit_bits || !p->unit_values) {
		plan_free(p);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	uint64_t bits = 0, values = 0;
	for (int u = -1; u < p->n_units; u++) { /* -1: the embedding, read on the host */
		const struct layout_unit *lu = layout_unit_get(lay, u);
		uint64_t ubits = 0, uvalues = 0;
		for (int t = 0; t < lu->n_tensors; t++) {
			const struct layout_tensor *lt = &lu->tensors[t];
			uint64_t n = 1;
			for (int d = 0; d < lt->ndim; d++)
				n *= (uint64_t)lt->shape[d];
			ubits += 8 * lt->raw_bytes, uvalues += n;
			/* a tied head's matrix is the embedding's: counted once in the model's figure */
			bool alias = u == L && lay->embed.n_tensors && lt->file == lay->embed.tensors[0].file;
			bits += alias ? 0 : 8 * lt->raw_bytes, values += alias ? 0 : n;
		}
		if (u >= 0)
			p->unit_bits[u] = ubits, p->unit_values[u] = uvalues;
	}
	p->bpw_model = values ? (double)bits / (double)values : 0;
	for (int u = 0; u < p->n_units; u++) {
		uint64_t ub = weights_unit_device_bytes(lay, u);
		p->units_bytes += ub;
		p->slot_bytes = ub > p->slot_bytes ? ub : p->slot_bytes;
		p->on_host[u] = on_host && on_host[u];
		p->n_on_host += p->on_host[u];
		p->host_bytes += p->on_host[u] ? ub : 0;
	}
	p->hybrid_t_max = p->n_on_host ? 16 : 0;
	p->head_bytes = weights_unit_device_bytes(lay, L);
	if (b->ops->host_memory) {
		fixed_bytes(lay, b, o, p->kv_host, &p->mem);
		return 0;
	}
	struct backend_mem bm;
	backend_mem_get(b, &bm);
	p->device = true;
	for (int l = 0; l < L; l++)
		p->kv_host[l] = kv_host || p->on_host[l];
	p->budget = bm.budget;
	p->context = bm.context;
	p->arena = bm.arena;
	p->avail = bm.arena - bm.arena_used - (int64_t)PLAN_RESERVE;
	uint64_t avail = p->avail > 0 ? (uint64_t)p->avail : 0;
	uint64_t fixed = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
	if (!stream_all && !p->n_on_host && head_forced() < 2 && fixed + p->units_bytes <= avail) {
		for (int u = 0; u < p->n_units; u++)
			p->resident[u] = true;
		p->n_resident = p->n_units;
		p->resident_bytes = p->units_bytes;
		p->n_slots = 0;
		p->slot_bytes = 0;
	} else {
		split_head(p, lay);
		fixed = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
		/* smaller ops down to T_SUB_GEMM, then fewer sequences at once (the rest wait for KV pages), then
		 * smaller ops still, then smaller steps */
		while (fixed + 2 * p->slot_bytes > avail) {
			if (o->t_sub > T_SUB_GEMM)
				o->t_sub = (o->t_sub + 1) / 2;
			else if (count_host(p->kv_host, L) < L)
				memset(p->kv_host, 1, sizeof(bool) * (size_t)L); /* stream the KV before cutting sequences */
			else if (o->max_seqs > 1)
				o->max_seqs = o->max_seqs * 3 / 4 < o->max_seqs - 1 ? o->max_seqs * 3 / 4 : o->max_seqs - 1;
			else if (o->t_sub > T_SUB_MIN)
				o->t_sub = (o->t_sub + 1) / 2;
			else if (t_max_auto && o->t_max > T_SUB_MIN)
				o->t_max = o->t_sub = (o->t_max + 1) / 2 > T_SUB_MIN ? (o->t_max + 1) / 2 : T_SUB_MIN;
			else
				break;
			fixed = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
		}
		if (fixed + 2 * p->slot_bytes > avail) {
			snprintf(err, errlen,
				 "--vram %.2f GiB is too small: the CUDA context takes %.2f GiB, the KV cache of %d x %d tokens "
				 "%.2f GiB, activations for %d tokens per op %.2f GiB, workspace %.2f GiB, and 2 weight "
				 "slots %.2f GiB (%.2f GiB in all); lower --ctx, use --kv q8 or q4, or raise --vram",
				 gib((uint64_t)p->budget), gib((uint64_t)p->context), o->max_seqs, o->ctx, gib(p->mem.kv), o->t_sub,
				 gib(p->mem.act), gib(p->mem.ws), gib(2 * p->slot_bytes),
				 gib((uint64_t)p->context + fixed + 2 * p->slot_bytes + PLAN_RESERVE));
			plan_free(p);
			return -ENOMEM;
		}
		p->n_slots = fixed + 3 * p->slot_bytes <= avail ? 3 : 2;
		/* KV pools back on the device while they fit (each saves its bytes per step, as a resident unit) */
		for (int l = 0; l < L && !kv_host; l++) {
			if (!p->kv_host[l] || p->on_host[l])
				continue;
			p->kv_host[l] = false;
			uint64_t f = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
			if (f + (uint64_t)p->n_slots * p->slot_bytes > avail) {
				p->kv_host[l] = true;
				break;
			}
		}
		fixed = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
		uint64_t left = avail - fixed - (uint64_t)p->n_slots * p->slot_bytes;
		/* a mixture of experts: what is left keeps experts across steps (the expert cache) rather than whole
		 * layers, up to every streamed expert; FERRY_EXPERT_CACHE=N caps it at N entries (0: none) */
		p->expert_bytes = weights_expert_bytes(lay);
		p->router_bytes = p->expert_bytes && lay->hp.n_experts ? weights_router_bytes(lay) : 0;
		if (p->expert_bytes && lay->hp.n_experts && left > p->router_bytes) {
			left -= p->router_bytes; /* the routers, kept on the device for prediction (weights_router) */
			uint64_t n = left / p->expert_bytes, all = (uint64_t)L * (uint64_t)lay->hp.n_experts;
			const char *cap = getenv("FERRY_EXPERT_CACHE");
			if (cap && *cap)
				all = strtoull(cap, NULL, 10) < all ? strtoull(cap, NULL, 10) : all;
			p->expert_cache = (int)(n < all ? n : all);
			left -= (uint64_t)p->expert_cache * p->expert_bytes;
			if (!p->expert_cache)
				left += p->router_bytes;
		}
		p->router_bytes = p->expert_cache ? p->router_bytes : 0;
		for (int u = 0; u < p->n_units && !stream_all; u++) {
			uint64_t ub = weights_unit_device_bytes(lay, u);
			if (ub <= left && !p->on_host[u] && !(u == L && head_forced() > 1)) {
				p->resident[u] = true;
				p->n_resident++;
				p->resident_bytes += ub;
				left -= ub;
			}
		}
		if (p->resident[L] && o->head_rows) { /* whole after all: no pieces, nor their logits buffer */
			o->head_rows = 0;
			p->head_pieces = 1;
			fixed = fixed_bytes(lay, b, o, p->kv_host, &p->mem);
		}
	}
	p->n_kv_host = count_host(p->kv_host, L);
	for (int f = KV_F16; f < KV_FMT_COUNT; f++)
		p->ctx_fit[f] = b->ops->kv_supports(f) ? ctx_fit(lay, b, o, f, 2 * p->slot_bytes, avail) : 0;
	p->stream_bytes = p->units_bytes - p->resident_bytes;
	p->total = fixed + (uint64_t)p->n_slots * p->slot_bytes + p->resident_bytes +
		   (uint64_t)p->expert_cache * p->expert_bytes + p->router_bytes;
	return 0;
}

static void unit_name(char *buf, size_t n, int u, int n_units)
{
	if (u == n_units - 1)
		snprintf(buf, n, "head");
	else
		snprintf(buf, n, "%d", u);
}

/* The hybrid placement as runs of units ("h" host, "r" resident, "s" streamed), and its predictions. */
static void plan_print_placement(FILE *f, const struct plan *p)
{
	if (p->moe_cpu == MOE_CPU_AUTO)
		fprintf(f, "plan: --moe-cpu auto: in device ranges of up to %d tokens the experts the device lacks are "
			   "computed on the host where the rates predict it faster than their upload: of a token's %d, none "
			   "on the device, the host takes %d; in a %d-token range, %d of every %d\n",
			p->opt.moe_cpu_t, p->moe_cpu_k, p->moe_cpu_host1, p->opt.moe_cpu_t, p->moe_cpu_host_t, p->moe_cpu_k);
	else if (p->moe_cpu == MOE_CPU_ALL)
		fprintf(f, "plan: --moe-cpu all: in device ranges of up to %d tokens every expert the device lacks is "
			   "computed on the host\n", p->opt.moe_cpu_t);
	if (!p->n_on_host) {
		if (p->pred_device > 0)
			fprintf(f, "plan: placement: every unit on the %s; predicted 1-token step %.2f ms\n",
				p->device ? "device" : "host", 1e3 * p->pred_device);
		return;
	}
	fprintf(f, "plan: placement (steps of up to %d tokens; larger ones run every unit on the %s): %d of %d units on "
		   "the host (%.3f GiB read from RAM per step), the rest %.3f GiB streamed per step:\nplan:  ",
		p->hybrid_t_max, p->device ? "device" : "first backend", p->n_on_host, p->n_units, gib(p->host_bytes),
		gib(p->units_bytes - p->resident_bytes - p->host_bytes));
	for (int u = 0; u < p->n_units;) {
		char c = p->on_host[u] ? 'h' : p->resident[u] ? 'r' : 's';
		int v = u;
		while (v + 1 < p->n_units && (p->on_host[v + 1] ? 'h' : p->resident[v + 1] ? 'r' : 's') == c)
			v++;
		char a[16], z[16];
		unit_name(a, sizeof(a), u, p->n_units);
		unit_name(z, sizeof(z), v, p->n_units);
		if (v == u)
			fprintf(f, " %s:%c", a, c);
		else
			fprintf(f, " %s-%s:%c", a, z, c);
		u = v + 1;
	}
	fprintf(f, "  (h host, r resident, s streamed)\n");
	if (p->pred_hybrid > 0)
		fprintf(f, "plan: predicted 1-token step: hybrid %.2f ms, every unit on the device %.2f ms\n",
			1e3 * p->pred_hybrid, 1e3 * p->pred_device);
}

void plan_print(FILE *f, const struct plan *p)
{
	if (!p->device) {
		fprintf(f, "plan: host memory: KV cache %.3f GiB (%s, %d x %d tokens), activations %.3f GiB (%d tokens per "
			   "step); weights %.3f GiB streamed through the I/O slots and RAM tier (%.2f bits per weight; the "
			   "model's %.2f)\n",
			gib(p->mem.kv), kv_fmt_name(p->opt.kv_fmt), p->opt.max_seqs, p->opt.ctx, gib(p->mem.act), p->opt.t_max,
			gib(p->units_bytes), plan_bpw(p, 's'), p->bpw_model);
		plan_print_placement(f, p);
		return;
	}
	fprintf(f,
		"plan: --vram %.3f GiB = CUDA context %.3f GiB + arena %.3f GiB + %.3f GiB for lazily loaded kernels\n"
		"plan:   KV cache      %8.3f GiB  (%s, %d sequences x %d tokens; window layers keep their window)\n"
		"plan:   KV in pinned host memory %.3f GiB: %d of %d layers, streamed with their layer (staging above;\n"
		"plan:     per step their pages in use go up, at most all of it, and the step's new pages come back)\n"
		"plan:   activations   %8.3f GiB  (%d tokens per step, %d per op)\n"
		"plan:   workspace     %8.3f GiB  (matmul/attention; plus 32 MiB cuBLAS)\n"
		"plan:   weight slots  %8.3f GiB  (%d x %.3f GiB)\n"
		"plan:   resident      %8.3f GiB  (%d of %d units)\n"
		"plan:   expert cache  %8.3f GiB  (%d experts of %.2f MiB, and %.2f MiB of routers)\n"
		"plan:   total         %8.3f GiB  of %.3f GiB available\n"
		"plan: streamed per step: %.3f GiB of %.3f GiB of weights (%.2f bits per weight; the model's %.2f)\n",
		gib((uint64_t)p->budget), gib((uint64_t)p->context), gib((uint64_t)p->arena),
		gib((uint64_t)(p->budget - p->context - p->arena)), gib(p->mem.kv), kv_fmt_name(p->opt.kv_fmt),
		p->opt.max_seqs, p->opt.ctx, gib(p->mem.kv_host), p->n_kv_host, p->n_units - 1, gib(p->mem.act), p->opt.t_max,
		p->opt.t_sub, gib(p->mem.ws), gib((uint64_t)p->n_slots * p->slot_bytes),
		p->n_slots, gib(p->slot_bytes), gib(p->resident_bytes), p->n_resident, p->n_units,
		gib((uint64_t)p->expert_cache * p->expert_bytes + p->router_bytes), p->expert_cache,
		(double)p->expert_bytes / (1 << 20), (double)p->router_bytes / (1 << 20), gib(p->total),
		gib((uint64_t)(p->avail > 0 ? p->avail : 0)), gib(p->stream_bytes), gib(p->units_bytes), plan_bpw(p, 's'),
		p->bpw_model);
	if (p->head_pieces > 1)
		fprintf(f, "plan: head in %d pieces of %lld rows (%.3f GiB each, the whole head %.3f GiB), each through a "
			   "weight slot\n", p->head_pieces, (long long)p->opt.head_rows,
			gib(p->piece_bytes), gib(p->head_bytes));
	fprintf(f, "plan: longest --ctx that fits (one sequence, 2 weight slots):");
	for (int k = KV_F16; k < KV_FMT_COUNT; k++)
		fprintf(f, " %s %d", kv_fmt_name(k), p->ctx_fit[k]);
	fprintf(f, "\n");
	plan_print_placement(f, p);
}

double plan_bpw(const struct plan *p, char which)
{
	uint64_t bits = 0, values = 0;
	for (int u = 0; u < p->n_units; u++) {
		char c = p->on_host[u] ? 'h' : p->resident[u] || !p->device ? 'r' : 's';
		if (!p->device && which == 's')
			c = 's'; /* the host streams every unit through its slots and RAM tier */
		if (c == which)
			bits += p->unit_bits[u], values += p->unit_values[u];
	}
	return values ? (double)bits / (double)values : 0;
}

void plan_free(struct plan *p)
{
	free(p->unit_bits);
	free(p->unit_values);
	free(p->resident);
	free(p->kv_host);
	free(p->on_host);
	memset(p, 0, sizeof(*p));
}
