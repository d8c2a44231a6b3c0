/* progress.c: redraws at most ten times a second; ends with a newline so later output starts clean. */
#include <stdio.h>
#include <unistd.h>

#include "base/progress.h"
#include "base/util.h"

void progress_begin(struct progress *p, const char *what, int total)
{
	p->what = what;
	p->total = total;
	p->t0 = now_sec();
	p->last = 0;
	p->tty = isatty(fileno(stderr));
}

void progress_update(struct progress *p, int done, uint64_t bytes)
{
	if (!p->tty)
		return;
	double t = now_sec();
	if (done < p->total && t - p->last < 0.1)
		return;
	p->last = t;
	double el = t - p->t0, gbs = el > 0 ? (double)bytes / el / 1e9 : 0;
	double eta = done > 0 ? el * (p->total - done) / done : 0;
	int w = 30, fill = p->total ? w * done / p->total : w;
	char bar[64];
	for (int i = 0; i < w; i++)
		bar[i] = i < fill ? '#' : '.';
	bar[w] = 0;
	fprintf(stderr, "\r%s [%s] %d/%d  %.2f GB  %.2f GB/s  ETA %.0fs ", p->what, bar, done, p->total,
		(double)bytes / 1e9, gbs, eta);
	fflush(stderr);
}

void progress_end(struct progress *p)
{
	if (p->tty)
		fputc('\n', stderr);
}
