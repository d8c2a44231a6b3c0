/* convert.h: converter front-ends; each turns a source model into a model.ferry directory via layout/. */
#ifndef FERRY_CONVERT_H
#define FERRY_CONVERT_H

#include <stdbool.h>
#include <stddef.h>

/* A Hugging Face directory: config.json, model.safetensors or sharded + index, tokenizer files. */
int convert_hf(const char *hf_dir, const char *out_dir, bool force, char *err, size_t errlen);

#endif
