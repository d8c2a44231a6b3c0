/*
 * gguf.c: the GGUF reader. One cursor walks each mapped file; every read checks the bytes left first.
 * Limits (keys, tensors, string lengths) are generous for real models and stop hostile counts from
 * becoming huge allocations.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "layout/gguf.h"
#include "layout/le.h"
#include "layout/wfmt.h"

#define GGUF_MAGIC 0x46554747u
#define GGUF_MAX_KV (1u << 20)
#define GGUF_MAX_TENSORS (1u << 20)
#define GGUF_MAX_SPLITS 1024

struct cursor {
	const uint8_t *base, *p, *end;
	const char *path;
	char *err;
	size_t errlen;
};

static int fail(struct cursor *c, const char *what)
{
	snprintf(c->err, c->errlen, "%s: %s (at byte %zu)", c->path, what, (size_t)(c->p - c->base));
	return -EINVAL;
}

static int need(struct cursor *c, uint64_t n, const char *what)
{
	if ((uint64_t)(c->end - c->p) < n) {
		snprintf(c->err, c->errlen, "%s: truncated: %s needs %llu bytes, %zu left", c->path, what,
			 (unsigned long long)n, (size_t)(c->end - c->p));
		return -EINVAL;
	}
	return 0;
}

static int rd_u32(struct cursor *c, uint32_t *v, const char *what)
{
	int rc = need(c, 4, what);
	if (!rc) {
		*v = le32(c->p);
		c->p += 4;
	}
	return rc;
}

static int rd_u64(struct cursor *c, uint64_t *v, const char *what)
{
	int rc = need(c, 8, what);
	if (!rc) {
		*v = le64(c->p);
		c->p += 8;
	}
	return rc;
}

static int rd_str(struct cursor *c, struct gguf_str *s, const char *what)
{
	uint64_t n;
	int rc = rd_u64(c, &n, what);
	rc = rc ? rc : need(c, n, what);
	if (!rc) {
		s->p = (const char *)c->p;
		s->n = n;
		c->p += n;
	}
	return rc;
}

static const uint8_t scalar_size[GGUF_TYPE_COUNT] = {
	[GGUF_TYPE_U8] = 1, [GGUF_TYPE_I8] = 1, [GGUF_TYPE_U16] = 2, [GGUF_TYPE_I16] = 2,
	[GGUF_TYPE_U32] = 4, [GGUF_TYPE_I32] = 4, [GGUF_TYPE_F32] = 4, [GGUF_TYPE_BOOL] = 1,
	[GGUF_TYPE_U64] = 8, [GGUF_TYPE_I64] = 8, [GGUF_TYPE_F64] = 8,
};

static int rd_value(struct cursor *c, struct gguf_kv *kv)
{
	char what[96];
	snprintf(what, sizeof(what), "value of '%.*s'", (int)(kv->key.n > 60 ? 60 : kv->key.n), kv->key.p);
	if ((unsigned)kv->type >= GGUF_TYPE_COUNT) {
		snprintf(c->err, c->errlen, "%s: %s has unknown type %u", c->path, what, (unsigned)kv->type);
		return -EINVAL;
	}
	if (kv->type == GGUF_TYPE_STRING)
		return rd_str(c, &kv->str, what);
	if (kv->type != GGUF_TYPE_ARRAY) {
		int rc = need(c, scalar_size[kv->type], what);
		kv->val = c->p;
		c->p += rc ? 0 : scalar_size[kv->type];
		return rc;
	}
	uint32_t t;
	int rc = rd_u32(c, &t, what);
	rc = rc ? rc : rd_u64(c, &kv->arr_n, what);
	if (rc)
		return rc;
	kv->arr_type = (enum gguf_type)t;
	kv->arr = c->p;
	if (t >= GGUF_TYPE_COUNT || t == GGUF_TYPE_ARRAY) {
		snprintf(c->err, c->errlen, "%s: %s: array of %s", c->path, what,
			 t == GGUF_TYPE_ARRAY ? "arrays is not supported" : "an unknown type");
		return -EINVAL;
	}
	if (t != GGUF_TYPE_STRING) {
		uint64_t left = (uint64_t)(c->end - c->p);
		if (kv->arr_n > left / scalar_size[t])
			return need(c, left + 1, what);
		c->p += kv->arr_n * scalar_size[t];
		return 0;
	}
	/* Each string needs at least its 8-byte length: that bounds the index allocation by the file size. */
	if (kv->arr_n > (uint64_t)(c->end - c->p) / 8)
		return need(c, (uint64_t)(c->end - c->p) + 1, what);
	kv->str_off = malloc(sizeof(uint64_t) * (kv->arr_n ? kv->arr_n : 1));
	if (!kv->str_off)
		return -ENOMEM;
	for (uint64_t i = 0; i < kv->arr_n; i++) {
		struct gguf_str s;
		kv->str_off[i] = (uint64_t)(c->p - kv->arr);
		if ((rc = rd_str(c, &s, what)))
			return rc;
	}
	return 0;
}

