/* test_layout.c: model.ferry writer -> reader round trip, alignment, aliases, replacement rules, and the
 * detection of corrupt headers, corrupt tensor data, truncated files and malformed manifests. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "layout/layout.h"
#include "layout/layout_internal.h"

static char root[256];

static void hparams(struct layout_hparams *hp, int *win)
{
	memset(hp, 0, sizeof(*hp));
	strcpy(hp->arch, "llama");
	hp->n_layers = 2;
	hp->d_model = 8;
	hp->n_heads = 2;
	hp->n_kv_heads = 1;
	hp->head_dim = 4;
	hp->ffn_dim = 16;
	hp->vocab = 10;
	hp->max_pos = 64;
	hp->rms_eps = 1e-5;
	hp->rope.theta = 10000;
	hp->rope.dim = 4;
	hp->rope.factor = 1;
	hp->tied_embeddings = true;
	hp->window = win;
	hp->bos_id = 1;
	hp->n_eos = 1;
	hp->eos_ids[0] = 2;
}

static void fill(void *p, size_t n, unsigned seed)
{
	unsigned char *b = p;
	for (size_t i = 0; i < n; i++) {
		seed = seed * 1103515245u + 12345u;
		b[i] = (unsigned char)(seed >> 16);
	}
}

static int add(struct layout_writer *w, const char *name, int fmt, int ndim, int64_t r, int64_t c, unsigned seed)
{
	int64_t shape[2] = {r, c};
	size_t n = (size_t)(ndim == 1 ? r : r * c) * wfmt_table[fmt].block_bytes;
	char *buf = malloc(n);
	fill(buf, n, seed);
	int rc = layout_writer_tensor_begin(w, name, fmt, ndim, shape);
	/* written in two pieces, as converters do */
	rc = rc ? rc : layout_writer_tensor_write(w, buf, n / 3);
	rc = rc ? rc : layout_writer_tensor_write(w, buf + n / 3, n - n / 3);
	rc = rc ? rc : layout_writer_tensor_end(w);
	free(buf);
	return rc;
}

static int add_embed(struct layout_writer *w)
{
	int rc = layout_writer_file_begin(w, LAYOUT_KIND_EMBED, -1);
	rc = rc ? rc : add(w, "token_embd.weight", WFMT_F16, 2, 10, 8, 1);
	return rc ? rc : layout_writer_file_end(w);
}

/* the head: its norm, and the output projection tied to the embedding */
static int add_head(struct layout_writer *w)
{
	int rc = layout_writer_file_begin(w, LAYOUT_KIND_HEAD, -1);
	rc = rc ? rc : add(w, "output_norm.weight", WFMT_F32, 1, 8, 0, 40);
	rc = rc ? rc : layout_writer_alias(w, "output.weight", -1, "token_embd.weight");
	return rc ? rc : layout_writer_file_end(w);
}

