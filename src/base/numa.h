/* numa.h: the machine's NUMA nodes as sysfs lists them, where host compute threads go, and interleaving
 * memory over the nodes (numa.c says why). */
#ifndef FERRY_NUMA_H
#define FERRY_NUMA_H

#include <stddef.h>

#define NUMA_MAX_NODES 64
#define NUMA_MAX_CPUS 4096

struct numa {
	int n_nodes;                  /* >= 1 */
	int id[NUMA_MAX_NODES];       /* node numbers (sysfs nodeN), ascending */
	int first[NUMA_MAX_NODES + 1]; /* node i's CPUs are cpu[first[i] .. first[i + 1]) */
	int cpu[NUMA_MAX_CPUS];
};

/* Reads $FERRY_SYSFS_ROOT/devices/system/node (FERRY_SYSFS_ROOT: default /sys; tests point it at a fake
 * tree): 0 with n filled (a machine without the folder: one node 0 without listed CPUs), or -EINVAL with err
 * naming the file whose cpulist is not a list of CPUs, -E2BIG past NUMA_MAX_NODES or NUMA_MAX_CPUS. */
int numa_read(struct numa *n, char *err, size_t errlen);
/* The CPU host compute thread t is pinned to: threads spread over the nodes in turn, so with
 * memory interleaved each node's bus serves its share; -1 when the nodes list no CPUs. */
int numa_thread_cpu(const struct numa *n, int t);
/* Interleaves the process's memory allocated from now on over n's nodes (set_mempolicy); 0 or -errno. */
int numa_interleave(const struct numa *n);

#endif
