/*
 * model_internal.h: what the files of the forward pass share (src/engine/ only): model.c (the layers, the head,
 * the step), model_mem.c (the memory a model needs and its run state), model_seq.c (sequences, token trees,
 * a step's host arrays) and moe.c (the mixture of experts). The public API is model.h.
 */
#ifndef FERRY_MODEL_INTERNAL_H
#define FERRY_MODEL_INTERNAL_H

#include "engine/model.h"

/* model.c */
/* Layer l's tensors (p: the unit's tensor pointers), the rows of its architecture, into their slots. */
int model_bind_layer(const struct model *m, int l, void *const *p, struct layer_weights *w, char *err, size_t n);

/* An optional tensor: NULL when the model has none. */
static inline const struct tensor *model_opt(const struct tensor *t)
{
	return t->data ? t : NULL;
}

/* model_mem.c */
/* o's defaults filled in: t_sub (t_max when 0 or not below it), kv_page (256), max_seqs (1). */
void model_opts_fill(struct model_opts *o);
/* The widest MLP activation: the dense ffn, one expert's, the shared expert's (g and u serve them all). */
int64_t model_ffn_rows(const struct layout_hparams *hp);
/* The page group of layers with window `window` (0: full attention) in mm; -1 when none. */
int model_mem_group(const struct model_mem *mm, int window);
/* What the backend's reserve needs for steps of o (defaults filled in) over n_groups page groups. */
void model_mem_reserve(const struct layout_hparams *hp, const struct model_opts *o, int n_groups,
		       struct backend_reserve *r);
/* The run state on backend b for t_rows tokens per step, t_sub per op, head pieces of head_rows rows (0:
 * none), xp the gather buffer of permuted linears; false when out of memory (model_rs_free frees a part). */
bool model_rs_alloc(struct model_rs *rs, struct backend *b, const struct layout_hparams *hp, int t_rows, int t_sub,
		    int max_logits, int64_t head_rows, bool xp);
void model_rs_free(struct model_rs *rs);

/* model_seq.c */
/* The step's host arrays (tokens, positions, part offsets, trees, RoPE tables) from the parts into m, *T its
 * tokens and *rows its logits rows; checks them (a refused step leaves the trees as they were). */
int model_seq_step(struct model *m, const struct model_part *parts, int n_parts, int *T, int *rows, char *err,
		   size_t errlen);

/* moe.c */
/* The routing buffers of a mixture of experts (every run state's ranges) and FERRY_ROUTES' file: -ENOMEM
 * (no message: the caller names the run state), -EIO with err. */
int moe_init(struct model *m, char *err, size_t errlen);
/* --moe-cpu's buffers: the device's for a range's expert rows, the host backend hb's for its experts. */
int moe_host_init(struct model *m, struct backend *hb, char *err, size_t errlen);
void moe_free(struct model *m);
/* The mixture of experts of layer l (weights w) for tokens t0 .. t0+n-1 of the step (normed in rs->h), added
 * to their rows of the residual x. */
int moe_range(struct model *m, struct model_rs *rs, int l, const struct layer_weights *w, float *x, int t0, int n);
/* The step's union of layer l's experts (m->moe_used, T tokens) into m->moe. */
void moe_count(struct model *m, int l, int T);
/* m's figures of the mixture of experts (struct model_moe_stats). */
void moe_stats(const struct model *m, struct model_moe_stats *st);

#endif
