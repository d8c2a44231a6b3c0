/*
 * test_numa.c: the NUMA layout from sysfs (src/base/numa.c) on fake trees under FERRY_SYSFS_ROOT:
 *   - two nodes (node1 listed before node0 by the directory, ranges and single CPUs, entries that are not
 *     nodes beside them): both nodes in order with their CPUs, threads spread over them in turn;
 *   - a memory-only node (empty cpulist) gets no threads;
 *   - one node, and no node folder at all: one node (nothing changes on such a machine);
 *   - a cpulist that is not a list of CPUs: -EINVAL naming the file.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/numa.h"
#include "check.h"

static char root[] = "/tmp/ferry_test_numa_XXXXXX";

static void put(const char *rel, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (char *p = path + strlen(root) + 1; (p = strchr(p, '/')); p++) {
		*p = 0;
		mkdir(path, 0755);
		*p = '/';
	}
	if (!text) {
		mkdir(path, 0755);
		return;
	}
	FILE *f = fopen(path, "w");
	CHECK_MSG(f && fputs(text, f) >= 0 && fclose(f) == 0, "writing %s", path);
}

static void clear(void)
{
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s/devices", root);
	CHECK_MSG(system(cmd) == 0, "%s", cmd);
}

int main(void)
{
	CHECK_MSG(mkdtemp(root) != NULL, "mkdtemp");
	setenv("FERRY_SYSFS_ROOT", root, 1);
	struct numa n;
	char err[600];

	/* no folder: one node */
	CHECK_MSG(numa_read(&n, err, sizeof(err)) == 0 && n.n_nodes == 1, "no sysfs: %d nodes", n.n_nodes);

	/* two nodes */
	put("devices/system/node/node1/cpulist", "4-5,7\n");
	put("devices/system/node/node0/cpulist", "0-2\n");
	put("devices/system/node/possible", "0-1\n");
	put("devices/system/node/has_cpu", "0-1\n");
	put("devices/system/node/power", NULL);
	err[0] = 0;
	CHECK_MSG(numa_read(&n, err, sizeof(err)) == 0, "two nodes: %s", err);
	int want_cpu[] = {0, 1, 2, 4, 5, 7};
	CHECK_MSG(n.n_nodes == 2 && n.id[0] == 0 && n.id[1] == 1 && n.first[0] == 0 && n.first[1] == 3 && n.first[2] == 6 &&
			  !memcmp(n.cpu, want_cpu, sizeof(want_cpu)),
		  "two nodes: %d nodes, ids %d %d, first %d %d %d", n.n_nodes, n.id[0], n.id[1], n.first[0], n.first[1],
		  n.first[2]);
	/* threads in turn: node0's first, node1's first, node0's second, ...; wrapping within a node */
	int want_t[] = {0, 4, 1, 5, 2, 7, 0, 4};
	for (int t = 0; t < 8; t++)
		CHECK_MSG(numa_thread_cpu(&n, t) == want_t[t], "thread %d on CPU %d, want %d", t, numa_thread_cpu(&n, t),
			  want_t[t]);

	/* a memory-only node between them gets no threads */
	put("devices/system/node/node2/cpulist", "\n");
	put("devices/system/node/node10/cpulist", "8-9\n");
	CHECK_MSG(numa_read(&n, err, sizeof(err)) == 0 && n.n_nodes == 4 && n.id[2] == 2 && n.id[3] == 10 &&
			  n.first[2] == n.first[3],
		  "memory-only node: %d nodes (%s)", n.n_nodes, err);
	int want_m[] = {0, 4, 8, 1, 5, 9};
	for (int t = 0; t < 6; t++)
		CHECK_MSG(numa_thread_cpu(&n, t) == want_m[t], "memory-only node: thread %d on CPU %d, want %d", t,
			  numa_thread_cpu(&n, t), want_m[t]);

	/* one node */
	clear();
	put("devices/system/node/node0/cpulist", "0-15\n");
	CHECK_MSG(numa_read(&n, err, sizeof(err)) == 0 && n.n_nodes == 1 && n.first[1] == 16, "one node: %d", n.n_nodes);

	/* bad cpulists, each named */
	const char *bad[] = {"0-x\n", "3-1\n", "a\n", "1,,2\n", "-1\n"};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		clear();
		put("devices/system/node/node0/cpulist", "0\n");
		put("devices/system/node/node1/cpulist", bad[i]);
		err[0] = 0;
		int rc = numa_read(&n, err, sizeof(err));
		CHECK_MSG(rc == -EINVAL && strstr(err, "node1/cpulist") && strstr(err, root), "cpulist '%s': rc %d, '%s'",
			  bad[i], rc, err);
	}
	char cmd[600];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	CHECK_MSG(system(cmd) == 0, "%s", cmd);
	CHECK_DONE();
}
