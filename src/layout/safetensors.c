/*
 * safetensors.c: the safetensors format: u64 little-endian header length N, N bytes of JSON
 * {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data section;
 * offsets are relative to the data section.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout/le.h"
#include "layout/safetensors.h"

#define ST_MAX_HEADER (100u << 20)

int st_dtype_size(const char *d)
{
	static const struct {
		const char *name;
		int size;
	} t[] = {{"F64", 8}, {"F32", 4}, {"F16", 2},     {"BF16", 2},    {"I64", 8},  {"I32", 4},
		 {"I16", 2}, {"I8", 1},  {"U8", 1},      {"BOOL", 1},    {"U16", 2},  {"U32", 4},
		 {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		if (strcmp(d, t[i].name) == 0)
			return t[i].size;
	return 0;
}

const struct st_tensor *st_find(const struct st_set *s, const char *name)
{
	for (int i = 0; i < s->n_tensors; i++)
		if (strcmp(s->tensors[i].name, name) == 0)
			return &s->tensors[i];
	return NULL;
}

static int parse_entry(struct st_tensor *t, const char *name, const json_t *v, uint64_t data_size, const char *path,
		       char *err, size_t errlen)
{
	const char *dtype = json_string_value(json_object_get(v, "dtype"));
	const json_t *shape = json_object_get(v, "shape");
	const json_t *offs = json_object_get(v, "data_offsets");
	if (!dtype || strlen(dtype) >= sizeof(t->dtype) || !json_is_array(shape) ||
	    json_array_size(shape) > ST_MAX_DIMS || !json_is_array(offs) || json_array_size(offs) != 2) {
		snprintf(err, errlen, "%s: tensor %s: malformed header entry (dtype, shape, data_offsets)", path, name);
		return -EBADMSG;
	}
	strcpy(t->dtype, dtype);
	t->ndim = (int)json_array_size(shape);
	uint64_t numel = 1;
	for (int d = 0; d < t->ndim; d++) {
		const json_t *x = json_array_get(shape, (size_t)d);
		if (!json_is_integer(x) || json_integer_value(x) < 0 || json_integer_value(x) > (1ll << 40)) {
			snprintf(err, errlen, "%s: tensor %s: bad shape", path, name);
			return -EBADMSG;
		}
		t->shape[d] = json_integer_value(x);
		numel *= (uint64_t)t->shape[d];
		if (numel > (1ull << 42)) {
			snprintf(err, errlen, "%s: tensor %s: shape too large", path, name);
			return -EBADMSG;
		}
	}
	const json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
	if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
	    json_integer_value(e) < json_integer_value(b)) {
		snprintf(err, errlen, "%s: tensor %s: bad data_offsets", path, name);
		return -EBADMSG;
	}
	uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(e);
	if (end > data_size) {
		snprintf(err, errlen, "%s: truncated: tensor %s ends at data byte %llu but the data section has %llu bytes",
			 path, name, (unsigned long long)end, (unsigned long long)data_size);
		return -EBADMSG;
	}
	int es = st_dtype_size(dtype);
	if (es && numel * (uint64_t)es != end - begin) {
		snprintf(err, errlen, "%s: tensor %s: %llu bytes for %llu elements of %s", path, name,
			 (unsigned long long)(end - begin), (unsigned long long)numel, dtype);
		return -EBADMSG;
	}
	t->bytes = end - begin;
	t->data = (const uint8_t *)(uintptr_t)begin; /* relocated by the caller */
	return 0;
}

int st_open_file(struct st_set *s, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -errno;
	}
	struct stat st;
	if (fstat(fd, &st)) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		close(fd);
		return -EIO;
	}
	size_t size = (size_t)st.st_size;
	uint8_t lenbuf[8];
	if (size < 8 || pread(fd, lenbuf, 8, 0) != 8) {
		snprintf(err, errlen, "%s: truncated: %zu bytes, no safetensors header", path, size);
		close(fd);
		return -EBADMSG;
	}
	uint64_t hlen = le64(lenbuf);
	if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > size - 8) {
		snprintf(err, errlen, "%s: header length %llu does not fit the file (%zu bytes): truncated or not safetensors",
			 path, (unsigned long long)hlen, size);
		close(fd);
		return -EBADMSG;
	}
	uint8_t *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (map == MAP_FAILED) {
		snprintf(err, errlen, "%s: mmap failed: %s", path, strerror(errno));
		return -errno;
	}
	json_error_t je;
	json_t *root = json_loadb((const char *)map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(root)) {
		snprintf(err, errlen, "%s: malformed header JSON at column %d: %s", path, je.column,
			 root ? "not an object" : je.text);
		json_decref(root);
		munmap(map, size);
		return -EBADMSG;
	}
	struct st_file *nf = realloc(s->files, sizeof(*s->files) * (size_t)(s->n_files + 1));
	struct st_tensor *nt = realloc(s->tensors, sizeof(*s->tensors) * (s->n_tensors + json_object_size(root)));
	if (nf)
		s->files = nf;
	if (nt)
		s->tensors = nt;
	if (!nf || !nt) {
		json_decref(root);
		munmap(map, size);
		return -ENOMEM;
	}
	int fi = s->n_files++;
	s->files[fi] = (struct st_file){strdup(path), map, size};
	uint64_t data_start = 8 + hlen, data_size = size - data_start;
	const char *key;
	json_t *v;
	int rc = 0;
	json_object_foreach(root, key, v)
	{
		if (strcmp(key, "__metadata__") == 0)
			continue;
		if (st_find(s, key)) {
			snprintf(err, errlen, "%s: tensor %s appears twice in the checkpoint", path, key);
			rc = -EBADMSG;
			break;
		}
		struct st_tensor *t = &s->tensors[s->n_tensors];
		memset(t, 0, sizeof(*t));
		rc = parse_entry(t, key, v, data_size, path, err, errlen);
		if (rc)
			break;
		t->data = map + data_start + (uintptr_t)t->data;
		t->file = fi;
		t->name = strdup(key);
		s->n_tensors++;
	}
	json_decref(root);
	return rc;
}

