/*
 * reader.c: opens a model.ferry directory. manifest.json is parsed with jansson (errors carry line and
 * column); every binary file's header is read and must agree with the manifest: size, header checksum,
 * and each tensor's offset, size, shape, format and checksum; each header entry's size must equal what its
 * shape and format imply (header.c). A unit may list only tensors of its own file (the head may also point
 * into embed.bin, for tied embeddings), each name once, at most LAYOUT_UNIT_MAX_BYTES in all. Checksums are
 * XXH3: they catch accidents, not forgery. Tensor data is read only on demand.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "layout/layout.h"
#include "layout_internal.h"

int layout_file_path(const struct layout *m, int file, char *buf, size_t n)
{
	int k = snprintf(buf, n, "%s/%s", m->dir, m->files[file].name);
	return k < 0 || (size_t)k >= n ? -ENAMETOOLONG : 0;
}

int layout_pread_full(int fd, void *buf, uint64_t n, uint64_t off)
{
	uint64_t done = 0;
	while (done < n) {
		ssize_t k = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		done += (uint64_t)k;
	}
	return 0;
}

static int parse_hex64(const char *s, uint64_t *out)
{
	if (!s || strlen(s) != 16)
		return -1;
	uint64_t v = 0;
	for (int i = 0; i < 16; i++) {
		char c = s[i];
		int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*out = v;
	return 0;
}

static int file_index(const struct layout *m, const char *name)
{
	for (int i = 0; name && i < m->n_files; i++)
		if (strcmp(m->files[i].name, name) == 0)
			return i;
	return -1;
}

static int open_files(struct layout *m, const json_t *files, struct layout_file_header *hdrs, char *err,
		      size_t errlen)
{
	if (!json_is_array(files) || json_array_size(files) == 0 || json_array_size(files) > 100000) {
		snprintf(err, errlen, "%s/manifest.json: files: missing or not a non-empty array", m->dir);
		return -EINVAL;
	}
	m->n_files = (int)json_array_size(files);
	m->files = calloc((size_t)m->n_files, sizeof(*m->files));
	if (!m->files) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (int i = 0; i < m->n_files; i++) {
		const json_t *f = json_array_get(files, (size_t)i);
		struct layout_file *lf = &m->files[i];
		const char *name = json_string_value(json_object_get(f, "name"));
		const json_t *bytes = json_object_get(f, "bytes");
		if (!name || strlen(name) >= sizeof(lf->name) || strchr(name, '/') || !json_is_integer(bytes) ||
		    parse_hex64(json_string_value(json_object_get(f, "header_xxh3")), &lf->header_xxh3)) {
			snprintf(err, errlen, "%s/manifest.json: files[%d]: bad name, bytes or header_xxh3", m->dir, i);
			return -EINVAL;
		}
		strcpy(lf->name, name);
		lf->bytes = (uint64_t)json_integer_value(bytes);
		char path[4096];
		layout_file_path(m, i, path, sizeof(path));
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
			return -errno;
		}
		struct stat st;
		uint8_t buf[LAYOUT_HEADER_BYTES];
		ssize_t k = fstat(fd, &st) ? -1 : pread(fd, buf, sizeof(buf), 0);
		close(fd);
		char why[256];
		int rc = k < 0 ? -EIO : layout_header_parse(buf, (size_t)k, &hdrs[i], why, sizeof(why));
		if (rc) {
			snprintf(err, errlen, "%s: %s", path, k < 0 ? strerror(errno) : why);
			return rc;
		}
		if ((uint64_t)st.st_size != lf->bytes || hdrs[i].file_bytes != lf->bytes) {
			snprintf(err, errlen, "%s: %llu bytes on disk, header says %llu, manifest says %llu (truncated or replaced?)",
				 path, (unsigned long long)st.st_size, (unsigned long long)hdrs[i].file_bytes,
				 (unsigned long long)lf->bytes);
			return -EBADMSG;
		}
		if (hdrs[i].header_xxh3 != lf->header_xxh3) {
			snprintf(err, errlen, "%s: header checksum differs from the manifest (file from another model?)", path);
			return -EBADMSG;
		}
		lf->kind = hdrs[i].kind;
		lf->layer = hdrs[i].layer;
	}
	return 0;
}

/* May a tensor of unit `unit` (-1 embed, 0..L-1 layer, L head) live in file f? */
static bool unit_owns(const struct layout *m, int unit, const struct layout_file *f)
{
	if (unit < 0)
		return f->kind == LAYOUT_KIND_EMBED;
	if (unit >= m->hp.n_layers)
		return f->kind == LAYOUT_KIND_HEAD || f->kind == LAYOUT_KIND_EMBED;
	return f->kind == LAYOUT_KIND_LAYER && f->layer == unit;
}

