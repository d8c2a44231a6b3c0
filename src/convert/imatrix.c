/* imatrix.c: importance matrix files, read (GGUF and legacy .dat) and written (GGUF): imatrix.h. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/util.h"
#include "convert/imatrix.h"
#include "layout/gguf.h"

#define GGML_TYPE_F32 0
#define GGUF_ALIGN 32
#define SUM2 ".in_sum2"
#define COUNTS ".counts"

void imatrix_free(struct imatrix *im)
{
	for (int i = 0; i < im->n; i++) {
		free(im->e[i].name);
		free(im->e[i].imp);
	}
	free(im->e);
	memset(im, 0, sizeof(*im));
}

const struct imatrix_entry *imatrix_find(const struct imatrix *im, const char *name)
{
	for (int i = 0; i < im->n; i++)
		if (!strcmp(im->e[i].name, name))
			return &im->e[i];
	return NULL;
}

int imatrix_lookup(const struct imatrix *im, const char *path, const char *name, int layer, int expert, int64_t cols,
		   const float **imp, int *used, char *err, size_t errlen)
{
	char full[600];
	*imp = NULL;
	if (!im)
		return 0;
	if (layer >= 0)
		snprintf(full, sizeof(full), "blk.%d.%s", layer, name);
	else
		snprintf(full, sizeof(full), "%s", name);
	const struct imatrix_entry *e = imatrix_find(im, full);
	if (!e)
		return 0;
	if (e->cols != cols || (expert < 0 && e->n_mat != 1) || (expert >= 0 && e->n_mat <= expert)) {
		snprintf(err, errlen, "%s: %s has %lld columns in %d matrices, the model's %s %lld columns: an imatrix of "
				      "another model", path, full, (long long)e->cols, e->n_mat,
			 expert >= 0 ? "experts have" : "matrix has", (long long)cols);
		return -EINVAL;
	}
	*imp = e->imp + (expert > 0 ? (int64_t)expert * cols : 0);
	(*used)++;
	return 0;
}

int imatrix_unused(const struct imatrix *im, const char *path, int used, char *err, size_t errlen)
{
	if (!im->n || used)
		return 0;
	snprintf(err, errlen, "%s: none of its %d matrices (%s, ...) is a matrix this conversion quantizes: an imatrix "
			      "of another model", path, im->n, im->e[0].name);
	return -EINVAL;
}

static struct imatrix_entry *add_entry(struct imatrix *im, const char *name, size_t name_n, int64_t cols, int n_mat)
{
	struct imatrix_entry *e = realloc(im->e, sizeof(*e) * (size_t)(im->n + 1));
	if (!e)
		return NULL;
	im->e = e;
	e = &im->e[im->n];
	memset(e, 0, sizeof(*e));
	e->name = strndup(name, name_n);
	e->imp = calloc((size_t)cols * (size_t)n_mat, sizeof(float));
	e->cols = cols, e->n_mat = n_mat;
	im->n++; /* counted even on failure, so imatrix_free frees what was allocated */
	return e->name && e->imp ? e : NULL;
}

