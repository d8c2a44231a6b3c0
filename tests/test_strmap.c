/*
 * test_strmap.c: the string map of the tokenizer (src/base/strmap.c): empty keys before any arena exists (the
 * GGUF fuzzer's finding of issue 24: a vocabulary with several empty token strings looked up the second one
 * in a NULL arena, undefined behaviour UBSan reports in `make asan`), overwrite, growth, strmap_clear.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "base/strmap.h"

int main(void)
{
	struct strmap m;
	CHECK(strmap_init(&m, 1) == 0);
	CHECK(strmap_get(&m, "", 0) == -1);
	CHECK(strmap_put(&m, "", 0, 7) == 0); /* no arena yet */
	CHECK(m.arena == NULL);
	CHECK(strmap_put(&m, "", 0, 8) == 0); /* the same key again: found in the NULL arena */
	CHECK(strmap_get(&m, "", 0) == 8);
	CHECK(m.n == 1);
	char key[16];
	for (int i = 0; i < 1000; i++) {
		int n = snprintf(key, sizeof(key), "k%d", i);
		CHECK(strmap_put(&m, key, (size_t)n, i) == 0);
	}
	CHECK(m.n == 1001);
	CHECK(strmap_get(&m, "", 0) == 8);
	CHECK(strmap_get(&m, "k999", 4) == 999);
	CHECK(strmap_get(&m, "k1000", 5) == -1);
	strmap_clear(&m);
	CHECK(m.n == 0 && strmap_get(&m, "k5", 2) == -1 && strmap_get(&m, "", 0) == -1);
	strmap_free(&m);
	CHECK_DONE();
}
