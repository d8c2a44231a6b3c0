/*
 * gguf.h: read-only access to GGUF v2/v3 files (llama.cpp's model format), including split models
 * (NAME-00001-of-0000N.gguf). Files are mmapped; every length, count, offset and type read from a file is
 * bounds-checked before use, so a truncated or malicious file gets an error naming the file and field,
 * never an out-of-bounds read. Metadata comes from the first file of a split set; tensors from all.
 *
 * Strings in the file are not NUL-terminated: they are handed out as (pointer, length) pairs pointing
 * into the mapping. String arrays get an offset index at open time, so element i is O(1).
 */
#ifndef FERRY_GGUF_H
#define FERRY_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum gguf_type {
	GGUF_TYPE_U8 = 0,
	GGUF_TYPE_I8 = 1,
	GGUF_TYPE_U16 = 2,
	GGUF_TYPE_I16 = 3,
	GGUF_TYPE_U32 = 4,
	GGUF_TYPE_I32 = 5,
	GGUF_TYPE_F32 = 6,
	GGUF_TYPE_BOOL = 7,
	GGUF_TYPE_STRING = 8,
	GGUF_TYPE_ARRAY = 9,
	GGUF_TYPE_U64 = 10,
	GGUF_TYPE_I64 = 11,
	GGUF_TYPE_F64 = 12,
	GGUF_TYPE_COUNT
};

struct gguf_str {
	const char *p; /* not NUL-terminated */
	uint64_t n;
};

struct gguf_kv {
	struct gguf_str key;
	enum gguf_type type;
	/* Scalars: the raw little-endian bytes; read them with gguf_kv_int/float/bool. */
	const uint8_t *val;
	struct gguf_str str; /* GGUF_TYPE_STRING */
	/* Arrays: element type, count, first element; string arrays also get str_off[i] (offset of element i's
	 * length prefix from arr). */
	enum gguf_type arr_type;
	uint64_t arr_n;
	const uint8_t *arr;
	uint64_t *str_off;
	/* The whole entry as stored (key, type, value): copied verbatim when a converter writes a GGUF. */
	const uint8_t *raw;
	uint64_t raw_n;
};

#define GGUF_MAX_DIMS 4

struct gguf_tensor {
	struct gguf_str name;
	int n_dims;
	uint64_t ne[GGUF_MAX_DIMS]; /* ne[0] is the contiguous dimension */
	uint32_t type;              /* ggml type id */
	const uint8_t *data;        /* inside the mapping of file `file` */
	uint64_t bytes;
	int file;
};

struct gguf_file_map {
	char *path;
	uint8_t *map;
	size_t size;
};

struct gguf {
	uint32_t version;
	uint32_t alignment;
	int n_files;
	struct gguf_file_map *files;
	uint64_t n_kv;
	struct gguf_kv *kv;
	uint64_t n_tensors;
	struct gguf_tensor *tensors;
};

/* Opens PATH; a name of the form X-00001-of-0000N.gguf opens the whole split set. */
int gguf_open(struct gguf *g, const char *path, char *err, size_t errlen);
void gguf_close(struct gguf *g);

const struct gguf_kv *gguf_find(const struct gguf *g, const char *key);
const struct gguf_tensor *gguf_tensor_find(const struct gguf *g, const char *name);
/* Typed getters: 0 on success, -ENOENT when the key is absent, -EINVAL when its type does not fit
 * (any integer width is accepted for ints; f32/f64 for floats). */
int gguf_get_int(const struct gguf *g, const char *key, int64_t *out);
int gguf_get_float(const struct gguf *g, const char *key, double *out);
int gguf_get_bool(const struct gguf *g, const char *key, bool *out);
int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out);
/* An array's element i of a numeric array as int64/double; string element i. */
int64_t gguf_arr_int(const struct gguf_kv *kv, uint64_t i);
double gguf_arr_float(const struct gguf_kv *kv, uint64_t i);
struct gguf_str gguf_arr_str(const struct gguf_kv *kv, uint64_t i);
bool gguf_str_eq(struct gguf_str s, const char *z);

/* ggml tensor types (src/layout/wfmt_list.h): name and block geometry (values per block, bytes per block);
 * "unknown" and 0 block size if ferry does not know the type. */
const char *gguf_ggml_type_name(uint32_t type);
void gguf_ggml_type_block(uint32_t type, uint32_t *values, uint32_t *bytes);

#endif
