/* test_fuzz_imatrix.c: the importance matrix reader (GGUF and legacy .dat) on arbitrary bytes must return an
 * error or entries whose every value can be read; never crash or read outside the file. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_file.h"
#include "convert/imatrix.h"

static int fuzz_one(const uint8_t *data, size_t size)
{
	char path[64], err[512];
	int fd = fuzz_file(data, size, "im", path, sizeof(path));
	if (fd < 0)
		return 0;
	struct imatrix im;
	if (imatrix_read(&im, path, err, sizeof(err)) == 0) {
		float sum = 0;
		for (int i = 0; i < im.n; i++) /* touch every value an entry claims */
			for (int64_t j = 0; j < im.e[i].cols * im.e[i].n_mat; j++)
				sum += im.e[i].imp[j];
		if (sum == 1234.5f)
			puts("");
		imatrix_free(&im);
	}
	close(fd);
	return 0;
}

/* A legacy .dat of one entry of n values. */
static void seed_dat(void (*add)(const uint8_t *, size_t), const char *name, int32_t n)
{
	uint8_t buf[256];
	int32_t len = (int32_t)strlen(name), one = 1, at = 0;
	memcpy(buf + at, &one, 4), at += 4;
	memcpy(buf + at, &len, 4), at += 4;
	memcpy(buf + at, name, (size_t)len), at += len;
	memcpy(buf + at, &one, 4), at += 4;
	memcpy(buf + at, &n, 4), at += 4;
	for (int32_t i = 0; i < n; i++) {
		float v = (float)i + 0.5f;
		memcpy(buf + at, &v, 4), at += 4;
	}
	memcpy(buf + at, &one, 4), at += 4;
	add(buf, (size_t)at);
}

static void fuzz_seeds(void (*add)(const uint8_t *, size_t))
{
	seed_dat(add, "blk.0.attn_q.weight", 8);
	seed_dat(add, "output.weight", 3);
	/* a GGUF imatrix as imatrix_write makes it */
	struct imatrix_entry e = {.name = "blk.0.ffn_down.weight", .cols = 4, .n_mat = 1, .count = 2};
	float imp[4] = {1, 2, 3, 4};
	e.imp = imp;
	struct imatrix im = {.n = 1, .e = &e, .chunks = 1};
	char path[] = "/tmp/ferry_fuzz_imatrix_XXXXXX", err[512];
	int fd = mkstemp(path);
	if (fd < 0)
		return;
	close(fd);
	if (!imatrix_write(&im, path, "seed.txt", 512, err, sizeof(err))) {
		FILE *f = fopen(path, "rb");
		uint8_t buf[2048];
		size_t n = f ? fread(buf, 1, sizeof(buf), f) : 0;
		if (f)
			fclose(f);
		add(buf, n);
	}
	unlink(path);
}

#include "fuzz_driver.h"
