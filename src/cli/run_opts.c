/*
 * run_opts.c: the device, streamer and KV options shared by the commands that run a model (run_opts.h).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#include "base/util.h"

void run_opts_default(struct run_opts *o)
{
	*o = (struct run_opts){.device = "auto", .io = "auto", .ram = -1, .vram = -1};
}

int run_opts_parse(struct run_opts *o, int c, const char *arg)
{
	long v;
	int bad = 0;
	const char *name = NULL;
	switch (c) {
	case RUN_OPT_KV: o->kv = arg; break;
	case RUN_OPT_KV_PAGE:
		bad = parse_int(arg, 64, 1 << 16, &v) || v % 64;
		o->kv_page = (int)v, name = "--kv-page";
		break;
	case RUN_OPT_RAM: o->ram = parse_size(arg); bad = o->ram < 0; name = "--ram"; break;
	case RUN_OPT_IO: o->io = arg; break;
	case RUN_OPT_THREADS: bad = parse_int(arg, 1, 4096, &v); o->threads = (int)v; name = "--threads"; break;
	case RUN_OPT_DEVICE: o->device = arg; break;
	case RUN_OPT_VRAM: o->vram = parse_size(arg); bad = o->vram <= 0; name = "--vram"; break;
	case RUN_OPT_PLACEMENT: o->placement = arg; break;
	case RUN_OPT_MOE_CPU:
		o->moe_cpu = arg;
		bad = strcmp(arg, "auto") && strcmp(arg, "off") && strcmp(arg, "all"), name = "--moe-cpu";
		break;
	case RUN_OPT_SPEC: o->spec.mode = spec_mode_parse(arg); bad = o->spec.mode < 0; name = "--spec"; break;
	case RUN_OPT_SPEC_MAX:
		bad = parse_int(arg, 1, KV_TREE_MAX - 1, &v);
		o->spec.max = (int)v, name = "--spec-max";
		break;
	case RUN_OPT_SPEC_NGRAM: bad = parse_int(arg, 1, 64, &v); o->spec.ngram = (int)v, name = "--spec-ngram"; break;
	case RUN_OPT_SPEC_BRANCH: bad = parse_int(arg, 1, 8, &v); o->spec.branch = (int)v, name = "--spec-branch"; break;
	case RUN_OPT_SPEC_COST: { /* C0,C1: the pass cost line the planner uses instead of its measured one */
		char *end, *end1 = NULL;
		o->spec.cost0 = strtod(arg, &end);
		o->spec.cost1 = *end == ',' ? strtod(end + 1, &end1) : -1;
		char *end2 = end1;
		if (end1 && end1 != end + 1 && *end1 == ',') /* ,D: a draft step's seconds */
			o->spec.cost_draft = strtod(end1 + 1, &end2);
		bad = end == arg || !end1 || end1 == end + 1 || end2 == end1 + 1 || *end2 ||
		      !(o->spec.cost0 > 0 && o->spec.cost0 < 1e4) || !(o->spec.cost1 >= 0 && o->spec.cost1 < 1e4) ||
		      !(o->spec.cost_draft >= 0 && o->spec.cost_draft < 1e4);
		name = "--spec-cost";
		break;
	}
	case RUN_OPT_DRAFT: o->draft = arg; break;
	case RUN_OPT_H2D_LIMIT: {
		char *end;
		o->h2d_limit = strtod(arg, &end);
		bad = end == arg || *end || !(o->h2d_limit > 0 && o->h2d_limit < 1e4), name = "--h2d-limit";
		break;
	}
	default: return 1;
	}
	if (bad) {
		fprintf(stderr, "ferry: %s: bad value '%s'\n", name, arg);
		return 2;
	}
	return 0;
}

int run_opts_check(const struct run_opts *o)
{
	if (strcmp(o->device, "auto") && strcmp(o->device, "cpu") && strcmp(o->device, "cuda")) {
		fprintf(stderr, "ferry: --device: expected auto, cpu or cuda, got '%s'\n", o->device);
		return 2;
	}
	if (strcmp(o->io, "auto") && strcmp(o->io, "uring") && strcmp(o->io, "pread")) {
		fprintf(stderr, "ferry: --io: expected auto, uring or pread, got '%s'\n", o->io);
		return 2;
	}
	return 0;
}

