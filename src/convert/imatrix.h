/*
 * imatrix.h: importance matrices, the mean square of each input column of a model's matrices over a
 * text (what `ferry imatrix` collects and `ferry convert --quant MIX --imatrix FILE` weights the
 * quantization error with), in llama.cpp's two file formats:
 *   - GGUF (llama.cpp's current one, written by ferry): general.type "imatrix", imatrix.datasets (string
 *     array), imatrix.chunk_count and imatrix.chunk_size (u32), and per matrix NAME (GGUF tensor names,
 *     "blk.3.attn_q.weight") two F32 tensors: NAME.in_sum2 [cols, n_mat] (sums of x^2 over the rows that
 *     went through it; n_mat > 1: one row per expert) and NAME.counts [1, n_mat] (those rows);
 *   - the legacy .dat: i32 n_entries; per entry i32 len, the name, i32 ncall, i32 nval, f32 values[nval]
 *     (the mean times ncall); then i32 chunks and the dataset's name (i32 len + bytes).
 * Either way an entry's importance is the mean x^2 per column (in_sum2 / counts, or values / ncall).
 */
#ifndef FERRY_IMATRIX_H
#define FERRY_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

struct imatrix_entry {
	char *name;
	int64_t cols;  /* values per matrix row of imp */
	int n_mat;     /* experts (1: a dense matrix) */
	float *imp;    /* [n_mat, cols] mean x^2 of each input column */
	double count;  /* rows seen (the first matrix's) */
};

struct imatrix {
	int n;
	struct imatrix_entry *e;
	int chunks;    /* chunks of text it was collected over (0: not recorded) */
};

/* Reads a GGUF or legacy .dat imatrix file; 0 or a negative errno with err naming the file and field. */
int imatrix_read(struct imatrix *im, const char *path, char *err, size_t errlen);
void imatrix_free(struct imatrix *im);
/* The entry of GGUF tensor name `name` (e.g. "blk.0.ffn_down.weight"), NULL when absent. */
const struct imatrix_entry *imatrix_find(const struct imatrix *im, const char *name);

/* The importance values of matrix `name` (a layer's "attn_q.weight" with layer >= 0, else the whole name)
 * of `cols` columns; expert >= 0: that expert's of stacked experts. *imp = its entry's (NULL when im has
 * none: that matrix is quantized without, as llama-quantize does) and (*used)++; -EINVAL with err naming
 * path when the entry's columns differ (an imatrix of another model), it holds experts for a dense matrix,
 * or fewer experts than asked for. */
int imatrix_lookup(const struct imatrix *im, const char *path, const char *name, int layer, int expert, int64_t cols,
		   const float **imp, int *used, char *err, size_t errlen);

/* After a conversion that weighted `used` matrices with im (read from path): -EINVAL with err filled when
 * im has entries but named none of the model's matrices (an imatrix of another model), else 0. */
int imatrix_unused(const struct imatrix *im, const char *path, int used, char *err, size_t errlen);

/* Writes im as a GGUF imatrix (sums = imp * count) to path via path.tmp and a rename; dataset: the text's
 * file name, chunk_size: tokens per chunk. 0 or -errno with err filled. */
int imatrix_write(const struct imatrix *im, const char *path, const char *dataset, int chunk_size, char *err,
		  size_t errlen);

#endif
