/* cmd_synth.c: `ferry synth -o DIR [--shape NAME] [shape overrides] [--fmt FMT] [--expert-fmt FMT] [--seed S]
 * [--force] [--threads N]`: a Llama-shaped (or qwen3moe, gpt-oss) model with random weights
 * (src/convert/synth_model.c), for measuring without downloading weights. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/ferry.h"
#include "cli/opt_hint.h"
#include "convert/synth_model.h"
#include "base/util.h"
#include "layout/wfmt.h"

static void usage(FILE *f)
{
	char fmts[512];
	wfmt_names(fmts, sizeof(fmts), WFMT_NAMES_LOWER);
	fprintf(f,
		"usage: ferry synth -o DIR [--shape NAME] [--layers N] [--d-model D] [--ffn F] [--heads H]\n"
		"                   [--kv-heads K] [--head-dim Dh] [--vocab V] [--experts E] [--experts-used K]\n"
		"                   [--expert-ffn Fe] [--fmt FMT] [--expert-fmt FMT] [--seed S] [--force] [--threads N]\n"
		"                   [--router-skew S]\n"
		"  -o, --output DIR  model directory to write (as DIR.tmp, renamed when complete)\n"
		"  --shape NAME      %s (default tiny); the options below override its fields\n"
		"  --experts E       a mixture of experts (qwen3moe): E experts per layer, --experts-used of them per\n"
		"                    token, each --expert-ffn wide (qwen3-30b-a3b: 128, 8, 768); 0: a dense llama\n"
		"  --fmt FMT         weight format of every matrix, the embedding and output included (default q4_k,\n"
		"                    gpt-oss shapes q8_0; norms and biases are f32): %s\n"
		"  --expert-fmt FMT  the experts' matrices (default --fmt; gpt-oss shapes mxfp4, as released)\n"
		"  --seed S          the same seed, shape and format give byte-identical files (default 0)\n"
		"  --router-skew S   router row e's values scaled by (1 + e)^-S, so the low experts win the top-k\n"
		"                    more often, as a trained router's favourites do (0..8; default 0: uniform)\n"
		"  --force           replace DIR if it is an existing ferry model\n"
		"  --threads N       generator threads (default: all cores)\n"
		"The model has no tokenizer: run it with --prompt-ids. Weights are random (values of RMS 1/sqrt(K) per\n"
		"matrix row of K values), so the output means nothing; the shapes and bytes are those of the real model.\n",
		synth_preset_names, fmts);
}

/* The format of that (case-insensitive) name that synth can write, -1 when none. */
static int fmt_of(const char *name)
{
	for (int i = 0; i < WFMT_COUNT; i++)
		if (!strcasecmp(name, wfmt_table[i].name) && wfmt_table[i].block)
			return i;
	return -1;
}