/* Fills a unit from its manifest array; each tensor must match its file's header entry exactly. */
static int load_unit(struct layout *m, int unit, const json_t *arr, const char *what,
		     const struct layout_file_header *hdrs, char *err, size_t errlen)
{
	struct layout_unit *u = (struct layout_unit *)layout_unit_get(m, unit);
	if (!json_is_array(arr) || json_array_size(arr) > LAYOUT_UNIT_MAX_TENSORS) {
		snprintf(err, errlen, "%s/manifest.json: units.%s: missing, not an array, or more than %d tensors", m->dir,
			 what, LAYOUT_UNIT_MAX_TENSORS);
		return -EINVAL;
	}
	u->n_tensors = (int)json_array_size(arr);
	u->tensors = calloc((size_t)u->n_tensors + 1, sizeof(*u->tensors));
	if (!u->tensors) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	uint64_t unit_bytes = 0;
	for (int i = 0; i < u->n_tensors; i++) {
		const json_t *o = json_array_get(arr, (size_t)i);
		struct layout_tensor *t = &u->tensors[i];
		const char *name = json_string_value(json_object_get(o, "name"));
		int fi = file_index(m, json_string_value(json_object_get(o, "file")));
		const json_t *off = json_object_get(o, "offset");
		if (!name || strlen(name) >= LAYOUT_NAME_MAX || fi < 0 || !json_is_integer(off) ||
		    parse_hex64(json_string_value(json_object_get(o, "xxh3")), &t->xxh3)) {
			snprintf(err, errlen, "%s/manifest.json: units.%s[%d]: bad name, file, offset or xxh3", m->dir, what, i);
			return -EINVAL;
		}
		for (int k = 0; k < i; k++)
			if (!strcmp(u->tensors[k].name, name)) {
				snprintf(err, errlen, "%s/manifest.json: units.%s: tensor %s listed twice", m->dir, what, name);
				return -EINVAL;
			}
		if (!unit_owns(m, unit, &m->files[fi])) {
			snprintf(err, errlen, "%s/manifest.json: units.%s: tensor %s points into %s, another unit's file", m->dir,
				 what, name, m->files[fi].name);
			return -EINVAL;
		}
		strcpy(t->name, name);
		t->file = fi;
		t->offset = (uint64_t)json_integer_value(off);
		/* The header entry at that offset is the authority; the manifest must agree with it. */
		const struct layout_tensor *h = NULL;
		for (int k = 0; k < hdrs[fi].n_tensors; k++)
			if (hdrs[fi].tensors[k].offset == t->offset)
				h = &hdrs[fi].tensors[k];
		const json_t *shape = json_object_get(o, "shape");
		int fmt = wfmt_from_name(json_string_value(json_object_get(o, "format")));
		bool same = h && fmt == h->fmt && json_is_array(shape) && (int)json_array_size(shape) == h->ndim &&
			    t->xxh3 == h->xxh3 && json_integer_value(json_object_get(o, "bytes")) == (json_int_t)h->bytes &&
			    json_integer_value(json_object_get(o, "raw_bytes")) == (json_int_t)h->raw_bytes &&
			    json_integer_value(json_object_get(o, "expert_stride")) == (json_int_t)h->stride;
		for (int d = 0; same && d < h->ndim; d++)
			same = json_integer_value(json_array_get(shape, (size_t)d)) == h->shape[d];
		if (!same) {
			snprintf(err, errlen, "%s/manifest.json: tensor %s (units.%s) does not match the header of %s", m->dir,
				 name, what, m->files[fi].name);
			return -EBADMSG;
		}
		t->bytes = h->bytes;
		t->raw_bytes = h->raw_bytes;
		t->ndim = h->ndim;
		memcpy(t->shape, h->shape, sizeof(t->shape));
		t->fmt = h->fmt;
		t->comp = h->comp;
		t->stride = h->stride;
		unit_bytes += layout_align_up(t->bytes); /* each term <= 2^62, at most 64 of them: no wrap */
		if (unit_bytes > LAYOUT_UNIT_MAX_BYTES) {
			snprintf(err, errlen, "%s/manifest.json: units.%s: more than %llu bytes", m->dir, what,
				 (unsigned long long)LAYOUT_UNIT_MAX_BYTES);
			return -EINVAL;
		}
	}
	return 0;
}