static int read_gguf(struct imatrix *im, const char *path, char *err, size_t errlen)
{
	struct gguf g;
	int rc = gguf_open(&g, path, err, errlen);
	if (rc)
		return rc;
	int64_t chunks;
	if (!gguf_get_int(&g, "imatrix.chunk_count", &chunks))
		im->chunks = (int)chunks;
	for (uint64_t i = 0; !rc && i < g.n_tensors; i++) {
		const struct gguf_tensor *t = &g.tensors[i], *c;
		size_t n = t->name.n, k = strlen(SUM2);
		if (n <= k || memcmp(t->name.p + n - k, SUM2, k))
			continue;
		char cname[512];
		snprintf(cname, sizeof(cname), "%.*s%s", (int)(n - k), t->name.p, COUNTS);
		int64_t cols = (int64_t)t->ne[0], n_mat = t->n_dims > 1 ? (int64_t)t->ne[1] : 1;
		if (n - k >= sizeof(cname) - strlen(COUNTS) || !(c = gguf_tensor_find(&g, cname))) {
			snprintf(err, errlen, "%s: %.*s has no %s tensor", path, (int)n, t->name.p, COUNTS);
			rc = -EINVAL;
		} else if (t->type != GGML_TYPE_F32 || c->type != GGML_TYPE_F32 || cols <= 0 || n_mat <= 0 ||
			   n_mat > 1 << 16 || t->bytes != sizeof(float) * (uint64_t)cols * (uint64_t)n_mat ||
			   c->bytes != sizeof(float) * (uint64_t)n_mat) {
			snprintf(err, errlen, "%s: %.*s: not an F32 [cols, n_mat] sum with F32 [1, n_mat] counts", path,
				 (int)n, t->name.p);
			rc = -EINVAL;
		}
		struct imatrix_entry *e = rc ? NULL : add_entry(im, t->name.p, n - k, cols, (int)n_mat);
		if (!rc && !e)
			rc = -ENOMEM, snprintf(err, errlen, "out of memory");
		for (int64_t m = 0; !rc && m < n_mat; m++) {
			float cnt, s;
			memcpy(&cnt, c->data + sizeof(float) * (size_t)m, sizeof(float));
			for (int64_t j = 0; j < cols; j++) {
				memcpy(&s, t->data + sizeof(float) * (size_t)(m * cols + j), sizeof(float));
				/* an expert no row reached: llama.cpp's quantizer treats it as all ones */
				e->imp[m * cols + j] = cnt > 0 ? s / cnt : 1.0f;
			}
			if (m == 0)
				e->count = cnt;
		}
	}
	gguf_close(&g);
	if (!rc && im->n == 0)
		snprintf(err, errlen, "%s: a GGUF file without any *%s tensor: not an imatrix", path, SUM2), rc = -EINVAL;
	return rc;
}

/* The legacy layout, from a whole-file buffer. */
static int read_dat(struct imatrix *im, const char *path, const unsigned char *p, size_t size, char *err,
		    size_t errlen)
{
	size_t at = 0;
#define TAKE(dst, nb)                                                                                             \
	do {                                                                                                      \
		if ((nb) > size - at) {                                                                           \
			snprintf(err, errlen, "%s: truncated at byte %zu (entry %d)", path, at, im->n);          \
			return -EINVAL;                                                                           \
		}                                                                                                 \
		memcpy((dst), p + at, (nb));                                                                      \
		at += (nb);                                                                                       \
	} while (0)
	int32_t n_entries, len, ncall, nval;
	TAKE(&n_entries, 4);
	if (n_entries <= 0 || n_entries > 1 << 20) {
		snprintf(err, errlen, "%s: %d entries: neither a GGUF nor a legacy imatrix file", path, n_entries);
		return -EINVAL;
	}
	for (int i = 0; i < n_entries; i++) {
		TAKE(&len, 4);
		if (len <= 0 || len > 4096 || (size_t)len > size - at) {
			snprintf(err, errlen, "%s: entry %d: a name of %d bytes", path, i, len);
			return -EINVAL;
		}
		const char *name = (const char *)p + at;
		at += (size_t)len;
		TAKE(&ncall, 4);
		TAKE(&nval, 4);
		if (nval <= 0 || (size_t)nval > (size - at) / 4) {
			snprintf(err, errlen, "%s: entry %.*s: %d values%s", path, len, name, nval,
				 nval > 0 ? ", more than the file holds (truncated)" : "");
			return -EINVAL;
		}
		struct imatrix_entry *e = add_entry(im, name, (size_t)len, nval, 1);
		if (!e)
			return snprintf(err, errlen, "out of memory"), -ENOMEM;
		TAKE(e->imp, sizeof(float) * (size_t)nval);
		for (int32_t j = 0; ncall > 0 && j < nval; j++)
			e->imp[j] /= (float)ncall;
		e->count = ncall;
	}
	int32_t chunks;
	if (size - at >= 4) {
		TAKE(&chunks, 4);
		im->chunks = chunks;
	}
#undef TAKE
	return 0;
}

int imatrix_read(struct imatrix *im, const char *path, char *err, size_t errlen)
{
	memset(im, 0, sizeof(*im));
	char *buf = NULL;
	size_t size = 0;
	int rc = read_file_all(path, &buf, &size);
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	rc = size >= 4 && !memcmp(buf, "GGUF", 4) ? read_gguf(im, path, err, errlen)
						 : read_dat(im, path, (const unsigned char *)buf, size, err, errlen);
	free(buf);
	if (rc)
		imatrix_free(im);
	return rc;
}

