/*
 * open.c: choosing and opening a backend by the --device name (backend.h), and what is common to all of
 * them. Probing for a GPU initializes CUDA, so it is done only when the choice needs it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#ifdef FERRY_CUDA
#include "kernels/cuda/cuda_probe.h"
#endif

const char *backend_gpu_desc(char *buf, size_t n)
{
	snprintf(buf, n, "none");
#ifdef FERRY_CUDA
	if (cuda_probe(buf, n) == 0)
		snprintf(buf, n, "none");
#endif
	return buf;
}

int backend_open(struct backend **b, const char *device, int64_t vram, int threads, char *err, size_t errlen)
{
	char g[256];
	*b = NULL;
	if (strcmp(device, "auto") && strcmp(device, "cpu") && strcmp(device, "cuda")) {
		snprintf(err, errlen, "--device: expected auto, cpu or cuda, got '%s'", device);
		return -EINVAL;
	}
	bool want_cuda = !strcmp(device, "cuda");
	bool use_cuda = want_cuda || (!strcmp(device, "auto") && strcmp(backend_gpu_desc(g, sizeof(g)), "none"));
#ifdef FERRY_CUDA
	if (use_cuda) {
		if (want_cuda && !strcmp(backend_gpu_desc(g, sizeof(g)), "none")) {
			snprintf(err, errlen, "--device cuda: no CUDA GPU is visible");
			return -ENODEV;
		}
		return backend_cuda_create(b, vram, err, errlen);
	}
#else
	(void)vram;
	if (use_cuda) {
		snprintf(err, errlen, "--device cuda: this ferry was built without CUDA (no nvcc at build time)");
		return -ENOTSUP;
	}
#endif
	const char *emu = getenv("FERRY_CPU_DEVICE");
	if (emu && !strcmp(emu, "1"))
		return backend_cpu_device_create(b, vram, threads, err, errlen);
	return backend_cpu_create(b, threads, err, errlen);
}

void backend_destroy(struct backend *b)
{
	if (b)
		b->ops->destroy(b);
}

void backend_mem_get(struct backend *b, struct backend_mem *m)
{
	memset(m, 0, sizeof(*m));
	if (b && b->ops->mem)
		b->ops->mem(b, m);
}