static int write_model(const char *out, bool force)
{
	char err[512];
	struct layout_writer *w;
	int rc = layout_writer_begin(&w, out, force, err, sizeof(err));
	if (rc)
		return rc;
	int win[2] = {0, 4};
	struct layout_hparams hp;
	hparams(&hp, win);
	rc = add_embed(w);
	for (int l = 0; !rc && l < 2; l++) {
		rc = layout_writer_file_begin(w, LAYOUT_KIND_LAYER, l);
		rc = rc ? rc : add(w, "attn_norm.weight", WFMT_F32, 1, 8, 0, 10 + l);
		rc = rc ? rc : add(w, "attn_q.weight", WFMT_BF16, 2, 8, 8, 20 + l);
		rc = rc ? rc : add(w, "ffn_down.weight", WFMT_F16, 2, 8, 16, 30 + l);
		rc = rc ? rc : layout_writer_file_end(w);
	}
	rc = rc ? rc : add_head(w);
	if (rc) {
		fprintf(stderr, "writer: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
		return rc;
	}
	rc = layout_writer_finish(w, &hp, json_pack("{s:{s:s}}", "tokenizer", "file", "tokenizer.json"));
	if (rc) {
		fprintf(stderr, "finish: %s\n", layout_writer_error(w));
		layout_writer_abort(w);
	}
	return rc;
}

static bool exists(const char *p)
{
	struct stat st;
	return stat(p, &st) == 0;
}

static void poke(const char *path, off_t off)
{
	int fd = open(path, O_RDWR);
	unsigned char c;
	CHECK(fd >= 0 && pread(fd, &c, 1, off) == 1);
	c ^= 0x40;
	CHECK(pwrite(fd, &c, 1, off) == 1);
	close(fd);
}

static void bad_cb(const struct layout_tensor *t, const char *why, void *ctx)
{
	(void)why;
	strcpy(ctx, t->name);
}

static void test_roundtrip(void)
{
	char out[512], path[600], err[512];
	snprintf(out, sizeof(out), "%s/m.ferry", root);
	CHECK(write_model(out, false) == 0);
	snprintf(path, sizeof(path), "%s.tmp", out);
	CHECK(!exists(path));
	struct layout m;
	int rc = layout_open(&m, out, err, sizeof(err));
	CHECK_MSG(rc == 0, "%s", err);
	if (rc)
		return;
	CHECK(m.hp.n_layers == 2 && m.hp.window[1] == 4 && m.hp.n_kv_heads == 1 && m.hp.tied_embeddings);
	CHECK(m.hp.bos_id == 1 && m.hp.n_eos == 1 && m.hp.eos_ids[0] == 2);
	CHECK(m.n_files == 4);
	CHECK(m.tokenizer_file && !strcmp(m.tokenizer_file, "tokenizer.json"));
	for (int i = 0; i < m.n_files; i++)
		CHECK(m.files[i].bytes % LAYOUT_ALIGN == 0);
	const struct layout_tensor *q = layout_tensor_find(&m.layers[1], "attn_q.weight");
	CHECK(q && q->fmt == WFMT_BF16 && q->shape[0] == 8 && q->shape[1] == 8 && q->bytes == 128);
	CHECK(q && q->offset % LAYOUT_ALIGN == 0 && q->offset >= LAYOUT_HEADER_BYTES);
	char buf[256], want[256];
	if (q) {
		CHECK(layout_tensor_read(&m, q, buf, err, sizeof(err)) == 0);
		fill(want, 128, 21);
		CHECK(memcmp(buf, want, 128) == 0);
	}
	const struct layout_tensor *o = layout_tensor_find(&m.head, "output.weight");
	const struct layout_tensor *e = layout_tensor_find(&m.embed, "token_embd.weight");
	CHECK(o && e && o->file == e->file && o->offset == e->offset && o->xxh3 == e->xxh3);
	CHECK(layout_verify(&m, NULL, NULL, err, sizeof(err)) == 0);
	layout_close(&m);

	/* exists: refused without --force, replaced with it */
	CHECK(write_model(out, false) == -EEXIST);
	CHECK(write_model(out, true) == 0);
	snprintf(path, sizeof(path), "%s.old", out);
	CHECK(!exists(path));
	CHECK(layout_open(&m, out, err, sizeof(err)) == 0);
	layout_close(&m);
}

static void test_refuse_foreign(void)
{
	char out[512], err[512];
	struct layout_writer *w;
	snprintf(out, sizeof(out), "%s/foreign", root);
	mkdir(out, 0755);
	CHECK(layout_writer_begin(&w, out, true, err, sizeof(err)) == -EEXIST);
	CHECK(strstr(err, "not a ferry model"));
	/* an OUT.tmp that ferry did not leave (no marker) is refused and kept */
	snprintf(out, sizeof(out), "%s/stale.ferry", root);
	char tmp[600], junk[700];
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	mkdir(tmp, 0755);
	snprintf(junk, sizeof(junk), "%s/notes.txt", tmp);
	FILE *f = fopen(junk, "w");
	fputs("important", f);
	fclose(f);
	CHECK(layout_writer_begin(&w, out, false, err, sizeof(err)) == -EEXIST);
	CHECK_MSG(strstr(err, "not left by ferry"), "%s", err);
	CHECK(exists(junk));
	/* one from an interrupted run (marker present) is cleared */
	snprintf(junk, sizeof(junk), "%s/.ferry-partial", tmp);
	f = fopen(junk, "w");
	fclose(f);
	CHECK(write_model(out, false) == 0);
	CHECK(!exists(tmp));
	snprintf(junk, sizeof(junk), "%s/.ferry-partial", out);
	CHECK(!exists(junk));
	/* --force never replaces a directory whose manifest.json is not ferry's, and removes nothing of it */
	snprintf(out, sizeof(out), "%s/webapp", root);
	mkdir(out, 0755);
	snprintf(junk, sizeof(junk), "%s/manifest.json", out);
	f = fopen(junk, "w");
	fputs("{\"name\": \"app\"}", f);
	fclose(f);
	CHECK(write_model(out, true) == -EEXIST);
	CHECK(exists(junk));
	/* abort leaves nothing behind */
	snprintf(out, sizeof(out), "%s/aborted.ferry", root);
	CHECK(layout_writer_begin(&w, out, false, err, sizeof(err)) == 0);
	layout_writer_file_begin(w, LAYOUT_KIND_EMBED, -1);
	layout_writer_abort(w);
	snprintf(tmp, sizeof(tmp), "%s.tmp", out);
	CHECK(!exists(out) && !exists(tmp));
}

static void copy_model(const char *src, const char *dst)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -r '%s' '%s'", dst, src, dst);
	CHECK(system(cmd) == 0);
}

