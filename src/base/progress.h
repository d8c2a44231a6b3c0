/* progress.h: a one-line progress bar on a terminal (units done, GB/s, ETA); silent when stderr is not a TTY. */
#ifndef FERRY_PROGRESS_H
#define FERRY_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
	const char *what;
	int total;
	double t0, last;
	bool tty;
};

void progress_begin(struct progress *p, const char *what, int total);
void progress_update(struct progress *p, int done, uint64_t bytes);
void progress_end(struct progress *p);

#endif
