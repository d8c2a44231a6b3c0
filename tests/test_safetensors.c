/* test_safetensors.c: the safetensors reader on hand-made files: a good file and sharded set, then every
 * kind of damage (short file, header length past the end, malformed JSON, offsets past the data, byte count
 * not matching shape x dtype, duplicate names, index naming a missing shard). Each must give an error that
 * names the file, never a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "layout/le.h"
#include "layout/safetensors.h"

static char root[256];

static void write_st(const char *name, const char *header, size_t data_bytes, long header_len_override)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", root, name);
	FILE *f = fopen(path, "wb");
	uint8_t len[8];
	put_le64(len, header_len_override >= 0 ? (uint64_t)header_len_override : strlen(header));
	fwrite(len, 1, 8, f);
	fwrite(header, 1, strlen(header), f);
	for (size_t i = 0; i < data_bytes; i++)
		fputc((int)(i & 0xff), f);
	fclose(f);
}

static int open_one(const char *name, char *err, size_t errlen)
{
	char path[512];
	struct st_set s = {0};
	snprintf(path, sizeof(path), "%s/%s", root, name);
	int rc = st_open_file(&s, path, err, errlen);
	st_close(&s);
	return rc;
}

static void expect_error(const char *name, const char *needle)
{
	char err[512] = "";
	int rc = open_one(name, err, sizeof(err));
	CHECK_MSG(rc != 0, "%s opened", name);
	CHECK_MSG(strstr(err, name) && strstr(err, needle), "%s: got '%s', wanted '%s'", name, err, needle);
}

int main(void)
{
	snprintf(root, sizeof(root), "/tmp/ferry_test_st_XXXXXX");
	if (!mkdtemp(root))
		return 1;
	char err[512];
	write_st("good.safetensors",
		 "{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
		 "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[24,32]}}  ",
		 32, -1);
	struct st_set s = {0};
	char path[512];
	snprintf(path, sizeof(path), "%s/good.safetensors", root);
	CHECK(st_open_file(&s, path, err, sizeof(err)) == 0);
	const struct st_tensor *a = st_find(&s, "a"), *b = st_find(&s, "b");
	CHECK(s.n_tensors == 2 && a && b && !st_find(&s, "__metadata__"));
	CHECK(a && a->ndim == 2 && a->shape[0] == 2 && a->shape[1] == 3 && a->bytes == 24 && !strcmp(a->dtype, "F32"));
	CHECK(a && a->data[0] == 0 && a->data[23] == 23);
	CHECK(b && b->bytes == 8 && b->data[0] == 24);
	if (a)
		st_release(&s, a, 0, a->bytes);
	CHECK(a && a->data[5] == 5); /* still readable after release */
	st_close(&s);

	write_st("short.safetensors", "", 0, -1);
	{
		char p[512];
		snprintf(p, sizeof(p), "%s/short.safetensors", root);
		FILE *f = fopen(p, "wb");
		fputs("abc", f);
		fclose(f);
	}
	expect_error("short.safetensors", "truncated");
	write_st("hlen.safetensors", "{}", 0, 1 << 20);
	expect_error("hlen.safetensors", "header length");
	write_st("json.safetensors", "{\"a\":{\"dtype\":\"F32\",", 0, -1);
	expect_error("json.safetensors", "malformed header JSON");
	write_st("notobj.safetensors", "[1,2]", 0, -1);
	expect_error("notobj.safetensors", "malformed header");
	write_st("trunc.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 10, -1);
	expect_error("trunc.safetensors", "truncated");
	write_st("count.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, -1);
	expect_error("count.safetensors", "bytes for 6 elements");
	write_st("offs.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,4]}}", 24, -1);
	expect_error("offs.safetensors", "data_offsets");
	write_st("shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 24, -1);
	expect_error("shape.safetensors", "bad shape");
	write_st("dup.safetensors",
		 "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
		 "\"data_offsets\":[0,4]}}",
		 4, -1);
	expect_error("dup.safetensors", "malformed header");

	/* sharded: index + two shards, then an index naming a missing shard */
	char dir[512], p[700];
	snprintf(dir, sizeof(dir), "%s/sharded", root);
	mkdir(dir, 0755);
	char saved[256];
	strcpy(saved, root);
	strcpy(root, dir);
	write_st("model-00001-of-00002.safetensors", "{\"x\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}",
		 4, -1);
	write_st("model-00002-of-00002.safetensors", "{\"y\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
		 2, -1);
	strcpy(root, saved);
	snprintf(p, sizeof(p), "%s/model.safetensors.index.json", dir);
	FILE *f = fopen(p, "w");
	fputs("{\"metadata\":{\"total_size\":6},\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\","
	      "\"y\":\"model-00002-of-00002.safetensors\"}}",
	      f);
	fclose(f);
	CHECK(st_open_dir(&s, dir, err, sizeof(err)) == 0);
	CHECK(s.n_files == 2 && st_find(&s, "x") && st_find(&s, "y"));
	st_close(&s);
	f = fopen(p, "w");
	fputs("{\"weight_map\":{\"x\":\"model-00001-of-00002.safetensors\",\"z\":\"model-00003-of-00003.safetensors\"}}", f);
	fclose(f);
	CHECK(st_open_dir(&s, dir, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "model-00003-of-00003.safetensors"), "%s", err);
	f = fopen(p, "w");
	fputs("{\"weight_map\":{\"x\":\"model-00002-of-00002.safetensors\"}}", f);
	fclose(f);
	CHECK(st_open_dir(&s, dir, err, sizeof(err)) != 0);
	CHECK_MSG(strstr(err, "tensor x is not in"), "%s", err);
	snprintf(p, sizeof(p), "%s/empty", root);
	mkdir(p, 0755);
	CHECK(st_open_dir(&s, p, err, sizeof(err)) != 0 && strstr(err, "no model.safetensors"));

	/* no model.safetensors and no index: every *.safetensors in name order (ExLlamaV2's output-0000K files) */
	snprintf(dir, sizeof(dir), "%s/exl2", root);
	mkdir(dir, 0755);
	strcpy(root, dir);
	write_st("output-00002-of-00002.safetensors", "{\"y\":{\"dtype\":\"I16\",\"shape\":[1],\"data_offsets\":[0,2]}}",
		 2, -1);
	write_st("output-00001-of-00002.safetensors", "{\"x\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
		 8, -1);
	strcpy(root, saved);
	CHECK(st_open_dir(&s, dir, err, sizeof(err)) == 0);
	CHECK(s.n_files == 2 && st_find(&s, "x") && st_find(&s, "y") && st_find(&s, "x")->file == 0);
	st_close(&s);

	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", root);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup failed\n");
	CHECK_DONE();
}