static void test_corruption(void)
{
	char good[512], bad[512], path[700], err[512], name[64] = "";
	struct layout m;
	snprintf(good, sizeof(good), "%s/m.ferry", root);
	snprintf(bad, sizeof(bad), "%s/bad.ferry", root);

	/* a flipped data byte: opens (headers intact), verify and read name the tensor */
	copy_model(good, bad);
	CHECK(layout_open(&m, bad, err, sizeof(err)) == 0);
	const struct layout_tensor *t = layout_tensor_find(&m.layers[1], "ffn_down.weight");
	snprintf(path, sizeof(path), "%s/layer.001.bin", bad);
	poke(path, (off_t)t->offset + 5);
	CHECK(layout_verify(&m, bad_cb, name, err, sizeof(err)) == 1);
	CHECK(!strcmp(name, "ffn_down.weight"));
	char buf[512];
	CHECK(layout_tensor_read(&m, t, buf, err, sizeof(err)) == -EBADMSG);
	CHECK(strstr(err, "ffn_down.weight") && strstr(err, "layer.001.bin"));
	layout_close(&m);

	/* a flipped header byte */
	copy_model(good, bad);
	snprintf(path, sizeof(path), "%s/layer.000.bin", bad);
	poke(path, 70);
	CHECK(layout_open(&m, bad, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "layer.000.bin") && strstr(err, "checksum"), "%s", err);

	/* a truncated file */
	copy_model(good, bad);
	snprintf(path, sizeof(path), "%s/layer.001.bin", bad);
	CHECK(truncate(path, 4096 + 100) == 0);
	CHECK(layout_open(&m, bad, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "layer.001.bin") && strstr(err, "truncated"), "%s", err);

	/* a file shorter than its header */
	CHECK(truncate(path, 100) == 0);
	CHECK(layout_open(&m, bad, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "layer.001.bin") && strstr(err, "header"), "%s", err);

	/* a malformed manifest: error with line and column */
	copy_model(good, bad);
	snprintf(path, sizeof(path), "%s/manifest.json", bad);
	FILE *f = fopen(path, "w");
	fputs("{\n  \"format\": \"ferry\",\n  \"version\": 1,,\n}\n", f);
	fclose(f);
	CHECK(layout_open(&m, bad, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "manifest.json:3:"), "%s", err);

	/* no manifest at all */
	CHECK(unlink(path) == 0);
	CHECK(layout_open(&m, bad, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "no manifest.json"), "%s", err);
}

