/* logits_dump.c: see logits_dump.h. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "layout/le.h"
#include "engine/logits_dump.h"

static void header(uint8_t *h, unsigned rows, int vocab)
{
	memcpy(h, "FLGT", 4);
	put_le32(h + 4, 1);
	put_le32(h + 8, rows);
	put_le32(h + 12, (uint32_t)vocab);
}

int logits_dump_open(struct logits_dump *d, const char *path, int n_vocab, char *err, size_t errlen)
{
	memset(d, 0, sizeof(*d));
	d->path = strdup(path);
	d->tmp = malloc(strlen(path) + 5);
	if (!d->path || !d->tmp) {
		logits_dump_abort(d);
		return -ENOMEM;
	}
	strcpy(d->tmp, path);
	strcat(d->tmp, ".tmp");
	d->n_vocab = n_vocab;
	d->f = fopen(d->tmp, "wb");
	uint8_t h[16];
	header(h, 0, n_vocab);
	if (!d->f || fwrite(h, 1, 16, d->f) != 16) {
		snprintf(err, errlen, "%s: cannot write: %s", d->tmp, strerror(errno));
		logits_dump_abort(d);
		return -EIO;
	}
	return 0;
}

int logits_dump_rows(struct logits_dump *d, const float *rows, int n, char *err, size_t errlen)
{
	size_t k = (size_t)n * (size_t)d->n_vocab;
	if (fwrite(rows, sizeof(float), k, d->f) != k) {
		snprintf(err, errlen, "%s: write failed: %s", d->tmp, strerror(errno));
		return -EIO;
	}
	d->n_rows += (unsigned)n;
	return 0;
}

int logits_dump_close(struct logits_dump *d, char *err, size_t errlen)
{
	uint8_t h[16];
	header(h, d->n_rows, d->n_vocab);
	int bad = fseek(d->f, 0, SEEK_SET) || fwrite(h, 1, 16, d->f) != 16 || fflush(d->f) || fsync(fileno(d->f));
	bad |= fclose(d->f) != 0;
	d->f = NULL;
	if (bad || rename(d->tmp, d->path)) {
		snprintf(err, errlen, "%s: write failed: %s", d->path, strerror(errno));
		logits_dump_abort(d);
		return -EIO;
	}
	free(d->path);
	free(d->tmp);
	memset(d, 0, sizeof(*d));
	return 0;
}

void logits_dump_abort(struct logits_dump *d)
{
	if (d->f)
		fclose(d->f);
	if (d->tmp)
		unlink(d->tmp);
	free(d->path);
	free(d->tmp);
	memset(d, 0, sizeof(*d));
}
