/* convert.h: converter front-ends; each turns a source model into a model.ferry directory via layout/. */
#ifndef FERRY_CONVERT_H
#define FERRY_CONVERT_H

#include <stdbool.h>
#include <stddef.h>

/* A Hugging Face directory: config.json, model.safetensors or sharded + index, tokenizer files. lz4: store
 * layer and head tensors as lz4 chunks where that saves >= 10% (layout_writer_set_lz4). quant: NULL (keep
 * F32/F16/BF16), or a mix or format name of convert/quantize.h for the matrices (vectors stay as they are).
 * imatrix: NULL, or an importance matrix file (convert/imatrix.h) weighting the quantization error; it must
 * name at least one of the model's matrices, each with the model's column count. */
int convert_hf(const char *hf_dir, const char *out_dir, bool force, bool lz4, const char *quant,
	       const char *imatrix, char *err, size_t errlen);

/* A GGUF file (or the first of a split set): quantized blocks kept as they are. template_file (or NULL)
 * replaces the file's chat template. quant: NULL, or a mix for the F32/F16/BF16 matrices (tensors already
 * quantized are kept as they are, and counted in a notice: requantizing compounds the error). */
int convert_gguf(const char *path, const char *out_dir, bool force, bool lz4, const char *template_file,
		 const char *quant, const char *imatrix, char *err, size_t errlen);

#endif
