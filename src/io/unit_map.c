/* unit_map.c: the buffer layout of a unit (unit_map.h). */
#include <string.h>

#include "io/unit_map.h"

/* The expert region of a unit whose ranges are built (unit_map.h: n_exp, exp_*). */
static void map_experts(const struct layout_unit *u, struct unit_map *p)
{
	int first = -1;
	for (int i = 0; i < u->n_tensors; i++)
		if (u->tensors[i].stride && (first < 0 || u->tensors[i].offset < u->tensors[first].offset))
			first = i;
	if (first < 0)
		return;
	const struct layout_tensor *x = &u->tensors[first];
	int r = 0;
	while (p->ranges[r].file != x->file)
		r++;
	for (int i = 0; i < u->n_tensors; i++) { /* the trunk must lie before the region, in that file */
		const struct layout_tensor *t = &u->tensors[i];
		if (!t->stride && t->file == x->file && t->offset + t->bytes > x->offset)
			return;
		if (t->stride && (t->file != x->file || t->stride != x->stride || t->shape[0] != x->shape[0]))
			return;
	}
	p->n_exp = x->shape[0];
	p->exp_range = r;
	p->exp_off = x->offset;
	p->exp_stride = x->stride;
	p->exp_dst = p->ranges[r].dst + (x->offset - p->ranges[r].off);
}

void unit_map_build(const struct layout *m, int unit, struct unit_map *p)
{
	const struct layout_unit *u = layout_unit_get(m, unit);
	memset(p, 0, sizeof(*p));
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *t = &u->tensors[i];
		int r = 0;
		while (r < p->n_ranges && p->ranges[r].file != t->file)
			r++;
		struct map_range *pr = &p->ranges[r];
		uint64_t end = t->offset + layout_tensor_span(t);
		if (r == p->n_ranges) {
			p->n_ranges++;
			*pr = (struct map_range){t->file, t->offset, end - t->offset, 0};
		} else {
			uint64_t lo = t->offset < pr->off ? t->offset : pr->off;
			uint64_t hi = end > pr->off + pr->len ? end : pr->off + pr->len;
			pr->off = lo;
			pr->len = hi - lo;
		}
	}
	/* Range ends rounded to 4096 (files are multiples of 4096), so O_DIRECT reads whole blocks; a range
	 * that would pass its file's end keeps its exact length and is read without O_DIRECT at the tail. */
	for (int r = 0; r < p->n_ranges; r++) {
		struct map_range *pr = &p->ranges[r];
		uint64_t end = layout_align_up(pr->off + pr->len);
		if (end <= m->files[pr->file].bytes)
			pr->len = end - pr->off;
		pr->dst = p->image_bytes;
		p->image_bytes += layout_align_up(pr->len);
	}
	p->buf_bytes = p->image_bytes;
	map_experts(u, p);
	for (int i = 0; i < u->n_tensors; i++) {
		const struct layout_tensor *t = &u->tensors[i];
		int r = 0;
		while (p->ranges[r].file != t->file)
			r++;
		p->src[i] = p->ranges[r].dst + (t->offset - p->ranges[r].off);
		p->dst[i] = p->src[i];
		if (t->comp == LAYOUT_COMP_LZ4) {
			p->dst[i] = p->buf_bytes;
			p->buf_bytes += layout_align_up(t->raw_bytes);
			p->compressed = true;
		}
	}
}