void run_opts_usage(FILE *f)
{
	fprintf(f,
		"  --kv f32|f16|q8|q4|q5|a4|a5|k8v5|k8v4|ka5v4\n"
		"                         KV cache format (default f16 on CUDA, f32 on the CPU); q8/q4/q5 are groups of\n"
		"                         32 with an f16 scale, Hadamard-rotated (a4/a5: an f16 step and minimum);\n"
		"                         k8v5, k8v4: keys q8, values q5 or q4; ka5v4: keys a5, values q4\n"
		"  --kv-page N            positions per KV page (a multiple of 64, default 256)\n"
		"  --ram SIZE             pinned host RAM for I/O: staging slots plus the RAM tier of resident layers\n"
		"                         (default: half of physical memory)\n"
		"  --io auto|uring|pread  reader (default auto: io_uring where the kernel allows it)\n"
		"  --threads N            CPU threads (default: the cores this process may use)\n"
		"  --device auto|cpu|cuda compute device (default auto: CUDA when this build has it and a GPU exists)\n"
		"  --vram SIZE            with CUDA: the most GPU memory ferry may use, CUDA context included (e.g. 4G;\n"
		"                         default: all that is free); layers that do not fit are streamed\n"
		"  --placement auto|gpu|cpu|LIST  with CUDA: which layers the CPU computes from the RAM tier in steps of few\n"
		"                         tokens (decode) while the GPU streams the others (default auto: chosen from rates\n"
		"                         measured at start; LIST: layers and ranges for the CPU, e.g. 0-19,40-59,head)\n"
		"  --moe-cpu auto|off|all with CUDA and a mixture of experts: the routed experts a decode step's layer lacks\n"
		"                         on the GPU (not in its expert cache) are computed by the CPU from the RAM tier\n"
		"                         instead of uploaded, beside the GPU (default off; auto: per expert, where the rates\n"
		"                         measured at start predict it faster; all: every one; ranges over 64 tokens: none)\n"
		"  --h2d-limit GBPS       emulate a slower host-to-device link (e.g. 13 for PCIe 4.0 x8): uploads are paced\n"
		"  --spec off|auto|lookup|draft|tree|combined  speculative decoding (default off): guesses verified in one\n"
		"                         pass, output exactly as without (auto: combined with --draft, else lookup;\n"
		"                         combined: the draft's branches and every lookup continuation, best-scoring kept)\n"
		"  --spec-max N           most guessed tokens per pass (default 16; the planner sizes each pass below it)\n"
		"  --spec-ngram N         prompt lookup: the longest n-gram matched (default 3)\n"
		"  --spec-branch K        tree, combined: the draft's K best tokens at each depth (default 3)\n"
		"  --spec-cost C0,C1[,D]  the planner takes a pass of T tokens to cost C0 + C1 T seconds (and a draft step D)\n"
		"                         instead of measuring it (e.g. 0.7,0,0.01 plans on the CPU as for a streamed 70B\n"
		"                         model with a resident draft)\n"
		"  --draft MODEL.ferry    draft model with the model's vocabulary, resident on the device (--spec draft|tree|combined)\n");
}

void run_opts_engine(const struct run_opts *o, struct engine_opts *eo)
{
	eo->device = o->device;
	eo->vram = o->vram;
	eo->threads = o->threads;
	eo->placement = o->placement;
	eo->moe_cpu = o->moe_cpu;
	eo->h2d_limit = o->h2d_limit;
	eo->ram = o->ram;
	eo->reader = !strcmp(o->io, "uring") ? IO_READER_URING : !strcmp(o->io, "pread") ? IO_READER_PREAD : IO_READER_AUTO;
	eo->kv = o->kv;
	eo->kv_page = o->kv_page;
	eo->spec = o->spec;
	eo->draft = o->draft;
	if (o->draft && eo->spec.mode == SPEC_OFF)
		eo->spec.mode = SPEC_AUTO; /* a draft asks for speculation */
}

int run_opts_eos(const struct layout_hparams *hp, const struct tokenizer *tk, int **ids, int *n)
{
	const int32_t *eog = NULL;
	int n_eog = tk ? tokenizer_eog_ids(tk, &eog) : 0;
	*n = 0;
	*ids = malloc(sizeof(int) * (size_t)(hp->n_eos + n_eog + 1));
	if (!*ids)
		return -ENOMEM;
	for (int i = 0; i < hp->n_eos; i++)
		(*ids)[(*n)++] = hp->eos_ids[i];
	for (int i = 0; i < n_eog; i++)
		(*ids)[(*n)++] = eog[i];
	return 0;
}

int run_opts_json_write(const json_t *o, const char *path, const char *opt)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (json_dump_file(o, tmp, JSON_INDENT(1)) || rename(tmp, path)) {
		fprintf(stderr, "ferry: %s %s: %s\n", opt, path, strerror(errno));
		unlink(tmp);
		return -EIO;
	}
	return 0;
}
