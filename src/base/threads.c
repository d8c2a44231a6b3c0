/*
 * threads.c: how many threads the CPU backend computes with, and how they wait between parallel regions.
 *
 * The CPU kernels are OpenMP parallel regions, some 200-400 per decoded token. Between two regions libgomp's
 * threads spin, by default 300,000 pause instructions (about 10 ms on the project's CPU machine) before they
 * sleep. Alone on the machine that keeps them ready; with anything else running, a spinning thread holds a
 * core that the thread it waits for (preempted by the other program) needs, and decode fell 7-180x
 * (bench/RESULTS.md, "Threads under a competing load"). Sleeping at once (OMP_WAIT_POLICY=passive) costs a
 * futex wake-up per region instead and lost 40% alone; a spin of THREADS_SPINCOUNT pauses (some tens of
 * microseconds) keeps the speed alone and gets 2-3x the old default's under load. libgomp reads its settings
 * once, when it is loaded, before main (and libc resets the environment after any earlier constructor), so
 * the process sets GOMP_SPINCOUNT and executes itself again, once, unless the user chose a policy.
 */
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/threads.h"

#define THREADS_SPINCOUNT "1000"

void threads_wait_policy(char **argv)
{
	const char *pre = getenv("LD_PRELOAD");
	if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT") || (pre && strstr(pre, "vgpreload")))
		return; /* the user's choice, or done already; valgrind would lose a process that executes itself */
	if (setenv("GOMP_SPINCOUNT", THREADS_SPINCOUNT, 1))
		return;
	execv("/proc/self/exe", argv);
	unsetenv("GOMP_SPINCOUNT"); /* no /proc: run with libgomp's default */
}

/* Whether the comma-separated list names the controller. */
static bool has_controller(const char *list, const char *name)
{
	size_t n = strlen(name);
	for (const char *s = list; s; s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL)
		if (!strncmp(s, name, n) && (s[n] == ',' || !s[n]))
			return true;
	return false;
}

/* The first number of a file, -1 if none (cgroup v2's "max"); the second into *second when asked. */
static long long read_num(const char *path, long long *second)
{
	long long a = -1;
	FILE *f = fopen(path, "r");
	if (f && fscanf(f, "%lld", &a) != 1)
		a = -1;
	if (f && second && fscanf(f, "%lld", second) != 1)
		*second = 0;
	if (f)
		fclose(f);
	return a;
}

/* CPUs' worth of time the cgroup quota allows (rounded up; 0 = no limit). Containers (docker --cpus) set it
 * on the process's own cgroup: cgroup v2's cpu.max "QUOTA PERIOD", v1's cpu.cfs_quota_us / cfs_period_us. */
static int cgroup_cpus(void)
{
	FILE *f = fopen("/proc/self/cgroup", "r");
	char line[4096], path[4400];
	int cpus = 0;
	while (f && fgets(line, sizeof(line), f)) { /* ID:CONTROLLERS:PATH */
		char *c = strchr(line, ':'), *p = c ? strchr(c + 1, ':') : NULL;
		if (!p)
			continue;
		*p++ = 0;
		p[strcspn(p, "\n")] = 0;
		c++;
		long long q = -1, per = 0;
		if (!*c) {
			snprintf(path, sizeof(path), "/sys/fs/cgroup%s/cpu.max", p);
			if (access(path, R_OK))
				snprintf(path, sizeof(path), "/sys/fs/cgroup/unified%s/cpu.max", p);
			q = read_num(path, &per);
		} else if (has_controller(c, "cpu")) {
			snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s/cpu.cfs_quota_us", c, p);
			q = read_num(path, NULL);
			snprintf(path, sizeof(path), "/sys/fs/cgroup/%s%s/cpu.cfs_period_us", c, p);
			per = read_num(path, NULL);
		}
		if (q > 0 && per > 0) {
			int n = (int)((q + per - 1) / per);
			cpus = cpus && cpus < n ? cpus : n;
		}
	}
	if (f)
		fclose(f);
	return cpus;
}

int threads_available(void)
{
	cpu_set_t set;
	long n = sched_getaffinity(0, sizeof(set), &set) ? sysconf(_SC_NPROCESSORS_ONLN) : CPU_COUNT(&set);
	int q = cgroup_cpus();
	if (n < 1)
		n = 1;
	return q > 0 && q < n ? q : (int)n;
}