const char *gguf_ggml_type_name(uint32_t type)
{
	const struct wfmt_ggml *g = wfmt_ggml_find(type);
	return g ? g->name : "unknown";
}

void gguf_ggml_type_block(uint32_t type, uint32_t *values, uint32_t *bytes)
{
	const struct wfmt_ggml *g = wfmt_ggml_find(type);
	*values = g ? g->block : 0;
	*bytes = g ? g->block_bytes : 0;
}

static int rd_tensor(struct cursor *c, struct gguf_tensor *t, uint64_t *offset)
{
	uint32_t nd;
	int rc = rd_str(c, &t->name, "tensor name");
	rc = rc ? rc : rd_u32(c, &nd, "tensor n_dims");
	if (rc)
		return rc;
	char nm[80];
	snprintf(nm, sizeof(nm), "%.*s", (int)(t->name.n > 64 ? 64 : t->name.n), t->name.p);
	if (t->name.n == 0 || t->name.n >= 64 || memchr(t->name.p, 0, t->name.n))
		return fail(c, "tensor name empty, longer than 63 bytes or with a NUL");
	if (nd < 1 || nd > GGUF_MAX_DIMS) {
		snprintf(c->err, c->errlen, "%s: tensor %s has %u dimensions (1..%d)", c->path, nm, nd, GGUF_MAX_DIMS);
		return -EINVAL;
	}
	t->n_dims = (int)nd;
	uint64_t n = 1;
	for (int d = 0; d < GGUF_MAX_DIMS; d++) {
		t->ne[d] = 1;
		if (d < t->n_dims && (rc = rd_u64(c, &t->ne[d], "tensor shape")))
			return rc;
		if (t->ne[d] == 0 || t->ne[d] > (1ull << 40) || n > UINT64_MAX / t->ne[d]) {
			snprintf(c->err, c->errlen, "%s: tensor %s has dimension %d of size %llu", c->path, nm, d,
				 (unsigned long long)t->ne[d]);
			return -EINVAL;
		}
		n *= t->ne[d];
	}
	rc = rd_u32(c, &t->type, "tensor type");
	rc = rc ? rc : rd_u64(c, offset, "tensor offset");
	if (rc)
		return rc;
	uint32_t bv, bb;
	gguf_ggml_type_block(t->type, &bv, &bb);
	/* An unknown type keeps bytes = 0: the tensor is listed (so the converter can name it) but unusable. */
	t->bytes = 0;
	if (bv) {
		if (t->ne[0] % bv) {
			snprintf(c->err, c->errlen, "%s: tensor %s: row of %llu values is not a whole number of %s blocks",
				 c->path, nm, (unsigned long long)t->ne[0], gguf_ggml_type_name(t->type));
			return -EINVAL;
		}
		if (n / bv > UINT64_MAX / bb)
			return fail(c, "tensor size overflows");
		t->bytes = n / bv * bb;
	}
	return 0;
}