int ferry_synth(int argc, char **argv)
{
	enum { O_SHAPE = 256, O_LAYERS, O_D, O_FFN, O_HEADS, O_KV, O_DH, O_VOCAB, O_EXP, O_EXPU, O_EXPF, O_FMT, O_SEED,
	       O_FORCE, O_THR, O_EFMT, O_SKEW };
	static const struct option lo[] = {
		{"output", required_argument, 0, 'o'},	 {"shape", required_argument, 0, O_SHAPE},
		{"layers", required_argument, 0, O_LAYERS}, {"d-model", required_argument, 0, O_D},
		{"ffn", required_argument, 0, O_FFN},	 {"heads", required_argument, 0, O_HEADS},
		{"kv-heads", required_argument, 0, O_KV},	 {"head-dim", required_argument, 0, O_DH},
		{"vocab", required_argument, 0, O_VOCAB},	 {"fmt", required_argument, 0, O_FMT},
		{"experts", required_argument, 0, O_EXP},	 {"experts-used", required_argument, 0, O_EXPU},
		{"expert-ffn", required_argument, 0, O_EXPF}, {"expert-fmt", required_argument, 0, O_EFMT},
		{"seed", required_argument, 0, O_SEED},	 {"force", no_argument, 0, O_FORCE},
		{"threads", required_argument, 0, O_THR},	 {"help", no_argument, 0, 'h'},
		{"router-skew", required_argument, 0, O_SKEW},
		{0}};
	const char *out = NULL, *shape = "tiny", *fmt = NULL, *efmt = NULL;
	/* overrides, applied to the preset after parsing (whatever their order on the line); -1 = not given */
	long ov[10] = {-1, -1, -1, -1, -1, -1, -1, -1, -1, -1};
	static const char *const ov_names[10] = {"layers",   "d-model", "ffn",	  "heads",	  "kv-heads",
						 "head-dim", "vocab",	"experts", "experts-used", "expert-ffn"};
	struct synth_opts o = {0};
	int c;
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "o:h", lo, NULL)) != -1) {
		long v;
		const char *name = NULL;
		int bad = 0;
		switch (c) {
		case 'o': out = optarg; break;
		case O_SHAPE: shape = optarg; break;
		case O_LAYERS: case O_D: case O_FFN: case O_HEADS: case O_KV: case O_DH: case O_VOCAB: case O_EXP:
		case O_EXPU: case O_EXPF:
			bad = parse_int(optarg, c == O_EXP ? 0 : 1, 1L << 30, &v);
			ov[c - O_LAYERS] = v;
			name = ov_names[c - O_LAYERS];
			break;
		case O_FMT: fmt = optarg; break;
		case O_EFMT: efmt = optarg; break;
		case O_SEED: {
			char *end;
			o.seed = strtoull(optarg, &end, 10);
			bad = *end || end == optarg || optarg[0] == '-';
			name = "seed";
			break;
		}
		case O_SKEW: {
			char *end;
			o.router_skew = strtod(optarg, &end);
			bad = *end || end == optarg || !(o.router_skew >= 0 && o.router_skew <= 8);
			name = "router-skew";
			break;
		}
		case O_FORCE: o.force = true; break;
		case O_THR: bad = parse_int(optarg, 1, 4096, &v); o.threads = (int)v; name = "threads"; break;
		case 'h': usage(stdout); return 0;
		default: return opt_hint("synth", argv, "o:h", lo);
		}
		if (bad) {
			fprintf(stderr, "ferry: --%s: bad value '%s'\n", name, optarg);
			return 2;
		}
	}
	if (!out || optind != argc) {
		fprintf(stderr, "ferry: synth needs -o DIR and no other arguments\n");
		usage(stderr);
		return 2;
	}
	if (synth_preset(shape, &o.shape)) {
		fprintf(stderr, "ferry: --shape: unknown shape '%s' (known: %s)\n", shape, synth_preset_names);
		return 2;
	}
	int *field[10] = {&o.shape.n_layers,  &o.shape.d_model, &o.shape.ffn_dim,	&o.shape.n_heads,
			  &o.shape.n_kv_heads, &o.shape.head_dim, &o.shape.vocab,	&o.shape.n_experts,
			  &o.shape.n_experts_used, &o.shape.expert_ffn};
	for (int i = 0; i < 10; i++)
		if (ov[i] >= 0)
			*field[i] = (int)ov[i];
	/* gpt-oss as released: MXFP4 experts; its rows (2880) are not whole 256-blocks, so Q8_0 elsewhere */
	if (!fmt)
		fmt = o.shape.gptoss ? "q8_0" : "q4_k";
	if (!efmt && o.shape.gptoss)
		efmt = "mxfp4";
	o.fmt = fmt_of(fmt);
	o.expert_fmt = efmt ? fmt_of(efmt) : -1;
	if (o.fmt < 0 || (efmt && o.expert_fmt < 0)) {
		char fmts[128];
		wfmt_names(fmts, sizeof(fmts), WFMT_NAMES_LOWER);
		fprintf(stderr, "ferry: --%s: unknown format '%s' (%s)\n", o.fmt < 0 ? "fmt" : "expert-fmt",
			o.fmt < 0 ? fmt : efmt, fmts);
		return 2;
	}
	char err[ERR_LEN];
	if (synth_check(&o, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	double t0 = now_sec();
	uint64_t bytes = synth_model_bytes(&o);
	if (synth_model_write(&o, out, err, sizeof(err))) {
		fprintf(stderr, "ferry: %s\n", err);
		return 1;
	}
	double dt = now_sec() - t0;
	char moe[96] = "";
	if (o.shape.n_experts)
		snprintf(moe, sizeof(moe), ", %d experts (%d per token) x Fe %d in %s", o.shape.n_experts,
			 o.shape.n_experts_used, o.shape.expert_ffn, wfmt_name(o.expert_fmt >= 0 ? o.expert_fmt : o.fmt));
	fprintf(stderr, "ferry: wrote %s (%s, %d layers, D %d, F %d, %d/%d heads x %d, vocab %d%s, %s, seed %llu): "
			"%.2f GB in %.1fs (%.2f GB/s)\n",
		out, o.shape.gptoss ? "gpt-oss" : o.shape.n_experts ? "qwen3moe" : "llama", o.shape.n_layers, o.shape.d_model, o.shape.ffn_dim, o.shape.n_heads, o.shape.n_kv_heads,
		o.shape.head_dim, o.shape.vocab, moe, wfmt_name(o.fmt), (unsigned long long)o.seed, bytes / 1e9, dt,
		dt > 0 ? bytes / 1e9 / dt : 0.0);
	return 0;
}