static char *opt_file(const json_t *o)
{
	const char *s = json_string_value(json_object_get(o, "file"));
	return s && !strchr(s, '/') ? strdup(s) : NULL;
}

int layout_open(struct layout *m, const char *dir, char *err, size_t errlen)
{
	memset(m, 0, sizeof(*m));
	struct layout_file_header *hdrs = NULL;
	int rc;
	m->dir = strdup(dir);
	if (!m->dir) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/manifest.json", dir);
	json_error_t je;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		struct stat st;
		if (stat(dir, &st))
			snprintf(err, errlen, "%s: %s", dir, strerror(errno));
		else if (stat(path, &st))
			snprintf(err, errlen, "%s: not a ferry model (no manifest.json)", dir);
		else
			snprintf(err, errlen, "%s:%d:%d: %s", path, je.line, je.column, je.text);
		layout_close(m);
		return -EINVAL;
	}
	m->manifest = root;
	const char *fmt = json_string_value(json_object_get(root, "format"));
	const json_t *ver = json_object_get(root, "version");
	if (!fmt || strcmp(fmt, "ferry") || !json_is_integer(ver) ||
	    json_integer_value(ver) != LAYOUT_MANIFEST_VERSION) {
		snprintf(err, errlen, "%s: not a ferry manifest of version %d", path, LAYOUT_MANIFEST_VERSION);
		rc = -EINVAL;
		goto fail;
	}
	char why[384];
	rc = layout_hparams_from_json(&m->hp, json_object_get(root, "hparams"), why, sizeof(why));
	if (rc) {
		snprintf(err, errlen, "%s: %s", path, why);
		goto fail;
	}
	const json_t *files = json_object_get(root, "files");
	hdrs = calloc(json_is_array(files) ? json_array_size(files) + 1 : 1, sizeof(*hdrs));
	if (!hdrs) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	rc = open_files(m, files, hdrs, err, errlen);
	if (rc)
		goto fail;
	const json_t *units = json_object_get(root, "units");
	const json_t *layers = json_object_get(units, "layers");
	if (!json_is_array(layers) || (int)json_array_size(layers) != m->hp.n_layers) {
		snprintf(err, errlen, "%s: units.layers: must be an array of %d layers", path, m->hp.n_layers);
		rc = -EINVAL;
		goto fail;
	}
	m->layers = calloc((size_t)m->hp.n_layers, sizeof(*m->layers));
	if (!m->layers) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto fail;
	}
	rc = load_unit(m, -1, json_object_get(units, "embed"), "embed", hdrs, err, errlen);
	if (!rc)
		rc = load_unit(m, m->hp.n_layers, json_object_get(units, "head"), "head", hdrs, err, errlen);
	for (int i = 0; !rc && i < m->hp.n_layers; i++) {
		char what[32];
		snprintf(what, sizeof(what), "layers[%d]", i);
		rc = load_unit(m, i, json_array_get(layers, (size_t)i), what, hdrs, err, errlen);
	}
	if (rc)
		goto fail;
	m->tokenizer_file = opt_file(json_object_get(root, "tokenizer"));
	m->chat_template_file = opt_file(json_object_get(root, "chat_template"));
	free(hdrs);
	return 0;
fail:
	free(hdrs);
	layout_close(m);
	return rc;
}

