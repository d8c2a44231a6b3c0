/* cmd_inspect.c: `ferry inspect MODEL [--verify]`: architecture, hyper-parameters, units and formats. */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli/ferry.h"
#include "cli/model_home.h"
#include "layout/arch.h"
#include "layout/layout.h"
#include "base/util.h"

static void print_unit(const struct layout *m, const char *label, const struct layout_unit *u)
{
	char sz[32], fmts[96] = "", raw[32], comp[96] = "";
	fmt_bytes(layout_unit_bytes(u), sz, sizeof(sz));
	unsigned seen = 0;
	int n_lz4 = 0;
	uint64_t raw_bytes = 0;
	for (int i = 0; i < u->n_tensors; i++) {
		seen |= 1u << u->tensors[i].fmt;
		n_lz4 += u->tensors[i].comp == LAYOUT_COMP_LZ4;
		raw_bytes += u->tensors[i].raw_bytes;
	}
	if (n_lz4) {
		fmt_bytes(raw_bytes, raw, sizeof(raw));
		snprintf(comp, sizeof(comp), "  lz4: %d tensors, %s decoded (%.0f%%)", n_lz4, raw,
			 100.0 * (double)layout_unit_bytes(u) / (double)raw_bytes);
	}
	for (int f = 0; f < WFMT_COUNT; f++)
		if (seen & (1u << f))
			snprintf(fmts + strlen(fmts), sizeof(fmts) - strlen(fmts), "%s%s", fmts[0] ? "," : "", wfmt_name(f));
	printf("  %-10s %-14s %3d tensors %12s  %s%s\n", label, u->n_tensors ? m->files[u->tensors[0].file].name : "-",
	       u->n_tensors, sz, fmts, comp);
}

static void report_bad(const struct layout_tensor *t, const char *why, void *ctx)
{
	const struct layout *m = ctx;
	fprintf(stderr, "ferry: %s/%s: tensor %s: %s\n", m->dir, m->files[t->file].name, t->name, why);
}

/* One unit's tensors against the rows of its architecture: each a row's, with the shape the hyper-parameters
 * imply, and every required row present. Returns the problems (each printed). */
static int verify_unit(const struct layout *m, const char *label, const struct layout_unit *u,
		       const struct arch_tensor *const *rows, int n_rows)
{
	int bad = 0;
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *t = &u->tensors[i];
		const struct arch_tensor *row = NULL;
		for (int k = 0; k < n_rows && !row; k++)
			row = strcmp(rows[k]->name, t->name) ? NULL : rows[k];
		int64_t shape[3];
		int nd = row ? arch_shape(&m->hp, row, shape) : 0;
		bool same = nd == t->ndim;
		for (int d = 0; same && d < nd; d++)
			same = t->shape[d] == shape[d];
		if (!row) {
			fprintf(stderr, "ferry: %s: %s: tensor %s is not one of architecture %s\n", m->dir, label, t->name,
				m->hp.arch);
			bad++;
		} else if (!same) {
			fprintf(stderr, "ferry: %s: %s: tensor %s: its shape is not what the hyper-parameters imply\n", m->dir,
				label, t->name);
			bad++;
		}
	}
	for (int k = 0; k < n_rows; k++) {
		if (rows[k]->need != ARCH_REQUIRED || layout_tensor_find(u, rows[k]->name))
			continue;
		fprintf(stderr, "ferry: %s: %s: tensor %s is missing\n", m->dir, label, rows[k]->name);
		bad++;
	}
	return bad;
}

/* --verify's check of the manifest against the architecture table (what `run` binds). */
static int verify_arch(const struct layout *m)
{
	const struct arch *a = arch_find(ARCH_KEY_NAME, m->hp.arch);
	if (!a) {
		fprintf(stderr, "ferry: %s: architecture '%s' is not one this ferry knows\n", m->dir, m->hp.arch);
		return 1;
	}
	const struct arch_tensor *emb[] = {&arch_token_embd}, *head[] = {&arch_output_norm, &arch_output};
	const struct arch_tensor *layer[64];
	int n = a->n_layer < 64 ? a->n_layer : 64, bad = verify_unit(m, "embed", &m->embed, emb, 1);
	for (int k = 0; k < n; k++)
		layer[k] = &a->layer[k];
	for (int l = 0; l < m->hp.n_layers; l++) {
		char label[24];
		snprintf(label, sizeof(label), "layer %d", l);
		bad += verify_unit(m, label, &m->layers[l], layer, n);
	}
	return bad + verify_unit(m, "head", &m->head, head, 2);
}