/* A GGUF being written: bytes appended to a buffer that grows. */
struct gbuf {
	unsigned char *p;
	size_t n, cap;
	int failed;
};

static void put(struct gbuf *b, const void *src, size_t n)
{
	if (b->failed)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		unsigned char *q = realloc(b->p, cap);
		if (!q) {
			b->failed = 1;
			return;
		}
		b->p = q, b->cap = cap;
	}
	memcpy(b->p + b->n, src, n);
	b->n += n;
}

static void put_u32(struct gbuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct gbuf *b, uint64_t v) { put(b, &v, 8); }

static void put_str(struct gbuf *b, const char *s)
{
	put_u64(b, strlen(s));
	put(b, s, strlen(s));
}

static void put_kv_u32(struct gbuf *b, const char *key, uint32_t v)
{
	put_str(b, key);
	put_u32(b, GGUF_TYPE_U32);
	put_u32(b, v);
}

static void pad(struct gbuf *b)
{
	static const unsigned char zero[GGUF_ALIGN];
	put(b, zero, (GGUF_ALIGN - b->n % GGUF_ALIGN) % GGUF_ALIGN);
}

int imatrix_write(const struct imatrix *im, const char *path, const char *dataset, int chunk_size, char *err,
		  size_t errlen)
{
	struct gbuf b = {0};
	put(&b, "GGUF", 4);
	put_u32(&b, 3);
	put_u64(&b, 2 * (uint64_t)im->n);
	put_u64(&b, 4);
	put_str(&b, "general.type");
	put_u32(&b, GGUF_TYPE_STRING);
	put_str(&b, "imatrix");
	put_str(&b, "imatrix.datasets");
	put_u32(&b, GGUF_TYPE_ARRAY);
	put_u32(&b, GGUF_TYPE_STRING);
	put_u64(&b, 1);
	put_str(&b, dataset);
	put_kv_u32(&b, "imatrix.chunk_count", (uint32_t)im->chunks);
	put_kv_u32(&b, "imatrix.chunk_size", (uint32_t)chunk_size);
	uint64_t off = 0; /* tensor data, relative to the aligned start of the data section */
	for (int i = 0; i < im->n; i++) {
		const struct imatrix_entry *e = &im->e[i];
		char name[600];
		for (int k = 0; k < 2; k++) {
			snprintf(name, sizeof(name), "%s%s", e->name, k ? COUNTS : SUM2);
			put_str(&b, name);
			put_u32(&b, 2);
			put_u64(&b, k ? 1 : (uint64_t)e->cols);
			put_u64(&b, (uint64_t)e->n_mat);
			put_u32(&b, GGML_TYPE_F32);
			put_u64(&b, off);
			off += sizeof(float) * (uint64_t)(k ? 1 : e->cols) * (uint64_t)e->n_mat;
			off = (off + GGUF_ALIGN - 1) / GGUF_ALIGN * GGUF_ALIGN;
		}
	}
	for (int i = 0; i < im->n; i++) {
		const struct imatrix_entry *e = &im->e[i];
		float cnt = (float)e->count;
		pad(&b);
		for (int64_t j = 0; j < e->cols * e->n_mat; j++) {
			float s = e->imp[j] * cnt;
			put(&b, &s, sizeof(s));
		}
		pad(&b);
		for (int m = 0; m < e->n_mat; m++)
			put(&b, &cnt, sizeof(cnt));
	}
	pad(&b); /* readers take the data section as whole aligned tensors, the last one too */
	if (b.failed) {
		free(b.p);
		return snprintf(err, errlen, "out of memory"), -ENOMEM;
	}
	size_t tn = strlen(path) + 5;
	char *tmp = malloc(tn);
	int rc = tmp ? 0 : -ENOMEM, fd = -1;
	if (tmp) {
		snprintf(tmp, tn, "%s.tmp", path);
		fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd < 0 || write_full(fd, b.p, b.n) || fsync(fd) || close(fd) || (fd = -1, rename(tmp, path)))
			rc = errno ? -errno : -EIO;
		if (fd >= 0)
			close(fd);
		if (rc)
			unlink(tmp);
	}
	if (rc)
		snprintf(err, errlen, "%s: %s", path, tmp ? strerror(-rc) : "out of memory");
	free(tmp);
	free(b.p);
	return rc;
}