static void test_header_parse(void)
{
	uint8_t buf[LAYOUT_HEADER_BYTES];
	struct layout_file_header h;
	char err[256];
	/* a valid header, then the same with a size that does not match the shape */
	struct layout_file_header g = {.file_bytes = 2 * 4096, .kind = LAYOUT_KIND_LAYER, .layer = 0, .n_tensors = 1};
	g.tensors[0] = (struct layout_tensor){.name = "w", .fmt = WFMT_F16, .ndim = 2, .shape = {4, 8}, .offset = 4096,
					      .bytes = 64, .raw_bytes = 64};
	layout_header_build(buf, &g);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) == 0);
	g.tensors[0].bytes = g.tensors[0].raw_bytes = 4096;
	layout_header_build(buf, &g);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "do not match"));
	g.tensors[0].bytes = g.tensors[0].raw_bytes = 64;
	g.tensors[0].shape[0] = -4;
	layout_header_build(buf, &g);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0);
	g.tensors[0].shape[0] = 4;
	layout_header_build(buf, &g);
	buf[LAYOUT_ENTRY_OFFSET + 56 + 16] = 7; /* a dim past ndim, checksum made right again */
	uint64_t hh = layout_header_hash(buf);
	for (int i = 0; i < 8; i++)
		buf[40 + i] = (uint8_t)(hh >> (8 * i));
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "do not match"));
	CHECK(layout_tensor_nbytes(WFMT_F32, 2, (int64_t[]){1ll << 40, 1ll << 40}) == 0); /* would overflow */
	CHECK(layout_tensor_nbytes(WFMT_Q4_K, 1, (int64_t[]){100}) == 0);               /* not whole blocks */
	CHECK(layout_tensor_nbytes(WFMT_Q4_K, 2, (int64_t[]){3, 512}) == 3 * 2 * 144);
	memset(buf, 0, sizeof(buf));
	CHECK(layout_header_parse(buf, 100, &h, err, sizeof(err)) != 0);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "magic"));
	memcpy(buf, LAYOUT_MAGIC, 8);
	buf[8] = 9;
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "version"));
}

/* One layer of stacked experts written packed (no layout_writer_experts: a version 1 file, what ferry wrote
 * before expert-major files) and expert-major (version 2), E = 5 experts of gate/up [8, 32] F16 and down
 * [32, 8] BF16 after a router: both read back the same bytes under the same checksums; expert e's matrices
 * lie together in the version 2 file; a stride in a version 1 header, or strided slices overlapping, are
 * refused. */
