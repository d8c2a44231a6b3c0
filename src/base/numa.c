/*
 * numa.c: NUMA nodes from sysfs, thread placement over them, and interleaved memory.
 *
 * A hybrid step's host units read the RAM tier at the memory bus's rate. On a machine of several NUMA nodes a
 * buffer placed by first touch lies on the node of the thread that filled it (an I/O thread), and every
 * compute thread on another node reads it across the interconnect at a fraction of that rate. ferry
 * interleaves its memory over the nodes (page by page, set_mempolicy before the RAM tier and the pinned slots
 * are made) and spreads the compute threads over the nodes in turn, so each node's bus serves an even share
 * of every matrix. With one node nothing changes. The policy is set through the system call (no libnuma): its
 * constant is the kernel's (include/uapi/linux/mempolicy.h).
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "base/numa.h"

#define MPOL_INTERLEAVE_ 3

static int cmp_int(const void *a, const void *b)
{
	return *(const int *)a - *(const int *)b;
}

/* "0-3,8,10-11\n" (empty: no CPUs) appended to n->cpu at *at; -EINVAL on anything else */
static int parse_cpulist(const char *s, struct numa *n, int *at)
{
	while (*s && *s != '\n') {
		char *end;
		long a = strtol(s, &end, 10), b = a;
		if (end == s || a < 0)
			return -EINVAL;
		if (*end == '-') {
			const char *r = end + 1;
			b = strtol(r, &end, 10);
			if (end == r || b < a)
				return -EINVAL;
		}
		for (long c = a; c <= b; c++) {
			if (*at >= NUMA_MAX_CPUS)
				return -E2BIG;
			n->cpu[(*at)++] = (int)c;
		}
		if (*end == ',' && end[1] && end[1] != '\n')
			end++;
		else if (*end && *end != '\n')
			return -EINVAL;
		s = end;
	}
	return 0;
}

int numa_read(struct numa *n, char *err, size_t errlen)
{
	memset(n, 0, sizeof(*n));
	const char *root = getenv("FERRY_SYSFS_ROOT");
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/devices/system/node", root && root[0] ? root : "/sys");
	DIR *d = opendir(dir);
	n->n_nodes = 1;
	if (!d)
		return 0;
	int ids[NUMA_MAX_NODES], k = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		char *end;
		if (strncmp(e->d_name, "node", 4) || !e->d_name[4])
			continue;
		long id = strtol(e->d_name + 4, &end, 10);
		if (*end || id < 0)
			continue;
		if (k == NUMA_MAX_NODES) {
			closedir(d);
			snprintf(err, errlen, "%s: more than %d NUMA nodes", dir, NUMA_MAX_NODES);
			return -E2BIG;
		}
		ids[k++] = (int)id;
	}
	closedir(d);
	if (!k)
		return 0;
	qsort(ids, (size_t)k, sizeof(int), cmp_int);
	int at = 0;
	for (int i = 0; i < k; i++) {
		char path[1200], line[16384] = "";
		snprintf(path, sizeof(path), "%s/node%d/cpulist", dir, ids[i]);
		FILE *f = fopen(path, "r");
		bool ok = f && (fgets(line, sizeof(line), f) || feof(f));
		if (f)
			fclose(f);
		n->id[i] = ids[i];
		n->first[i] = at;
		int rc = ok ? parse_cpulist(line, n, &at) : -EINVAL;
		if (rc) {
			snprintf(err, errlen, "%s: %s", path,
				 !ok ? "cannot be read" : rc == -E2BIG ? "more CPUs than ferry places" : "not a list of CPUs (e.g. 0-3,8)");
			return rc;
		}
	}
	n->n_nodes = k;
	n->first[k] = at;
	return 0;
}

int numa_thread_cpu(const struct numa *n, int t)
{
	int with = 0;
	for (int i = 0; i < n->n_nodes; i++)
		with += n->first[i + 1] > n->first[i];
	if (!with || t < 0)
		return -1;
	/* the t-th thread: node t mod (nodes with CPUs), its (t / nodes)-th CPU, wrapping */
	int node = -1, j = t % with, r = t / with;
	for (int i = 0, seen = 0; i < n->n_nodes && node < 0; i++)
		if (n->first[i + 1] > n->first[i] && seen++ == j)
			node = i;
	int cnt = n->first[node + 1] - n->first[node];
	return n->cpu[n->first[node] + r % cnt];
}

int numa_interleave(const struct numa *n)
{
	unsigned long mask[NUMA_MAX_NODES / (8 * sizeof(unsigned long)) + 1] = {0};
	int max = 0;
	for (int i = 0; i < n->n_nodes; i++) {
		if (n->id[i] >= (int)(8 * sizeof(mask)))
			return -E2BIG;
		mask[n->id[i] / (8 * sizeof(unsigned long))] |= 1ul << (n->id[i] % (8 * sizeof(unsigned long)));
		max = n->id[i] + 1 > max ? n->id[i] + 1 : max;
	}
	if (syscall(SYS_set_mempolicy, MPOL_INTERLEAVE_, mask, (unsigned long)max + 1))
		return -errno;
	return 0;
}