static int map_file(struct gguf_file_map *f, const char *path, char *err, size_t errlen)
{
	f->path = strdup(path);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (!f->path || fd < 0) {
		int e = fd < 0 ? errno : ENOMEM;
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	struct stat st;
	int rc = fstat(fd, &st) ? -errno : 0;
	if (!rc && st.st_size < 24) {
		snprintf(err, errlen, "%s: %lld bytes is too short for a GGUF file", path, (long long)st.st_size);
		rc = -EINVAL;
	} else if (!rc) {
		f->size = (size_t)st.st_size;
		f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (f->map == MAP_FAILED) {
			f->map = NULL;
			rc = -errno;
			snprintf(err, errlen, "%s: cannot map: %s", path, strerror(-rc));
		}
	} else {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
	}
	close(fd);
	return rc;
}

/* Parses one mapped file: header and KV (kept only for file 0), then tensor infos appended to g. */
static int parse_file(struct gguf *g, int fi, char *err, size_t errlen)
{
	struct gguf_file_map *f = &g->files[fi];
	struct cursor c = {f->map, f->map, f->map + f->size, f->path, err, errlen};
	uint32_t magic, version;
	uint64_t n_tensors, n_kv;
	int rc = rd_u32(&c, &magic, "magic");
	if (!rc && magic != GGUF_MAGIC) {
		snprintf(err, errlen, "%s: not a GGUF file (magic %08x)", f->path, magic);
		return -EINVAL;
	}
	rc = rc ? rc : rd_u32(&c, &version, "version");
	if (!rc && version != 2 && version != 3) {
		snprintf(err, errlen, "%s: GGUF version %u is not supported (2 or 3)", f->path, version);
		return -EINVAL;
	}
	rc = rc ? rc : rd_u64(&c, &n_tensors, "tensor count");
	rc = rc ? rc : rd_u64(&c, &n_kv, "metadata count");
	if (rc)
		return rc;
	if (n_tensors > GGUF_MAX_TENSORS || n_kv > GGUF_MAX_KV) {
		snprintf(err, errlen, "%s: implausible counts (%llu tensors, %llu metadata keys)", f->path,
			 (unsigned long long)n_tensors, (unsigned long long)n_kv);
		return -EINVAL;
	}
	struct gguf_kv *kv = calloc(n_kv ? n_kv : 1, sizeof(*kv));
	if (!kv)
		return -ENOMEM;
	uint64_t i;
	for (i = 0; !rc && i < n_kv; i++) {
		uint32_t t = 0;
		kv[i].raw = c.p;
		rc = rd_str(&c, &kv[i].key, "metadata key");
		rc = rc ? rc : rd_u32(&c, &t, "metadata type");
		kv[i].type = (enum gguf_type)t;
		rc = rc ? rc : rd_value(&c, &kv[i]);
		kv[i].raw_n = (uint64_t)(c.p - kv[i].raw);
	}
	if (rc || fi > 0) {
		/* Only the first file's metadata is kept; later splits repeat a few split.* keys. */
		for (uint64_t j = 0; j < i; j++)
			free(kv[j].str_off);
		free(kv);
		if (rc)
			return rc;
	} else {
		g->version = version;
		g->kv = kv;
		g->n_kv = n_kv;
		g->alignment = 32;
		int64_t a;
		if (gguf_get_int(g, "general.alignment", &a) == 0) {
			if (a < 1 || a > (1 << 20) || (a & (a - 1))) {
				snprintf(err, errlen, "%s: general.alignment %lld is not a power of two", f->path, (long long)a);
				return -EINVAL;
			}
			g->alignment = (uint32_t)a;
		}
	}
	uint32_t alignment = g->alignment;
	struct gguf_tensor *ts = realloc(g->tensors, sizeof(*ts) * (size_t)(g->n_tensors + n_tensors + 1));
	if (!ts)
		return -ENOMEM;
	g->tensors = ts;
	uint64_t *offs = malloc(sizeof(uint64_t) * (n_tensors ? n_tensors : 1));
	if (!offs)
		return -ENOMEM;
	struct gguf_tensor *first = ts + g->n_tensors;
	for (i = 0; !rc && i < n_tensors; i++) {
		memset(&first[i], 0, sizeof(first[i]));
		first[i].file = fi;
		rc = rd_tensor(&c, &first[i], &offs[i]);
	}
	uint64_t data = ((uint64_t)(c.p - f->map) + alignment - 1) / alignment * alignment;
	for (i = 0; !rc && i < n_tensors; i++) {
		struct gguf_tensor *t = &first[i];
		if (offs[i] % alignment || offs[i] > f->size || data > f->size - offs[i] ||
		    t->bytes > f->size - data - offs[i]) {
			snprintf(err, errlen, "%s: tensor %.*s: data [%llu, +%llu) lies outside the file (%zu bytes)",
				 f->path, (int)t->name.n, t->name.p, (unsigned long long)(data + offs[i]),
				 (unsigned long long)t->bytes, f->size);
			rc = -EINVAL;
			break;
		}
		t->data = f->map + data + offs[i];
		for (uint64_t j = 0; j < g->n_tensors + i; j++)
			if (ts[j].name.n == t->name.n && !memcmp(ts[j].name.p, t->name.p, t->name.n)) {
				snprintf(err, errlen, "%s: tensor %.*s appears twice", f->path, (int)t->name.n, t->name.p);
				rc = -EINVAL;
				break;
			}
	}
	free(offs);
	if (!rc)
		g->n_tensors += n_tensors;
	return rc;
}

/* "X-00001-of-00003.gguf" -> prefix length of X and the count; 0 when PATH is not a first split. */
static int split_count(const char *path, size_t *prefix)
{
	size_t n = strlen(path);
	const char *tail = "-00001-of-00000.gguf";
	size_t tl = strlen(tail);
	if (n < tl || strncmp(path + n - tl, "-00001-of-", 10) || strcmp(path + n - 5, ".gguf"))
		return 0;
	int count = 0;
	for (int i = 0; i < 5; i++) {
		char ch = path[n - tl + 10 + i];
		if (ch < '0' || ch > '9')
			return 0;
		count = count * 10 + (ch - '0');
	}
	*prefix = n - tl;
	return count;
}

int gguf_open(struct gguf *g, const char *path, char *err, size_t errlen)
{
	memset(g, 0, sizeof(*g));
	size_t prefix = 0;
	int n_files = split_count(path, &prefix);
	if (n_files < 1 || n_files > GGUF_MAX_SPLITS)
		n_files = 1;
	g->files = calloc((size_t)n_files, sizeof(*g->files));
	if (!g->files)
		return -ENOMEM;
	int rc = 0;
	for (int i = 0; !rc && i < n_files; i++) {
		char p[4096];
		if (n_files == 1)
			snprintf(p, sizeof(p), "%s", path);
		else
			snprintf(p, sizeof(p), "%.*s-%05d-of-%05d.gguf", (int)prefix, path, i + 1, n_files);
		g->n_files = i + 1;
		rc = map_file(&g->files[i], p, err, errlen);
		rc = rc ? rc : parse_file(g, i, err, errlen);
	}
	int64_t v;
	if (!rc && n_files > 1 && gguf_get_int(g, "split.count", &v) == 0 && v != n_files) {
		snprintf(err, errlen, "%s: split.count is %lld but the name says %d files", path, (long long)v, n_files);
		rc = -EINVAL;
	}
	if (rc)
		gguf_close(g);
	return rc;
}

void gguf_close(struct gguf *g)
{
	for (uint64_t i = 0; g->kv && i < g->n_kv; i++)
		free(g->kv[i].str_off);
	free(g->kv);
	free(g->tensors);
	for (int i = 0; g->files && i < g->n_files; i++) {
		if (g->files[i].map)
			munmap(g->files[i].map, g->files[i].size);
		free(g->files[i].path);
	}
	free(g->files);
	memset(g, 0, sizeof(*g));
}

bool gguf_str_eq(struct gguf_str s, const char *z)
{
	size_t n = strlen(z);
	return s.n == n && !memcmp(s.p, z, n);
}

const struct gguf_kv *gguf_find(const struct gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (gguf_str_eq(g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

const struct gguf_tensor *gguf_tensor_find(const struct gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (gguf_str_eq(g->tensors[i].name, name))
			return &g->tensors[i];
	return NULL;
}

static bool scalar_int(enum gguf_type t, const uint8_t *p, int64_t *out)
{
	switch (t) {
	case GGUF_TYPE_U8: *out = p[0]; return true;
	case GGUF_TYPE_I8: *out = (int8_t)p[0]; return true;
	case GGUF_TYPE_U16: *out = (uint16_t)(p[0] | p[1] << 8); return true;
	case GGUF_TYPE_I16: *out = (int16_t)(p[0] | p[1] << 8); return true;
	case GGUF_TYPE_U32: *out = le32(p); return true;
	case GGUF_TYPE_I32: *out = (int32_t)le32(p); return true;
	case GGUF_TYPE_U64: *out = (int64_t)le64(p); return true;
	case GGUF_TYPE_I64: *out = (int64_t)le64(p); return true;
	case GGUF_TYPE_BOOL: *out = p[0] != 0; return true;
	default: return false;
	}
}

static bool scalar_float(enum gguf_type t, const uint8_t *p, double *out)
{
	if (t == GGUF_TYPE_F32) {
		uint32_t u = le32(p);
		float f;
		memcpy(&f, &u, 4);
		*out = f;
		return true;
	}
	if (t == GGUF_TYPE_F64) {
		uint64_t u = le64(p);
		memcpy(out, &u, 8);
		return true;
	}
	int64_t i;
	if (t != GGUF_TYPE_BOOL && scalar_int(t, p, &i)) {
		*out = (double)i;
		return true;
	}
	return false;
}

int gguf_get_int(const struct gguf *g, const char *key, int64_t *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	return kv->type != GGUF_TYPE_BOOL && kv->val && scalar_int(kv->type, kv->val, out) ? 0 : -EINVAL;
}

int gguf_get_float(const struct gguf *g, const char *key, double *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	return kv->val && scalar_float(kv->type, kv->val, out) ? 0 : -EINVAL;
}

int gguf_get_bool(const struct gguf *g, const char *key, bool *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_TYPE_BOOL)
		return -EINVAL;
	*out = kv->val[0] != 0;
	return 0;
}

int gguf_get_str(const struct gguf *g, const char *key, struct gguf_str *out)
{
	const struct gguf_kv *kv = gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != GGUF_TYPE_STRING)
		return -EINVAL;
	*out = kv->str;
	return 0;
}

int64_t gguf_arr_int(const struct gguf_kv *kv, uint64_t i)
{
	int64_t v = 0;
	if (i < kv->arr_n && kv->arr_type != GGUF_TYPE_STRING)
		scalar_int(kv->arr_type, kv->arr + i * scalar_size[kv->arr_type], &v);
	return v;
}

double gguf_arr_float(const struct gguf_kv *kv, uint64_t i)
{
	double v = 0;
	if (i < kv->arr_n && kv->arr_type != GGUF_TYPE_STRING)
		scalar_float(kv->arr_type, kv->arr + i * scalar_size[kv->arr_type], &v);
	return v;
}

struct gguf_str gguf_arr_str(const struct gguf_kv *kv, uint64_t i)
{
	struct gguf_str s = {"", 0};
	if (i < kv->arr_n && kv->arr_type == GGUF_TYPE_STRING) {
		const uint8_t *p = kv->arr + kv->str_off[i];
		s.n = le64(p);
		s.p = (const char *)p + 8;
	}
	return s;
}