static void test_experts(void)
{
	const int64_t shapes[3][3] = {{5, 8, 32}, {5, 8, 32}, {5, 32, 8}};
	const char *names[3] = {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"};
	const int fmts[3] = {WFMT_F16, WFMT_F16, WFMT_BF16};
	char dirs[2][300], err[512];
	uint8_t data[3][5 * 8 * 32 * 2];
	for (int i = 0; i < 3; i++)
		fill(data[i], sizeof(data[i]), 100 + i);
	int win[2] = {0, 0};
	for (int v = 0; v < 2; v++) {
		snprintf(dirs[v], sizeof(dirs[v]), "%s/experts%d.ferry", root, v);
		struct layout_writer *w;
		struct layout_hparams hp;
		hparams(&hp, win);
		int rc = layout_writer_begin(&w, dirs[v], false, err, sizeof(err));
		rc = rc ? rc : add_embed(w);
		for (int l = 0; !rc && l < 2; l++) {
			rc = layout_writer_file_begin(w, LAYOUT_KIND_LAYER, l);
			rc = rc ? rc : add(w, "ffn_gate_inp.weight", WFMT_F32, 2, 5, 8, 50 + l);
			rc = rc ? rc : v ? layout_writer_experts(w, 3, names, fmts, shapes) : 0;
			for (int i = 0; !rc && i < 3; i++) {
				rc = layout_writer_tensor_begin(w, names[i], fmts[i], 3, shapes[i]);
				/* in pieces that cross expert boundaries */
				for (size_t at = 0; !rc && at < sizeof(data[i]); at += 700)
					rc = layout_writer_tensor_write(w, data[i] + at, sizeof(data[i]) - at < 700 ? sizeof(data[i]) - at : 700);
				rc = rc ? rc : layout_writer_tensor_end(w);
			}
			rc = rc ? rc : add(w, "attn_norm.weight", WFMT_F32, 1, 8, 0, 60 + l);
			rc = rc ? rc : layout_writer_file_end(w);
		}
		rc = rc ? rc : add_head(w);
		rc = rc ? rc : layout_writer_finish(w, &hp, json_pack("{s:{s:s}}", "tokenizer", "file", "tokenizer.json"));
		CHECK_MSG(rc == 0, "experts v%d: %s", v + 1, layout_writer_error(w));
		if (rc)
			layout_writer_abort(w);
	}
	struct layout m[2];
	for (int v = 0; v < 2; v++)
		CHECK_MSG(layout_open(&m[v], dirs[v], err, sizeof(err)) == 0, "open experts v%d: %s", v + 1, err);
	for (int i = 0; i < 3; i++) {
		const struct layout_tensor *t[2];
		uint8_t got[2][sizeof(data[0])];
		for (int v = 0; v < 2; v++) {
			t[v] = layout_tensor_find(layout_unit_get(&m[v], 1), names[i]);
			CHECK(t[v] && layout_tensor_read(&m[v], t[v], got[v], err, sizeof(err)) == 0);
		}
		CHECK(!t[0]->stride && t[1]->stride == 3 * 4096 && t[0]->xxh3 == t[1]->xxh3);
		CHECK(!memcmp(got[0], data[i], sizeof(data[i])) && !memcmp(got[1], data[i], sizeof(data[i])));
		/* expert 3's matrix in the file: packed at offset + 3 x its bytes, expert-major at offset + 3 x stride */
		for (int v = 0; v < 2; v++) {
			char path[4096];
			uint8_t one[512];
			layout_file_path(&m[v], t[v]->file, path, sizeof(path));
			int fd = open(path, O_RDONLY);
			uint64_t at = t[v]->offset + 3 * (v ? t[v]->stride : sizeof(one));
			CHECK(fd >= 0 && layout_pread_full(fd, one, sizeof(one), at) == 0 && !memcmp(one, data[i] + 3 * 512, 512));
			close(fd);
		}
	}
	struct layout_file_header h;
	uint8_t buf[LAYOUT_HEADER_BYTES];
	char path[4096];
	snprintf(path, sizeof(path), "%s/layer.001.bin", dirs[1]);
	int fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && layout_pread_full(fd, buf, sizeof(buf), 0) == 0);
	close(fd);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) == 0 && h.version == 2);
	h.version = 1; /* a stride in a version 1 file */
	layout_header_build(buf, &h);
	buf[8] = 1;
	memcpy(buf + 40, (uint64_t[]){layout_header_hash(buf)}, 8);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "stride"));
	fd = open(path, O_RDONLY);
	CHECK(layout_pread_full(fd, buf, sizeof(buf), 0) == 0);
	close(fd);
	layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err));
	h.tensors[2].offset -= 4096; /* up's slices onto gate's */
	layout_header_build(buf, &h);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) != 0 && strstr(err, "overlapping"));
	snprintf(path, sizeof(path), "%s/layer.001.bin", dirs[0]);
	fd = open(path, O_RDONLY);
	CHECK(fd >= 0 && layout_pread_full(fd, buf, sizeof(buf), 0) == 0);
	close(fd);
	CHECK(layout_header_parse(buf, sizeof(buf), &h, err, sizeof(err)) == 0 && h.version == 1);
	for (int v = 0; v < 2; v++)
		layout_close(&m[v]);
}

int main(void)
{
	snprintf(root, sizeof(root), "/tmp/ferry_test_layout_XXXXXX");
	if (!mkdtemp(root)) {
		perror("mkdtemp");
		return 1;
	}
	test_roundtrip();
	test_refuse_foreign();
	test_corruption();
	test_header_parse();
	test_experts();
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", root);
	CHECK_DONE();
}
