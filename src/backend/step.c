/*
 * step.c: the parts of a step range (backend.h's step_range_parts), shared by the backends.
 */
#include "backend/backend.h"

int step_range_parts(const struct step_desc *s, int t0, int n, int *part_t0, int *part_row, int *tok_part,
		     int *max_pos, int *max_part)
{
	int np = 0;
	*max_pos = 0;
	*max_part = 0;
	for (int i = 0; i < s->n_parts; i++) {
		int a = s->part_t0[i] > t0 ? s->part_t0[i] : t0;
		int e = s->part_t0[i + 1] < t0 + n ? s->part_t0[i + 1] : t0 + n;
		if (a >= e)
			continue;
		part_t0[np] = a - t0;
		part_row[np] = s->part_row[i];
		for (int t = a; t < e; t++) {
			tok_part[t - t0] = np;
			*max_pos = s->pos[t] > *max_pos ? s->pos[t] : *max_pos;
		}
		*max_part = e - a > *max_part ? e - a : *max_part;
		np++;
	}
	part_t0[np] = n;
	return np;
}