void layout_close(struct layout *m)
{
	if (m->layers)
		for (int i = 0; i < m->hp.n_layers; i++)
			free(m->layers[i].tensors);
	free(m->layers);
	free(m->embed.tensors);
	free(m->head.tensors);
	free(m->files);
	free(m->tokenizer_file);
	free(m->chat_template_file);
	layout_hparams_free(&m->hp);
	json_decref(m->manifest);
	free(m->dir);
	memset(m, 0, sizeof(*m));
}

const struct layout_unit *layout_unit_get(const struct layout *m, int unit)
{
	if (unit < 0)
		return &m->embed;
	if (unit >= m->hp.n_layers)
		return &m->head;
	return &m->layers[unit];
}

const struct layout_tensor *layout_tensor_find(const struct layout_unit *u, const char *name)
{
	for (int i = 0; i < u->n_tensors; i++)
		if (strcmp(u->tensors[i].name, name) == 0)
			return &u->tensors[i];
	return NULL;
}

uint64_t layout_unit_bytes(const struct layout_unit *u)
{
	uint64_t n = 0;
	for (int i = 0; i < u->n_tensors; i++)
		n += u->tensors[i].bytes;
	return n;
}

/* Reads a tensor's bytes (a strided one's experts in order) in chunks, hashing; copies them into dst when dst
 * is not NULL. */
static int read_hash(const struct layout *m, const struct layout_tensor *t, void *dst, uint64_t *hash, char *err,
		     size_t errlen)
{
	char path[4096];
	layout_file_path(m, t->file, path, sizeof(path));
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, errlen, "%s: cannot open: %s", path, strerror(errno));
		return -errno;
	}
	enum { CHUNK = 8 << 20 };
	char *tmp = dst ? NULL : malloc(CHUNK);
	XXH3_state_t *xs = XXH3_createState();
	int rc = (!dst && !tmp) || !xs ? -ENOMEM : 0;
	if (rc)
		snprintf(err, errlen, "out of memory");
	else
		XXH3_64bits_reset(xs);
	uint64_t done = 0, per = t->stride ? t->bytes / (uint64_t)t->shape[0] : t->bytes;
	while (!rc && done < t->bytes) {
		uint64_t e = done / per, in = done % per, at = t->offset + e * (t->stride ? t->stride : per) + in;
		size_t want = per - in < CHUNK ? (size_t)(per - in) : CHUNK;
		char *p = dst ? (char *)dst + done : tmp;
		rc = layout_pread_full(fd, p, want, at);
		if (rc) {
			snprintf(err, errlen, "%s: tensor %s: read at offset %llu failed: %s", path, t->name,
				 (unsigned long long)at, rc == -EIO ? "unexpected end of file" : strerror(-rc));
			break;
		}
		XXH3_64bits_update(xs, p, want);
		done += want;
	}
	if (!rc)
		*hash = XXH3_64bits_digest(xs);
	XXH3_freeState(xs);
	free(tmp);
	close(fd);
	return rc;
}

int layout_tensor_read(const struct layout *m, const struct layout_tensor *t, void *dst, char *err, size_t errlen)
{
	uint64_t h;
	int rc = read_hash(m, t, dst, &h, err, errlen);
	if (rc)
		return rc;
	if (h != t->xxh3) {
		snprintf(err, errlen, "%s/%s: tensor %s: checksum mismatch (corrupt data)", m->dir, m->files[t->file].name,
			 t->name);
		return -EBADMSG;
	}
	return 0;
}

int layout_verify(const struct layout *m, void (*bad)(const struct layout_tensor *t, const char *why, void *ctx),
		  void *ctx, char *err, size_t errlen)
{
	int n_bad = 0;
	for (int u = -1; u <= m->hp.n_layers; u++) {
		const struct layout_unit *unit = layout_unit_get(m, u);
		for (int i = 0; i < unit->n_tensors; i++) {
			const struct layout_tensor *t = &unit->tensors[i];
			if (u == m->hp.n_layers && m->files[t->file].kind != LAYOUT_KIND_HEAD)
				continue; /* an alias into another unit's file, verified there */
			uint64_t h;
			int rc = read_hash(m, t, NULL, &h, err, errlen);
			if (rc)
				return rc;
			if (h != t->xxh3) {
				n_bad++;
				if (bad)
					bad(t, "checksum mismatch", ctx);
			}
		}
	}
	return n_bad;
}
