/* threads.h: the CPU backend's default thread count and the OpenMP wait policy (threads.c says why). */
#ifndef FERRY_THREADS_H
#define FERRY_THREADS_H

/* Call first thing in main: unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set, sets a short spin and executes
 * the program again with argv (returns only if it did not). */
void threads_wait_policy(char **argv);
/* The CPUs this process may use: its affinity mask, capped by its cgroup's CPU quota; at least 1. */
int threads_available(void);

#endif