int ferry_inspect(int argc, char **argv)
{
	static const struct option lo[] = {{"verify", no_argument, 0, 'v'}, {"model", required_argument, 0, 'm'},
					   {"help", no_argument, 0, 'h'}, {0}};
	static const char use[] = "usage: ferry inspect (-m MODEL | MODEL) [--verify]\n";
	bool verify = false;
	const char *arg = NULL;
	int c;
	optind = 1;
	while ((c = getopt_long(argc, argv, "m:h", lo, NULL)) != -1) {
		if (c == 'v')
			verify = true;
		else if (c == 'm')
			arg = optarg;
		else {
			fprintf(c == 'h' ? stdout : stderr, use);
			return c == 'h' ? 0 : 2;
		}
	}
	if (!arg && optind < argc)
		arg = argv[optind++];
	if (!arg || optind != argc) {
		fprintf(stderr, use);
		return 2;
	}
	char err[ERR_LEN], path[4096];
	struct layout m;
	int rc = model_home_resolve(arg, path, sizeof(path));
	if (rc)
		return rc;
	if (layout_open(&m, path, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	const struct layout_hparams *hp = &m.hp;
	printf("model %s\n  arch %s, %d layers, d_model %d, heads %d (kv %d, head_dim %d), ffn %d, vocab %d\n", m.dir,
	       hp->arch, hp->n_layers, hp->d_model, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->ffn_dim, hp->vocab);
	printf("  rope %s theta %g factor %g%s, rms_eps %g, max_pos %d, %s embeddings\n", layout_rope_type_name(hp->rope.type),
	       hp->rope.theta, hp->rope.factor, hp->rope.style == ROPE_STYLE_NEOX ? " (neox)" : " (norm)", hp->rms_eps,
	       hp->max_pos, hp->tied_embeddings ? "tied" : "untied");
	if (hp->rope.factors)
		printf("  rope frequency factors (rope_freqs) on all %d frequencies\n", hp->rope.dim / 2);
	if (hp->n_experts) {
		printf("  experts: %d per layer, %d per token (weights %s), expert ffn %d", hp->n_experts,
		       hp->n_experts_used, hp->moe_norm_topk ? "renormalized over the chosen" : "softmax over all",
		       hp->expert_ffn);
		if (hp->shared_ffn)
			printf(", shared expert ffn %d", hp->shared_ffn);
		printf("\n");
	}
	if (hp->has_rope_local)
		printf("  sliding-window layers: rope theta %g\n", hp->rope_local.theta);
	printf("  mlp %s", hp->act == ACT_GELU_TANH ? "gelu_tanh" : hp->act == ACT_SWIGLU_OAI ? "swiglu_oai (clamped)" : "silu");
	if (hp->attn_scale > 0)
		printf(", attention scale %g", hp->attn_scale);
	if (hp->embed_scale > 0)
		printf(", embeddings x %g", hp->embed_scale);
	if (hp->final_softcap > 0)
		printf(", logits softcap %g", hp->final_softcap);
	printf("\n");
	int nwin = 0;
	for (int i = 0; i < hp->n_layers; i++)
		nwin += hp->window[i] > 0;
	if (nwin)
		printf("  sliding window %d on %d of %d layers\n", hp->window[hp->n_layers - 1] ? hp->window[hp->n_layers - 1]
												 : hp->window[0],
		       nwin, hp->n_layers);
	printf("  tokenizer %s, chat template %s\n", m.tokenizer_file ? m.tokenizer_file : "none",
	       m.chat_template_file ? m.chat_template_file : "none");
	uint64_t total = 0;
	for (int i = 0; i < m.n_files; i++)
		total += m.files[i].bytes;
	char sz[32];
	fmt_bytes(total, sz, sizeof(sz));
	printf("units (%d files, %s on disk):\n", m.n_files, sz);
	print_unit(&m, "embed", &m.embed);
	for (int l = 0; l < hp->n_layers; l++) {
		char label[24];
		snprintf(label, sizeof(label), "layer %d", l);
		print_unit(&m, label, &m.layers[l]);
	}
	print_unit(&m, "head", &m.head);
	rc = 0;
	if (verify) {
		int bad = verify_arch(&m), sums = layout_verify(&m, report_bad, &m, err, sizeof(err));
		bad = sums < 0 ? sums : bad + sums;
		if (bad < 0) {
			fprintf(stderr, "ferry: %s\n", err);
			rc = 1;
		} else if (bad > 0) {
			fprintf(stderr, "ferry: %s: %d tensor(s) failed verification\n", m.dir, bad);
			rc = 1;
		} else {
			printf("verify: every tensor is one of the architecture's, shaped as the hyper-parameters say, and "
			       "all tensor checksums match\n");
		}
	}
	layout_close(&m);
	return rc;
}
