/* cuda_probe.h: GPU discovery (kernels/cuda/probe.cu); only in builds with nvcc (FERRY_CUDA). */
#ifndef FERRY_CUDA_PROBE_H
#define FERRY_CUDA_PROBE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif
/* Number of CUDA devices (0 when none or no driver); desc gets a one-line description of device 0. */
int cuda_probe(char *desc, size_t n);
#ifdef __cplusplus
}
#endif

#endif
