/*
 * logits_dump.h: `ferry run --logits FILE` output, for tests against references. Little-endian:
 *   bytes 0..3 "FLGT", u32 version (1), u32 n_rows, u32 n_vocab, then n_rows x n_vocab f32, row-major.
 * Row r holds the logits computed at absolute position r. Written to FILE.tmp and renamed when complete.
 */
#ifndef FERRY_LOGITS_DUMP_H
#define FERRY_LOGITS_DUMP_H

#include <stddef.h>
#include <stdio.h>

struct logits_dump {
	FILE *f;
	char *path, *tmp;
	int n_vocab;
	unsigned n_rows;
};

int logits_dump_open(struct logits_dump *d, const char *path, int n_vocab, char *err, size_t errlen);
int logits_dump_rows(struct logits_dump *d, const float *rows, int n, char *err, size_t errlen);
int logits_dump_close(struct logits_dump *d, char *err, size_t errlen);
void logits_dump_abort(struct logits_dump *d);

#endif
