/*
 * run_opts.c: the device, streamer and KV options shared by the commands that run a model (run_opts.h).
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cli/run_opts.h"
#ifdef FERRY_CUDA
#include "kernels/cuda/cuda_probe.h"
#endif
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
		"  --kv f32|f16|q8|q4     KV cache format (default f16 on CUDA, f32 on the CPU); q8/q4 are groups of 32\n"
		"                         with an f16 scale, Hadamard-rotated\n"
		"  --kv-page N            positions per KV page (a multiple of 64, default 256)\n"
		"  --ram SIZE             pinned host RAM for I/O: staging slots plus the RAM tier of resident layers\n"
		"                         (default: half of physical memory)\n"
		"  --io auto|uring|pread  read engine (default auto: io_uring where the kernel allows it)\n"
		"  --threads N            CPU threads (default: the cores this process may use)\n"
		"  --device auto|cpu|cuda compute device (default auto: CUDA when this build has it and a GPU exists)\n"
		"  --vram SIZE            with CUDA: the most GPU memory ferry may use, CUDA context included (e.g. 4G;\n"
		"                         default: all that is free); layers that do not fit are streamed\n");
}

/* Probing initializes CUDA, so it is done only when asked for. */
const char *run_opts_gpu_desc(char *buf, size_t n)
{
	snprintf(buf, n, "none");
#ifdef FERRY_CUDA
	if (cuda_probe(buf, n) == 0)
		snprintf(buf, n, "none");
#endif
	return buf;
}

static int backend_open(const struct run_opts *o, struct backend **b, char *err, size_t errlen)
{
	char g[256];
	bool want_cuda = !strcmp(o->device, "cuda");
	bool use_cuda = want_cuda || (!strcmp(o->device, "auto") && strcmp(run_opts_gpu_desc(g, sizeof(g)), "none"));
#ifdef FERRY_CUDA
	if (use_cuda) {
		if (want_cuda && !strcmp(run_opts_gpu_desc(g, sizeof(g)), "none")) {
			snprintf(err, errlen, "--device cuda: no CUDA GPU is visible");
			return -ENODEV;
		}
		return backend_cuda_create(b, o->vram, err, errlen);
	}
#else
	if (use_cuda) {
		snprintf(err, errlen, "--device cuda: this ferry was built without CUDA (no nvcc at build time)");
		return -ENOTSUP;
	}
#endif
	return backend_cpu_create(b, o->threads, err, errlen);
}

static void io_log(const char *msg, void *ctx)
{
	(void)ctx;
	fprintf(stderr, "ferry: io: %s\n", msg);
}

/* The streamer's options: --ram is the pinned budget for slots and the RAM tier (src/io/stream.h decides how
 * many slots and which layers stay); pinned through CUDA when a GPU may use the buffers. */
static void io_options(const struct run_opts *o, struct io_opts *io)
{
	io_opts_default(io);
	io->ram = o->ram >= 0 ? o->ram : (int64_t)(phys_mem_bytes() / 2);
	io->engine = !strcmp(o->io, "uring") ? IO_ENGINE_URING : !strcmp(o->io, "pread") ? IO_ENGINE_PREAD : IO_ENGINE_AUTO;
	io->log = io_log;
#ifdef FERRY_CUDA
	static const struct io_host_alloc cuda_pinned = {"cudaHostAlloc", cuda_host_alloc, cuda_host_free, NULL};
	char desc[256];
	if (strcmp(o->device, "cpu") && cuda_probe(desc, sizeof(desc)) > 0)
		io->host_alloc = &cuda_pinned;
#endif
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

static int kv_fmt_of(const struct run_opts *o, const struct backend *b, char *err, size_t errlen)
{
	int f = b->ops->host_memory ? KV_F32 : KV_F16;
	if (o->kv)
		for (f = 0; f < KV_FMT_COUNT && strcmp(o->kv, kv_fmt_name(f)); f++)
			;
	if (f < KV_FMT_COUNT && b->ops->kv_supports(f))
		return f;
	snprintf(err, errlen, "--kv %s: not a KV format of the %s backend (%s)", o->kv ? o->kv : "default", b->ops->name,
		 b->ops->host_memory ? "f32, f16, q8, q4" : "f16, q8, q4");
	return -EINVAL;
}

int run_opts_backend(const struct run_opts *o, struct model_opts *mo, struct backend **b, char *err, size_t errlen)
{
	io_options(o, &mo->io);
	mo->kv_page = o->kv_page;
	int rc = backend_open(o, b, err, errlen);
	if (!rc && (mo->kv_fmt = kv_fmt_of(o, *b, err, errlen)) < 0)
		rc = mo->kv_fmt;
	return rc;
}
