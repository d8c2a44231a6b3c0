/* cuda_probe.h: GPU discovery (src/kernels/cuda/probe.cu) and pinned host memory (pinned.cu); only in builds with
 * nvcc (FERRY_CUDA). */
#ifndef FERRY_CUDA_PROBE_H
#define FERRY_CUDA_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Number of CUDA devices (0 when none or no driver); desc gets a one-line description of device 0. */
int cuda_probe(char *desc, size_t n);
/* Page-locked host memory (pinned.cu), in the shape of io_host_alloc's functions; NULL on failure. */
void *cuda_host_alloc(size_t bytes, void *ctx);
void cuda_host_free(void *p, size_t bytes, void *ctx);
/* Median seconds of a host -> device cudaMemcpy of bytes from host (benchmarks); -1 on failure. */
double cuda_h2d_seconds(const void *host, size_t bytes, int reps);
#ifdef __cplusplus
}
#endif

#endif
