/*
 * safetensors.h: read-only access to Hugging Face safetensors checkpoints (single file or sharded with
 * model.safetensors.index.json). Files are mmapped; a tensor's bytes are used in place and dropped from
 * the process's resident set with st_release once copied, so memory stays bounded by what is in use.
 * Every header is validated: sizes, offsets inside the file, byte counts equal to shape x dtype size.
 */
#ifndef FERRY_SAFETENSORS_H
#define FERRY_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#define ST_MAX_DIMS 8

struct st_tensor {
	char *name;
	char dtype[12]; /* "F32", "BF16", ... as in the file */
	int ndim;
	int64_t shape[ST_MAX_DIMS];
	const uint8_t *data;
	uint64_t bytes;
	int file;
};

struct st_file {
	char *path;
	uint8_t *map;
	size_t size;
};

struct st_set {
	int n_files;
	struct st_file *files;
	int n_tensors;
	struct st_tensor *tensors;
};

/* Opens DIR/model.safetensors, or the shards named by DIR/model.safetensors.index.json, else every
 * *.safetensors file of DIR in name order (ExLlamaV2's output.safetensors, output-0000K-of-0000N.safetensors). */
int st_open_dir(struct st_set *s, const char *dir, char *err, size_t errlen);
/* Adds one safetensors file to the set. */
int st_open_file(struct st_set *s, const char *path, char *err, size_t errlen);
const struct st_tensor *st_find(const struct st_set *s, const char *name);
/* Drops bytes [off, off+len) of the tensor from the resident set (the mapping stays valid). */
void st_release(const struct st_set *s, const struct st_tensor *t, uint64_t off, uint64_t len);
void st_close(struct st_set *s);
/* Bytes per element of a safetensors dtype name, 0 if unknown. */
int st_dtype_size(const char *dtype);

#endif