static int is_safetensors(const struct dirent *e)
{
	size_t l = strlen(e->d_name);
	return e->d_name[0] != '.' && l > 12 && !strcmp(e->d_name + l - 12, ".safetensors");
}

/* Every *.safetensors file of dir in name order (ExLlamaV2 writes output.safetensors, or
 * output-00001-of-0000N.safetensors with no index); -ENOENT when there is none */
static int open_all(struct st_set *s, const char *dir, char *err, size_t errlen)
{
	struct dirent **names;
	int n = scandir(dir, &names, is_safetensors, alphasort), rc = n > 0 ? 0 : -ENOENT;
	if (n <= 0)
		snprintf(err, errlen, "%s: no model.safetensors, model.safetensors.index.json or other *.safetensors", dir);
	for (int i = 0; i < n; i++) {
		char path[4096];
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (!rc)
			rc = st_open_file(s, path, err, errlen);
		free(names[i]);
	}
	if (n > 0)
		free(names);
	if (rc)
		st_close(s);
	return rc;
}

int st_open_dir(struct st_set *s, const char *dir, char *err, size_t errlen)
{
	memset(s, 0, sizeof(*s));
	char path[4096];
	struct stat st;
	snprintf(path, sizeof(path), "%s/model.safetensors", dir);
	if (stat(path, &st) == 0) {
		int rc = st_open_file(s, path, err, errlen);
		if (rc)
			st_close(s);
		return rc;
	}
	snprintf(path, sizeof(path), "%s/model.safetensors.index.json", dir);
	json_error_t je;
	json_t *idx = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!idx) {
		if (stat(path, &st))
			return open_all(s, dir, err, errlen);
		else
			snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
		return -ENOENT;
	}
	json_t *map = json_object_get(idx, "weight_map");
	int rc = 0;
	if (!json_is_object(map) || json_object_size(map) == 0) {
		snprintf(err, errlen, "%s: weight_map: missing or empty", path);
		rc = -EBADMSG;
	}
	/* Open each shard once, in order of first appearance. */
	const char *name;
	json_t *file;
	json_t *opened = json_object();
	json_object_foreach(map, name, file)
	{
		const char *f = json_string_value(file);
		if (!f || strchr(f, '/') || f[0] == '.') {
			snprintf(err, errlen, "%s: weight_map.%s: not a file name", path, name);
			rc = -EBADMSG;
			break;
		}
		if (json_object_get(opened, f))
			continue;
		json_object_set_new(opened, f, json_true());
		char shard[4096];
		snprintf(shard, sizeof(shard), "%s/%s", dir, f);
		rc = st_open_file(s, shard, err, errlen);
		if (rc)
			break;
	}
	json_object_foreach(map, name, file)
	{
		const struct st_tensor *t;
		if (rc)
			break;
		if (!(t = st_find(s, name)) || strcmp(strrchr(s->files[t->file].path, '/') + 1, json_string_value(file))) {
			snprintf(err, errlen, "%s: tensor %s is not in %s", path, name, json_string_value(file));
			rc = -EBADMSG;
		}
	}
	json_decref(opened);
	json_decref(idx);
	if (rc)
		st_close(s);
	return rc;
}

void st_release(const struct st_set *s, const struct st_tensor *t, uint64_t off, uint64_t len)
{
	const struct st_file *f = &s->files[t->file];
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t b = ((uintptr_t)t->data + off) & ~(uintptr_t)(pg - 1);
	uintptr_t e = ((uintptr_t)t->data + off + len + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
	uintptr_t lim = (uintptr_t)f->map + f->size;
	if (e > lim)
		e = lim;
	if (e > b)
		madvise((void *)b, e - b, MADV_DONTNEED);
}

void st_close(struct st_set *s)
{
	for (int i = 0; i < s->n_files; i++) {
		munmap(s->files[i].map, s->files[i].size);
		free(s->files[i].path);
	}
	for (int i = 0; i < s->n_tensors; i++)
		free(s->tensors[i].name);
	free(s->files);
	free(s->tensors);
	memset(s, 0, sizeof(*s));
}
