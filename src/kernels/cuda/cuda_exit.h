/*
 * cuda_exit.h: for the test and benchmark programs only (never the library, which returns errors): a CUDA
 * runtime call that must succeed, else the call, file, line and CUDA's message on stderr and exit(1).
 */
#ifndef FERRY_CUDA_EXIT_H
#define FERRY_CUDA_EXIT_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>

#define CU(call)                                                                                        \
	do {                                                                                            \
		cudaError_t e_ = (call);                                                                \
		if (e_ != cudaSuccess) {                                                                \
			fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_)); \
			exit(1);                                                                        \
		}                                                                                       \
	} while (0)

#endif
